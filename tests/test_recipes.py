"""The README's retry recipes, run as written against the fault-injection server."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import httpx

from parallelize import Retry, parallelize
from parallelize.testing import ServerStats, local_server

# Two paths answer 503 twice, one answers 429 with Retry-After: 1 once, one is fine.
PATHS = [
    "/flaky/a?fail=2",
    "/flaky/b?fail=2&status=500",
    "/flaky/c?fail=1&status=429&retry_after=1",
    "/page/1",
]


def test_aiohttp_recipe(run: Any) -> None:
    """Retrying 5xx and honouring 429 on the returned response, with aiohttp."""
    stats = ServerStats()

    async def main() -> list[int]:
        async with local_server(stats) as base, aiohttp.ClientSession() as session:
            urls = [base + path for path in PATHS]

            async def fetch(url: str) -> aiohttp.ClientResponse:
                async with session.get(url) as resp:
                    await resp.read()
                    return resp

            retry: Retry[aiohttp.ClientResponse] = Retry(
                on=(aiohttp.ClientError, TimeoutError),
                attempts=4,
                if_result=lambda resp: resp.status == 429 or resp.status >= 500,
            )
            return [
                resp.status async for resp in parallelize(fetch, urls, 100, timeout=15, retry=retry)
            ]

    started = time.monotonic()
    assert run(main()) == [200] * 4
    assert time.monotonic() - started >= 0.95  # the 429's Retry-After: 1 was honoured
    assert stats.requests == 3 + 3 + 2 + 1  # a: 503, 503, 200; b: same; c: 429, 200; page


def test_httpx_recipe(run: Any) -> None:
    """The same with httpx, raising for the status and retrying on the exception."""
    stats = ServerStats()

    async def main() -> list[int]:
        # timeout=None: parallelize(timeout=15) bounds each attempt instead.
        async with local_server(stats) as base, httpx.AsyncClient(timeout=None) as client:  # noqa: S113
            urls = [base + path for path in PATHS]

            async def fetch(url: str) -> httpx.Response:
                resp = await client.get(url)
                resp.raise_for_status()
                return resp

            retry = Retry(
                on=(httpx.TransportError, TimeoutError),
                if_exception=lambda e: (
                    isinstance(e, httpx.HTTPStatusError)
                    and (e.response.status_code == 429 or e.response.status_code >= 500)
                ),
                attempts=4,
            )
            return [
                resp.status_code
                async for resp in parallelize(fetch, urls, 100, timeout=15, retry=retry)
            ]

    started = time.monotonic()
    assert run(main()) == [200] * 4
    assert time.monotonic() - started >= 0.95
