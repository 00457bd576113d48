"""Adaptive concurrency against the real local server's hidden capacity (/capacity/{n}).

The server serves ``k`` requests at once in ``ms`` milliseconds, queues the next
``k`` and answers 503 at once beyond ``2 k``. These tests run for a few seconds of
real time and assert where the limit goes, never how fast anything is. They run
without asyncio's debug mode (``run_timed``), whose cost per request would make the
client, not the service, the bottleneck.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from parallelize import AdaptiveLimit, Backoff, Retry, parallelize
from parallelize.testing import Capacity, ServerStats, local_server

pytestmark = pytest.mark.timeout(60)


class Sampler:
    """Records the limit every 20 ms while a run goes on."""

    def __init__(self, limit: AdaptiveLimit) -> None:
        self.limit = limit
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = []

    async def record(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self.started, self.limit.limit))
            await asyncio.sleep(0.02)

    def between(self, start: float, end: float) -> list[int]:
        return [limit for t, limit in self.samples if start <= t < end]


async def drive(
    capacity: Capacity,
    limit: AdaptiveLimit,
    seconds: float,
    *,
    numworkers: int = 500,
    changes: dict[float, int] | None = None,
    stats: ServerStats | None = None,
    **options: Any,
) -> tuple[Sampler, list[int]]:
    """Fetch /capacity/{n} for ``seconds``, resizing the capacity at the given times."""
    pending = sorted((changes or {}).items())
    statuses: list[int] = []
    async with (
        local_server(stats, capacity=capacity) as base,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):

        async def fetch(url: str) -> aiohttp.ClientResponse:
            async with session.get(url) as resp:
                await resp.read()
                return resp

        urls = (f"{base}/capacity/{n}" for n in itertools.count())
        sampler = Sampler(limit)
        async with asyncio.TaskGroup() as group:
            recorder = group.create_task(sampler.record())
            run = parallelize(fetch, urls, numworkers, adaptive=limit, **options)
            async with run as responses:
                async for resp in responses:
                    statuses.append(resp.status)
                    elapsed = time.monotonic() - sampler.started
                    if pending and elapsed >= pending[0][0]:
                        capacity.resize(k=pending.pop(0)[1])
                    if elapsed >= seconds:
                        break
            recorder.cancel()
    return sampler, statuses


def share(values: list[int], test: Callable[[int], bool]) -> float:
    return sum(1 for v in values if test(v)) / len(values)


def test_the_limit_converges_into_a_band_around_the_capacity(run_timed: Any) -> None:
    """K = 16: after two seconds the limit stays between K and 2K, with hardly any 503."""
    capacity = Capacity(k=16, ms=50)
    limit = AdaptiveLimit()
    sampler, statuses = run_timed(drive(capacity, limit, 3.5))
    settled = sampler.between(2.0, 3.5)
    assert share(settled, lambda x: 16 <= x <= 32) >= 0.8, settled
    assert share(statuses, lambda s: s == 503) <= 0.02
    assert capacity.served > 0


def test_the_limit_follows_the_capacity_down_and_back_up(run_timed: Any) -> None:
    """K goes 24 -> 6 -> 24: the limit comes under 2K within a second, then climbs back."""
    capacity = Capacity(k=24, ms=50)
    limit = AdaptiveLimit()
    sampler, statuses = run_timed(drive(capacity, limit, 5.0, changes={1.5: 6, 3.0: 24}))
    assert statistics.median(sampler.between(1.0, 1.5)) >= 24
    assert statistics.median(sampler.between(2.5, 3.0)) <= 12
    assert statistics.median(sampler.between(4.0, 5.0)) >= 24
    assert share(statuses, lambda s: s == 503) <= 0.05


def test_the_limit_never_exceeds_numworkers_even_if_the_service_could_take_more(
    run_timed: Any,
) -> None:
    """K = 64 but numworkers = 12: the limit reaches 12; the server never sees more."""
    stats = ServerStats()
    capacity = Capacity(k=64, ms=10)
    limit = AdaptiveLimit()
    sampler, _ = run_timed(drive(capacity, limit, 1.5, numworkers=12, stats=stats))
    assert max(limit for _, limit in sampler.samples) == 12
    assert stats.peak_in_flight <= 12


def test_the_minimum_stays_in_flight_against_a_service_that_mostly_refuses(run_timed: Any) -> None:
    """K = 1 (503 beyond 2 at once) and min_limit = 4: the limit stays 4, all items end."""
    running = peak = 0
    capacity = Capacity(k=1, ms=5)
    limit = AdaptiveLimit(min_limit=4)
    retry: Retry[aiohttp.ClientResponse] = Retry(
        on=aiohttp.ClientError,
        attempts=1000,
        backoff=Backoff(0.001, maximum=0.01),
        if_result=lambda resp: resp.status == 503,
    )

    async def main() -> list[int]:
        async with (
            local_server(capacity=capacity) as base,
            aiohttp.ClientSession() as session,
        ):

            async def fetch(url: str) -> aiohttp.ClientResponse:
                nonlocal running, peak
                running += 1
                peak = max(peak, running)
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        return resp
                finally:
                    running -= 1

            urls = [f"{base}/capacity/{n}" for n in range(100)]
            run_ = parallelize(fetch, urls, 50, adaptive=limit, retry=retry)
            return [resp.status async for resp in run_]

    assert run_timed(main()) == [200] * 100
    assert limit.limit == 4
    assert limit.statistics().overloads > 0
    assert peak == 4
    assert capacity.served == 100
