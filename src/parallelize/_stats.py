"""A run's statistics: plain counters the workers bump, a snapshot anyone can read.

The engine keeps ints and one latency histogram, nothing else, so that counting
costs a few nanoseconds per item; :class:`Statistics` (rates, percentiles, the ETA)
is computed only when someone asks: a progress display ten times a second, a
Prometheus scrape, the final summary.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._limits import KeyStatistics

__all__ = ("Latency", "LatencyHistogram", "Statistics", "StatsCounters")

# Sub-buckets per power of two: a value is reported within 1/32 of itself (3%).
_SUB = 16
_ZERO = -(1 << 30)  # the bucket of durations of 0 (a clock that did not move)


@final
class LatencyHistogram:
    """Log-linear histogram of durations in seconds: bounded memory, 3% precision.

    Bucket ``e * 16 + s`` holds values in ``[(16 + s) / 32 * 2**e, (17 + s) / 32 *
    2**e)``: 16 buckets per power of two, so about 16 buckets per decade in use and a
    few hundred for any real spread of latencies, however many items are recorded.
    The count, sum, min and max are exact.
    """

    __slots__ = ("count", "counts", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = 0.0

    def record(self, seconds: float) -> None:
        """Add one duration (seconds >= 0)."""
        self.count += 1
        self.total += seconds
        # Not max() and min(): two builtin calls per item cost more than two tests.
        if seconds > self.maximum:  # noqa: PLR1730
            self.maximum = seconds
        if seconds < self.minimum:  # noqa: PLR1730
            self.minimum = seconds
        mantissa, exponent = math.frexp(seconds)  # seconds = mantissa * 2**exponent
        bucket = exponent * _SUB + int(mantissa * 2 * _SUB) if seconds > 0 else _ZERO
        counts = self.counts
        counts[bucket] = counts.get(bucket, 0) + 1

    @staticmethod
    def upper_bound(bucket: int) -> float:
        """Return the (exclusive) upper edge of ``bucket``, in seconds."""
        if bucket == _ZERO:
            return 0.0
        exponent, sub = divmod(bucket, _SUB)
        return math.ldexp((_SUB + sub + 1) / (2 * _SUB), exponent - 1)

    def quantile(self, q: float) -> float:
        """Return the value below which a fraction ``q`` of the durations fall (0 if none)."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """Return :meth:`quantile` of each of ``qs`` (ascending), in one pass."""
        if not self.count:
            return [0.0] * len(qs)
        result: list[float] = []
        seen = 0
        buckets = iter(sorted(self.counts.items()))
        bucket = _ZERO
        for q in qs:
            rank = q * self.count
            while seen < rank:
                try:
                    bucket, n = next(buckets)
                except StopIteration:  # rounding: q * count just above count
                    break
                seen += n
            # The middle of the bucket, within the exact bounds.
            low = 0.0 if bucket == _ZERO else self.upper_bound(bucket - 1)
            middle = (low + self.upper_bound(bucket)) / 2
            result.append(min(max(middle, self.minimum), self.maximum))
        return result

    def cumulative(self, bounds: tuple[float, ...]) -> list[int]:
        """How many durations are <= each of ``bounds`` (as a Prometheus histogram).

        Exact for bounds that are bucket edges (every power of two is one).
        """
        items = sorted(self.counts.items())
        return [
            sum(n for bucket, n in items if self.upper_bound(bucket) <= bound) for bound in bounds
        ]


@final
class StatsCounters:
    """The counters a run keeps when observed (internal, mutable, bumped in place)."""

    __slots__ = (
        "attempts",
        "counter",
        "derived",
        "failed",
        "finished_at",
        "hinted_from",
        "latency",
        "passed_on",
        "per_attempt",
        "retries",
        "started_at",
        "succeeded",
        "timer",
        "unfinished",
    )

    def __init__(self) -> None:
        self.succeeded = 0  # ended with a result (policy and journal workers)
        self.failed = 0  # ended as a failure
        self.passed_on = 0  # an earlier stage's failures, passed on unchanged
        self.retries = 0  # attempts that failed and were scheduled again
        self.attempts = 0  # calls of the action (policy workers)
        # The lean observed worker counts only started items and failures: the
        # finished ones are then the started ones minus those in flight.
        self.derived = False
        # How the lean worker's input counts the items taken: an input of known
        # length by its length hint (taken = hinted_from - the hint now), any other
        # by a counter zipped with it.
        self.hinted_from: int | None = None
        self.counter: itertools.count[int] | None = None
        self.timer: asyncio.TimerHandle | None = None  # the lean worker's sampling
        self.per_attempt = False  # attempts are counted (the policy worker)
        self.latency = LatencyHistogram()
        self.started_at = 0.0  # loop time when the run started
        self.finished_at: float | None = None  # loop time when every worker had ended
        self.unfinished = 0  # items in flight when the run was cancelled


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of the actions' durations, in seconds (each attempt is one).

    Attributes:
        count: How many durations were measured. Every attempt is timed when
            actions take longer than 50 us; faster ones are sampled 1 in 32, so
            that timing them does not cost more than they do.
        mean: The average duration.
        p50: The median.
        p90: 90% of the durations were at most this.
        p99: 99% of the durations were at most this.
        max: The longest duration measured.
        total: The sum of the durations measured (not in the repr). Added in 0.2.
        buckets: The histogram behind the percentiles, for exporters: ``(upper
            bound in seconds, count)`` for each bucket that holds a duration, in
            order of the bound (not in the repr). 16 buckets per power of two;
            every power of two is an exact edge. Added in 0.2.
    """

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    total: float = dataclasses.field(default=0.0, repr=False, compare=False)
    buckets: tuple[tuple[float, int], ...] = dataclasses.field(
        default=(), repr=False, compare=False
    )

    @classmethod
    def of(cls, histogram: LatencyHistogram) -> Latency | None:
        """Return the percentiles of ``histogram``; None when it is empty."""
        if not histogram.count:
            return None
        p50, p90, p99 = histogram.quantiles((0.5, 0.9, 0.99))
        return cls(
            count=histogram.count,
            mean=histogram.total / histogram.count,
            p50=p50,
            p90=p90,
            p99=p99,
            max=histogram.maximum,
            total=histogram.total,
            buckets=tuple(
                (histogram.upper_bound(bucket), n) for bucket, n in sorted(histogram.counts.items())
            ),
        )


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Statistics:
    """A snapshot of a run: what :meth:`Run.statistics` returns, at any time.

    Attributes:
        total: How many items the input has (``len(argslist)``, or ``total=``);
            None when unknown.
        done: Items that have ended: ``succeeded + failed + replayed + skipped +
            passed_on``.
        succeeded: Items whose action returned a result.
        failed: Items that ended as a failure (after their retries).
        replayed: Items whose stored outcome the journal replayed, without running.
        skipped: Items the journal skipped: done by an earlier run.
        passed_on: Items that were failures of an earlier stage of a pipeline,
            passed on without running.
        in_flight: Items whose action runs now (an attempt in progress).
        waiting_retry: Items waiting for their next attempt.
        retries: Attempts that failed and were tried again.
        attempts: Calls of the action in all, including those in flight.
        elapsed: Seconds since the run started.
        rate: Items done per second since the run started (replayed and
            skipped items excluded).
        eta: Seconds until the run is done at that rate; None without a total
            or a rate.
        limit: The most items that may be in flight now: the adaptive limit's
            current value, else ``numworkers``.
        latency: Percentiles of the actions' durations; None before the first.
        finished: True once every worker has ended.
        waiting_limit: Items waiting for an adaptive limit's place or a rate
            limit's slot before their attempt (not in ``in_flight``). Added in 0.2.
        undone: Items taken from the input that ended without an outcome, once the
            run is finished: cut off in flight, waiting for a retry or set aside,
            when it was stopped (a signal, ``break``); a journal runs them again on
            resume. Added in 0.2.
        set_aside: Items set aside by their key's limits (:class:`~parallelize.PerKey`),
            waiting for their key to admit them (not in ``in_flight``). Added in 0.3.
        keys: The keys of a run with :class:`~parallelize.PerKey` limits (None
            without): how many are active, paused, open, the top keys by items
            waiting. Added in 0.3.
    """

    total: int | None
    done: int
    succeeded: int
    failed: int
    replayed: int
    skipped: int
    passed_on: int
    in_flight: int
    waiting_retry: int
    retries: int
    attempts: int
    elapsed: float
    rate: float
    eta: float | None
    limit: int
    latency: Latency | None
    finished: bool
    undone: int = 0
    waiting_limit: int = 0
    set_aside: int = 0
    keys: KeyStatistics | None = None

    def summary(self) -> str:  # noqa: C901, PLR0912 - a line per thing worth saying
        """Return a few lines for people: counts, throughput and latency."""
        total = "" if self.total is None else f" of {self.total:,}"
        items = "item" if self.done == 1 and self.total in (None, 1) else "items"
        line = (
            f"{self.done:,}{total} {items} in {self.elapsed:.2f} s ({self.rate:,.0f}/s): "
            f"{self.succeeded:,} succeeded, {self.failed:,} failed"
        )
        if self.replayed:
            line += f", {self.replayed:,} replayed from the journal"
        if self.skipped:
            line += f", {self.skipped:,} skipped (done before)"
        if self.passed_on:
            line += f", {self.passed_on:,} failed earlier, passed on"
        lines = [line]
        if self.retries:
            lines.append(f"{self.attempts:,} attempts, {self.retries:,} retries")
        if self.in_flight or self.waiting_retry or self.waiting_limit or self.set_aside:
            line = f"{self.in_flight:,} in flight, {self.waiting_retry:,} waiting to retry"
            if self.waiting_limit:
                line += f", {self.waiting_limit:,} waiting for a limit"
            if self.set_aside:
                line += f", {self.set_aside:,} set aside by their key"
            lines.append(line)
        keys = self.keys
        if keys is not None and not keys.limited:
            if keys.keys or keys.down:  # a breaker alone: said when it did something
                line = f"keys: {keys.keys:,} with failures, {keys.open:,} down (breaker open)"
                if keys.down:
                    line += f"; {keys.down:,} items failed as their key was down"
                lines.append(line)
        elif keys is not None:
            line = f"keys: {keys.keys:,} known, {keys.active:,} active"
            if keys.paused:
                line += f", {keys.paused:,} paused"
            if keys.open:
                line += f", {keys.open:,} down (breaker open)"
            if keys.down:
                line += f"; {keys.down:,} items failed as their key was down"
            lines.append(line)
        if self.undone:
            lines.append(
                f"{self.undone:,} left undone: in flight, waiting to retry or set aside "
                "when the run stopped"
            )
        latency = self.latency
        if latency is not None:
            lines.append(
                f"latency p50 {_ms(latency.p50)}, p90 {_ms(latency.p90)}, "
                f"p99 {_ms(latency.p99)}, max {_ms(latency.max)}"
            )
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    """Format a duration in milliseconds, with the digits that matter."""
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms:.3f} ms"
