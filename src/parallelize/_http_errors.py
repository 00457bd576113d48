"""The HTTP client's exceptions: one class per stable kind, the same on every backend.

Each backend maps its own errors onto these (its exception kept as ``__cause__``);
:mod:`parallelize.http` re-exports them as its own. The tree, under
:class:`~parallelize.ParallelizeError`::

    HTTPClientError
    +-- ConnectError (ConnectionError)   connection
    |   +-- DNSError                     dns
    |   +-- TLSError                     tls
    +-- RequestTimeoutError (TimeoutError)  timeout
    +-- RedirectError                    redirect
    |   +-- TooManyRedirectsError
    +-- ProtocolError                    protocol
    +-- InvalidURLError (ValueError)     invalid_url
    +-- BodyTooLargeError                too_large
"""

from __future__ import annotations

from typing import ClassVar

from ._errors import ParallelizeError

__all__ = (
    "BodyTooLargeError",
    "ConnectError",
    "ConnectTimeoutError",
    "DNSError",
    "HTTPClientError",
    "InvalidURLError",
    "ProtocolError",
    "RedirectError",
    "RequestTimeoutError",
    "TLSError",
    "TooManyRedirectsError",
)


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


class ConnectTimeoutError(RequestTimeoutError):
    """The connection did not open within the client's ``connect_timeout``.

    Its kind is ``timeout`` too. Added in 0.2.
    """


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
