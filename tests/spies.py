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


class TooMany(Exception):
    """A 429 reply that asks for a minute's pause (``Retry-After: 60``)."""

    status = 429
    retry_after = 60.0


def key_of(item: str) -> str:
    """The key of an item written ``key:n``."""
    return item.split(":", maxsplit=1)[0]


class KeyStates:
    """An action that puts the keys of limits per key in each state they can be in.

    For ``PerKey(key_of, concurrency=1, failures=1)``: a ``dead:n`` item fails with a
    connection error (its key's breaker opens: the key is down), a ``slow:n`` one
    with a 429 asking for a minute's pause (its key is paused), and ``busy:n`` ones
    wait for ``gate``: one in flight, the next ones set aside.
    """

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, item: str) -> str:
        key = key_of(item)
        if key == "dead":
            raise ConnectionRefusedError(item)
        if key == "slow":
            raise TooMany(item)
        await self.gate.wait()
        return item
