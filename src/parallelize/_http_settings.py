"""The HTTP client's proxy and TLS settings: read and checked once, the same for every backend.

Both backends are configured from these values, never from their own reading of
the environment, so that a proxy variable or a certificate file means the same
thing with pyreqwest and with aiohttp.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from ._http_urls import bypasses, no_proxy_entries
from ._util import check_bool

if TYPE_CHECKING:
    import http.cookiejar  # urllib.request with it: 10 ms, when cookies= is given

# The environment, as curl and Python's urllib read it: the lower-case name
# first. HTTP_PROXY (upper case) is ignored in a CGI script (REQUEST_METHOD set),
# where it could come from a request's "Proxy:" header (httpoxy).
_HTTP_NAMES: Final = ("http_proxy", "HTTP_PROXY")
_HTTPS_NAMES: Final = ("https_proxy", "HTTPS_PROXY")
_ALL_NAMES: Final = ("all_proxy", "ALL_PROXY")
_NO_NAMES: Final = ("no_proxy", "NO_PROXY")


@dataclasses.dataclass(frozen=True, slots=True)
class Proxies:
    """Where requests go: a proxy URL per scheme (None: straight), and who bypasses it.

    Attributes:
        http: The proxy of http:// URLs, or None.
        https: The proxy of https:// URLs (reached by CONNECT), or None.
        no_proxy: NO_PROXY's entries, lower-case: hosts that go straight.
    """

    http: str | None = None
    https: str | None = None
    no_proxy: tuple[str, ...] = ()

    @property
    def is_used(self) -> bool:
        """Whether any request may go through a proxy."""
        return (self.http is not None or self.https is not None) and "*" not in self.no_proxy

    def proxy_of(self, scheme: str, host: str) -> str | None:
        """Return the proxy URL for a request, or None to go straight."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or bypasses(host, self.no_proxy):
            return None
        return proxy


def proxies(proxy: str | None, environ: Mapping[str, str] = os.environ) -> Proxies:
    """Return the proxies of ``open_client(proxy=...)`` and the environment.

    ``proxy`` (an http:// URL) is used for every URL; ``""`` means no proxy,
    whatever the environment says; None reads ``http_proxy``/``HTTP_PROXY``
    (http:// URLs), ``https_proxy``/``HTTPS_PROXY`` (https:// URLs), then
    ``all_proxy``/``ALL_PROXY`` (both). ``no_proxy``/``NO_PROXY`` applies to
    either kind.

    Raises:
        ValueError: A proxy that is not an http:// URL (named by where it came from).
    """
    if proxy == "":
        return Proxies()
    no_proxy = no_proxy_entries(_first(environ, _NO_NAMES)[1] or "")
    if proxy is not None:
        url = _proxy_url("proxy", proxy)
        return Proxies(url, url, no_proxy)
    http_names = _HTTP_NAMES if "REQUEST_METHOD" not in environ else _HTTP_NAMES[:1]

    def pick(names: tuple[str, ...]) -> str | None:
        name, value = _first(environ, names)
        if value is None:
            name, value = _first(environ, _ALL_NAMES)
        return None if value is None else _proxy_url(f"the environment's {name}", value)

    return Proxies(pick(http_names), pick(_HTTPS_NAMES), no_proxy)


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str | None]:
    """Return the first of ``names`` set (and not empty) in ``environ``, and its value."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return names[0], None


def _proxy_url(source: str, value: str) -> str:
    """Return ``value`` as an http:// proxy URL (``host:port`` means http://host:port)."""
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() != "http" or not parts.hostname:
        raise ValueError(
            f"{source} must be an http:// proxy URL, such as http://proxy.example:3128 "
            f"(socks and https:// proxies are not supported), got {value!r}"
        )
    return url


@dataclasses.dataclass(frozen=True, slots=True)
class TLS:
    """How the client checks servers and shows itself to them.

    Attributes:
        ca_file: A PEM file of certificates trusted besides the default ones.
        verify: False: no check of the server's certificate or name at all.
        client_cert: A PEM file with the client's certificate (and its chain).
        client_key: A PEM file with its private key (None: in ``client_cert``).
    """

    ca_file: str | None = None
    verify: bool = True
    client_cert: str | None = None
    client_key: str | None = None

    def ca_pem(self) -> bytes | None:
        """Return the trusted certificates' PEM text, or None."""
        return None if self.ca_file is None else _read(self.ca_file)

    def identity_pem(self) -> bytes | None:
        """Return the client's certificate and key as one PEM text, or None."""
        if self.client_cert is None:
            return None
        cert = _read(self.client_cert)
        key = cert if self.client_key is None else _read(self.client_key)
        return cert if key is cert else cert.rstrip(b"\n") + b"\n" + key

    def ssl_context(self) -> ssl.SSLContext:
        """Return an :class:`ssl.SSLContext` with these settings, for aiohttp.

        Raises:
            ValueError: A file that OpenSSL cannot load (it says why).
        """
        context = ssl.create_default_context()
        try:
            if self.ca_file is not None:
                context.load_verify_locations(cafile=self.ca_file)
            if self.client_cert is not None:
                context.load_cert_chain(self.client_cert, self.client_key)
        except ssl.SSLError as exc:
            raise ValueError(f"cannot load the TLS files: {exc}") from exc
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def tls(
    ca_file: str | os.PathLike[str] | None,
    verify: bool,
    client_cert: str | os.PathLike[str] | None,
    client_key: str | os.PathLike[str] | None,
) -> TLS:
    """Return the TLS settings of ``open_client``, their files checked.

    Raises:
        ValueError: A file that cannot be read or holds no PEM block of its kind,
            or ``client_key`` without ``client_cert``.
        TypeError: ``verify`` is not a bool.
    """
    check_bool("verify", verify)
    if client_key is not None and client_cert is None:
        raise ValueError(
            "client_key needs client_cert: pass the certificate file too "
            "(or one file with both as client_cert)"
        )
    settings = TLS(
        None if ca_file is None else os.fspath(ca_file),
        verify,
        None if client_cert is None else os.fspath(client_cert),
        None if client_key is None else os.fspath(client_key),
    )
    _check_pem("ca_file", settings.ca_file, b"CERTIFICATE-----")
    _check_pem("client_cert", settings.client_cert, b"CERTIFICATE-----")
    key_file = settings.client_key if settings.client_key is not None else settings.client_cert
    _check_pem("client_key" if settings.client_key else "client_cert", key_file, b"KEY-----")
    return settings


def _read(path: str) -> bytes:
    with open(path, "rb") as file:  # noqa: PTH123 - a path given as str
        return file.read()


def _check_pem(name: str, path: str | None, marker: bytes) -> None:
    """Refuse a file that cannot be read, or has no PEM block ending in ``marker``."""
    if path is None:
        return
    try:
        text = _read(path)
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in text or marker not in text:
        what = "private key" if marker == b"KEY-----" else "certificate"
        raise ValueError(f"{name}: {path!r} holds no PEM {what} (-----BEGIN ...)")


@dataclasses.dataclass(frozen=True, slots=True)
class Transport:
    """How connections are made, the same on every backend.

    Attributes:
        connect_timeout: The most seconds a connection may take to open (the TCP
            and TLS handshakes), or None: only the request's ``timeout``.
        resolve: ``(host, port)`` -> the address to connect to instead of what DNS
            says (curl's ``--resolve``); the URL's host stays the TLS name and the
            ``Host`` header.
        limit_rate: The most bytes a second of bodies read, all requests together
            (curl's ``--limit-rate``), or None.
    """

    connect_timeout: float | None = None
    resolve: Mapping[tuple[str, int], str] = dataclasses.field(default_factory=dict)
    limit_rate: float | None = None  # bytes a second of bodies, every request together
    http2: bool = False  # offered by ALPN (pyreqwest)
    trace: bool = False  # Reply.trace filled in
    cookies: http.cookiejar.CookieJar | None = None  # sent and stored at each hop


def transport(
    connect_timeout: float | None,
    resolve: Mapping[tuple[str, int], str] | None,
    limit_rate: float | None = None,
    *,
    http2: bool = False,
    trace: bool = False,
    cookies: http.cookiejar.CookieJar | None = None,
) -> Transport:
    """Return checked transport settings (ValueError, TypeError for bad ones)."""
    import ipaddress  # noqa: PLC0415 - only with resolve=

    pins: dict[tuple[str, int], str] = {}
    for target, address in (resolve or {}).items():
        parts: object = target  # checked: callers may pass anything
        if not (
            isinstance(parts, tuple)
            and len(parts) == 2
            and isinstance(parts[0], str)
            and type(parts[1]) is int
            and 0 < parts[1] < 65536
        ):
            raise ValueError(f"resolve: expected (host, port) keys, got {target!r}")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(
                f"resolve: {target[0]}:{target[1]} -> {address!r} is not an IP address"
            ) from None
        pins[target[0].lower().rstrip("."), target[1]] = str(ip)
    check_bool("trace", trace)
    if cookies is not None and not _is_jar(cookies):
        raise TypeError(
            f"cookies: expected an http.cookiejar.CookieJar (or MozillaCookieJar), "
            f"got {type(cookies).__name__}"
        )
    return Transport(connect_timeout, pins, limit_rate, http2, trace, cookies)


def _is_jar(cookies: object) -> bool:
    import http.cookiejar  # noqa: PLC0415 - with cookies= only

    return isinstance(cookies, http.cookiejar.CookieJar)
