"""Adaptive concurrency: a limit on calls in flight that follows what the service can take.

:class:`AdaptiveLimit` is the async gate the workers go through: places handed
out first come, first served, one :class:`~parallelize.Permit` per attempt, as
many as the limit allows. Each permit given back tells the limit's arithmetic
(:class:`~._estimator.Estimator`, pure, whose docstring and ``docs/adaptive.md``
tell the algorithm) the call's latency or its overload; :func:`overload_of` is
the default test of an outcome for overload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, final

from parallelize._util import check_callable, check_int, check_number, check_seconds

from ._base import NO_OUTCOME, Permit
from ._estimator import Estimator

__all__ = ("AdaptiveLimit", "AdaptiveStatistics", "overload_of")

logger = logging.getLogger("parallelize")

# HTTP statuses that say "too much": too many requests, service unavailable, and a
# gateway that timed out waiting for the service.
_OVERLOAD_STATUSES = frozenset({429, 503, 504})
# Connection failures of the HTTP clients we know, by class name, so that none has
# to be imported: aiohttp's ClientConnectionError (refused, reset, disconnected),
# httpx's NetworkError and TimeoutException families and RemoteProtocolError.
_OVERLOAD_ERROR_NAMES = frozenset(
    {"ClientConnectionError", "NetworkError", "TimeoutException", "RemoteProtocolError"}
)


def _status_of(outcome: object) -> object:
    status = getattr(outcome, "status", None)  # aiohttp response or error
    if status is None:
        status = getattr(outcome, "status_code", None)  # httpx response
    if status is None:  # httpx.HTTPStatusError carries the response
        status = getattr(getattr(outcome, "response", None), "status_code", None)
    return status


def overload_of(outcome: object) -> bool:
    """Tell whether an attempt's outcome (a result or an exception) means overload.

    The default ``overload`` predicate of :class:`AdaptiveLimit`. True for a
    ``TimeoutError`` (the ``timeout`` option's too) or ``ConnectionError``; for
    aiohttp's ``ClientConnectionError`` and httpx's network, timeout and protocol
    errors; and for anything with an HTTP status of 429, 503 or 504 (an aiohttp or
    httpx response, ``ClientResponseError``, ``HTTPStatusError``). Any other
    exception is neither overload nor a latency sample; any other result is a
    latency sample.

    Added in 0.1.
    """
    if isinstance(outcome, TimeoutError | ConnectionError):
        return True
    if isinstance(outcome, BaseException) and any(
        kind.__name__ in _OVERLOAD_ERROR_NAMES for kind in type(outcome).__mro__
    ):
        return True
    return _status_of(outcome) in _OVERLOAD_STATUSES


@final
@dataclasses.dataclass(frozen=True, slots=True)
class AdaptiveStatistics:
    """A snapshot of an :class:`AdaptiveLimit`.

    Attributes:
        limit: The current limit on calls in flight.
        in_flight: Calls holding a place now (running, or waiting for a rate limit).
        rtt: Mean latency of the last measured round, in seconds (None before one).
        min_rtt: The no-load latency the limit steers by, in seconds (None before
            the first round).
        samples: Latency samples taken.
        overloads: Overload signals seen (timeouts, 503s, ...).
        decreases: Times the limit was cut because of overload.
        probes: Times the no-load latency was measured again (probes).
        phase: ``"start"`` (doubling), ``"steady"`` or ``"probe"`` (the limit is
            held under the service's estimated capacity for a few calls, to
            measure the no-load latency again).
    """

    limit: int
    in_flight: int
    rtt: float | None
    min_rtt: float | None
    samples: int
    overloads: int
    decreases: int
    probes: int
    phase: str


@final
class _Ticket:
    """One call's place in an :class:`AdaptiveLimit`: its :class:`~parallelize.Permit`."""

    __slots__ = ("limit", "outcome", "seq", "started")

    def __init__(self, limit: AdaptiveLimit, seq: int) -> None:
        self.limit = limit
        self.seq = seq
        self.started = 0.0
        self.outcome: object = NO_OUTCOME

    def start(self) -> None:
        self.limit._begin(self)  # noqa: SLF001 - the limit's own permit

    def release(self, outcome: object) -> None:
        self.outcome = outcome
        self.limit._release(self)  # noqa: SLF001 - the limit's own permit


@final
class AdaptiveLimit:
    """A limit on calls in flight that follows what the service can take.

    Pass it as ``parallelize(..., adaptive=AdaptiveLimit(...))``, or write
    ``adaptive=True`` for the defaults. The limit moves between ``min_limit`` and
    ``max_limit`` (default: the run's ``numworkers``): it grows while the latency
    stays flat, shrinks when the latency rises above ``tolerance`` times the no-load
    latency, and is cut at once on overload (timeouts, connection errors, 429, 503,
    504: see :func:`overload_of`). Every attempt of every item (retries included)
    takes a place; one object may be shared by several runs to share one service.

    Args:
        min_limit: The limit never goes below this (default 1): at least this many
            calls stay in flight while there is work.
        max_limit: The limit never goes above this (default: ``numworkers``).
        initial: The limit to start from (default 4, within the bounds).
        tolerance: How much latency above the no-load latency is fine, as a ratio
            (default 1.5: up to 50% slower than unloaded). Higher keeps more calls
            queued at the service; 1.1 keeps it nearly idle.
        backoff: The factor the limit is multiplied by on overload (default 0.7).
        overload: Tells an overload from an outcome (an exception or a result);
            default :func:`overload_of`.
        probe_interval: Seconds between two measurements of the no-load latency
            (default 30, with 10% jitter). Each holds the limit at three quarters
            of the service's estimated capacity for about two round trips, which
            keeps the service nearly busy; a change of the service's latency is
            measured again at once, without waiting for the interval.

    Example:
        >>> limit = AdaptiveLimit(min_limit=2, tolerance=2.0)
        >>> async for page in parallelize(fetch, urls, 500, adaptive=limit):
        ...     print(limit.limit, page)

    Added in 0.1.
    """

    __slots__ = (
        "_ceiling",
        "_estimator",
        "_held",
        "_in_action",
        "_initial",
        "_next_seq",
        "_overload",
        "_random",
        "_waiters",
        "backoff",
        "max_limit",
        "min_limit",
        "probe_interval",
        "tolerance",
    )

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int | None = None,
        initial: int = 4,
        tolerance: float = 1.5,
        backoff: float = 0.7,
        overload: Callable[[object], bool] = overload_of,
        probe_interval: float = 30.0,
    ) -> None:
        self.min_limit = check_int("min_limit", min_limit, 1)
        if max_limit is not None:
            check_int("max_limit", max_limit, 1)
            if max_limit < min_limit:
                raise ValueError(f"max_limit ({max_limit}) must be >= min_limit ({min_limit})")
        self.max_limit = max_limit
        self._initial = check_int("initial", initial, 1)
        self.tolerance = check_number("tolerance", tolerance, above=1)
        if self.tolerance == math.inf:  # a limit that never backs off for latency
            raise ValueError(f"tolerance must be > 1, got {tolerance!r}")
        self.backoff = check_number("backoff", backoff, above=0, below=1)
        self._overload = check_callable("overload", overload, "a function of an outcome")
        self.probe_interval = check_seconds("probe_interval", probe_interval)
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography
        self._estimator = self._new_estimator(max_limit)
        self._ceiling: float = math.inf if max_limit is None else max_limit
        self._held = 0  # places taken: calls running or waiting for a rate limit
        self._in_action = 0  # calls running
        self._next_seq = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def _new_estimator(self, high: int | None) -> Estimator:
        return Estimator(
            low=self.min_limit,
            high=math.inf if high is None else high,
            initial=self._initial,
            tolerance=self.tolerance,
            backoff=self.backoff,
            probe_interval=self.probe_interval * (0.9 + 0.2 * self._random.random()),
            now=time.monotonic(),
        )

    def __repr__(self) -> str:
        return (
            f"AdaptiveLimit(min_limit={self.min_limit}, max_limit={self.max_limit}, "
            f"tolerance={self.tolerance:g}, backoff={self.backoff:g}, limit={self.limit})"
        )

    @property
    def limit(self) -> int:
        """The current limit on calls in flight."""
        return self._estimator.gate

    def statistics(self) -> AdaptiveStatistics:
        """Return a snapshot of the limit, the latencies and the signals seen."""
        e = self._estimator
        return AdaptiveStatistics(
            limit=e.gate,
            in_flight=self._held,
            rtt=e.rtt,
            min_rtt=e.min_rtt,
            samples=e.samples,
            overloads=e.overloads,
            decreases=e.decreases,
            probes=e.probes,
            phase=e.phase.value,
        )

    def _bind(self, numworkers: int) -> None:
        """Cap the limit at a run's ``numworkers`` when no ``max_limit`` was given."""
        if self.max_limit is None:
            self._ceiling = numworkers
            self.cap(numworkers)

    def cap(self, high: float) -> None:
        """Keep the limit at or below ``high`` (and the run's ceiling) from now on.

        A fleet's budget (:meth:`parallelize.redis.RedisQueue.adaptive_limit`) sets
        this process's share with it as workers come and go; a higher ``high``
        frees places at once. Never below ``min_limit``.

        Added in 0.2.
        """
        e = self._estimator
        e.high = max(float(self.min_limit), min(high, self._ceiling))
        e.limit = min(e.limit, e.high)
        e.saved_limit = min(e.saved_limit, e.high)
        self._admit()  # a raised cap frees places at once

    # -- the gate ------------------------------------------------------------------

    async def admit(self, item: Any) -> Permit:  # noqa: ARG002 - one limit for every item
        """Wait for a place for an attempt (the :class:`~parallelize.Limit` side)."""
        return await self._acquire()

    def pause_until(self, when: float) -> None:
        """Nothing to do: the latency and the overloads steer this limit."""

    async def _acquire(self) -> _Ticket:
        """Wait for a place (first come, first served) and take it."""
        if self._held < self._estimator.gate and not self._waiters:
            self._held += 1
        else:
            await self._wait_for_place()
        seq = self._next_seq
        self._next_seq = seq + 1
        return _Ticket(self, seq)

    async def _wait_for_place(self) -> None:
        loop = asyncio.get_running_loop()
        first = False
        while True:
            waiter = loop.create_future()
            if first:
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            try:
                await waiter  # the place is handed over with the result
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._held -= 1  # handed a place, then cancelled: pass it on
                    self._admit()
                raise
            if self._held <= self._estimator.gate:
                return
            # The limit was cut between the hand-over and now: the place is no
            # longer there. Give it back and wait again, first in line.
            self._held -= 1
            first = True

    def _begin(self, ticket: _Ticket) -> None:
        """Mark the call of ``ticket`` as started (after any rate limit)."""
        self._in_action += 1
        self._estimator.started(self._in_action)
        ticket.started = time.monotonic()

    def _release(self, ticket: _Ticket) -> None:
        """Give the place back; learn from the call's outcome, if it has one."""
        if ticket.started:
            self._in_action -= 1
        self._held -= 1
        outcome = ticket.outcome
        e = self._estimator
        if outcome is not NO_OUTCOME and self._overload(outcome):
            before = e.gate
            e.overload(ticket.seq, self._next_seq)
            if e.gate < before:
                logger.debug(
                    "overload (%r): concurrency limit %d -> %d",
                    outcome,
                    before,
                    e.gate,
                    extra={"error": outcome, "limit": e.gate},
                )
        elif outcome is NO_OUTCOME or isinstance(outcome, BaseException):
            # Nothing to learn, but a probe waiting for this call must not wait forever.
            e.skip(ticket.seq, self._next_seq, time.monotonic())
        else:
            now = time.monotonic()
            e.sample(ticket.seq, now - ticket.started, self._next_seq, now)
        self._admit()

    def _admit(self) -> None:
        """Hand free places to the waiters, in order."""
        waiters = self._waiters
        gate = self._estimator.gate
        while waiters and self._held < gate:
            waiter = waiters.popleft()
            if not waiter.done():
                self._held += 1
                waiter.set_result(None)


def bind_to_run(limit: AdaptiveLimit, numworkers: int) -> None:
    """Cap ``limit`` at a run's ``numworkers`` when it has no ``max_limit`` of its own."""
    limit._bind(numworkers)  # noqa: SLF001 - this module's own class
