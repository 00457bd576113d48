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
    raw = text.encode("utf-8", "surrogateescape")
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
    parts = ["%2E%2E" if part == ".." else part for part in parts]
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
    if last in {"", ".", ".."}:
        return None
    return _segment(last)


class Saver:
    """Saves the bodies of one fetch under its directory (see the module docstring)."""

    __slots__ = ("_base", "_busy", "_made", "_namer", "_real", "saving")

    def __init__(self, saving: Saving) -> None:
        self.saving = saving
        self._namer = parse_save_as(saving.save_as)
        self._base = os.path.join(saving.directory, "")  # noqa: PTH118 - a str prefix
        self._real = os.path.join(os.path.realpath(saving.directory), "")  # noqa: PTH118
        self._made: set[str] = set()  # directories known to exist
        self._busy: set[str] = set()  # files being written now (--continue's .part)

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
        resume = self.saving.resume and file not in self._busy
        part = f"{file}.part" if resume else f"{file}.{line}.part"
        self._directory(os.path.dirname(part))  # noqa: PTH120 - a str path
        if resume:
            self._busy.add(file)
        try:
            download = _Download(self, part, file, resume, previous)
            return await download.run(request, method, url, max_body, content, headers)
        finally:
            self._busy.discard(file)

    def _directory(self, path: str) -> None:
        if path in self._made:
            return
        try:
            os.makedirs(path, exist_ok=True)  # noqa: PTH103 - a str path
        except OSError as exc:
            raise SaveError(f"cannot make {path!r}: {exc.strerror or exc}") from exc
        self._made.add(path)


class _Download:
    """One body on its way to its file (see :meth:`Saver.save`)."""

    __slots__ = ("file", "handle", "offset", "part", "previous", "renamed", "resume", "saver")

    def __init__(
        self, saver: Saver, part: str, file: str, resume: bool, previous: str | None
    ) -> None:
        self.saver = saver
        self.part = part
        self.file = file
        self.resume = resume
        self.previous = previous
        self.handle: IO[bytes] | None = None
        self.renamed: str | None = file  # where the part goes; None: nowhere
        self.offset = 0
        if resume:
            with contextlib.suppress(OSError):
                self.offset = os.stat(part).st_size  # noqa: PTH116 - a str path

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
        if status == 304 or (status >= 400 and self.resume):
            # Nothing to write; an error page must not replace a partial download,
            # but a 416 that says the part is the whole file finishes it.
            whole = status == 416 and self.offset and _total(headers) == self.offset
            if not whole:
                self.renamed = None
            return
        mode = "wb"
        if status == 206 and self.offset:
            start = _range_start(headers)
            if start != self.offset:
                raise SaveError(
                    f"asked for the rest from byte {self.offset:,}, the server sent "
                    f"{headers.get('Content-Range')!r}: the part is kept"
                )
            mode = "ab"
        else:
            self.offset = 0
        if self.saver.saving.content_disposition:
            given = disposition_name(headers.get("Content-Disposition"))
            if given is not None:
                self.renamed = os.path.join(os.path.dirname(self.file), given)  # noqa: PTH118, PTH120
        try:
            self.handle = open(self.part, mode)  # noqa: PTH123, SIM115 - see _save
        except OSError as exc:
            raise SaveError(f"cannot write {self.part!r}: {exc.strerror or exc}") from exc
        if self.resume:
            validator = headers.get("ETag") or headers.get("Last-Modified")
            if validator and mode == "wb":
                with contextlib.suppress(OSError, AttributeError):
                    os.setxattr(self.part, _XATTR, validator.encode("utf-8", "replace"))

    def write(self, chunk: bytes) -> None:
        handle = self.handle
        if handle is None:
            return  # a 304, or an error page while resuming: not saved
        try:
            handle.write(chunk)
        except OSError as exc:
            raise SaveError(f"cannot write {self.part!r}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()

    def finish(self, reply: Reply) -> str | None:
        """Rename the part into place; return the record's file."""
        if reply.status == 304:
            previous = self.previous
            return previous if previous is not None and os.path.exists(previous) else None  # noqa: PTH110
        target = self.renamed
        if target is None:
            return None
        try:
            os.replace(self.part, target)  # noqa: PTH105 - str paths
        except OSError as exc:
            raise SaveError(f"cannot rename {self.part!r}: {exc.strerror or exc}") from exc
        return target

    def drop(self) -> None:
        """Remove the part of a failed download, unless --continue keeps it."""
        if self.resume:
            with contextlib.suppress(OSError):
                if os.stat(self.part).st_size:  # noqa: PTH116 - a str path
                    return
        with contextlib.suppress(OSError):
            os.unlink(self.part)  # noqa: PTH108 - a str path


def _validator(part: str) -> str | None:
    try:
        return os.getxattr(part, _XATTR).decode("utf-8", "replace")
    except (OSError, AttributeError):
        return None


def _range_start(headers: Mapping[str, str]) -> int | None:
    """Return the first byte of ``Content-Range: bytes A-B/T``, or None."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", headers.get("Content-Range") or "")
    return None if match is None else int(match.group(1))


def _total(headers: Mapping[str, str]) -> int | None:
    """Return the length of ``Content-Range: bytes */T`` (a 416's), or None."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", headers.get("Content-Range") or "")
    return None if match is None else int(match.group(1))
