"""Limits shared by the whole fleet of a run: one rate quota, one concurrency budget.

:class:`SharedRateLimit` is a rate limit kept in Redis (GCRA over the server's
clock), which every process of a run draws from; :class:`SharedBudget` divides a
run's concurrency budget among its workers alive, as a ceiling on each process's
:class:`~parallelize.AdaptiveLimit`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, final

from parallelize._limits import NO_PERMIT, AdaptiveLimit, Permit
from parallelize._limits._rate import check_per_second
from parallelize._util import check_int

from ._connection import Connection

__all__ = ("QueueLike", "SharedBudget", "SharedRateLimit")


class QueueLike(Protocol):
    """What a shared limit uses of its :class:`RedisQueue`: its connection to the run."""

    @property
    def connection(self) -> Connection:
        """The queue's connection (its writes go to the run's ``rate`` key)."""


@final
class SharedBudget:
    """A run's concurrency budget, divided among its workers alive.

    Each adaptive limit given here keeps at most ``total`` divided by the workers
    alive as its ceiling: resized at every report of this process.
    """

    def __init__(self) -> None:
        self._limits: list[tuple[AdaptiveLimit, int]] = []  # limits sharing a budget

    def limit(self, total: int, alive: int, **options: Any) -> AdaptiveLimit:
        """Return a new adaptive limit under a share of ``total`` (``alive`` workers)."""
        check_int("total", total, 1)
        limit = AdaptiveLimit(**options)
        self._limits.append((limit, total))
        if alive:
            limit.cap(max(1, total // alive))
        return limit

    def resize(self, alive: int) -> None:
        """Give each limit its share, now that ``alive`` workers are on the run."""
        for limit, total in self._limits:
            limit.cap(max(1, total // max(1, alive)))


@final
class SharedRateLimit:
    """A rate limit kept in Redis, shared by every process of a run.

    Made by :meth:`RedisQueue.rate_limit`; pass it as ``rate_limit=``. The same
    GCRA as :class:`~parallelize.RateLimit`, over the server's clock: each process
    reserves a few slots at a time (about 50 ms worth), so a fleet takes one round
    trip per few calls and never more than ``per_second`` (plus ``burst``) in
    total. A slot not used in time is dropped, never bunched with the next; a
    ``Retry-After`` pauses the whole fleet. A :class:`~parallelize.Limit`, as
    :class:`~parallelize.RateLimit` is.
    """

    def __init__(self, queue: QueueLike, per_second: float, *, burst: int = 1) -> None:
        check_per_second(per_second)
        self._connection = queue.connection
        self._interval = 1.0 / per_second
        self.burst = check_int("burst", burst, 1)
        self._lease = max(1, min(100, int(per_second * 0.05)))
        self._slots: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._pause: float = 0.0  # a Retry-After to tell the others, in monotonic time
        self.calls = 0
        self.dropped = 0
        self.round_trips = 0

    @property
    def per_second(self) -> float:
        """The run's sustained rate, in calls per second."""
        return 1.0 / self._interval

    def __repr__(self) -> str:
        return f"SharedRateLimit(per_second={self.per_second:g}, burst={self.burst})"

    async def acquire(self) -> None:
        """Wait for this call's slot in the run's shared quota."""
        slots = self._slots
        while True:
            now = time.monotonic()
            while slots and slots[0] < now - self._interval:
                slots.popleft()  # its moment passed unused: never bunch it with the next
                self.dropped += 1
            if slots:
                at = slots.popleft()
                self.calls += 1
                if at > now:
                    await asyncio.sleep(at - now)
                return
            async with self._lock:
                if not slots:
                    await self._reserve()

    async def admit(self, item: Any) -> Permit:  # noqa: ARG002 - one rate for every item
        """Wait for this attempt's slot (the :class:`~parallelize.Limit` side)."""
        await self.acquire()
        return NO_PERMIT

    async def _reserve(self) -> None:
        connection = self._connection
        rate = connection.keys.rate
        interval_us = int(self._interval * 1e6)
        tolerance_us = int((self.burst - 1) * self._interval * 1e6)
        if self._pause:
            delay = max(0.0, self._pause - time.monotonic())
            self._pause = 0.0
            await connection.write(
                "pausing the run's calls",
                "RATE_PAUSE",
                [rate],
                [int(delay * 1e6), tolerance_us],
            )
            self.round_trips += 1
        offsets: Sequence[int] = await connection.write(
            "reserving calls",
            "RATE",
            [rate],
            [interval_us, tolerance_us, self._lease],
        )
        self.round_trips += 1
        now = time.monotonic()
        self._slots.extend(now + offset / 1e6 for offset in offsets)

    def pause_until(self, when: float) -> None:
        """Let no call of the run go before ``when`` (a ``time.monotonic()`` value)."""
        kept = [at for at in self._slots if at >= when]
        self._slots.clear()
        self._slots.extend(kept)
        self._pause = max(self._pause, when)
