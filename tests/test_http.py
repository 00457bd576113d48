"""The article's usage example, verbatim, against a real local aiohttp server."""

from __future__ import annotations

from typing import Any

import aiohttp

from parallelize import parallelize
from parallelize.testing import ServerStats, local_server, page_urls


def test_article_crawl_example_with_2000_urls(run: Any) -> None:
    """2,000 URL strings, 100 workers, one shared session: every page fetched once."""
    stats = ServerStats()

    async def main() -> tuple[list[tuple[int, str, str]], str]:
        async with local_server(stats) as base:
            urls = page_urls(base, 2000)
            seen: list[tuple[int, str, str]] = []
            async with aiohttp.ClientSession() as session:

                async def action(url: str) -> aiohttp.ClientResponse:
                    async with session.get(url) as resp:
                        await resp.read()
                        return resp

                async for resp in parallelize(action, urls, numworkers=100):
                    seen.append((resp.status, str(resp.url), await resp.text()))  # noqa: PERF401
            return seen, base

    seen, base = run(main())
    assert len(seen) == 2000
    assert {status for status, _, _ in seen} == {200}
    assert sorted(url for _, url, _ in seen) == sorted(page_urls(base, 2000))
    assert all(text == f"page {url.rsplit('/', 1)[1]}\n" for _, url, text in seen)
    assert stats.peak_in_flight <= 100
