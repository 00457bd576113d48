"""One small seam for HTTP clients: the same request, reply and errors on every backend.

``parallelize fetch`` runs on it, and so can your own actions::

    from parallelize import parallelize
    from parallelize.http import open_client

    async with open_client(connections=100) as client:  # the fastest installed backend
        async def get(url):
            reply = await client.request("GET", url)
            return reply.status, len(reply.body)

        async for status, size in parallelize(get, ((url,) for url in urls), 100):
            ...

Backends, fastest first (``backends()`` lists the installed ones):

- ``pyreqwest``: Rust's reqwest behind an asyncio API, about 95 µs of CPU per
  small request through this seam against aiohttp's 180, twice the requests per
  second (``benchmarks/fetch.py``; ``pip install "parallelize[fast]"``).
- ``aiohttp``: the well-kept default (``pip install "parallelize[http]"``).

Every backend follows up to ``max_redirects`` redirects, decompresses gzip and
deflate, keeps no cookies, and raises the same exceptions, one class per stable
kind (``error.kind``): ``timeout``, ``dns``, ``tls``, ``connection`` (refused,
reset, closed early), ``redirect`` (too many, or to a URL that is not http(s)),
``protocol`` (a malformed or cut reply), ``invalid_url`` and ``too_large``
(``max_body``). The backend's own exception is the ``__cause__``. A status >=
400 is a reply, not an error.

The same request on the wire: a URL is sent as browsers send it (the WHATWG URL
standard: a space as ``%20``, never ``+``; non-ASCII as UTF-8 ``%XX``; every
``%XX`` kept as written; dot segments removed; the fragment not sent). A URL of
up to 65,534 characters, percent-encoded, is sent, and a server's 414 is the
reply; a longer one is ``invalid_url`` on every backend (pyreqwest cannot send it).

Proxies, read once by :func:`open_client` and the same for every backend:
``proxy=`` for every URL (``""``: none at all); else the environment, curl's
way: ``http_proxy`` then ``HTTP_PROXY`` for http:// URLs (``HTTP_PROXY`` is
ignored when ``REQUEST_METHOD`` is set, in a CGI script), ``https_proxy`` then
``HTTPS_PROXY`` for https:// ones, then ``all_proxy``/``ALL_PROXY`` for both.
``no_proxy``/``NO_PROXY`` (either kind of proxy): ``*``, host names matching
themselves and their subdomains, IP addresses and CIDR blocks. Only http://
proxies (https:// URLs go through a CONNECT tunnel); credentials in the proxy
URL are sent to it. ``~/.netrc`` is not read.

TLS: the system's trusted certificates, plus ``ca_file``; ``verify=False``
checks nothing; ``client_cert``/``client_key`` for mutual TLS. Both backends
honour ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``, read when the client opens:
pyreqwest (rustls) trusts only what they name instead of the system's
certificates; aiohttp (OpenSSL) replaces its default file by ``SSL_CERT_FILE``
and its default directory by ``SSL_CERT_DIR``, each on its own.

Give the client the time limit (``open_client(timeout=...)``), not only the run:
pyreqwest 0.15 does not stop a request whose task is cancelled. The request runs
on in its runtime, holding one of the ``connections``, until the server answers
or the client's own timeout ends it; against a server that hangs, a few
cancelled requests would stall every worker. ``parallelize fetch`` sets its
``--timeout`` here and not on the run, which also spares the event loop a timer
per request on pyreqwest (reqwest keeps its timers in its runtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol, final

from ._aio import Deadlines
from ._errors import MissingDependencyError, ParallelizeError
from ._http_settings import TLS, Proxies
from ._http_settings import proxies as proxies_of
from ._http_settings import tls as tls_of
from ._http_urls import MAX_URL_LENGTH, too_long, wire_url
from ._util import check_choice, check_int, check_seconds

if TYPE_CHECKING:
    import aiohttp
    import pyreqwest.client
    import pyreqwest.response

__all__ = (
    "BACKENDS",
    "BodyTooLargeError",
    "Client",
    "ConnectError",
    "DNSError",
    "HTTPClientError",
    "InvalidURLError",
    "ProtocolError",
    "RedirectError",
    "Reply",
    "RequestTimeoutError",
    "TLSError",
    "TooManyRedirectsError",
    "backends",
    "check_client_options",
    "open_client",
)

# Every backend we know, fastest first, with the module and the extra that bring it.
BACKENDS: Final = {"pyreqwest": ("pyreqwest", "fast"), "aiohttp": ("aiohttp", "http")}

Body = Literal["keep", "discard"] | Callable[[bytes], object]


# -- the errors --------------------------------------------------------------------


class HTTPClientError(ParallelizeError):
    """A request that got no usable reply; ``kind`` names why, the same on every backend.

    Each subclass keeps its built-in base too: ``except ConnectionError`` still
    catches a ``ConnectError``. Changed in 0.2: a :class:`parallelize.ParallelizeError`
    (was a plain ``Exception``).

    Attributes:
        kind: ``"timeout"``, ``"dns"``, ``"tls"``, ``"connection"``, ``"redirect"``,
            ``"protocol"``, ``"invalid_url"`` or ``"too_large"``.
        retryable: Whether another attempt may succeed (a refused connection may;
            a bad certificate or URL will not).
    """

    kind: ClassVar[str] = "error"
    retryable: ClassVar[bool] = False


class ConnectError(HTTPClientError, ConnectionError):
    """The connection was refused, reset or closed before the reply was complete."""

    kind = "connection"
    retryable = True


class DNSError(ConnectError):
    """The host name did not resolve."""

    kind = "dns"


class TLSError(ConnectError):
    """The TLS handshake failed: a certificate, a protocol version, not TLS at all."""

    kind = "tls"
    retryable = False


class RequestTimeoutError(HTTPClientError, TimeoutError):
    """The request took longer than the client's ``timeout``."""

    kind = "timeout"
    retryable = True


class RedirectError(HTTPClientError):
    """A redirect that cannot be followed: too many, or to a URL that is not http(s).

    Added in 0.2.
    """

    kind = "redirect"


class TooManyRedirectsError(RedirectError):
    """More redirects than ``max_redirects``."""


class ProtocolError(HTTPClientError):
    """A malformed reply, or a body cut short."""

    kind = "protocol"
    retryable = True


class InvalidURLError(HTTPClientError, ValueError):
    """Not an absolute http:// or https:// URL."""

    kind = "invalid_url"


class BodyTooLargeError(HTTPClientError):
    """The body is longer than ``max_body`` bytes (nothing more of it was read)."""

    kind = "too_large"


# -- the reply ---------------------------------------------------------------------


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
    """

    __slots__ = ("body", "headers", "reason", "size", "status", "url")

    def __init__(  # noqa: PLR0917 - built by the backends only
        self, status: int, reason: str, url: str, headers: Mapping[str, str], size: int, body: bytes
    ) -> None:
        """Hold what the backend read."""
        self.status = status
        self.reason = reason
        self.url = url
        self.headers = headers
        self.size = size
        self.body = body

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
    ) -> Reply:
        """Send ``method url``, read the body, return the :class:`Reply`.

        Args:
            method: ``"GET"``, ``"HEAD"``, ...
            url: An absolute http:// or https:// URL.
            body: ``"keep"`` (into ``Reply.body``), ``"discard"`` (read and
                counted only), or a function called with each chunk in order
                (write them to a file: the body is never held whole).
            max_body: Read no more than this many bytes; a longer body raises
                :class:`BodyTooLargeError` (before reading, when the server
                sends its length).

        Raises:
            HTTPClientError: One of its subclasses, by kind.
        """
        ...


# -- choosing and opening a backend -------------------------------------------------


def backends() -> list[str]:
    """Return the names of the installed backends, fastest first."""
    import importlib.util  # noqa: PLC0415 - only when asked

    return [name for name, (module, _) in BACKENDS.items() if importlib.util.find_spec(module)]


@contextlib.asynccontextmanager
async def open_client(
    name: str | None = None,
    *,
    connections: int = 100,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    max_redirects: int = 10,
    timeout: float | None = None,  # noqa: ASYNC109 - the backend's own limit, see the note
    proxy: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Client]:
    """Open a client of backend ``name`` (default: the fastest installed), closed on exit.

    Args:
        name: ``"pyreqwest"`` or ``"aiohttp"``; None picks the first of
            :func:`backends`.
        connections: The most connections open at once (make it your number of
            workers).
        headers: Sent with every request: a mapping, or ``(name, value)`` pairs
            (a name may repeat).
        max_redirects: Redirects followed before :class:`TooManyRedirectsError`
            (0: none followed, the 3xx is the reply).
        timeout: The most seconds one request may take, its body read
            (:class:`RequestTimeoutError` after that), enforced by the backend;
            None: no limit. Set it: see the module's note on cancellation.
        proxy: An http:// proxy URL (``host:port`` means http://host:port) for
            every request, https:// ones through a CONNECT tunnel; credentials
            in it (``http://user:pass@host:3128``) are sent to the proxy.
            None (the default): the environment's proxies (see the module's
            docstring); ``""``: no proxy at all, whatever the environment says.
            ``NO_PROXY`` applies to either. Added in 0.2.
        ca_file: A PEM file of certificates to trust, besides the default ones
            (curl's ``--cacert``). Added in 0.2.
        verify: False checks neither the server's certificate nor its name
            (curl's ``--insecure``): only against a server you know. Added in 0.2.
        client_cert: A PEM file with the client's certificate, for servers that
            ask for one (mutual TLS); its private key too, unless ``client_key``
            is given. The key must not be encrypted. Added in 0.2.
        client_key: A PEM file with the private key of ``client_cert``. Added in 0.2.

    Raises:
        ValueError: An unknown backend name, a number out of range, a proxy that
            is not an http:// URL (given or in the environment), a TLS file that
            cannot be read or holds no PEM block, ``client_key`` without
            ``client_cert`` (see :func:`check_client_options`).
        TypeError: A number that is not one.
        MissingDependencyError: The backend (or, with no name, every backend) is
            not installed; it says which extra to install.
    """
    if name is None:
        installed = backends()
        if not installed:
            raise MissingDependencyError("an HTTP client", "http", "aiohttp")
        name = installed[0]
    check_choice("name", name, tuple(BACKENDS))
    check_int("connections", connections, 1)
    check_int("max_redirects", max_redirects, 0)
    if timeout is not None:
        timeout = check_seconds("timeout", timeout)
    proxies, tls = _settings(proxy, ca_file, verify, client_cert, client_key)
    module, extra = BACKENDS[name]
    try:
        __import__(module)
    except ImportError as exc:
        raise MissingDependencyError(f"the {name} HTTP client", extra, module) from exc
    pairs = list((headers or {}).items() if isinstance(headers, Mapping) else headers or ())
    opener = _open_aiohttp if name == "aiohttp" else _open_pyreqwest
    async with opener(connections, pairs, max_redirects, timeout, proxies, tls) as client:
        yield client


def check_client_options(
    *,
    proxy: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> None:
    """Check the proxy and TLS options of :func:`open_client` without opening anything.

    The same checks as ``open_client``'s, the environment's proxy variables
    included, for a program that wants to refuse bad options before any work.
    Added in 0.2.

    Raises:
        ValueError: A proxy that is not an http:// URL, a TLS file that cannot
            be read or holds no PEM block of its kind, ``client_key`` without
            ``client_cert``. The message names the parameter (or the environment
            variable) and what to pass.
        TypeError: ``verify`` is not a bool.
    """
    _settings(proxy, ca_file, verify, client_cert, client_key)


def _settings(
    proxy: str | None,
    ca_file: str | os.PathLike[str] | None,
    verify: bool,
    client_cert: str | os.PathLike[str] | None,
    client_key: str | os.PathLike[str] | None,
) -> tuple[Proxies, TLS]:
    if proxy is not None and not isinstance(proxy, str):
        raise TypeError(f"proxy must be a str (an http:// URL, or '' for none), got {proxy!r}")
    return proxies_of(proxy), tls_of(ca_file, verify, client_cert, client_key)


def _checked(url: str) -> None:
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


def _too_large(max_body: int) -> BodyTooLargeError:
    return BodyTooLargeError(f"the body is larger than {max_body:,} bytes (max_body)")


def _timed_out(deadlines: Deadlines | None) -> RequestTimeoutError:
    seconds = 0.0 if deadlines is None else deadlines.seconds
    return RequestTimeoutError(f"no complete reply within the client's timeout of {seconds:g} s")


def _redirects(most: int) -> TooManyRedirectsError:
    return TooManyRedirectsError(f"more than {most} redirects")


def _bad_redirect(url: str, location: str) -> RedirectError:
    """Return the error of a redirect from ``url`` to a URL we cannot fetch."""
    try:
        _checked(urllib.parse.urljoin(url, location))
        reason = "not a valid URL"
    except InvalidURLError as exc:
        reason = str(exc)
    return RedirectError(f"a redirect to {location!r}: {reason}")


_PHRASES: Final = {status.value: status.phrase for status in http.HTTPStatus}


# -- aiohttp -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _open_aiohttp(  # noqa: PLR0917 - open_client's settings, passed on
    connections: int,
    headers: list[tuple[str, str]],
    max_redirects: int,
    timeout: float | None,  # noqa: ASYNC109
    proxies: Proxies,
    tls: TLS,
) -> AsyncIterator[Client]:
    import aiohttp  # noqa: PLC0415 - the extra, imported where used

    # A context of our own even without options: aiohttp's default one is made at
    # its import, so SSL_CERT_FILE set later would be ignored (pyreqwest reads it
    # when the client is built, as this does).
    connector = aiohttp.TCPConnector(limit=connections, ttl_dns_cache=300, ssl=tls.ssl_context())
    async with aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        # The time limit is ours (Deadlines): aiohttp's costs ~10% of a small request.
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),  # no cookie of one URL sent to another
        # The environment is read by us (_http_settings), as for pyreqwest; aiohttp's
        # own reading skips ALL_PROXY and would read ~/.netrc.
        trust_env=False,
    ) as session:
        yield _Aiohttp(session, max_redirects, timeout, proxies)


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
    ) -> None:
        import aiohttp  # noqa: PLC0415 - imported already by then
        import yarl  # noqa: PLC0415 - aiohttp's own dependency

        self._deadlines = None if timeout is None else Deadlines(timeout)
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
        self._max_redirects = max_redirects
        # aiohttp's defaults (10, followed) need no keyword arguments per request.
        self._redirects: dict[str, Any] = (
            {}
            if max_redirects == 10
            else {"allow_redirects": max_redirects > 0, "max_redirects": max_redirects}
        )
        self._errors = _aiohttp_errors()

    async def request(
        self, method: str, url: str, *, body: Body = "keep", max_body: int | None = None
    ) -> Reply:
        """See :meth:`Client.request`."""
        _checked(url)  # by its prefix: aiohttp parses it once, as it would anyway
        target = self._target(url)
        proxies = self._proxies
        arguments = self._redirects if proxies is None else self._via(proxies, target)
        deadlines = self._deadlines
        entry = None if deadlines is None else deadlines.enter()
        try:
            async with self._request(method, target, **arguments) as resp:
                if max_body is not None:
                    _check_length(resp.content_length, max_body)
                size, kept = await _read_body(resp.content.readany, body, max_body)
                final = str(resp.url) if resp.history else url
                return Reply(resp.status, resp.reason or "", final, resp.headers, size, kept)
        except asyncio.CancelledError:
            if entry is not None and Deadlines.expired(entry):
                raise _timed_out(self._deadlines) from None
            raise
        except HTTPClientError:
            raise
        except Exception as exc:
            mapped = _mapped(exc, self._errors)
            if mapped is None:
                raise
            if isinstance(mapped, TooManyRedirectsError):
                mapped = _redirects(self._max_redirects)
            elif isinstance(mapped, RedirectError):  # to a URL aiohttp cannot fetch
                location = exc.args[0] if exc.args else ""  # the Location header
                mapped = _bad_redirect(url, str(location))
            raise mapped from exc
        finally:
            if deadlines is not None and entry is not None:
                deadlines.leave(entry)

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


async def _read_body(
    read: Callable[[], Awaitable[Any]], body: Body, max_body: int | None
) -> tuple[int, bytes]:
    """Read a body to its end by ``read()`` (a chunk, empty or None at the end).

    Returns its size and, with ``body="keep"``, the body itself.
    """
    size = 0
    if body == "discard" and max_body is None:  # fetch's path: a tight loop
        while chunk := await read():
            size += len(chunk)
        return size, b""
    chunks = []
    keep = body == "keep"
    write = None if isinstance(body, str) else body
    while chunk := await read():
        size += len(chunk)
        if max_body is not None and size > max_body:
            raise _too_large(max_body)
        if write is not None:
            write(bytes(chunk))
        elif keep:
            chunks.append(bytes(chunk))
    return size, b"".join(chunks)


def _check_length(length: int | None, max_body: int) -> None:
    """Refuse a body by its announced length before reading any of it."""
    if length is not None and length > max_body:
        raise _too_large(max_body)


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


# -- pyreqwest -----------------------------------------------------------------------

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


@contextlib.asynccontextmanager
async def _open_pyreqwest(  # noqa: PLR0917 - open_client's settings, passed on
    connections: int,
    headers: list[tuple[str, str]],
    max_redirects: int,
    timeout: float | None,  # noqa: ASYNC109
    proxies: Proxies,
    tls: TLS,
) -> AsyncIterator[Client]:
    from pyreqwest.client import ClientBuilder  # noqa: PLC0415 - the extra, imported where used
    from pyreqwest.proxy import ProxyBuilder  # noqa: PLC0415 - the extra, imported where used

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
    async with builder.build() as client:
        yield _Pyreqwest(client, max_redirects, timeout)


@final
class _Pyreqwest:
    """The pyreqwest backend: reqwest's pool on its own runtime thread."""

    name = "pyreqwest"

    def __init__(
        self, client: pyreqwest.client.Client, max_redirects: int, timeout: float | None
    ) -> None:
        self._client = client
        self._max_redirects = max_redirects
        self._timeout = timeout

    async def request(
        self, method: str, url: str, *, body: Body = "keep", max_body: int | None = None
    ) -> Reply:
        """See :meth:`Client.request`."""
        _checked(url)
        hops = 0
        started = time.monotonic()
        try:
            while True:
                builder = self._builder(method, url, hops, started)
                async with builder.build_streamed() as resp:
                    status = resp.status
                    location = None
                    if status in _REDIRECTS and self._max_redirects:
                        location = resp.get_header("location")
                    if location is not None:
                        hops += 1
                        method, url = self._redirected(hops, status, method, url, location)
                        continue
                    if max_body is not None:
                        length = resp.get_header("content-length")
                        if length is not None and length.isdigit():
                            _check_length(int(length), max_body)
                    size, kept = await _read_body(resp.body_reader.read_chunk, body, max_body)
                    return Reply(status, _PHRASES.get(status, ""), url, resp.headers, size, kept)
        except HTTPClientError:
            raise
        except Exception as exc:
            mapped = _pyreqwest_mapped(exc)
            if mapped is None:
                raise
            if isinstance(mapped, InvalidURLError) and "not a valid Uri" in str(mapped):
                # Short enough as given, too long once percent-encoded (http's u16).
                mapped = InvalidURLError(too_long(len(wire_url(url))))
            raise mapped from exc

    def _builder(self, method: str, url: str, hops: int, started: float) -> Any:
        """Return the request of one hop; a redirect gets the time left of the timeout."""
        try:
            builder = self._client.request(method, url)
        except ValueError as exc:  # pyreqwest's URL parser, and only it
            raise InvalidURLError(f"not a valid URL: {exc}") from exc
        if hops and self._timeout is not None:  # the client's timeout is per hop
            left = self._timeout - (time.monotonic() - started)
            builder = builder.timeout(dt.timedelta(seconds=max(left, 0.001)))
        return builder

    def _redirected(
        self, hops: int, status: int, method: str, url: str, location: str
    ) -> tuple[str, str]:
        """Return the method and URL to follow a redirect with (as browsers do)."""
        if hops > self._max_redirects:
            raise _redirects(self._max_redirects)
        joined = urllib.parse.urljoin(url, location)
        try:
            _checked(joined)
        except InvalidURLError:
            raise _bad_redirect(url, location) from None
        url = joined
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = method if method == "HEAD" else "GET"
        return method, url


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


def _pyreqwest_mapped(error: Exception) -> HTTPClientError | None:
    from pyreqwest import exceptions  # noqa: PLC0415 - imported already by then

    if not isinstance(error, exceptions.PyreqwestError):
        return None  # yours (a body= function's), unchanged
    causes = getattr(error, "details", None) or {}
    chain = [cause["message"] for cause in causes.get("causes") or ()]
    root = chain[-1] if chain else ""
    text = f"{error.message}: {root}" if root else error.message
    ours: type[HTTPClientError]
    if isinstance(error, exceptions.RequestTimeoutError):
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
