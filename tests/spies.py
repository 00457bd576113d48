"""Test doubles: actions that count what they see, gated by events instead of sleeps."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


class InFlightSpy:
    """An async action that records calls and the peak number running at once.

    Each call waits until ``gate`` is set (set by default), so a test can hold a
    number of calls in flight and look at the run while they are there.
    """

    def __init__(self, *, gated: bool = False) -> None:
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.in_flight = 0
        self.peak = 0
        self.calls: list[Any] = []
        self.cancelled: list[Any] = []
        self.started = asyncio.Condition()

    async def __call__(self, item: T) -> T:
        self.calls.append(item)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        async with self.started:
            self.started.notify_all()
        try:
            await self.gate.wait()
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.in_flight -= 1
        return item

    async def wait_for_calls(self, count: int) -> None:
        """Wait until at least ``count`` calls have started."""
        async with self.started:
            await self.started.wait_for(lambda: len(self.calls) >= count)


class CountingIterable:
    """A lazy input that counts how many items were taken from it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0

    def __iter__(self) -> Any:
        for i in range(self.n):
            self.pulled += 1
            yield i


async def settle(rounds: int = 5) -> None:
    """Let the event loop run pending callbacks for a few iterations."""
    for _ in range(rounds):
        await asyncio.sleep(0)
