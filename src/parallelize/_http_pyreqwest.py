"""The pyreqwest backend of :func:`parallelize.http.open_client`, its errors mapped onto ours.

Redirects are followed here, not by reqwest, to know the final URL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import http
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

from ._http_client import (
    NO_BODY_METHODS,
    Bandwidth,
    Body,
    Client,
    Reply,
    Trace,
    bad_redirect,
    check_url,
    finish_reply,
    origin_of,
    read_body,
    redirected_headers,
    too_many_redirects,
)
from ._http_cookies import CookieHops, with_cookie
from ._http_errors import (
    ConnectError,
    ConnectTimeoutError,
    DNSError,
    HTTPClientError,
    InvalidURLError,
    ProtocolError,
    RequestTimeoutError,
    TLSError,
)
from ._http_settings import TLS, Proxies, Transport
from ._http_urls import too_long, wire_url

if TYPE_CHECKING:
    import pyreqwest.client

__all__ = ("open_pyreqwest",)

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# How long the interpreter's exit gives reqwest's runtime thread (see _settle_at_exit).
_SETTLE_SECONDS: Final = 0.02
# The standard reason phrase of each status: reqwest reads none.
_PHRASES: Final = {status.value: status.phrase for status in http.HTTPStatus}


@contextlib.asynccontextmanager
async def open_pyreqwest(  # noqa: PLR0917 - open_client's settings, passed on
    connections: int,
    headers: list[tuple[str, str]],
    max_redirects: int,
    timeout: float | None,  # noqa: ASYNC109
    proxies: Proxies,
    tls: TLS,
    wires: Transport,
) -> AsyncIterator[Client]:
    from pyreqwest.client import ClientBuilder  # noqa: PLC0415 - the extra, imported where used

    builder = (
        ClientBuilder()
        .max_connections(connections)
        .follow_redirects(False)  # followed here, to know the final URL  # noqa: FBT003
        .default_cookie_store(False)  # noqa: FBT003
        .gzip(True)  # noqa: FBT003
        .deflate(True)  # noqa: FBT003
    )
    if headers:
        builder = builder.default_headers(headers)
    if timeout is not None:
        builder = builder.timeout(dt.timedelta(seconds=timeout))
    if wires.http2:
        builder = builder.http2(True)  # noqa: FBT003
    if wires.connect_timeout is not None:
        builder = builder.connect_timeout(dt.timedelta(seconds=wires.connect_timeout))
    for (host, port), address in wires.resolve.items():
        builder = builder.resolve(host, address, port)  # reqwest: the URL's port is kept
    builder = _with_proxies_and_tls(builder, proxies, tls)
    _settle_at_exit()
    async with builder.build() as client:
        yield _Pyreqwest(client, max_redirects, timeout, wires)


def _with_proxies_and_tls(builder: Any, proxies: Proxies, tls: TLS) -> Any:
    """Return ``builder`` with our proxies and TLS settings."""
    from pyreqwest.proxy import ProxyBuilder  # noqa: PLC0415 - the extra, imported where used

    # Our proxies, never reqwest's own reading of the environment (whose order
    # differs: HTTP_PROXY before http_proxy, and "*" in NO_PROXY not for IPs).
    builder = builder.no_proxy()
    if proxies.is_used:
        no_proxy = ",".join(proxies.no_proxy) or None
        if proxies.http is not None:
            builder = builder.proxy(ProxyBuilder.http(proxies.http).no_proxy(no_proxy))
        if proxies.https is not None:
            builder = builder.proxy(ProxyBuilder.https(proxies.https).no_proxy(no_proxy))
    try:
        ca_pem, identity_pem = tls.ca_pem(), tls.identity_pem()
        if ca_pem is not None:
            builder = builder.add_root_certificate_pem(ca_pem)
        if identity_pem is not None:
            builder = builder.identity_pem(identity_pem)
    except Exception as exc:  # pyreqwest's error for a malformed PEM file
        raise ValueError(f"cannot load the TLS files: {exc}") from exc
    if not tls.verify:
        builder = builder.danger_accept_invalid_certs(True)  # noqa: FBT003
    return builder


def _settle_at_exit() -> None:
    """Let reqwest's runtime thread finish its Python work before the interpreter ends.

    pyreqwest 0.15's runtime thread still takes the GIL for a moment after the last
    requests (their wakers, the connections they leave). If it is waiting for the GIL
    when the interpreter starts finalizing, CPython ends that thread (``pthread_exit``),
    its Rust frames unwind through their GIL guard, and the whole process dies with
    "Fatal Python error: PyGILState_Release" (abort or segfault) after its work is done:
    a third of the runs of a program that ends right after 1,000 requests on the
    default event loop, one in eight of ``parallelize fetch --no-uvloop``. An exit
    handler (run before finalization starts) lets the GIL go for a moment; 1 ms was
    enough in every run measured, with both cores busy.
    """
    global _settle_registered  # noqa: PLW0603 - once per process
    if not _settle_registered:
        _settle_registered = True
        atexit.register(time.sleep, _SETTLE_SECONDS)


_settle_registered = False


@final
class _Pyreqwest:
    """The pyreqwest backend: reqwest's pool on its own runtime thread."""

    name = "pyreqwest"

    def __init__(
        self,
        client: pyreqwest.client.Client,
        max_redirects: int,
        timeout: float | None,
        wires: Transport,
    ) -> None:
        self._client = client
        self._max_redirects = max_redirects
        self._timeout = timeout
        self._bandwidth = None if wires.limit_rate is None else Bandwidth(wires.limit_rate)
        # A body read under limit_rate waits between chunks in Python, where reqwest's
        # timeout no longer runs (it has read the body into its buffers): _reply
        # holds the request to its timeout then, as aiohttp's Deadlines do.
        self._unpaced = self._bandwidth is None or timeout is None
        self._tracing = wires.trace
        self._cookies = None if wires.cookies is None else CookieHops(wires.cookies)

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
        """See :meth:`Client.request`."""
        check_url(url)
        hops = 0
        started = time.monotonic()
        trace = Trace() if self._tracing else None
        cookies = self._cookies
        try:
            while True:
                builder = self._builder(method, url, hops, started, content, headers, body)
                async with builder.build_streamed() as resp:
                    status = resp.status
                    if cookies is not None:
                        cookies.store(url, resp.headers.getall("set-cookie"))
                    location = None
                    if status in _REDIRECTS and self._max_redirects:
                        location = resp.get_header("location")
                    if location is not None:
                        hops += 1
                        if trace is not None:
                            trace.redirects.append((url, status))
                        method, url, content, headers = self._redirected(
                            hops, status, (method, url, content, headers), location
                        )
                        continue
                    if trace is None and max_body is None and on_head is None and self._unpaced:
                        size, kept = await read_body(
                            resp.body_reader.read_chunk, body, None, self._bandwidth
                        )
                        reason = _PHRASES.get(status, "")
                        return Reply(status, reason, url, resp.headers, size, kept)
                    return await self._reply(resp, url, body, max_body, on_head, trace, started)
        except HTTPClientError:
            raise
        except Exception as exc:
            mapped = _pyreqwest_mapped(exc, url)
            if mapped is None:
                raise
            raise mapped from exc

    async def _reply(  # noqa: PLR0917 - one response's setting
        self,
        resp: Any,
        url: str,
        body: Body,
        max_body: int | None,
        on_head: Callable[[int, Mapping[str, str]], object] | None,
        trace: Trace | None,
        started: float,
    ) -> Reply:
        """Read the final response's body; return its :class:`Reply`.

        A body handed to a function is read with no read-ahead (the request's
        ``streamed_read_buffer_limit(0)``): reqwest reads 64 KiB ahead by default,
        and drops what it read ahead when the body fails, where a cut download
        must keep every byte that came.
        """
        status = resp.status
        if trace is not None:
            trace.first_byte = time.monotonic() - started
        length = resp.get_header("content-length") if max_body is not None else None
        finished = finish_reply(
            status,
            _PHRASES.get(status, ""),
            url,
            resp.headers,
            int(length) if length is not None and length.isdigit() else None,
            resp.body_reader.read_chunk,
            (body, max_body, on_head),
            self._bandwidth,
            trace,
            started,
        )
        if self._unpaced:
            return await finished
        assert self._timeout is not None
        try:
            async with asyncio.timeout(max(self._timeout - (time.monotonic() - started), 0.0)):
                return await finished
        except TimeoutError:
            raise RequestTimeoutError(
                f"no complete reply within the client's timeout of {self._timeout:g} s"
            ) from None

    def _builder(  # noqa: PLR0917 - one hop's request
        self,
        method: str,
        url: str,
        hops: int,
        started: float,
        content: bytes | None,
        headers: Sequence[tuple[str, str]],
        body: Body = "keep",
    ) -> Any:
        """Return the request of one hop; a redirect gets the time left of the timeout.

        The jar's cookies for ``url`` join the request's own headers; a body handed
        to a function is read without read-ahead (see :meth:`_reply`).
        """
        if self._cookies is not None:
            headers = with_cookie(headers, self._cookies.header(url))
        try:
            builder = self._client.request(method, url)
        except ValueError as exc:  # pyreqwest's URL parser, and only it
            raise InvalidURLError(f"not a valid URL: {exc}") from exc
        if hops and self._timeout is not None:  # the client's timeout is per hop
            left = self._timeout - (time.monotonic() - started)
            builder = builder.timeout(dt.timedelta(seconds=max(left, 0.001)))
        if headers:
            builder = builder.headers(list(headers))
        if content:
            builder = builder.body_bytes(content)
        elif method not in NO_BODY_METHODS:  # reqwest sends none for an empty body
            builder = builder.header("Content-Length", "0")  # as aiohttp sends
        if not isinstance(body, str):
            builder = builder.streamed_read_buffer_limit(0)
        return builder

    def _redirected(self, hops: int, status: int, hop: _Hop, location: str) -> _Hop:
        """Return the next hop's method, URL, body and headers (as browsers do)."""
        method, url, content, headers = hop
        if hops > self._max_redirects:
            raise too_many_redirects(self._max_redirects)
        joined = urllib.parse.urljoin(url, location)
        try:
            check_url(joined)
        except InvalidURLError:
            raise bad_redirect(url, location) from None
        was = method
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = method if method == "HEAD" else "GET"
        content, headers = _next_hop(content, headers, url, joined, method != was)
        return method, joined, content, headers


# A hop's method, URL, body and own headers.
_Hop = tuple[str, str, "bytes | None", Sequence[tuple[str, str]]]


def _next_hop(
    content: bytes | None,
    headers: Sequence[tuple[str, str]],
    before: str,
    after: str,
    to_get: bool,
) -> tuple[bytes | None, Sequence[tuple[str, str]]]:
    """Return the body and own headers of a redirect's next hop (see Client.request)."""
    if to_get:
        content = None  # 303, or 301/302 after a POST: a GET
    if headers:
        other_origin = origin_of(after) != origin_of(before)
        headers = redirected_headers(headers, other_origin=other_origin, to_get=to_get)
    return content, headers


# What reqwest's error chain says, and the kind it means (checked in this order).
_CAUSES: Final = (
    ("dns error", DNSError),
    ("certificate", TLSError),
    ("tls", TLSError),
    ("ssl", TLSError),
    ("handshake", TLSError),
    ("invalidcontenttype", TLSError),  # rustls: the server does not speak TLS
    ("corrupt message", TLSError),
)


def _pyreqwest_mapped(error: Exception, url: str) -> HTTPClientError | None:
    """Return our error for pyreqwest's ``error`` (None: not pyreqwest's, raise it as is)."""
    mapped = _mapped_kind(error)
    if isinstance(mapped, InvalidURLError) and "not a valid Uri" in str(mapped):
        # Short enough as given, too long once percent-encoded (http's u16).
        mapped = InvalidURLError(too_long(len(wire_url(url))))
    return mapped


def _mapped_kind(error: Exception) -> HTTPClientError | None:
    from pyreqwest import exceptions  # noqa: PLC0415 - imported already by then

    if not isinstance(error, exceptions.PyreqwestError):
        return None  # yours (a body= function's), unchanged
    causes = getattr(error, "details", None) or {}
    chain = [cause["message"] for cause in causes.get("causes") or ()]
    root = chain[-1] if chain else ""
    text = f"{error.message}: {root}" if root else error.message
    ours: type[HTTPClientError]
    if isinstance(error, exceptions.ConnectTimeoutError):
        ours = ConnectTimeoutError
    elif isinstance(error, exceptions.RequestTimeoutError):
        ours = RequestTimeoutError
    elif isinstance(error, exceptions.BuilderError):
        ours = InvalidURLError
    elif isinstance(error, exceptions.ConnectError):
        lowered = " ".join(chain).lower()
        ours = next((kind for words, kind in _CAUSES if words in lowered), ConnectError)
    elif isinstance(error, exceptions.NetworkError):
        ours = ConnectError
    elif isinstance(error, exceptions.RequestError):
        ours = ProtocolError
    else:
        return None
    return ours(text)
