"""The seam every HTTP backend implements, and the steps of a request they share.

:class:`Client` (one method, ``request``) and its :class:`Reply`; checking a URL
before it is sent, reading a body (kept, discarded or handed on, within
``max_body``), and the errors a limit of the client raises, worded the same on
every backend.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol, final

from ._http_errors import BodyTooLargeError, InvalidURLError, RedirectError, TooManyRedirectsError
from ._http_urls import MAX_URL_LENGTH, too_long

__all__ = (
    "NO_BODY_METHODS",
    "Bandwidth",
    "Body",
    "Client",
    "Reply",
    "Trace",
    "bad_redirect",
    "check_length",
    "check_url",
    "finish_reply",
    "origin_of",
    "peer_text",
    "read_body",
    "redirected_headers",
    "too_large",
    "too_many_redirects",
)

Body = Literal["keep", "discard"] | Callable[[bytes], object]


@final
class Trace:
    """How a request went, with ``open_client(trace=True)`` (``Reply.trace``).

    Times are seconds from the request's start, on the event loop's clock.

    Attributes:
        redirects: The redirects followed, in order: ``(url, status)`` of each
            response that sent the request on.
        remote_address: ``"address:port"`` of the server that sent the final
            response (``"[::1]:443"`` for IPv6), or None where the client does not
            tell (pyreqwest).
        dns: Seconds spent resolving names, or None: none was needed (a connection
            reused, a cached name) or the client does not tell (pyreqwest).
        connect: Seconds spent opening connections (TCP, and TLS for https://),
            or None: a connection was reused, or the client does not tell
            (pyreqwest).
        first_byte: Seconds until the final response's headers were read.
        total: Seconds until its body was read to the end.
    """

    __slots__ = ("connect", "dns", "first_byte", "redirects", "remote_address", "total")

    def __init__(self) -> None:
        """Start empty; the backend fills it in as the request goes."""
        self.redirects: list[tuple[str, int]] = []
        self.remote_address: str | None = None
        self.dns: float | None = None
        self.connect: float | None = None
        self.first_byte = 0.0
        self.total = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the trace as JSON-ready values (the record fields of ``fetch``)."""
        return {
            "redirects": [{"url": url, "status": status} for url, status in self.redirects],
            "remote_address": self.remote_address,
            "timing": {
                "dns": _rounded(self.dns),
                "connect": _rounded(self.connect),
                "first_byte": _rounded(self.first_byte),
                "total": _rounded(self.total),
            },
        }

    def __repr__(self) -> str:
        """``<Trace 2 redirects, first byte 0.012 s, total 0.030 s>``."""
        return (
            f"<Trace {len(self.redirects)} redirects, first byte {self.first_byte:.3f} s, "
            f"total {self.total:.3f} s>"
        )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def peer_text(peer: Any) -> str | None:
    """Return a socket's peer name as ``"address:port"`` (``"[v6]:port"``), or None."""
    if not isinstance(peer, tuple) or len(peer) < 2:
        return None
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


@final
class Reply:
    """A response, its body read: kept, discarded or handed to your function.

    Attributes:
        status: The HTTP status of the last response (after redirects).
        reason: Its reason phrase (the standard one where the backend has none).
        url: The final URL, after redirects.
        headers: Its headers, a case-insensitive mapping.
        size: The body's length in bytes, as read (decompressed).
        body: The body with ``body="keep"`` (the default), else ``b""``.
        trace: How the request went (:class:`Trace`) with ``open_client(trace=True)``,
            else None. Added in 0.2.
    """

    __slots__ = ("body", "headers", "reason", "size", "status", "trace", "url")

    def __init__(  # noqa: PLR0917 - built by the backends only
        self,
        status: int,
        reason: str,
        url: str,
        headers: Mapping[str, str],
        size: int,
        body: bytes,
        trace: Trace | None = None,
    ) -> None:
        """Hold what the backend read."""
        self.status = status
        self.reason = reason
        self.url = url
        self.headers = headers
        self.size = size
        self.body = body
        self.trace = trace

    def __repr__(self) -> str:
        """``<Reply 200 https://... 5120 bytes>``."""
        return f"<Reply {self.status} {self.url} {self.size} bytes>"


class Client(Protocol):
    """What every backend offers: one method, the same arguments, replies and errors."""

    name: str

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: Body = "keep",
        max_body: int | None = None,
        content: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        on_head: Callable[[int, Mapping[str, str]], object] | None = None,
    ) -> Reply:
        """Send ``method url``, read the body, return the :class:`Reply`.

        Args:
            method: ``"GET"``, ``"HEAD"``, ...
            url: An absolute http:// or https:// URL.
            content: The request's body, sent with its ``Content-Length`` (a POST,
                PUT or PATCH without one sends ``Content-Length: 0``). No
                ``Content-Type`` is added: give one in ``headers``. Added in 0.2.
            headers: ``(name, value)`` pairs for this request, after the client's
                own (a name given here replaces the client's). A redirect to
                another origin drops ``Authorization`` and ``Cookie``; one that
                turns the method into GET (303, or 301/302 after a POST) drops the
                body and its ``Content-*`` headers, as browsers and curl do.
                Added in 0.2.
            body: ``"keep"`` (into ``Reply.body``), ``"discard"`` (read and
                counted only), or a function called with each chunk in order
                (write them to a file: the body is never held whole).
            max_body: Read no more than this many bytes; a longer body raises
                :class:`BodyTooLargeError` (before reading, when the server
                sends its length).
            on_head: Called with the final response's status and headers before
                its body is read (after ``max_body``'s check of its length): to
                choose where a ``body=`` function writes (a 206 appends, a 304
                writes nothing). What it raises ends the request. Added in 0.2.

        Raises:
            HTTPClientError: One of its subclasses, by kind.
        """
        ...


# Methods that define no meaning for a body: the others send Content-Length: 0
# without one (RFC 9110 8.6), as aiohttp does by itself.
NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
# Dropped from a request's own headers on a redirect to another origin (curl's
# rule without --location-trusted; aiohttp's own for Authorization).
_CREDENTIALS: Final = frozenset({"authorization", "cookie"})


def origin_of(url: str) -> tuple[str, str, int | None]:
    """Return ``url``'s scheme, host and port (the default port as None)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port
    if port == {"http": 80, "https": 443}.get(parts.scheme.lower()):
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def redirected_headers(
    headers: Sequence[tuple[str, str]], *, other_origin: bool, to_get: bool
) -> Sequence[tuple[str, str]]:
    """Return a request's own headers for the next hop of a redirect.

    To another origin: without ``Authorization`` and ``Cookie``. Turned into a GET
    (its body dropped): without the ``Content-*`` headers that described the body.
    """
    if not headers or not (other_origin or to_get):
        return headers
    return [
        (name, value)
        for name, value in headers
        if not (other_origin and name.lower() in _CREDENTIALS)
        and not (to_get and name.lower().startswith("content-"))
    ]


def check_url(url: str) -> None:
    """Raise :class:`InvalidURLError` unless ``url`` is absolute http(s) with a host.

    The common case by its prefix alone (urlsplit would cost 3 us a request); the
    backend's own parser refuses the rest of what is malformed.
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURLError(too_long(len(url)))
    rest = url[7:] if url.startswith("http://") else url[8:] if url.startswith("https://") else None
    if rest is not None:
        if not rest or rest[0] in "/?#:@":
            raise InvalidURLError("the URL has no host")
        return
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise InvalidURLError(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidURLError("not an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidURLError("the URL has no host")


def too_large(max_body: int) -> BodyTooLargeError:
    """Return the error of a body longer than ``max_body`` bytes."""
    return BodyTooLargeError(f"the body is larger than {max_body:,} bytes (max_body)")


def too_many_redirects(most: int) -> TooManyRedirectsError:
    """Return the error of a request redirected more than ``most`` times."""
    return TooManyRedirectsError(f"more than {most} redirects")


def bad_redirect(url: str, location: str) -> RedirectError:
    """Return the error of a redirect from ``url`` to a URL we cannot fetch."""
    try:
        check_url(urllib.parse.urljoin(url, location))
        reason = "not a valid URL"
    except InvalidURLError as exc:
        reason = str(exc)
    return RedirectError(f"a redirect to {location!r}: {reason}")


class Bandwidth:
    """A byte budget a second, shared by every body a client reads (``limit_rate``).

    A token bucket of one second's bytes: a read that overdraws it sleeps for the
    deficit, so that many bodies read at once share the rate (each waits its turn
    in the deficit), and an idle client saves up at most one second of it.
    """

    __slots__ = ("clock", "rate", "stamp", "tokens")

    def __init__(self, per_second: float) -> None:
        self.rate = per_second
        self.clock = time.monotonic
        self.stamp = self.clock()
        self.tokens = per_second

    async def spend(self, size: int) -> None:
        """Take ``size`` bytes of the budget; sleep while it is overdrawn."""
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate) - size
        self.stamp = now
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


async def read_body(
    read: Callable[[], Awaitable[Any]],
    body: Body,
    max_body: int | None,
    bandwidth: Bandwidth | None = None,
) -> tuple[int, bytes]:
    """Read a body to its end by ``read()`` (a chunk, empty or None at the end).

    Returns its size and, with ``body="keep"``, the body itself.
    """
    size = 0
    if body == "discard" and max_body is None and bandwidth is None:  # fetch's: tight
        while chunk := await read():
            size += len(chunk)
        return size, b""
    chunks = []
    keep = body == "keep"
    write = None if isinstance(body, str) else body
    while chunk := await read():
        size += len(chunk)
        if max_body is not None and size > max_body:
            raise too_large(max_body)
        if bandwidth is not None:
            await bandwidth.spend(len(chunk))
        if write is not None:
            write(bytes(chunk))
        elif keep:
            chunks.append(bytes(chunk))
    return size, b"".join(chunks)


async def finish_reply(  # noqa: PLR0917 - one response, as each backend has it
    status: int,
    reason: str,
    url: str,
    headers: Mapping[str, str],
    length: int | None,
    read: Callable[[], Awaitable[Any]],
    how: tuple[Body, int | None, Callable[[int, Mapping[str, str]], object] | None],
    bandwidth: Bandwidth | None,
    trace: Trace | None,
    started: float,
) -> Reply:
    """Take a final response from its head to its Reply, the same on every backend.

    ``max_body``'s check of the announced ``length``, ``on_head``, the body read
    (``how`` is the request's ``body``, ``max_body`` and ``on_head``), the
    trace's total, the :class:`Reply`.
    """
    body, max_body, on_head = how
    if max_body is not None:
        check_length(length, max_body)
    if on_head is not None:
        on_head(status, headers)
    size, kept = await read_body(read, body, max_body, bandwidth)
    if trace is not None:
        trace.total = time.monotonic() - started
    return Reply(status, reason, url, headers, size, kept, trace)


def check_length(length: int | None, max_body: int) -> None:
    """Refuse a body by its announced length before reading any of it."""
    if length is not None and length > max_body:
        raise too_large(max_body)
