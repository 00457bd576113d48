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

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from . import __version__
from ._errors import MissingDependencyError
from ._http_aiohttp import open_aiohttp
from ._http_client import (
    Body,  # noqa: F401 - kept a name here: the type of body=
    Client,
    Reply,
    Trace,
)
from ._http_errors import (
    BodyTooLargeError,
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
from ._http_pyreqwest import open_pyreqwest
from ._http_settings import TLS, Proxies, Transport
from ._http_settings import proxies as proxies_of
from ._http_settings import tls as tls_of
from ._http_settings import transport as transport_of
from ._util import check_bool, check_choice, check_int, check_number, check_seconds

if TYPE_CHECKING:
    import http.cookiejar

__all__ = (
    "BACKENDS",
    "USER_AGENT",
    "BodyTooLargeError",
    "Client",
    "ConnectError",
    "ConnectTimeoutError",
    "DNSError",
    "HTTPClientError",
    "InvalidURLError",
    "ProtocolError",
    "RedirectError",
    "Reply",
    "RequestTimeoutError",
    "TLSError",
    "TooManyRedirectsError",
    "Trace",
    "backends",
    "check_client_options",
    "open_client",
)

# The User-Agent of every request without one of its own, on every backend (each
# backend's own names itself and differs: python-pyreqwest/1.0.0, Python/3.11 aiohttp/3.14).
USER_AGENT: Final = f"parallelize/{__version__}"

# Every backend we know, fastest first, with the module and the extra that bring it.
BACKENDS: Final = {"pyreqwest": ("pyreqwest", "fast"), "aiohttp": ("aiohttp", "http")}

# The public classes are this module's: reprs, tracebacks and pickles say
# parallelize.http.DNSError, wherever the class is written.
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj


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
    connect_timeout: float | None = None,
    resolve: Mapping[tuple[str, int], str] | None = None,
    limit_rate: float | None = None,
    http2: bool = False,
    trace: bool = False,
    cookies: http.cookiejar.CookieJar | None = None,
) -> AsyncIterator[Client]:
    """Open a client of backend ``name`` (default: the fastest installed), closed on exit.

    Args:
        name: ``"pyreqwest"`` or ``"aiohttp"``; None picks the first of
            :func:`backends`.
        connections: The most connections open at once (make it your number of
            workers).
        headers: Sent with every request: a mapping, or ``(name, value)`` pairs
            (a name may repeat). Without a ``User-Agent`` among them, the same one
            on every backend: :data:`USER_AGENT` (``parallelize/<version>``).
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
        connect_timeout: The most seconds opening a connection may take (the TCP
            and TLS handshakes), a :class:`RequestTimeoutError` after that; None:
            only ``timeout``. Added in 0.2.
        resolve: ``{(host, port): address}``: connect there instead of where DNS
            says (curl's ``--resolve``), the URL's host kept as the TLS name and
            the ``Host`` header. On pyreqwest a host goes to one address whatever
            the port (two addresses for one host are refused). Added in 0.2.
        limit_rate: The most bytes a second of bodies read by every request of
            the client together (curl's ``--limit-rate``): a read over the budget
            waits, and the server is slowed by TCP's flow control. None: no limit.
            Added in 0.2.
        http2: Offer HTTP/2 to https:// servers (by ALPN; they choose, HTTP/1.1
            otherwise): pyreqwest only, aiohttp speaks HTTP/1.1 (a ValueError).
            Added in 0.2.
        trace: Fill in each :class:`Reply`'s ``trace`` (:class:`Trace`): the
            redirects followed, the server's address and the timing the backend
            knows. Off by default: it costs a few microseconds a request.
            Added in 0.2.
        cookies: A cookie jar (:class:`http.cookiejar.CookieJar`;
            ``MozillaCookieJar`` reads and writes curl's cookie files): its
            cookies are sent, and the ``Set-Cookie`` of every response (each
            redirect's too) stored in it, the same on every backend. None (the
            default): no cookie is kept. Added in 0.2.

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
    if connect_timeout is not None:
        connect_timeout = check_seconds("connect_timeout", connect_timeout)
    proxies, tls = _settings(proxy, ca_file, verify, client_cert, client_key)
    if limit_rate is not None:
        limit_rate = check_number("limit_rate", limit_rate, at_least=1, finite=True)
    if check_bool("http2", http2) and name != "pyreqwest":
        raise ValueError(f"http2: the {name} client speaks HTTP/1.1 only: use pyreqwest")
    wires = transport_of(
        connect_timeout, resolve, limit_rate, http2=http2, trace=trace, cookies=cookies
    )
    if name == "pyreqwest":
        _one_address_per_host(wires)
    module, extra = BACKENDS[name]
    try:
        __import__(module)
    except ImportError as exc:
        raise MissingDependencyError(f"the {name} HTTP client", extra, module) from exc
    pairs = list((headers or {}).items() if isinstance(headers, Mapping) else headers or ())
    if not any(name.lower() == "user-agent" for name, _ in pairs):
        pairs.append(("User-Agent", USER_AGENT))
    opener = open_aiohttp if name == "aiohttp" else open_pyreqwest
    async with opener(connections, pairs, max_redirects, timeout, proxies, tls, wires) as client:
        yield client


def _one_address_per_host(wires: Transport) -> None:
    """Refuse what pyreqwest cannot do: one host to two addresses by port."""
    seen: dict[str, str] = {}
    for (host, _), address in wires.resolve.items():
        if seen.setdefault(host, address) != address:
            raise ValueError(
                f"resolve: pyreqwest sends a host to one address whatever the port, and "
                f"{host} is given {seen[host]} and {address}: use the aiohttp client"
            )


def check_client_options(
    *,
    proxy: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
    name: str | None = None,
    resolve: Mapping[tuple[str, int], str] | None = None,
) -> None:
    """Check the proxy, TLS and resolve options of :func:`open_client` without opening anything.

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
    wires = transport_of(None, resolve)
    if name == "pyreqwest":
        _one_address_per_host(wires)


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
