"""``fetch --sitemap``: the page URLs of a site's sitemap, sitemap indexes followed.

What is read follows the sitemaps.org protocol, leniently where sites are not:

* ``<urlset>``: the ``<loc>`` of each ``<url>``, in document order;
* ``<sitemapindex>``: the ``<loc>`` of each ``<sitemap>``, each read in turn
  (depth-first, in document order), at most ``max_depth`` levels of index deep;
* a text file: one URL a line (UTF-8, blank lines skipped), told from XML by its
  first character: anything but ``<`` (after a BOM and whitespace);
* any of these gzip-compressed, told by the gzip magic bytes whatever the URL or
  ``Content-Type`` say (a ``.xml.gz`` sent with ``Content-Encoding: gzip`` too:
  the client takes off one layer, this the other).

Elements are matched by their local name, whatever their namespace or prefix
(sites omit it, misspell it, or use a prefix they never declared). A ``<loc>``
counts only inside its entry: the ``<image:loc>`` of an image sitemap is no page.
Its text is stripped, entities decoded; an empty one is skipped, a relative one
joined with the sitemap's URL (the protocol wants them absolute).

Each sitemap is fetched whole (within ``max_body``, 50 MiB: the protocol's own
limit) and parsed by expat a chunk at a time, no tree built, its URLs yielded as
they are found: a crawl starts with the first chunk of a huge sitemap. Memory:
the body of each sitemap open on the way down, one per level of index. A document
with a DOCTYPE is refused (no sitemap has one; its entities could expand without
bound), and so is gzip data that decompresses to more than ``max_body`` bytes.

The root sitemap must be read: :class:`SitemapError` if it cannot. A sitemap that
an index lists and that cannot be read is a warning, and the others are read on.
Each sitemap is read once, however many times it is listed; a cycle of indexes
is a warning and ends there.
"""

from __future__ import annotations

import re
import urllib.parse
import xml.parsers.expat
import zlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Final

from parallelize.http import Client, HTTPClientError

__all__ = ("SitemapError", "sitemap_urls")

_CHUNK: Final = 64 * 1024  # bytes given to expat at a time, between the URLs yielded
_GZIP: Final = b"\x1f\x8b"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
# A UTF-8 BOM, then whitespace: where the document itself begins.
_LEAD: Final = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n\f\v]*")
_ABSOLUTE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # a URL with a scheme
_HTTP_URL: Final = re.compile(r"https?://\S", re.IGNORECASE)
_WHAT_A_SITEMAP_IS: Final = (
    "a sitemap is XML (<urlset> or <sitemapindex>) or a text file of URLs, one a line"
)


class SitemapError(Exception):
    """The root sitemap could not be read: the message says which URL and why."""


class _Unreadable(Exception):  # noqa: N818 - a reason, worded for the root or a child
    """Why one sitemap cannot be read; ``hint`` is what to do, for the root."""

    def __init__(self, why: str, hint: str = "") -> None:
        super().__init__(why)
        self.hint = hint


class _NotSitemap(Exception):  # noqa: N818 - raised from expat's handlers only
    """A document that is well-formed so far, but no sitemap."""


async def sitemap_urls(
    client: Client,
    url: str,
    *,
    warn: Callable[[str], None],
    max_body: int = 50 * 1024 * 1024,
    max_depth: int = 3,
    headers: Sequence[tuple[str, str]] = (),
) -> AsyncGenerator[str, None]:
    """Yield the page URLs of the sitemap at url, following sitemap indexes.

    Lazily: each sitemap is fetched when its turn comes, and its URLs come out as
    they are parsed. Stop early with ``aclose()`` (or ``contextlib.aclosing``).

    Args:
        client: The client that GETs each sitemap.
        url: The sitemap's URL, or a sitemap index's.
        warn: Called with a one-line message for each sitemap of an index that is
            skipped (unreadable, a cycle, nested too deep) or cut short (malformed
            XML after some entries, lines of a text sitemap that are no URLs).
        max_body: The most bytes of one sitemap, as sent and as decompressed.
        max_depth: The most levels of sitemap index: 1 reads the sitemaps the
            root index lists, but no index it lists.
        headers: Each request's own headers (the command's credentials: ``-u``,
            ``-b NAME=VALUE``, ``-H 'Authorization: ...'``).

    Raises:
        SitemapError: On the first iteration, if the root sitemap cannot be read:
            a status other than 2xx, an error of the client, a body that is no
            sitemap. A root that is cut short is a warning, like a child.
    """
    try:
        root = await _open(client, url, max_body, warn, headers)
    except _Unreadable as exc:
        hint = f"; {exc.hint}" if exc.hint else ""
        raise SitemapError(f"cannot read the sitemap {url}: {exc}{hint}") from exc.__cause__
    if root.index and max_depth < 1:
        raise SitemapError(f"the sitemap {url} is a sitemap index, and max_depth is {max_depth}")
    seen = {url, root.url}  # every sitemap read or being read, as listed and as redirected
    stack = [root]  # the indexes being read, and the sitemap at the top
    try:
        while stack:
            sitemap = stack[-1]
            loc = next(sitemap.locs, None)
            if loc is None:
                stack.pop()
                continue
            if _ABSOLUTE.match(loc) is None:
                loc = urllib.parse.urljoin(sitemap.url, loc)
            if not sitemap.index:
                yield loc
                continue
            child = await _child(
                client, loc, stack=stack, seen=seen, max_body=max_body, warn=warn, headers=headers
            )
            if child is None:
                continue
            if child.index and len(stack) >= max_depth:
                warn(
                    f"skipped the sitemap index {loc} (listed in {sitemap.listed}): "
                    f"an index nested deeper than {max_depth} (max_depth)"
                )
                child.locs.close()
                continue
            stack.append(child)
    finally:
        for sitemap in stack:
            sitemap.locs.close()


async def _child(
    client: Client,
    loc: str,
    *,
    stack: list[_Sitemap],
    seen: set[str],
    max_body: int,
    warn: Callable[[str], None],
    headers: Sequence[tuple[str, str]],
) -> _Sitemap | None:
    """Open the sitemap ``loc`` that the index at the top of ``stack`` lists.

    Return None for one read already (a warning if it is being read: a cycle), or
    one that cannot be read (a warning).
    """
    parent = stack[-1].listed
    cycle = (
        f"skipped the sitemap {loc} (listed in {parent}): a cycle, it is an index "
        f"being read already (it lists {parent}, directly or through others)"
    )
    if loc in seen:
        if any(loc in {index.listed, index.url} for index in stack):
            warn(cycle)
        return None
    seen.add(loc)
    try:
        child = await _open(client, loc, max_body, warn, headers)
    except _Unreadable as exc:
        warn(f"skipped the sitemap {loc} (listed in {parent}): {exc}")
        return None
    if child.url != loc:  # redirected: read once by its final URL too
        if child.url in seen:
            if any(child.url in {index.listed, index.url} for index in stack):
                warn(cycle)
            child.locs.close()
            return None
        seen.add(child.url)
    return child


class _Sitemap:
    """One sitemap open: its kind, and its locs (a generator, parsing as it goes)."""

    __slots__ = ("index", "listed", "locs", "url")

    def __init__(
        self, listed: str, url: str, *, index: bool, locs: Generator[str, None, None]
    ) -> None:
        self.listed = listed  # the URL it was fetched by
        self.url = url  # after redirects: the base of relative locs
        self.index = index  # a <sitemapindex>: its locs are sitemaps
        self.locs = locs


async def _open(
    client: Client,
    url: str,
    max_body: int,
    warn: Callable[[str], None],
    headers: Sequence[tuple[str, str]] = (),
) -> _Sitemap:
    """Fetch the sitemap at ``url`` and read as far as its kind.

    Raises:
        _Unreadable: Not a 2xx reply, an error of the client, no sitemap.
    """
    try:
        reply = await client.request("GET", url, body="keep", max_body=max_body, headers=headers)
    except HTTPClientError as exc:
        raise _Unreadable(f"{exc.kind}: {exc}") from exc
    if not 200 <= reply.status < 300:
        hint = "check the URL (a site's robots.txt names its sitemaps on Sitemap: lines)"
        raise _Unreadable(
            f"{reply.status} {reply.reason}".rstrip(),
            hint if reply.status in {404, 410} else "",
        )
    body = _gunzip(reply.body, max_body)
    lead = _LEAD.match(body)
    start = lead.end() if lead else 0
    if start == len(body):
        raise _Unreadable("not a sitemap: its body is empty", _WHAT_A_SITEMAP_IS)
    if body.startswith(_UTF16_BOMS):
        start = 0  # XML in UTF-16: expat reads the BOM
    elif body[start] != ord("<"):
        return _text(url, reply.url, body, warn)
    return _xml(url, reply.url, body, start, warn)


_MAX_MEMBERS: Final = 1000


def _gunzip(body: bytes, max_body: int) -> bytes:
    """Return ``body`` decompressed if it is gzip data, within ``max_body`` bytes.

    Fed in slices of ``_CHUNK`` bytes from a position in the body: zlib's ``unused_data``
    after each member would otherwise copy the rest of the body, member after
    member (quadratic: thousands of empty members took minutes). At most
    ``_MAX_MEMBERS`` members: a sitemap has one.
    """
    if not body.startswith(_GZIP):
        return body
    view = memoryview(body)
    parts: list[bytes] = []
    size = position = members = 0
    while body.startswith(_GZIP, position):  # members, one after the other (RFC 1952)
        members += 1
        if members > _MAX_MEMBERS:
            raise _Unreadable(f"not a sitemap: more than {_MAX_MEMBERS:,} gzip members")
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        while not member.eof:
            if position >= len(body):
                raise _Unreadable("its gzip data is cut short")
            chunk = view[position : position + _CHUNK]
            try:
                part = member.decompress(chunk, max_body - size + 1)
            except zlib.error as exc:
                raise _Unreadable(f"not a sitemap: corrupt gzip data ({exc})") from exc
            size += len(part)
            if size > max_body:
                raise _Unreadable(
                    f"its gzip data decompresses to more than {max_body:,} bytes (max_body): "
                    f"refused, a gzip bomb or a sitemap over the protocol's 50 MB"
                )
            parts.append(part)
            position += len(chunk) - len(member.unused_data) - len(member.unconsumed_tail)
    # Trailing bytes that are no member: ignored, as gzip does.
    return b"".join(parts)


# -- XML --------------------------------------------------------------------------------------


class _Target:
    """What expat calls: the locs of a sitemap's entries, found as they end."""

    __slots__ = ("depth", "entry", "found", "open", "text")

    def __init__(self) -> None:
        self.entry: str | None = None  # "url" or "sitemap", once the root is read
        self.open: list[str] = []  # the local names of the elements open
        self.text: list[str] | None = None  # inside a loc: its text so far
        self.depth = 0  # the loc's own depth
        self.found: deque[str] = deque()  # locs not yielded yet

    def doctype(
        self, name: str, system_id: str | None, public_id: str | None, internal: bool
    ) -> None:
        """Refuse a DOCTYPE: none in a sitemap, and its entities could expand without bound."""
        del system_id, public_id, internal
        if name.lower() == "html":
            raise _NotSitemap("it is an HTML page, not a sitemap")
        raise _NotSitemap(
            "not a sitemap: it has a DOCTYPE declaration (refused: its entities "
            "could expand without bound)"
        )

    def start(self, name: str, attributes: object) -> None:
        """Tell the kind by the root element; start a loc's text inside an entry."""
        del attributes
        local = name.rpartition(":")[2]
        if not self.open:
            if local == "urlset":
                self.entry = "url"
            elif local == "sitemapindex":
                self.entry = "sitemap"
            elif local.lower() == "html":
                raise _NotSitemap("it is an HTML page, not a sitemap")
            else:
                raise _NotSitemap(f"not a sitemap: its root element is <{name}>")
        elif local == "loc" and self.text is None and self.open[-1] == self.entry:
            self.text = []
            self.depth = len(self.open) + 1
        self.open.append(local)

    def end(self, name: str) -> None:
        """End a loc: keep its text, stripped, unless empty."""
        del name
        if self.text is not None and len(self.open) == self.depth:
            loc = "".join(self.text).strip()
            self.text = None
            if loc:
                self.found.append(loc)
        self.open.pop()

    def data(self, text: str) -> None:
        """Keep the text of the loc open, if any."""
        if self.text is not None:
            self.text.append(text)


def _xml(listed: str, url: str, body: bytes, start: int, warn: Callable[[str], None]) -> _Sitemap:
    """Parse an XML sitemap as far as its root element: its kind, then its locs."""
    target = _Target()
    parser = xml.parsers.expat.ParserCreate()  # no namespace processing: local names
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = target.doctype
    parser.StartElementHandler = target.start
    parser.EndElementHandler = target.end
    parser.CharacterDataHandler = target.data
    view = memoryview(body)[start:]
    offset = 0
    error: xml.parsers.expat.ExpatError | None = None
    try:
        while target.entry is None and offset < len(view):
            offset += _CHUNK
            parser.Parse(view[offset - _CHUNK : offset], offset >= len(view))
    except _NotSitemap as exc:
        raise _Unreadable(str(exc), _WHAT_A_SITEMAP_IS) from None
    except xml.parsers.expat.ExpatError as exc:
        if target.entry is None:
            why = f"not a sitemap: malformed XML ({exc})"
            raise _Unreadable(why, _WHAT_A_SITEMAP_IS) from None
        error = exc  # after the root: what came before it is read
    assert target.entry is not None  # the last chunk parsed: expat raised without a root

    def locs() -> Generator[str, None, None]:
        nonlocal offset, error
        found = target.found
        while True:
            yield from _drain(found)  # the locs of the chunk, up to an error in it
            if error is not None:
                warn(
                    f"the sitemap {listed} is cut short: malformed XML ({error}), the rest skipped"
                )
                return
            if offset >= len(view):
                return
            offset += _CHUNK
            try:
                parser.Parse(view[offset - _CHUNK : offset], offset >= len(view))
            except xml.parsers.expat.ExpatError as exc:
                error = exc

    return _Sitemap(listed, url, index=target.entry == "sitemap", locs=locs())


def _drain(found: deque[str]) -> Generator[str, None, None]:
    while found:
        yield found.popleft()


# -- text -------------------------------------------------------------------------------------


def _text(listed: str, url: str, body: bytes, warn: Callable[[str], None]) -> _Sitemap:
    """Read a text sitemap as far as its first line, which must be an http(s) URL."""
    lines = _lines(body, 3 if body.startswith(b"\xef\xbb\xbf") else 0)
    number, first = next(lines)  # there is one: the body is not all whitespace
    if _HTTP_URL.match(first) is None:
        shown = first if len(first) <= 60 else first[:60] + "..."
        raise _Unreadable(
            f"not a sitemap: neither XML nor a list of URLs (line {number}: {shown!r})",
            _WHAT_A_SITEMAP_IS,
        )

    def locs() -> Generator[str, None, None]:
        yield first
        skipped, where = 0, 0
        for number, line in lines:
            if _HTTP_URL.match(line):
                yield line
            else:
                skipped += 1
                where = where or number
        if skipped:
            warn(
                f"skipped {skipped:,} line{'' if skipped == 1 else 's'} of the sitemap "
                f"{listed} that are not http(s) URLs (the first: line {where})"
            )

    return _Sitemap(listed, url, index=False, locs=locs())


def _lines(body: bytes, position: int) -> Generator[tuple[int, str], None, None]:
    """Yield the number and text of each line that is not blank, stripped."""
    number, end = 0, len(body)
    while position < end:
        stop = body.find(b"\n", position)
        if stop < 0:
            stop = end
        number += 1
        line = body[position:stop].strip()
        position = stop + 1
        if line:
            yield number, line.decode("utf-8", "replace")
