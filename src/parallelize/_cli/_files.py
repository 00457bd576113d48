"""The command's files, checked before any work: none is another, the journal has a home.

The input, the output, the journal and ``--save-dir`` are compared by what they
are on disk, so that no command overwrites what it reads.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import IO, Any

from ._errors import UsageError

__all__ = ("check_distinct_files", "check_journal")


def check_journal(path: str | None) -> None:
    """Refuse a ``--journal`` path whose directory does not exist (before any work)."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(
            f"cannot create the journal {path!r}: no directory {str(folder)!r}; "
            f"make it, or give another path"
        )


def check_distinct_files(
    stream: IO[bytes] | None,
    input_name: str,
    *,
    output: str | None,
    journal: str | None,
    save_dir: str | None = None,
) -> None:
    """Refuse an output, journal or ``--save-dir`` that is the input or one another.

    Compared by device and inode, not by name (``./urls.txt``, a hard link or a
    symbolic link name the same file), before anything is opened for writing:
    ``-o urls.txt`` on the input would truncate it to nothing. Stdout counts as the
    output when it is a file (``> urls.txt`` is the shell's own doing, but
    ``>> urls.txt`` would feed the run its own lines).
    """
    files = _identities(stream, input_name, output=output, journal=journal, save_dir=save_dir)
    for i, (what, identity) in enumerate(files):
        for other, other_identity in files[:i]:
            if identity == other_identity:
                raise UsageError(
                    f"{what} is the same file as {other}: the command would overwrite "
                    f"what it reads or writes; give each its own file"
                )


def _identities(
    stream: IO[bytes] | None,
    input_name: str,
    *,
    output: str | None,
    journal: str | None,
    save_dir: str | None,
) -> list[tuple[str, tuple[int, int]]]:
    """Name and (device, inode) of each of the command's files that exists."""
    files: list[tuple[str, tuple[int, int]]] = []
    if stream is not None:
        identity = _identity_of_stream(stream)
        if identity is not None:
            files.append((input_name, identity))
    named = [("the output (-o)", output), ("the --journal", journal), ("the --save-dir", save_dir)]
    if output is None or output == "-":
        identity = _identity_of_stream(sys.stdout)
        if identity is not None:
            files.append(("the output (stdout)", identity))
        named = named[1:]
    for what, path in named:
        if path is None:
            continue
        try:
            info = Path(path).stat()
        except OSError:
            continue  # not there yet: it cannot be any other file
        files.append((f"{what} {path!r}", (info.st_dev, info.st_ino)))
    return files


def _identity_of_stream(stream: IO[Any]) -> tuple[int, int] | None:
    """Return the (device, inode) of the regular file behind ``stream``, else None."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's StringIO)
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None
