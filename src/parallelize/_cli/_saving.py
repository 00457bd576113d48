"""``fetch --save-dir``: where a body goes, how it gets there, and how a partial one resumes.

Names (``--save-as``): ``hash`` (the URL's SHA-256, today's default: flat, fixed
length, never two URLs on one file), ``path`` (``HOST/PATH`` as wget ``-x``), or
a template of the URL's parts (aria2c's ``out=``). A value taken from a URL is
made safe one path segment at a time: percent-escapes decoded, then ``/``, NUL
and control characters written back as ``%XX``, ``.`` and empty segments
dropped, ``..`` written ``%2E%2E``, a segment longer than 240 bytes cut and
suffixed with its hash. The template's own text is checked when it is parsed
(no absolute path, no ``..``). Last, the name is resolved (symlinks followed)
and refused if it lands outside the directory: nothing is ever written there.

A body is streamed to a ``.part`` file, renamed into place once whole. With
``--continue`` the part of a failed download is kept, and the next attempt (or
run) asks for the rest (``Range: bytes=N-``, ``If-Range`` with the validator
kept on the part as an extended attribute): a 206 from byte N appends, any 200
starts over, a 416 that says the file is N bytes long finishes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import string
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, Final

from parallelize.http import Reply

from ._errors import SaveError

__all__ = ("Saver", "Saving", "disposition_name", "parse_save_as", "save_name")

_FIELDS: Final = ("host", "port", "path", "dir", "name", "query", "hash", "key")
_MAX_SEGMENT: Final = 240  # bytes: under every common file system's 255
_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f/\\]")
_XATTR: Final = "user.parallelize.validator"
_INDEX: Final = "index.html"
_HASH_NAME: Final = re.compile(r"[0-9a-fA-F]{64}")  # --save-as hash's names
_NAMED_MOST: Final = 1000  # name.1 ... name.999 tried for a Content-Disposition name


def save_name(name: str) -> str:
    """Return the file name of ``name``'s body under ``--save-as hash``: SHA-256, hex."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Saving:
    """How bodies are saved (plain data: a child process of ``--processes`` gets it)."""

    directory: str
    save_as: str = "hash"
    content_disposition: bool = False
    resume: bool = False


Namer = Callable[[str, str, "str | None"], str]


def parse_save_as(text: str) -> Namer:
    """Return ``--save-as``'s namer: (url, journal name, key) -> a relative path.

    Raises:
        ValueError: A template with an unknown field, an absolute path, ``..``, or
            nothing that tells two URLs apart.
    """
    if text == "hash":
        return lambda _url, name, _key: save_name(name)
    template = "{host}/{path}" if text == "path" else text
    _check_template(text, template)
    with_query = text == "path"

    def name_of(url: str, name: str, key: str | None) -> str:
        values = _url_values(url, name, key)
        if with_query and values["query"]:
            values["path"] += "?" + values["query"]
        return _relative(template.format_map(values))

    return name_of


def _check_template(text: str, template: str) -> None:
    """Refuse a template that names no field, an unknown one, or a way out of the directory."""
    outside = f"--save-as {text!r} would write outside --save-dir: no absolute path, no '..'"
    if template.startswith(("/", "\\")):
        raise ValueError(outside)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"--save-as {text!r}: {exc} (write a brace as {{{{ or }}}})") from None
    fields = {field for _, field, _, _ in parsed if field is not None}
    unknown = [
        field
        for _, field, spec, conversion in parsed
        if field is not None and (field not in _FIELDS or spec or conversion)
    ]
    if unknown:
        known = ", ".join("{" + name + "}" for name in _FIELDS)
        raise ValueError(f"{{{unknown[0]}}} is not a field of --save-as: give {known}")
    if any(_escapes(literal) for literal, _, _, _ in parsed):
        raise ValueError(outside)
    if not fields:
        raise ValueError(f"--save-as {text!r} names every body alike: use a field such as {{path}}")


def _escapes(literal: str) -> bool:
    return any(part == ".." for part in re.split(r"[/\\]", literal))


def _segment(text: str) -> str:
    """Return one path segment, safe: no separator, control character, nor ``..``."""
    text = _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", text)
    if text == "..":
        return "%2E%2E"
    return _capped(text)


def _capped(text: str) -> str:
    r"""Return a segment of at most ``_MAX_SEGMENT`` bytes: a longer one cut, its hash after.

    A lone surrogate that is no undecodable byte (``"\ud800"`` from JSON) is written
    as its escape: a file name must encode.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        raw = text.encode("utf-8")
    if len(raw) > _MAX_SEGMENT:
        tail = hashlib.sha256(raw).hexdigest()[:16]
        text = raw[: _MAX_SEGMENT - 17].decode("utf-8", "ignore") + "-" + tail
    return text


def _segments(path: str) -> list[str]:
    """Return a URL path's segments, decoded and each made safe (``.``, empty: none)."""
    parts = []
    for raw in path.split("/"):
        decoded = urllib.parse.unquote(raw, errors="surrogateescape")
        if decoded in {"", "."}:
            continue
        parts.append(_segment(decoded))
    return parts


def _url_values(url: str, name: str, key: str | None) -> dict[str, str]:
    parts = urllib.parse.urlsplit(url)
    segments = _segments(parts.path)
    directory = segments if parts.path.endswith("/") else segments[:-1]
    last = _INDEX if parts.path.endswith("/") or not segments else segments[-1]
    host = _segment((parts.hostname or "").lower() or "_")
    port = "" if parts.port is None else str(parts.port)
    digest = save_name(name)
    return {
        "host": f"{host}:{port}" if port else host,
        "port": port,
        "path": "/".join([*directory, last]),
        "dir": "".join(f"{part}/" for part in directory),
        "name": last,
        "query": _segment(urllib.parse.unquote(parts.query)) if parts.query else "",
        "hash": digest,
        "key": digest if key is None else _segment(key),
    }


def _relative(rendered: str) -> str:
    """Return a rendered name as a relative path: empty and ``.`` segments dropped."""
    parts = [part for part in rendered.split("/") if part not in {"", "."}]
    parts = ["%2E%2E" if part == ".." else _capped(part) for part in parts]
    return "/".join(parts) or _INDEX


def disposition_name(value: str | None) -> str | None:
    """Return the file name a ``Content-Disposition`` header gives (its last part, safe)."""
    if not value:
        return None
    from email.message import Message  # noqa: PLC0415 - with --content-disposition only

    message = Message()
    message["Content-Disposition"] = value
    name = message.get_filename()
    if not name:
        return None
    last = re.split(r"[/\\]", name)[-1].strip()
    if last in {"", ".", ".."} or last.endswith(".part") or _HASH_NAME.fullmatch(last):
        return None  # nothing, or the name of another body or of a download under way
    return _segment(last)


class Saver:
    """Saves the bodies of one fetch under its directory (see the module docstring)."""

    __slots__ = ("_base", "_made", "_namer", "_real", "saving")

    def __init__(self, saving: Saving) -> None:
        self.saving = saving
        self._namer = parse_save_as(saving.save_as)
        self._base = os.path.join(saving.directory, "")  # noqa: PTH118 - a str prefix
        self._real = os.path.join(os.path.realpath(saving.directory), "")  # noqa: PTH118
        self._made: set[str] = set()  # directories known to exist

    def target(self, url: str, name: str, key: str | None) -> str:
        """Return where the body of ``url`` goes.

        Raises:
            SaveError: The name resolves outside the directory (through a symlink).
        """
        relative = self._namer(url, name, key)
        file = self._base + relative
        if self.saving.save_as != "hash":
            real = os.path.realpath(file)
            if not real.startswith(self._real):
                raise SaveError(
                    f"{relative!r} would be written outside --save-dir (a symlink in it "
                    f"leads to {real!r}): nothing written"
                )
        return file

    async def save(  # noqa: PLR0917 - one request's setting
        self,
        request: Callable[..., Awaitable[Reply]],
        method: str,
        url: str,
        file: str,
        line: int,
        max_body: int | None,
        *,
        content: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        previous: str | None = None,
    ) -> tuple[Reply, str | None, int | None]:
        """Stream the body to ``file``; return the reply, the file, the byte resumed from.

        ``content`` and ``headers`` are the request's own; ``previous``: the file
        of an earlier run, kept as it is on a 304 (``--recrawl``).
        """
        self._directory(os.path.dirname(file))  # noqa: PTH120 - a str path
        download = _Download(self, file, line, previous)
        try:
            return await download.run(request, method, url, max_body, content, headers)
        finally:
            download.close()

    def _directory(self, path: str) -> None:
        if path in self._made:
            return
        try:
            os.makedirs(path, exist_ok=True)  # noqa: PTH103 - a str path
        except OSError as exc:
            raise SaveError(f"cannot make {path!r}: {exc.strerror or exc}") from exc
        self._made.add(path)


def _open_part(path: str, flags: int) -> int:
    """Open a part file, never through a symlink put in its place."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SaveError(f"cannot write {path!r}: {exc.strerror or exc}") from exc


class _Download:
    """One body on its way to its file (see :meth:`Saver.save`).

    With ``--continue`` the part is ``FILE.part``, opened and locked (``flock``)
    before the request: its size is where the download goes on from, and a second
    download of the same file (another line, another process) finds it locked and
    takes a part of its own (``FILE.LINE.part``, not resumable). Without, the part is
    ``FILE.LINE.part``, opened when the reply's head says a body is to be saved.
    """

    __slots__ = (
        "fd",
        "file",
        "handle",
        "incomplete",
        "keep",
        "offset",
        "part",
        "previous",
        "renamed",
        "resume",
        "saver",
    )

    def __init__(self, saver: Saver, file: str, line: int, previous: str | None) -> None:
        self.saver = saver
        self.file = file
        self.previous = previous
        self.handle: IO[bytes] | None = None
        self.renamed: str | None = file  # where the part goes; None: nowhere
        self.offset = 0
        self.incomplete = False  # a 206 that ends before the file does
        self.fd: int | None = None
        self.resume = False
        if saver.saving.resume:
            self.resume = self._lock(f"{file}.part")
        if not self.resume:
            self.part = f"{file}.{line}.part"
        self.keep = self.resume  # a failed download's part is kept (--continue)

    def _lock(self, part: str) -> bool:
        """Open and lock ``part`` for resuming; False: another download holds it."""
        import fcntl  # noqa: PLC0415 - with --continue only

        fd = _open_part(part, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd, self.part = fd, part
        self.offset = os.fstat(fd).st_size
        return True

    async def run(  # noqa: PLR0917 - one request
        self,
        request: Callable[..., Awaitable[Reply]],
        method: str,
        url: str,
        max_body: int | None,
        content: bytes | None,
        own: Sequence[tuple[str, str]],
    ) -> tuple[Reply, str | None, int | None]:
        headers = list(own)
        if self.resume:
            headers.append(("Accept-Encoding", "identity"))  # ranges of the bytes as stored
            if self.offset:
                headers.append(("Range", f"bytes={self.offset}-"))
                validator = _validator(self.part)
                if validator:
                    headers.append(("If-Range", validator))
        try:
            reply = await request(
                method,
                url,
                body=self.write,
                max_body=max_body,
                on_head=self.head,
                content=content,
                headers=headers,
            )
            self.close()
            file = self.finish(reply)
        except BaseException:
            self.close()
            self.drop()
            raise
        status = reply.status
        done = status == 416 and file is not None  # the part was the whole file
        resumed = self.offset if status == 206 or done else None
        return reply, file, resumed

    def head(self, status: int, headers: Mapping[str, str]) -> None:
        """Open the part as the response says: append (206), afresh, or not at all."""
        if self.resume:
            self._resumed_head(status, headers)
        elif status == 304 or (status >= 400 and os.path.exists(self.file)):  # noqa: PTH110
            # Nothing to write; an error page never replaces a body saved before.
            self.renamed = None
            return
        else:
            self.handle = os.fdopen(_open_part(self.part, os.O_WRONLY | os.O_TRUNC), "wb")
        if self.handle is not None and self.saver.saving.content_disposition:
            given = disposition_name(headers.get("Content-Disposition"))
            if given is not None:
                self.renamed = os.path.join(os.path.dirname(self.file), given)  # noqa: PTH118, PTH120

    def _resumed_head(self, status: int, headers: Mapping[str, str]) -> None:
        """Open the part for a resumable download's reply (see the module docstring)."""
        assert self.fd is not None
        encoded = headers.get("Content-Encoding", "identity").lower() not in {"identity", ""}
        if status == 416 and self.offset and _total(headers) == self.offset:
            return  # the part is the whole file: renamed as it is
        if status not in {200, 206}:
            # A 304, a redirect, an error page: the part stays as it was; a 416 of
            # another length says it is no beginning of this file any more.
            self.renamed = None
            if status == 416:
                os.ftruncate(self.fd, 0)
            return
        if status == 206 and self.offset:
            first, last, total = _content_range(headers)
            if first != self.offset or encoded:
                raise SaveError(
                    f"asked for the rest from byte {self.offset:,}, the server sent "
                    f"{headers.get('Content-Range')!r}"
                    f"{' content-encoded' if encoded else ''}: the part is kept"
                )
            self.incomplete = total is not None and last is not None and last + 1 < total
            os.lseek(self.fd, 0, os.SEEK_END)
        else:  # all of it, from the start
            self.offset = 0
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
            _store_validator(self.part, headers.get("ETag") or headers.get("Last-Modified"))
            self.keep = not encoded  # decoded bytes cannot be resumed by their offsets
        self.handle = os.fdopen(os.dup(self.fd), "ab" if self.offset else "wb")

    def write(self, chunk: bytes) -> None:
        handle = self.handle
        if handle is None:
            return  # a 304, or an error page: not saved
        try:
            handle.write(chunk)
        except OSError as exc:
            raise SaveError(f"cannot write {self.part!r}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Close the part (flushed), and its lock."""
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError as exc:
                raise SaveError(f"cannot write {self.part!r}: {exc.strerror or exc}") from exc
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # and its flock

    def finish(self, reply: Reply) -> str | None:
        """Rename the part into place; return the record's file."""
        if reply.status == 304:
            previous = self.previous
            return previous if previous is not None and os.path.exists(previous) else None  # noqa: PTH110
        if self.incomplete:
            raise SaveError(
                f"the server sent {reply.headers.get('Content-Range')!r}, not the whole "
                f"rest: the part is kept, to be resumed"
            )
        target = self.renamed
        if target is None:
            with contextlib.suppress(OSError):
                if not os.stat(self.part).st_size:  # noqa: PTH116 - a str path
                    os.unlink(self.part)  # noqa: PTH108 - an empty part: no use
            return None
        _store_validator(self.part, None)  # the body is whole: no validator to keep
        try:
            if target != self.file:  # a Content-Disposition name: never over another file
                target = _claim(target)
            os.replace(self.part, target)  # noqa: PTH105 - str paths
        except OSError as exc:
            raise SaveError(f"cannot rename {self.part!r}: {exc.strerror or exc}") from exc
        return target

    def drop(self) -> None:
        """Remove the part of a failed download, unless --continue keeps it."""
        if self.keep:
            with contextlib.suppress(OSError):
                if os.stat(self.part).st_size:  # noqa: PTH116 - a str path
                    return
        with contextlib.suppress(OSError):
            os.unlink(self.part)  # noqa: PTH108 - a str path
        _store_validator(self.part, None)


def _claim(path: str) -> str:
    """Return ``path``, or ``path.1``, ``path.2``...: the first name that was free, now taken.

    Taken by creating it (``O_EXCL``), so that two downloads named alike by their
    servers never write one file, and a name never replaces a file already there
    (wget's way).
    """
    for number in range(_NAMED_MOST):
        name = path if number == 0 else f"{path}.{number}"
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        except FileExistsError:
            continue
        return name
    raise SaveError(f"{path!r} and {_NAMED_MOST - 1} numbered names after it exist already")


def _store_validator(part: str, value: str | None) -> None:
    """Keep a part's validator (``ETag`` or ``Last-Modified``), or forget it (None).

    As the part's extended attribute; where the file system has none (some NFS,
    vfat, macOS's os module), in a file beside it (``PART.validator``).
    """
    sidecar = f"{part}.validator"
    if value is None:
        with contextlib.suppress(OSError, AttributeError):
            os.removexattr(part, _XATTR)
        with contextlib.suppress(OSError):
            os.unlink(sidecar)  # noqa: PTH108 - a str path
        return
    try:
        os.setxattr(part, _XATTR, value.encode("utf-8", "replace"))
    except (OSError, AttributeError):
        with (
            contextlib.suppress(OSError),
            open(sidecar, "w", encoding="utf-8", errors="replace") as file,  # noqa: PTH123
        ):
            file.write(value)


def _validator(part: str) -> str | None:
    try:
        return os.getxattr(part, _XATTR).decode("utf-8", "replace")
    except (OSError, AttributeError):
        pass
    try:
        with open(f"{part}.validator", encoding="utf-8") as file:  # noqa: PTH123
            return file.read() or None
    except OSError:
        return None


def _content_range(headers: Mapping[str, str]) -> tuple[int | None, int | None, int | None]:
    """Return the first byte, last byte and length of ``Content-Range: bytes A-B/T``."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", headers.get("Content-Range") or "")
    if match is None:
        return None, None, None
    total = match.group(3)
    return int(match.group(1)), int(match.group(2)), None if total == "*" else int(total)


def _total(headers: Mapping[str, str]) -> int | None:
    """Return the length of ``Content-Range: bytes */T`` (a 416's), or None."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", headers.get("Content-Range") or "")
    return None if match is None else int(match.group(1))
