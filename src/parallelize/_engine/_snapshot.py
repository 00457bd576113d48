"""``Run.statistics()``: a run's counters and clocks, made into a ``Statistics``.

The workers count as little as they can (the hot ones only their failures: the
items taken come from the input's iterator); what is in flight is what holds a
credit but is neither buffered nor waiting for a retry. This module derives the
rest, from the parts it is given, when a snapshot is asked for.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from parallelize._stats import Latency, Statistics

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator

    from parallelize._journal import RunSession
    from parallelize._limits import KeyBreakers, KeyedLimits
    from parallelize._policies import ItemPolicy
    from parallelize._stats import StatsCounters

    from ._flow import Flow
    from ._sources import ItemSource

__all__ = ("sample_clock", "snapshot", "stop_counting")

SAMPLE_EVERY = 0.01  # seconds between two timed actions when actions are fast


def sample_clock(flow: Flow, stats: StatsCounters, loop: asyncio.AbstractEventLoop) -> None:
    """Have the next action timed, and so on every 10 ms (until ``stats.timer`` is cancelled).

    The counting workers time an action only when ``flow.timing`` is set: a sample
    of the latencies, at the cost of one attribute test per untimed item.
    """
    flow.timing = True
    stats.timer = loop.call_later(SAMPLE_EVERY, sample_clock, flow, stats, loop)


def stop_counting(
    stats: StatsCounters, flow: Flow, items: ItemSource | None, loop: asyncio.AbstractEventLoop
) -> None:
    """Make the counters final: every worker has ended."""
    # What still holds a credit now was in flight when the run was cancelled.
    stats.unfinished = flow.in_flight(0 if items is None else items.holding)
    if stats.timer is not None:
        stats.timer.cancel()
    stats.finished_at = loop.time()


def snapshot(
    stats: StatsCounters,
    flow: Flow,
    items: ItemSource | None,
    policy: ItemPolicy | None,
    journal: RunSession | None,
    *,
    source: Iterator[Any] | None,
    started: bool,
    done: bool,
    total: int | None,
    numworkers: int,
    keys: KeyedLimits | KeyBreakers | None = None,
) -> Statistics:
    """Return the run's ``Statistics`` now (final once ``done``).

    Args:
        stats: The run's counters.
        flow: Its credits and buffers.
        items: The general worker's item source (its retries), if any.
        policy: The run's policy (its limits' waiting attempts, its adaptive limit).
        journal: The run's journal session (what it replayed and skipped), if any.
        source: The sync input, whose length hint tells the items taken (see
            ``StatsCounters.hinted_from``).
        started: The run has started.
        done: Every worker has finished.
        total: The items of the input, if known.
        numworkers: The run's workers (the limit, without an adaptive one).
        keys: The run's limits per key, if any.
    """
    loop = flow.loop
    if stats.finished_at is not None:
        now = stats.finished_at
    else:
        now = loop.time() if started and loop is not None else stats.started_at
    waiting_retry = 0 if items is None else items.waiting
    set_aside = 0 if items is None else items.set_aside
    running = 0
    if started and not done:
        running = flow.in_flight(waiting_retry if items is None else items.holding)
    waiting_limit = min(running, policy.waiting[0]) if running and policy is not None else 0
    running -= waiting_limit
    if stats.derived:
        # The lean worker counts the items it took and its failures only.
        unfinished = stats.unfinished if done else running
        if stats.counter is not None:
            # How far the counter has gone: "count(n + 1)" after n items
            # (compress() draws a number for each item it passes on).
            taken = int(repr(stats.counter)[6:-1]) - 1
        else:
            assert stats.hinted_from is not None
            assert source is not None
            taken = stats.hinted_from - operator.length_hint(source)
        succeeded = taken - unfinished - stats.failed
    else:
        succeeded = stats.succeeded
    # Without retries (every worker but the policy worker) one attempt per item.
    attempts = stats.attempts if stats.per_attempt else succeeded + stats.failed + running
    replayed = 0 if journal is None else journal.replayed
    skipped = 0 if journal is None else journal.skipped
    finished = succeeded + stats.failed + replayed + skipped + stats.passed_on
    elapsed = max(0.0, now - stats.started_at) if started else 0.0
    ran = succeeded + stats.failed
    rate = ran / elapsed if elapsed > 0 else 0.0
    eta = None
    if total is not None and rate > 0:
        eta = max(0, total - finished) / rate
    adaptive = None if policy is None else policy.adaptive
    return Statistics(
        total=total,
        done=finished,
        succeeded=succeeded,
        failed=stats.failed,
        replayed=replayed,
        skipped=skipped,
        passed_on=stats.passed_on,
        in_flight=running,
        waiting_retry=0 if done else waiting_retry,
        retries=stats.retries,
        attempts=attempts,
        elapsed=elapsed,
        rate=rate,
        eta=eta,
        limit=numworkers if adaptive is None else adaptive.limit,
        latency=Latency.of(stats.latency),
        finished=done,
        undone=stats.unfinished + waiting_retry + set_aside if done else 0,
        waiting_limit=waiting_limit,
        set_aside=0 if done else set_aside,
        keys=None if keys is None else keys.statistics(),
    )
