"""One attempt at a URL for ``fetch``: the request, its body drained or saved, its line.

Shared by the action in this process and the one in a child process
(``--processes``, ``_fetch_remote.py``), which imports it without the rest of
the command.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from parallelize import parse_retry_after
from parallelize.http import Reply

from ._errors import SaveError
from ._fields import fragment, response_fields
from ._request import RequestShape
from ._request_lines import RequestLine

if TYPE_CHECKING:
    from ._saving import Saving

__all__ = ("HTTPStatusError", "SaveError", "make_exchange")


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


def make_exchange(
    request: Callable[..., Awaitable[Reply]],
    shape: RequestShape,
    saving: Saving | None,
    max_body: int | None,
    clock: Callable[[], float],
    *,
    fields: tuple[str, ...] = (),
    recrawl: str | None = None,
) -> Callable[[int, str, float, int], Awaitable[str]]:
    """Return one attempt at a URL: the request, its body drained or saved, its line.

    ``first`` is when the item's first attempt started (on ``clock``), ``attempt``
    this attempt's number: both go into the record. A status >= 400 raises
    :class:`HTTPStatusError`. Shared by the action in this process and the one in
    a child process (``--processes``), which is sent ``first`` and ``attempt``.
    ``recrawl``: an earlier journal, whose records make each request conditional.
    """
    send = _sender(request, shape, saving, max_body, recrawl)
    drain = _drain(request, shape, max_body)
    quote = encode_basestring_ascii

    async def exchange(line: int, url: str, first: float, attempt: int) -> str:
        if send is None:  # the body read and counted: fetch's own, one await less
            reply = await drain(url)
            file = resumed = None
        else:
            reply, file, resumed = await send(line, url)
        elapsed = int((clock() - first) * 1e6) / 1e6  # round(x, 6) costs a dtoa
        status = reply.status
        if status >= 400 and resumed is None:
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
                response_fields(fields, reply.headers, reply.trace) if fields else None,
            )
        # The line by hand, as ENCODE would write it (a test holds them equal): half
        # the cost of building a dict and encoding it, at thousands of URLs a second.
        quoted = quote(url)
        final = quoted if reply.url == url else quote(reply.url)
        saved = "" if file is None else f', "file": {quote(file)}'
        if resumed is not None:
            saved += f', "resumed_from": {resumed}'
        if type(url) is RequestLine and url.key is not None:
            saved += f', "key": {quote(url.key)}'
        if fields:  # --fields, after the rest
            saved += fragment(response_fields(fields, reply.headers, reply.trace))
        return (
            f'{{"url": {quoted}, "final_url": {final}, "status": {status}, '
            f'"bytes": {reply.size}, "elapsed": {elapsed!r}, "attempts": {attempt}, '
            f'"error": null{saved}}}'
        )

    return exchange


Sent = tuple[Reply, str | None, int | None]  # the reply, its saved file, resumed from byte


def _sender(
    request: Callable[..., Awaitable[Reply]],
    shape: RequestShape,
    saving: Saving | None,
    max_body: int | None,
    recrawl: str | None,
) -> Callable[[int, str], Awaitable[Sent]] | None:
    """Return how one URL is requested and saved (or made conditional); None: neither."""
    if saving is None and recrawl is None:
        return None
    from ._saving import Saver  # noqa: PLC0415 - with --save-dir only

    saver = None if saving is None else Saver(saving)
    previous = None
    if recrawl is not None:
        from ._recrawl import Previous  # noqa: PLC0415 - sqlite3, with --recrawl only

        previous = Previous(recrawl)
    method = shape.method

    async def send(line: int, url: str) -> Sent:
        how, content, headers = method, shape.content, shape.headers
        name, key = url, None
        if type(url) is RequestLine:
            how, content, headers = _line_request(shape, url)
            name, key = url.journal_key, url.key  # two bodies for one URL: two files
        earlier = None
        if previous is not None:
            conditions, earlier = previous.conditions(name)
            if saver is not None and (earlier is None or not os.path.exists(earlier)):  # noqa: ASYNC240, PTH110
                conditions = []  # a 304 would leave no body at all: ask for it whole
            headers = (*headers, *conditions)
        if saver is None:
            reply = await request(
                how, url, body="discard", max_body=max_body, content=content, headers=headers
            )
            return reply, None, None
        return await saver.save(
            request,
            how,
            url,
            saver.target(url, name, key),
            line,
            max_body,
            content=content,
            headers=headers,
            previous=earlier,
        )

    if previous is not None:
        weakref.finalize(send, previous.close)  # closed with the action (or at exit)
    return send


def _drain(
    request: Callable[..., Awaitable[Reply]], shape: RequestShape, max_body: int | None
) -> Callable[[str], Awaitable[Reply]]:
    """Return how one URL is requested when its body is only read and counted.

    A plain URL is one call of the client (the command's body and headers bound
    once); a request line of ``--requests`` its own method, body and headers.
    """
    method = shape.method
    plain = request
    if shape.content is not None or shape.headers:  # else the request as it was: no cost
        plain = functools.partial(request, content=shape.content, headers=shape.headers)

    def drain(url: str) -> Awaitable[Reply]:
        if type(url) is RequestLine:  # --requests: this line's own method, body, headers
            how, content, headers = _line_request(shape, url)
            return request(
                how, url, body="discard", max_body=max_body, content=content, headers=headers
            )
        return plain(method, url, body="discard", max_body=max_body)

    return drain


def _line_request(
    shape: RequestShape, line: RequestLine
) -> tuple[str, bytes | None, tuple[tuple[str, str], ...]]:
    """Return a request line's method, body and headers: its own, over the command's."""
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
    return method, content, tuple(headers)
