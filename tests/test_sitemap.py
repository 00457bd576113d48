"""``fetch --sitemap``'s reader: sitemaps and indexes from a local server, on each client."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from typing import Any

import pytest
from aiohttp import web

from nettools import serve_app
from parallelize._cli._sitemap import SitemapError, sitemap_urls
from parallelize.http import backends, open_client

pytestmark = pytest.mark.timeout(60)

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
# A page: a body (200, "{base}" replaced by the server's URL), a status (empty
# body), or a body sent as it is with these headers.
Page = bytes | int | tuple[bytes, Mapping[str, str]]

NS = b'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*locs: str) -> bytes:
    entries = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset {NS.decode()}>{entries}</urlset>'.encode()
    )


def index(*locs: str) -> bytes:
    """A sitemap index of ``locs``: paths on the server, or absolute URLs."""
    entries = "".join(
        f"<sitemap><loc>{'' if loc.startswith('http') else '{base}'}{loc}</loc></sitemap>"
        for loc in locs
    )
    return f"<sitemapindex {NS.decode()}>{entries}</sitemapindex>".encode()


@pytest.fixture(params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@contextlib.asynccontextmanager
async def serve(pages: Mapping[str, Page]) -> AsyncIterator[str]:
    """Serve ``pages`` by path on 127.0.0.1 and a free port; yield the base URL."""

    async def handle(request: web.Request) -> web.Response:
        page = pages.get(request.path, 404)
        if isinstance(page, int):
            return web.Response(status=page)
        if isinstance(page, tuple):
            return web.Response(body=page[0], headers=dict(page[1]))
        return web.Response(body=page.replace(b"{base}", f"http://{request.host}".encode()))

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with serve_app(app) as base:
        yield base


def read(
    run: Runner, backend: str, pages: Mapping[str, Page], path: str = "/sitemap.xml", **options: Any
) -> tuple[list[str], list[str]]:
    """Return the URLs of the sitemap at ``path`` (``{base}`` taken off) and the warnings."""
    warnings: list[str] = []

    async def main() -> list[str]:
        async with serve(pages) as base, open_client(name=backend) as client:
            found = [
                url
                async for url in sitemap_urls(client, base + path, warn=warnings.append, **options)
            ]
        return [url.replace(base, "") for url in found]

    urls: list[str] = run(main())
    return urls, warnings


def fails(
    run: Runner, backend: str, pages: Mapping[str, Page], max_body: int = 50 * 1024 * 1024
) -> str:
    """Return the message of the SitemapError that reading /sitemap.xml raises."""
    with pytest.raises(SitemapError) as raised:
        read(run, backend, pages, max_body=max_body)
    return str(raised.value)


# -- formats ------------------------------------------------------------------------------------


def test_a_urlset_gives_its_locs_in_order_stripped_and_without_empty_ones(
    run: Runner, backend: str
) -> None:
    body = urlset("  http://a.test/1\n ", "", "http://a.test/2", "http://a.test/3")
    assert read(run, backend, {"/sitemap.xml": body}) == (
        ["http://a.test/1", "http://a.test/2", "http://a.test/3"],
        [],
    )


def test_entities_are_decoded_and_image_locs_are_no_pages(run: Runner, backend: str) -> None:
    body = (
        b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
        b'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">'
        b"<url><loc>http://a.test/?a=1&amp;b=2&#38;c=&lt;3&gt;</loc>"
        b"<image:image><image:loc>http://a.test/i.png</image:loc></image:image></url>"
        b"<url><loc><![CDATA[http://a.test/?x&y]]></loc></url></urlset>"
    )
    assert read(run, backend, {"/sitemap.xml": body})[0] == [
        "http://a.test/?a=1&b=2&c=<3>",
        "http://a.test/?x&y",
    ]


def test_namespaces_are_ignored_missing_wrong_or_prefixed(run: Runner, backend: str) -> None:
    pages: dict[str, Page] = {
        "/sitemap.xml": b"<urlset><url><loc>http://a.test/1</loc></url></urlset>",
        "/wrong.xml": b'<urlset xmlns="http://www.google.com/schemas/sitemap/0.84">'
        b"<url><loc>http://a.test/2</loc></url></urlset>",
        "/prefixed.xml": b"<sm:urlset><sm:url><sm:loc>http://a.test/3</sm:loc></sm:url></sm:urlset>",
    }
    assert read(run, backend, pages)[0] == ["http://a.test/1"]
    assert read(run, backend, pages, "/wrong.xml")[0] == ["http://a.test/2"]
    assert read(run, backend, pages, "/prefixed.xml")[0] == ["http://a.test/3"]


def test_a_relative_loc_is_joined_with_the_sitemap_url(run: Runner, backend: str) -> None:
    body = b"<urlset><url><loc>/page</loc></url><url><loc>other</loc></url></urlset>"
    assert read(run, backend, {"/dir/sitemap.xml": body}, "/dir/sitemap.xml")[0] == [
        "/page",
        "/dir/other",
    ]


def test_a_text_sitemap_gives_a_url_a_line(run: Runner, backend: str) -> None:
    body = b"\xef\xbb\xbf\r\nhttp://a.test/1\r\n\r\n  https://a.test/\xc3\xa9  \nhttp://a.test/3"
    assert read(run, backend, {"/sitemap.txt": body}, "/sitemap.txt") == (
        ["http://a.test/1", "https://a.test/é", "http://a.test/3"],
        [],
    )


def test_a_text_sitemap_skips_lines_that_are_no_urls_with_a_warning(
    run: Runner, backend: str
) -> None:
    body = b"http://a.test/1\nnonsense\nhttp://a.test/2\n"
    urls, warnings = read(run, backend, {"/sitemap.txt": body}, "/sitemap.txt")
    assert urls == ["http://a.test/1", "http://a.test/2"]
    assert len(warnings) == 1
    assert warnings[0].startswith("skipped 1 line of the sitemap ")
    assert "line 2" in warnings[0]


def test_a_gzip_sitemap_is_decompressed_whatever_its_headers(run: Runner, backend: str) -> None:
    packed = gzip.compress(urlset("http://a.test/1", "http://a.test/2"))
    pages: dict[str, Page] = {
        "/sitemap.xml": (packed, {"Content-Type": "application/gzip"}),
        # A .xml.gz sent with Content-Encoding: the client takes off one layer.
        "/twice.xml.gz": (gzip.compress(packed), {"Content-Encoding": "gzip"}),
    }
    assert read(run, backend, pages)[0] == ["http://a.test/1", "http://a.test/2"]
    assert read(run, backend, pages, "/twice.xml.gz")[0] == ["http://a.test/1", "http://a.test/2"]


def test_a_gzip_bomb_is_refused(run: Runner, backend: str) -> None:
    bomb = gzip.compress(b"<urlset>" + b" " * 2_000_000 + b"</urlset>")
    assert len(bomb) < 10_000
    message = fails(run, backend, {"/sitemap.xml": bomb}, max_body=1_000_000)
    assert "decompresses to more than 1,000,000 bytes" in message


def test_gzip_members_by_the_thousand_are_refused_at_once(run: Runner, backend: str) -> None:
    """Empty gzip members, 20 bytes each: zlib's unused_data copied the rest of the body
    after each one (minutes for 50 MB); now a bounded count, refused in milliseconds."""
    members = gzip.compress(b"") * 200_000
    message = fails(run, backend, {"/sitemap.xml": members})
    assert "more than 1,000 gzip members" in message


def test_several_gzip_members_make_one_sitemap(run: Runner, backend: str) -> None:
    whole = urlset("http://a.test/1", "http://a.test/2")
    packed = gzip.compress(whole[:20]) + gzip.compress(whole[20:]) + b"trailing junk"
    assert read(run, backend, {"/sitemap.xml": packed})[0] == ["http://a.test/1", "http://a.test/2"]


# -- sitemap indexes ----------------------------------------------------------------------------


def test_an_index_gives_its_sitemaps_urls_in_document_order(run: Runner, backend: str) -> None:
    pages: dict[str, Page] = {
        "/sitemap.xml": index("/b.xml", "/a.xml"),
        "/a.xml": urlset("http://a.test/a1", "http://a.test/a2"),
        "/b.xml": urlset("http://a.test/b1", "http://a.test/b2"),
    }
    assert read(run, backend, pages) == (
        ["http://a.test/b1", "http://a.test/b2", "http://a.test/a1", "http://a.test/a2"],
        [],
    )


def test_nested_indexes_are_followed_depth_first_within_max_depth(
    run: Runner, backend: str
) -> None:
    pages: dict[str, Page] = {
        "/sitemap.xml": index("/i2.xml", "/last.xml"),
        "/i2.xml": index("/i3.xml"),
        "/i3.xml": index("/deep.xml"),
        "/deep.xml": urlset("http://a.test/deep"),
        "/last.xml": urlset("http://a.test/last"),
    }
    assert read(run, backend, pages, max_depth=3) == (
        ["http://a.test/deep", "http://a.test/last"],
        [],
    )


def test_an_index_deeper_than_max_depth_is_skipped_with_a_warning(
    run: Runner, backend: str
) -> None:
    pages: dict[str, Page] = {
        "/sitemap.xml": index("/i2.xml", "/last.xml"),
        "/i2.xml": index("/deep.xml"),
        "/deep.xml": urlset("http://a.test/deep"),
        "/last.xml": urlset("http://a.test/last"),
    }
    urls, warnings = read(run, backend, pages, max_depth=1)
    assert urls == ["http://a.test/last"]
    assert len(warnings) == 1
    assert "/i2.xml" in warnings[0]
    assert "an index nested deeper than 1 (max_depth)" in warnings[0]


def test_a_cycle_is_read_once_with_a_warning(run: Runner, backend: str) -> None:
    pages: dict[str, Page] = {
        "/sitemap.xml": index("/loop.xml", "/pages.xml", "/pages.xml"),
        "/loop.xml": index("/sitemap.xml", "/pages.xml"),
        "/pages.xml": urlset("http://a.test/1"),
    }
    urls, warnings = read(run, backend, pages)
    assert urls == ["http://a.test/1"]  # read under /loop.xml, then not again
    assert len(warnings) == 1
    assert "a cycle" in warnings[0]
    assert "/sitemap.xml (listed in " in warnings[0]


def test_a_child_that_cannot_be_read_is_a_warning_and_the_others_go_on(
    run: Runner, backend: str
) -> None:
    pages: dict[str, Page] = {
        "/sitemap.xml": index("/gone.xml", "/html.xml", "http://127.0.0.1:1/refused.xml", "/a.xml"),
        "/html.xml": b"<!DOCTYPE html><html><body>Hello</body></html>",
        "/a.xml": urlset("http://a.test/a"),
    }
    urls, warnings = read(run, backend, pages)
    assert urls == ["http://a.test/a"]
    assert len(warnings) == 3
    assert "/gone.xml (listed in " in warnings[0]
    assert warnings[0].endswith(": 404 Not Found")
    assert "an HTML page" in warnings[1]
    assert "skipped the sitemap http://127.0.0.1:1/refused.xml (listed in " in warnings[2]
    assert ": connection: " in warnings[2]


def test_a_sitemap_cut_short_keeps_what_came_before_with_a_warning(
    run: Runner, backend: str
) -> None:
    body = b"<urlset><url><loc>http://a.test/1</loc></url><url><loc>http://a.test/2</lo"
    urls, warnings = read(run, backend, {"/sitemap.xml": body})
    assert urls == ["http://a.test/1"]
    assert len(warnings) == 1
    assert "is cut short: malformed XML" in warnings[0]


# -- the root -----------------------------------------------------------------------------------


def test_a_root_that_cannot_be_fetched_raises(run: Runner, backend: str) -> None:
    message = fails(run, backend, {})
    assert message.startswith("cannot read the sitemap http://127.0.0.1:")
    assert "/sitemap.xml: 404 Not Found; check the URL" in message
    assert "cannot read the sitemap" in fails(run, backend, {"/sitemap.xml": 500})


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<!DOCTYPE html>\n<html><head><meta charset=utf-8>", "an HTML page"),
        (b"<html><body><p>Hello</p></body></html>", "an HTML page"),
        (b'<?xml version="1.0"?><rss version="2.0"></rss>', "its root element is <rss>"),
        (b"<<urlset>", "malformed XML"),
        (b"Sorry, no sitemap here\nhttp://a.test/\n", "neither XML nor a list of URLs"),
        (b" \r\n", "its body is empty"),
    ],
)
def test_a_root_that_is_no_sitemap_raises(run: Runner, backend: str, body: bytes, why: str) -> None:
    message = fails(run, backend, {"/sitemap.xml": body})
    assert why in message
    assert "a sitemap is XML (<urlset> or <sitemapindex>) or a text file of URLs" in message


def test_a_doctype_is_refused_so_that_no_entity_expands(run: Runner, backend: str) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY a "lol">'
        + b"".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
        )
        + b"]><urlset><url><loc>&j;</loc></url></urlset>"
    )
    assert "DOCTYPE" in fails(run, backend, {"/sitemap.xml": laughs})


# -- laziness -----------------------------------------------------------------------------------


def test_stopping_early_closes_cleanly_without_reading_the_rest(run: Runner, backend: str) -> None:
    warnings: list[str] = []
    many = urlset(*(f"http://a.test/{i}" for i in range(20_000)))
    assert len(many) > 200_000  # more than one chunk of the parser
    pages: dict[str, Page] = {"/sitemap.xml": index("/a.xml", "/b.xml"), "/a.xml": many}

    async def main() -> list[str]:
        first: list[str] = []
        async with serve(pages) as base, open_client(name=backend) as client:
            urls = sitemap_urls(client, base + "/sitemap.xml", warn=warnings.append)
            assert isinstance(urls, AsyncGenerator)
            async with contextlib.aclosing(urls):
                async for url in urls:
                    first.append(url)
                    if len(first) == 3:
                        break
        return first

    assert run(main()) == ["http://a.test/0", "http://a.test/1", "http://a.test/2"]
    assert warnings == []  # /b.xml (a 404: a warning) never requested
