"""The Limit protocol: the one seam every limit plugs into (issue 21)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parallelize import (
    NO_OUTCOME,
    AdaptiveLimit,
    Failure,
    Limit,
    Permit,
    RateLimit,
    Retry,
    parallelize,
)

pytestmark = pytest.mark.timeout(30)


class PerKey:
    """At most ``most`` attempts in flight per key (the item's first letter)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.held: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.events: list[tuple[str, Any, object]] = []
        self.paused: list[float] = []
        self._free = asyncio.Condition()

    async def admit(self, item: Any) -> Permit:
        key = str(item)[0]
        async with self._free:
            await self._free.wait_for(lambda: self.held.get(key, 0) < self.most)
            self.held[key] = self.held.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.held[key])
        return _Hold(self, key, item)

    def pause_until(self, when: float) -> None:
        self.paused.append(when)


class _Hold:
    def __init__(self, limit: PerKey, key: str, item: Any) -> None:
        self.limit, self.key, self.item = limit, key, item

    def start(self) -> None:
        self.limit.events.append(("start", self.item, None))

    def release(self, outcome: object) -> None:
        self.limit.events.append(("release", self.item, outcome))
        self.limit.held[self.key] -= 1
        loop = asyncio.get_running_loop()
        loop.create_task(self._notify())  # noqa: RUF006 - ends at once

    async def _notify(self) -> None:
        async with self.limit._free:
            self.limit._free.notify_all()


def test_the_library_limits_are_limits() -> None:
    assert isinstance(RateLimit(10), Limit)
    assert isinstance(AdaptiveLimit(), Limit)
    assert isinstance(PerKey(1), Limit)
    assert repr(NO_OUTCOME) == "NO_OUTCOME"


def test_a_limit_of_ones_own_bounds_each_key_and_hears_every_outcome(run: Any) -> None:
    items = [f"{key}{i}" for key in "abc" for i in range(10)] + ["bad"]
    limit = PerKey(2)

    async def action(item: str) -> str:
        await asyncio.sleep(0.002)
        if item == "bad":
            raise ValueError(item)
        return item.upper()

    async def main() -> list[Any]:
        return [r async for r in parallelize(action, items, 20, rate_limit=limit, on_error="yield")]

    results = run(main())
    assert len(results) == len(items)
    assert max(limit.peak.values()) == 2
    releases = {item: outcome for kind, item, outcome in limit.events if kind == "release"}
    assert releases["a3"] == "A3"
    assert isinstance(releases["bad"], ValueError)
    assert sum(isinstance(r, Failure) for r in results) == 1
    assert all(held == 0 for held in limit.held.values())


def test_a_cancelled_attempt_gives_its_permit_back_with_no_outcome(run: Any) -> None:
    limit = PerKey(5)

    async def main() -> None:
        started = asyncio.Event()

        async def hang(_item: str) -> None:
            started.set()
            await asyncio.sleep(3600)

        results = parallelize(hang, ["x1", "x2"], 2, rate_limit=limit)
        async with results:
            task = asyncio.ensure_future(anext(aiter(results)))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(main())
    releases = [outcome for kind, _, outcome in limit.events if kind == "release"]
    assert releases
    assert all(outcome is NO_OUTCOME for outcome in releases)
    assert all(held == 0 for held in limit.held.values())


def test_a_retry_after_pauses_every_limit(run: Any) -> None:
    limit = PerKey(5)
    calls = 0

    class Busy(Exception):
        pass

    async def action(item: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Busy
        return item

    retry = Retry(on=Busy, attempts=2, retry_after=lambda _failure: 0.01)

    async def main() -> list[str]:
        return [r async for r in parallelize(action, ["a"], 1, rate_limit=limit, retry=retry)]

    assert run(main()) == ["a"]
    assert len(limit.paused) == 1
