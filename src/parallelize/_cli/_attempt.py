"""One attempt at a URL for ``fetch``: the request, its body drained or saved, its line.

Shared by the action in this process and the one in a child process
(``--processes``, ``_fetch_remote.py``), which imports it without the rest of
the command.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from parallelize import parse_retry_after
from parallelize.http import Reply

from ._fields import fragment, response_fields
from ._request import RequestShape
from ._request_lines import RequestLine

__all__ = ("HTTPStatusError", "SaveError", "make_exchange", "save_name")


class HTTPStatusError(Exception):
    """A response with a status >= 400: a failed item whose record keeps the response.

    ``status`` and ``retry_after`` are read by parallelize itself: a 429, 503 or 504
    backs off ``--adaptive``, and a ``Retry-After`` header sets the delay of the
    next attempt.
    """

    def __init__(  # noqa: PLR0917 - one response's account, built in one place
        self,
        status: int,
        reason: str | None,
        final_url: str,
        size: int,
        file: str | None,
        elapsed: float,
        retry_after: float | None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Describe the response; the message is ``"404 Not Found"``."""
        super().__init__(f"{status} {reason}" if reason else str(status))
        self.fields = fields  # --fields of the response, for its record
        self.status = status
        self.reason = reason
        self.final_url = final_url
        self.size = size
        self.file = file
        self.elapsed = elapsed
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle it whole: it comes back from a child process (``--processes``)."""
        return (
            type(self),
            (
                self.status,
                self.reason,
                self.final_url,
                self.size,
                self.file,
                self.elapsed,
                self.retry_after,
                self.fields,
            ),
        )


class SaveError(OSError):
    """The body could not be written under ``--save-dir``."""


def save_name(url: str) -> str:
    """Return the file name of ``url``'s body under ``--save-dir``: its SHA-256, in hex."""
    return hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()


def make_exchange(
    request: Callable[..., Awaitable[Reply]],
    shape: RequestShape,
    save_dir: str | None,
    max_body: int | None,
    clock: Callable[[], float],
    *,
    fields: tuple[str, ...] = (),
) -> Callable[[int, str, float, int], Awaitable[str]]:
    """Return one attempt at a URL: the request, its body drained or saved, its line.

    ``first`` is when the item's first attempt started (on ``clock``), ``attempt``
    this attempt's number: both go into the record. A status >= 400 raises
    :class:`HTTPStatusError`. Shared by the action in this process and the one in
    a child process (``--processes``), which is sent ``first`` and ``attempt``.
    """
    prefix = None if save_dir is None else os.path.join(save_dir, "")  # noqa: PTH118 - a str prefix, joined per item
    method = shape.method
    raw = request
    if shape.content is not None or shape.headers:  # else the request as it was: no cost
        request = functools.partial(request, content=shape.content, headers=shape.headers)
    quote = encode_basestring_ascii

    async def exchange(line: int, url: str, first: float, attempt: int) -> str:
        file = None
        send, how, keyed, name = request, method, "", url
        if type(url) is RequestLine:  # --requests: this line's own method, body, headers
            send, how = _line_request(raw, shape, url)
            name = url.journal_key  # two bodies for one URL: two files
            if url.key is not None:
                keyed = f', "key": {quote(url.key)}'
        if prefix is None:
            reply = await send(how, url, body="discard", max_body=max_body)
        else:
            file = f"{prefix}{save_name(name)}"
            reply = await _save(send, how, url, max_body, file, line)
        elapsed = int((clock() - first) * 1e6) / 1e6  # round(x, 6) costs a dtoa
        status = reply.status
        if status >= 400:
            header = reply.headers.get("Retry-After")
            retry_after = None if header is None else parse_retry_after(header)
            raise HTTPStatusError(
                status,
                reply.reason,
                reply.url,
                reply.size,
                file,
                elapsed,
                retry_after,
                response_fields(fields, reply.headers) if fields else None,
            )
        # The line by hand, as ENCODE would write it (a test holds them equal): half
        # the cost of building a dict and encoding it, at thousands of URLs a second.
        quoted = quote(url)
        final = quoted if reply.url == url else quote(reply.url)
        saved = "" if file is None else f', "file": {quote(file)}'
        if fields:  # --fields, after the rest
            keyed += fragment(response_fields(fields, reply.headers))
        return (
            f'{{"url": {quoted}, "final_url": {final}, "status": {status}, '
            f'"bytes": {reply.size}, "elapsed": {elapsed!r}, "attempts": {attempt}, '
            f'"error": null{saved}{keyed}}}'
        )

    return exchange


def _line_request(
    raw: Callable[..., Awaitable[Reply]], shape: RequestShape, line: RequestLine
) -> tuple[Callable[..., Awaitable[Reply]], str]:
    """Return a request line's request and method: its own, over the command's."""
    content = shape.content if line.content is None else line.content
    headers = list(shape.headers)
    if line.content is not None:  # its own body: the command's type is not its type
        headers = [(n, v) for n, v in headers if n.lower() not in {"content-type", "accept"}]
    headers += line.headers
    given = {name.lower() for name, _ in line.headers}
    if line.json_body and "content-type" not in given:
        headers.append(("Content-Type", "application/json"))
    if line.method is not None:
        method = line.method
    elif line.content is not None and not shape.method_given:
        method = "POST"  # a body of its own, and no -X: as curl -d does
    else:
        method = shape.method
    return functools.partial(raw, content=content, headers=headers), method


async def _save(  # noqa: PLR0917 - one request's setting
    request: Callable[..., Awaitable[Reply]],
    method: str,
    url: str,
    max_body: int | None,
    file: str,
    line: int,
) -> Reply:
    """Stream the body to ``file`` (through a ``.part`` file); return the reply.

    Written chunk by chunk, never held whole. The writes are plain blocking writes
    on the loop: they go to the page cache in microseconds, less than a thread hop
    per chunk would cost. The ``.part`` name carries the line number, so that two
    lines with the same URL never write the same file at once.
    """
    part = Path(f"{file}.{line}.part")
    try:
        handle = part.open("wb")  # noqa: ASYNC230 - see the docstring
    except OSError as exc:
        raise SaveError(f"cannot write {str(part)!r}: {exc.strerror or exc}") from exc

    def write(chunk: bytes) -> None:
        try:
            handle.write(chunk)
        except OSError as exc:
            raise SaveError(f"cannot write {str(part)!r}: {exc.strerror or exc}") from exc

    try:
        reply = await request(method, url, body=write, max_body=max_body)
        handle.close()
        try:
            part.replace(file)  # noqa: ASYNC240 - see the docstring
        except OSError as exc:
            raise SaveError(f"cannot rename {str(part)!r}: {exc.strerror or exc}") from exc
    except BaseException:
        handle.close()
        with contextlib.suppress(OSError):
            part.unlink()  # noqa: ASYNC240 - see the docstring
        raise
    return reply
