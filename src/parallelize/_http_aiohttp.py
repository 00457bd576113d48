"""The aiohttp backend of :func:`parallelize.http.open_client`, its errors mapped onto ours."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

from ._aio import Deadlines
from ._http_client import (
    Bandwidth,
    Body,
    Client,
    Reply,
    Trace,
    bad_redirect,
    check_url,
    finish_reply,
    origin_of,
    peer_text,
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
    RedirectError,
    RequestTimeoutError,
    TLSError,
    TooManyRedirectsError,
)
from ._http_settings import TLS, Proxies, Transport
from ._http_urls import MAX_URL_LENGTH, too_long, wire_url

if TYPE_CHECKING:
    import aiohttp

__all__ = ("open_aiohttp",)


@contextlib.asynccontextmanager
async def open_aiohttp(  # noqa: PLR0917 - open_client's settings, passed on
    connections: int,
    headers: list[tuple[str, str]],
    max_redirects: int,
    timeout: float | None,  # noqa: ASYNC109
    proxies: Proxies,
    tls: TLS,
    wires: Transport,
) -> AsyncIterator[Client]:
    import aiohttp  # noqa: PLC0415 - the extra, imported where used

    # A context of our own even without options: aiohttp's default one is made at
    # its import, so SSL_CERT_FILE set later would be ignored (pyreqwest reads it
    # when the client is built, as this does).
    resolver = None if not wires.resolve else _pinned_resolver(wires.resolve)
    connector = aiohttp.TCPConnector(
        limit=connections, ttl_dns_cache=300, ssl=tls.ssl_context(), resolver=resolver
    )
    async with aiohttp.ClientSession(
        connector=connector,
        trace_configs=[_trace_config()] if wires.trace else None,
        headers=headers,
        # No Content-Type of aiohttp's own (application/octet-stream on every POST):
        # the caller's, or none, as on pyreqwest.
        skip_auto_headers=("Content-Type",),
        # The time limit is ours (Deadlines): aiohttp's costs ~10% of a small request.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=wires.connect_timeout),
        cookie_jar=aiohttp.DummyCookieJar(),  # no cookie of one URL sent to another
        # The environment is read by us (_http_settings), as for pyreqwest; aiohttp's
        # own reading skips ALL_PROXY and would read ~/.netrc.
        trust_env=False,
    ) as session:
        yield _Aiohttp(session, max_redirects, timeout, proxies, wires)


@final
class _Aiohttp:
    """The aiohttp backend: one session, its connection pool shared by every request."""

    name = "aiohttp"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        max_redirects: int,
        timeout: float | None,
        proxies: Proxies,
        wires: Transport,
    ) -> None:
        import aiohttp  # noqa: PLC0415 - imported already by then
        import yarl  # noqa: PLC0415 - aiohttp's own dependency

        self._deadlines = None if timeout is None else Deadlines(timeout)
        self._bandwidth = None if wires.limit_rate is None else Bandwidth(wires.limit_rate)
        self._url = yarl.URL
        self._proxies = proxies if proxies.is_used else None
        # Each scheme's proxy as aiohttp takes it: the URL without its credentials,
        # and those as a header (proxy_auth= is deprecated in aiohttp 3.14): on the
        # request itself for http://, on the CONNECT only for https:// (not to leak
        # them to the server through the tunnel).
        self._proxy_arguments: dict[str, dict[str, Any]] = {}
        for scheme, proxy in (("http", proxies.http), ("https", proxies.https)):
            if proxy is None:
                continue
            parsed = yarl.URL(proxy)
            arguments: dict[str, Any] = {"proxy": parsed.with_user(None)}
            auth = aiohttp.BasicAuth.from_url(parsed)  # None without credentials
            if auth is not None:
                where = "headers" if scheme == "http" else "proxy_headers"
                arguments[where] = {"Proxy-Authorization": auth.encode()}
            self._proxy_arguments[scheme] = arguments

        self._request = session.request
        self._tracing = wires.trace
        self._cookies = None if wires.cookies is None else CookieHops(wires.cookies)
        self._plain = not wires.trace and self._cookies is None and self._proxies is None
        self._max_redirects = max_redirects
        # aiohttp's defaults (10, followed) need no keyword arguments per request.
        self._redirects: dict[str, Any] = (
            {}
            if max_redirects == 10
            else {"allow_redirects": max_redirects > 0, "max_redirects": max_redirects}
        )
        self._errors = _aiohttp_errors()

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
        check_url(url)  # by its prefix: aiohttp parses it once, as it would anyway
        target = self._target(url)
        trace = None
        if self._plain and content is None and not headers:
            arguments = self._redirects
        else:
            trace = Trace() if self._tracing else None
            arguments = self._arguments(method, url, target, content, headers, trace)
        deadlines = self._deadlines
        entry = None if deadlines is None else deadlines.enter()
        try:
            started = 0.0 if trace is None else time.monotonic()
            async with self._request(method, target, **arguments) as resp:
                return await self._reply(resp, url, body, max_body, on_head, trace, started)
        except asyncio.CancelledError:
            if entry is not None and Deadlines.expired(entry):
                raise _timed_out(self._deadlines) from None
            raise
        except HTTPClientError:
            raise
        except Exception as exc:
            mapped = self._error_of(exc, url)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            if deadlines is not None and entry is not None:
                deadlines.leave(entry)

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
        """Read the response's body; return its :class:`Reply`."""
        if trace is not None:
            _traced(trace, resp, time.monotonic() - started)
        return await finish_reply(
            resp.status,
            resp.reason or "",
            str(resp.url) if resp.history else url,
            resp.headers,
            resp.content_length,
            resp.content.readany,
            (body, max_body, on_head),
            self._bandwidth,
            trace,
            started,
        )

    def _error_of(self, exc: Exception, url: str) -> HTTPClientError | None:
        """Return our error for aiohttp's ``exc`` (None: not aiohttp's, raise it as is)."""
        mapped = _mapped(exc, self._errors)
        if isinstance(mapped, TooManyRedirectsError):
            mapped = too_many_redirects(self._max_redirects)
        elif isinstance(mapped, RedirectError):  # to a URL aiohttp cannot fetch
            location = exc.args[0] if exc.args else ""  # the Location header
            mapped = bad_redirect(url, str(location))
        return mapped

    def _arguments(  # noqa: PLR0917 - one request's parts
        self,
        method: str,
        url: str,
        target: Any,
        content: bytes | None,
        headers: Sequence[tuple[str, str]],
        trace: Trace | None,
    ) -> dict[str, Any]:
        """Return the request's keyword arguments: its proxy, body, own headers, trace.

        aiohttp drops the body (not its ``Content-Type``) on a redirect that turns
        the method into GET, and ``Authorization`` (not ``Cookie``) on one to
        another origin: a middleware, called before each hop is sent, applies the
        rest of the rule (``redirected_headers``, the same on pyreqwest). Another,
        after it, sends and stores the jar's cookies at each hop (``cookies=``).
        """
        import multidict  # noqa: PLC0415 - aiohttp's own dependency

        proxies = self._proxies
        arguments = self._redirects if proxies is None else self._via(proxies, target)
        if trace is not None:
            arguments = {**arguments, "trace_request_ctx": trace}
        middlewares = []
        if content is not None or headers:
            merged = multidict.CIMultiDict(arguments.get("headers") or {})
            for name, value in headers:
                merged.add(name, value)
            arguments = {**arguments, "data": content, "headers": merged}
            if headers:
                middlewares.append(_hop_headers(method, url))
        if self._cookies is not None:
            middlewares.append(_hop_cookies(self._cookies))
        if middlewares:
            arguments = {**arguments, "middlewares": tuple(middlewares)}
        return arguments

    def _via(self, proxies: Proxies, target: Any) -> dict[str, Any]:
        """Return the request's keyword arguments with its proxy, if it has one."""
        proxy = proxies.proxy_of(target.scheme, target.host or "")
        if proxy is None:
            return self._redirects
        return {**self._redirects, **self._proxy_arguments[target.scheme]}

    def _target(self, url: str) -> Any:
        """Return ``url`` in the wire form pyreqwest sends, as a yarl URL taken as is.

        yarl's own quoting differs (a space in a query becomes ``+``, ``%7E``
        becomes ``~``): :func:`wire_url` writes what browsers and pyreqwest send.
        """
        try:
            wire = wire_url(url)
            target = self._url(wire, encoded=True)
            target.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise InvalidURLError(f"not a valid URL: {exc}") from exc
        if len(wire) > MAX_URL_LENGTH:
            raise InvalidURLError(too_long(len(wire)))
        return target


def _pinned_resolver(pins: Mapping[tuple[str, int], str]) -> Any:
    """Return an aiohttp resolver: ``pins``' address for its (host, port), else DNS."""
    import socket  # noqa: PLC0415 - with --resolve only

    from aiohttp.abc import AbstractResolver  # noqa: PLC0415 - the extra
    from aiohttp.resolver import DefaultResolver  # noqa: PLC0415 - the extra

    class Pinned(AbstractResolver):
        def __init__(self) -> None:
            self.fallback = DefaultResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> Any:
            address = pins.get((host.lower().rstrip("."), port))
            if address is None:
                return await self.fallback.resolve(host, port, family)
            return [
                {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            ]

        async def close(self) -> None:
            await self.fallback.close()

    return Pinned()


def _hop_headers(method: str, url: str) -> Any:
    """Return a middleware that applies ``redirected_headers`` to each redirect's hop."""
    origin = origin_of(url)

    async def middleware(request: Any, handler: Any) -> Any:
        to_get = request.method != method
        other_origin = origin_of(str(request.url)) != origin
        if to_get or other_origin:
            kept = redirected_headers(
                list(request.headers.items()), other_origin=other_origin, to_get=to_get
            )
            request.headers.clear()
            request.headers.extend(kept)
        return await handler(request)

    return middleware


def _hop_cookies(cookies: CookieHops) -> Any:
    """Return a middleware: the jar's cookies sent with each hop, its Set-Cookie stored."""

    async def middleware(request: Any, handler: Any) -> Any:
        url = str(request.url)
        cookie = cookies.header(url)
        if cookie is not None:
            merged = with_cookie(list(request.headers.items()), cookie)
            request.headers.clear()
            request.headers.extend(merged)
        response = await handler(request)
        cookies.store(url, response.headers.getall("Set-Cookie", ()))
        return response

    return middleware


def _trace_config() -> Any:
    """Return the aiohttp trace that times names and connections into our :class:`Trace`."""
    import aiohttp  # noqa: PLC0415 - imported already by then

    def timer(start_name: str, field: str) -> tuple[Any, Any]:
        async def start(_session: Any, context: Any, _params: Any) -> None:
            setattr(context, start_name, time.monotonic())

        async def end(_session: Any, context: Any, _params: Any) -> None:
            trace = context.trace_request_ctx
            began = getattr(context, start_name, None)
            if isinstance(trace, Trace) and began is not None:
                spent = time.monotonic() - began
                setattr(trace, field, (getattr(trace, field) or 0.0) + spent)

        return start, end

    config = aiohttp.TraceConfig()
    dns_start, dns_end = timer("dns_started", "dns")
    connect_start, connect_end = timer("connect_started", "connect")
    config.on_dns_resolvehost_start.append(dns_start)
    config.on_dns_resolvehost_end.append(dns_end)
    config.on_connection_create_start.append(connect_start)
    config.on_connection_create_end.append(connect_end)
    return config


def _traced(trace: Trace, resp: Any, first_byte: float) -> None:
    """Fill in what the response itself tells: redirects, server, first byte.

    aiohttp's connection time includes the name's resolution: ours is the rest.
    """
    trace.first_byte = first_byte
    # aiohttp puts a final 3xx without Location in the history too: not a redirect.
    trace.redirects = [(str(hop.url), hop.status) for hop in resp.history if hop is not resp]
    # The connection goes back to the pool as soon as a short body is read (in
    # start(), before we see the response): its protocol, kept, still has the socket.
    protocol = getattr(resp, "_protocol", None)
    transport = getattr(protocol, "transport", None)
    if transport is not None:
        trace.remote_address = peer_text(transport.get_extra_info("peername"))
    if trace.connect is not None and trace.dns is not None:
        trace.connect = max(trace.connect - trace.dns, 0.0)


def _timed_out(deadlines: Deadlines | None) -> RequestTimeoutError:
    seconds = 0.0 if deadlines is None else deadlines.seconds
    return RequestTimeoutError(f"no complete reply within the client's timeout of {seconds:g} s")


def _aiohttp_errors() -> tuple[tuple[Any, type[HTTPClientError]], ...]:
    """Return aiohttp's exception classes and ours, the first that matches wins."""
    import aiohttp  # noqa: PLC0415 - imported already by then

    # Classes of aiohttp 3.10+ (the extra allows 3.9): an empty tuple matches nothing.
    dns = getattr(aiohttp, "ClientConnectorDNSError", ())
    redirect = getattr(aiohttp, "RedirectClientError", ())
    return (
        (aiohttp.TooManyRedirects, TooManyRedirectsError),
        (_types(redirect), RedirectError),
        (aiohttp.InvalidURL, InvalidURLError),
        (aiohttp.ConnectionTimeoutError, ConnectTimeoutError),
        (TimeoutError, RequestTimeoutError),
        (_types(dns), DNSError),
        (aiohttp.ClientSSLError, TLSError),
        ((aiohttp.ClientConnectionError, ConnectionError), ConnectError),
        ((aiohttp.ClientPayloadError, aiohttp.ClientResponseError), ProtocolError),
    )


def _types(found: type[BaseException] | tuple[()]) -> tuple[type[BaseException], ...]:
    return found if isinstance(found, tuple) else (found,)


def _mapped(
    error: Exception, table: tuple[tuple[Any, type[HTTPClientError]], ...]
) -> HTTPClientError | None:
    for types, ours in table:
        if isinstance(error, types):
            text = str(error)
            name = type(error).__name__
            return ours(f"{name}: {text}" if text else name)
    return None
