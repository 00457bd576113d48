"""URLs as the HTTP clients send them: one wire form and one NO_PROXY rule for every backend.

pyreqwest parses URLs as browsers do (the WHATWG URL standard, Rust's ``url``
crate); aiohttp's yarl quotes them its own way (a space in a query becomes
``+``, ``%7E`` becomes ``~``). :func:`wire_url` gives aiohttp the standard's
form, so that both send the same request target; :func:`bypasses` reads
``NO_PROXY`` as reqwest does, so that both send the same requests to a proxy.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Final

# The longest URL (percent-encoded, fragment included) that pyreqwest can send:
# Rust's http crate stores a URI's length in a u16 and refuses longer ones.
MAX_URL_LENGTH: Final = 65534

# Already in wire form: lower-case host, no dot segment, nothing to percent-encode.
# Checked first, so that a plain URL costs one regex match (about 1 us).
_PLAIN: Final = re.compile(
    r"https?://[a-z0-9.\-]+(?::[0-9]{1,5})?"
    r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@%|^\[\]/]*)?"
    r"(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@%|^\[\]/?{}`]*)?"
)

# What the WHATWG URL standard percent-encodes, beyond controls and non-ASCII:
# its path, query (of a special scheme) and userinfo percent-encode sets.
_PATH_SET: Final = frozenset(' "#<>?`{}')
_QUERY_SET: Final = frozenset(" \"#<>'")
_USERINFO_SET: Final = frozenset(' "#<>?`{}/;=[\\]^|')
_C0_AND_SPACE: Final = "".join(map(chr, range(0x21)))
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}
_DOT: Final = frozenset({".", "%2e"})
_DOT_DOT: Final = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})


def too_long(length: int) -> str:
    """Return the message of a URL too long to send."""
    return (
        f"the URL is {length:,} characters long, percent-encoded; "
        f"the most an HTTP client here can send is {MAX_URL_LENGTH:,}"
    )


def wire_url(url: str) -> str:
    """Return ``url`` as the WHATWG URL standard serializes it, without its fragment.

    Percent-encodes what must be (a space as ``%20``, non-ASCII as UTF-8), keeps
    every ``%XX`` as written, lower-cases the host (IDNA for a non-ASCII one),
    drops a default port, turns backslashes into slashes and removes dot segments: the
    request target and Host header that pyreqwest (and browsers, and curl for
    these cases) send.

    Raises:
        ValueError: A host that IDNA cannot encode, or text that UTF-8 cannot.
    """
    if _PLAIN.fullmatch(url) and "/." not in url:
        return url
    url = url.strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "").replace("\r", "")
    before_fragment = url.partition("#")[0]
    scheme, netloc, path, query, _ = urllib.parse.urlsplit(before_fragment)
    scheme = scheme.lower()
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.startswith("["):
        host, _, port = hostport.partition("]")
        host, port = f"{host}]".lower(), port.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
        host = host.lower()
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
    if port == _DEFAULT_PORTS.get(scheme):
        port = ""
    authority = f"{_quote(userinfo, _USERINFO_SET)}{at}{host}{':' if port else ''}{port}"
    path = _without_dots(path.replace("\\", "/") or "/")
    wire = f"{scheme}://{authority}{_quote(path, _PATH_SET)}"
    if "?" in before_fragment:
        wire += f"?{_quote(query, _QUERY_SET)}"
    return wire


def _quote(text: str, unsafe: frozenset[str]) -> str:
    if text.isascii() and not any(c in unsafe or not " " < c < "\x7f" for c in text):
        return text
    return "".join(
        c
        if c not in unsafe and " " < c < "\x7f"
        else "".join(f"%{byte:02X}" for byte in c.encode("utf-8"))
        for c in text
    )


def _without_dots(path: str) -> str:
    """Remove ``.`` and ``..`` segments (RFC 3986 section 5.2.4, as WHATWG does)."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        lowered = segment.lower()
        if lowered in _DOT_DOT:
            if kept:
                kept.pop()
            if index == last:
                kept.append("")
        elif lowered in _DOT:
            if index == last:
                kept.append("")
        else:
            kept.append(segment)
    return "/" + "/".join(kept)


def bypasses(host: str, no_proxy: tuple[str, ...]) -> bool:
    """Whether a request to ``host`` goes around the proxy, by NO_PROXY's ``no_proxy`` entries.

    reqwest's rule, which pyreqwest applies itself: ``*`` matches every host; an
    IP address or a CIDR block (``10.0.0.0/8``) matches an IP host in it; a name
    matches itself and its subdomains (``example.com`` and ``.example.com`` both
    match ``a.example.com``, and ``example.com`` itself). Ports are not compared.
    Entries are lower-case (see :func:`no_proxy_entries`).
    """
    if "*" in no_proxy:
        return True
    host = host.lower().removeprefix("[").removesuffix("]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in no_proxy:
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif entry in (host, f".{host}") or (
            host.endswith(entry) and (entry.startswith(".") or host[-len(entry) - 1] == ".")
        ):
            return True
    return False


def no_proxy_entries(text: str) -> tuple[str, ...]:
    """Split a NO_PROXY value into its lower-case entries (commas, spaces around them)."""
    return tuple(entry for part in text.split(",") if (entry := part.strip().lower()))
