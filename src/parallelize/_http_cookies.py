"""Cookies for :func:`parallelize.http.open_client` (``cookies=``): one jar, both backends.

The jar is the standard library's :class:`http.cookiejar.CookieJar` (its rules
for domains, paths, expiry and ``Secure`` are RFC 6265's, tried by every Python
program since 2.4), driven the same way by both backends at each hop of a
request: the ``Cookie`` header it makes before the hop is sent, the
``Set-Cookie`` headers of the hop's response stored after. A redirect that sets
a cookie (a login) sends it on the next hop, on both.

``http.cookiejar.MozillaCookieJar`` reads and writes curl's and wget's cookie
files (the Netscape format); ``fetch -b/-c`` use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    import http.cookiejar

__all__ = ("CookieHops", "with_cookie")


@final
class _Reply:
    """A response as :meth:`CookieJar.extract_cookies` reads it: ``info().get_all()``."""

    __slots__ = ("_values",)

    def __init__(self, values: list[str]) -> None:
        self._values = values

    def info(self) -> _Reply:
        return self

    def get_all(self, name: str, default: Any = None) -> Any:
        if name.lower() == "set-cookie":
            return self._values or default
        return default  # Set-Cookie2 is obsolete (RFC 6265)


@final
class CookieHops:
    """One client's jar, as each hop of a request uses it."""

    __slots__ = ("jar", "request")

    def __init__(self, jar: http.cookiejar.CookieJar) -> None:
        import urllib.request  # noqa: PLC0415 - http.cookiejar's own import: loaded already

        self.jar = jar
        self.request = urllib.request.Request  # what the jar reads a URL from

    def header(self, url: str) -> str | None:
        """Return the ``Cookie`` header of the jar's cookies for ``url``, or None."""
        request = self.request(url)  # only read, never opened
        self.jar.add_cookie_header(request)
        value: str | None = request.get_header("Cookie")
        return value

    def store(self, url: str, values: Sequence[str]) -> None:
        """Store the cookies of a response to ``url`` (its ``Set-Cookie`` values)."""
        if values:
            request = self.request(url)  # only read, never opened
            self.jar.extract_cookies(_Reply(list(values)), request)  # type: ignore[arg-type]


def with_cookie(
    headers: Sequence[tuple[str, str]], cookie: str | None
) -> Sequence[tuple[str, str]]:
    """Return a hop's headers with the jar's ``cookie`` after the request's own one.

    One ``Cookie`` header in all (RFC 6265 5.4): a ``Cookie`` given with the
    request comes first, the jar's are joined to it with ``"; "``.
    """
    if cookie is None:
        return headers
    merged = []
    joined = False
    for name, value in headers:
        if not joined and name.lower() == "cookie":
            merged.append((name, f"{value}; {cookie}"))
            joined = True
        else:
            merged.append((name, value))
    if not joined:
        merged.append(("Cookie", cookie))
    return merged
