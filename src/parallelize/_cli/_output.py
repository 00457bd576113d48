"""The output: one JSON line per outcome, written in batches to stdout or ``-o FILE``.

:data:`ENCODE` makes the lines; a :class:`Sink` writes them, and turns a full disk
into an :class:`~._errors.OutputError` that leaves only whole lines behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Self, TextIO

from ._errors import OutputError, UsageError

__all__ = ("ENCODE", "Sink", "open_output")

# One encoder, made once (json.dumps with options builds one per call). ASCII only:
# the output is valid in any locale's encoding, and bytes-for-bytes stable.
ENCODE = json.JSONEncoder(allow_nan=False).encode

# Lines wait in memory at most this long (or this many) before they are written.
_FLUSH_SECONDS = 0.2
_FLUSH_LINES = 1024


def open_output(path: str | None) -> Sink:
    """Open the output file (None or ``-``: stdout) as a :class:`Sink`.

    Raises:
        UsageError: The file cannot be opened for writing.
    """
    if path is None or path == "-":
        return Sink(sys.stdout)
    try:
        stream = Path(path).open("w", encoding="utf-8", newline="\n")  # noqa: SIM115 - the Sink closes it
    except OSError as exc:
        raise UsageError(f"cannot write the output file {path!r}: {exc.strerror or exc}") from exc
    return Sink(stream, repr(path))


class Sink:
    """Lines to a text stream, written in batches: every 1024 lines or 0.2 s.

    One ``write`` and one ``flush`` per batch instead of per line: at thousands of
    lines a second a flush per line would cost more than the rest of the CLI. A loop
    timer flushes what a slow tail leaves in the batch, so the output never lags by
    more than 0.2 s. An error of the stream (a closed pipe) met by the timer is
    raised by the next :meth:`write` or :meth:`close`.
    """

    def __init__(self, stream: TextIO, name: str = "stdout") -> None:
        """Write to ``stream``, called ``name`` in messages.

        Call :meth:`start` on the event loop to flush by time.
        """
        self.stream = stream
        self.name = name
        self.written = 0  # lines written so far
        # Where the last whole batch ended in a regular file: a failed write is cut
        # back to it, so that every line of the file is a whole JSON line.
        self._good: int | None = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = stream.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self._good = os.lseek(fd, 0, os.SEEK_CUR)
        # Lines for stdout go to whatever sys.stdout is when written: the progress
        # bar, while shown on the same terminal, puts its own stream there, which
        # prints them above the bar instead of into it.
        self._stdout = stream is sys.stdout
        self.lines: list[str] = []
        # --format: each record's JSON line becomes the line written.
        self.render: Callable[[str], str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._error: Exception | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Flush at least every 0.2 s from now on (until :meth:`close`)."""
        self._timer = asyncio.get_running_loop().call_later(_FLUSH_SECONDS, self._tick)

    def write(self, line: str) -> None:
        """Add one line (without its newline)."""
        if self._error is not None:
            raise self._error
        if self.render is not None:
            line = self.render(line)
        lines = self.lines
        lines.append(line)
        if len(lines) >= _FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write the waiting lines now.

        Raises:
            OutputError: The stream refused the lines (a full disk); a regular file
                is cut back to its last whole line first.
            BrokenPipeError: The reader of a pipe went away.
        """
        if self._error is not None:
            raise self._error
        stream = sys.stdout if self._stdout else self.stream
        lines = self.lines
        try:
            if lines:
                stream.write("\n".join(lines) + "\n")
            stream.flush()
        except BrokenPipeError as exc:
            self._error = exc
            raise
        except OSError as exc:
            self._error = self._failed(exc)
            raise self._error from exc
        self.written += len(lines)
        lines.clear()
        if self._good is not None:
            self._good = os.lseek(stream.fileno(), 0, os.SEEK_CUR)

    def _failed(self, exc: OSError) -> OutputError:
        """Cut a regular file back to its last whole line; say what failed."""
        if self._good is not None:
            with contextlib.suppress(OSError, ValueError):
                os.ftruncate(self.stream.fileno(), self._good)
        reason = exc.strerror or str(exc)
        return OutputError(
            f"cannot write the output {self.name}: {reason} (after {self.written:,} whole lines)"
        )

    def _tick(self) -> None:
        try:
            self.flush()
        except (OSError, OutputError):
            return  # kept in _error: raised by the next write() or close()
        self.start()

    def close(self) -> None:
        """Write what waits, stop the timer; close the stream unless it is stdout."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self._error is None:
                self.flush()
        finally:
            if not self._stdout:
                try:
                    self.stream.close()
                except OSError:  # what the buffer held: refused again
                    if self._error is None:
                        raise
