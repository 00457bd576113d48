"""A smooth rate limit: GCRA, the generic cell rate algorithm.

GCRA keeps one number, the theoretical arrival time (TAT) of the next call. With
an emission interval ``T = 1 / per_second`` and a tolerance ``tau = (burst - 1) * T``,
a call at time ``now`` may go at ``max(TAT, now) - tau`` and moves the TAT on by
``T``. In any window of ``w`` seconds at most ``burst + per_second * w`` calls go,
the first window included: unlike a bucket refilled at second boundaries, it never
lets ``per_second`` calls through at once and then drips (aiolimiter issues 90, 200
and 298). Waiters queue first come, first served behind one timer, which wakes only
the callers whose slot has come; the TAT moves when a call really goes, so a late
wake-up cannot bunch two calls together.

Why not aiolimiter: the core of parallelize depends on the standard library only,
and this is fifteen lines of arithmetic on a float per call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from typing import Any, Protocol, final

from parallelize._util import check_int, check_number

from ._base import NO_PERMIT, Limit, Permit

__all__ = ("RateLimit", "RateLimitStatistics", "RateLimiter", "as_limit", "check_per_second")


def check_per_second(per_second: object) -> float:
    """Check a rate in calls per second (a number > 0, finite), for every rate limit."""
    return check_number("per_second", per_second, above=0, finite=True)


class RateLimiter(Protocol):
    """What a run asks of its ``rate_limit``: a :class:`RateLimit`, or a fleet's.

    A fleet's: :meth:`parallelize.redis.RedisQueue.rate_limit`, shared in Redis.
    """

    async def acquire(self) -> None:
        """Wait for this call's slot."""

    def pause_until(self, when: float) -> None:
        """Let no call go before ``when`` (a ``time.monotonic()`` value)."""


@final
@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitStatistics:
    """A snapshot of a :class:`RateLimit`.

    Attributes:
        calls: Calls let through so far.
        waited: Seconds that callers spent waiting for their slot, in total.
        paused_until: The ``time.monotonic()`` until which a service asked
            everybody to wait (``Retry-After``), or 0.
        waiting: Calls waiting for their slot now. Added in 0.2.
    """

    calls: int
    waited: float
    paused_until: float
    waiting: int = 0


@final
class RateLimit:
    """At most ``per_second`` calls per second, smoothly, with bursts of ``burst``.

    Pass it to ``parallelize(..., rate_limit=...)``; share one object between runs
    to share one quota. Every attempt of every item (retries included) takes a
    slot before it calls the action.

    Args:
        per_second: The sustained rate, > 0 (e.g. ``0.5`` for one call every 2 s).
        burst: How many calls may go at once after a quiet period, >= 1
            (default 1: perfectly even spacing).

    Example:
        >>> quota = RateLimit(50, burst=10)   # an API allowing 50 requests/s
        >>> async for r in parallelize(call_api, ids, 100, rate_limit=quota): ...

    Added in 0.1.
    """

    __slots__ = (
        "_burst",
        "_calls",
        "_interval",
        "_paused_until",
        "_tat",
        "_timer",
        "_tolerance",
        "_waited",
        "_waiters",
    )

    def __init__(self, per_second: float, *, burst: int = 1) -> None:
        check_per_second(per_second)
        check_int("burst", burst, 1)
        self._interval = 1.0 / per_second
        self._burst = burst
        self._tolerance = (burst - 1) * self._interval
        self._tat = -math.inf  # theoretical arrival time, in time.monotonic() seconds
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._calls = 0
        self._waited = 0.0
        self._paused_until = 0.0

    def __repr__(self) -> str:
        return f"RateLimit(per_second={1 / self._interval:g}, burst={self._burst})"

    @property
    def per_second(self) -> float:
        """The sustained rate, in calls per second."""
        return 1.0 / self._interval

    @property
    def burst(self) -> int:
        """How many calls may go at once after a quiet period."""
        return self._burst

    def delay(self, now: float) -> float:
        """Return how long a call arriving at ``now`` must wait for its slot (pure)."""
        return max(0.0, max(self._tat, now) - self._tolerance - now)

    def grant(self, now: float) -> None:
        """Let one call go at ``now``: move the TAT on by one interval.

        The TAT moves from the time the call really goes, so a caller that wakes
        up late cannot bunch with the next one: the bound holds for real call times.
        """
        self._tat = max(self._tat, now) + self._interval
        self._calls += 1

    def pause_until(self, when: float) -> None:
        """Let no call go before ``when`` (a ``time.monotonic()`` value).

        Used when a service answers "429, Retry-After: 30": the whole pool waits,
        not only the item that was told. Calls resume one by one, without a burst.
        """
        self._paused_until = max(self._paused_until, when)
        self._tat = max(self._tat, when + self._tolerance)

    async def acquire(self) -> None:
        """Wait for this call's slot; callers are served first come, first served."""
        now = time.monotonic()
        if not self._waiters and self.delay(now) == 0:
            self.grant(now)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, now))
        if self._timer is None:
            self._arm()
        await waiter  # a cancelled waiter is skipped when its turn comes

    async def admit(self, item: Any) -> Permit:  # noqa: ARG002 - one rate for every item
        """Wait for this attempt's slot (the :class:`~parallelize.Limit` side)."""
        await self.acquire()
        return NO_PERMIT

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.delay(time.monotonic()), self._release)

    def _release(self) -> None:
        """Grant the waiters at the head of the line whose slot has come."""
        self._timer = None
        waiters = self._waiters
        now = time.monotonic()
        while waiters and self.delay(now) == 0:
            waiter, asked = waiters.popleft()
            if waiter.done():  # cancelled while waiting: its turn goes to the next
                continue
            self.grant(now)
            self._waited += now - asked
            waiter.set_result(None)
        if waiters:
            self._arm()

    def statistics(self) -> RateLimitStatistics:
        """Return a snapshot of the calls let through and the time spent waiting."""
        waiting = sum(1 for waiter, _ in self._waiters if not waiter.done())
        return RateLimitStatistics(self._calls, self._waited, self._paused_until, waiting)


@final
class _RateLimiterLimit:
    """A ``rate_limit=`` of the first shape (``acquire()``, ``pause_until()``) as a Limit."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    def __repr__(self) -> str:
        return repr(self._limiter)

    async def admit(self, item: Any) -> Permit:  # noqa: ARG002 - one rate for every item
        await self._limiter.acquire()
        return NO_PERMIT

    def pause_until(self, when: float) -> None:
        self._limiter.pause_until(when)


def as_limit(rate_limit: RateLimiter | Limit) -> Limit:
    """Return ``rate_limit`` as a :class:`Limit` (wrapping a first-shape rate limiter)."""
    if isinstance(rate_limit, Limit):
        return rate_limit
    return _RateLimiterLimit(rate_limit)
