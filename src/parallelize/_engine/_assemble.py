"""Which worker a run takes, and the parts it is assembled from.

A sync input in completion order, without policies, journal or per-item hooks,
takes one of the two hand-inlined workers (``_hot.py``); every other run takes the
general worker (``_general.py``), given its item source and outcome sink here.
"""

from __future__ import annotations

import functools
import itertools
import operator
from typing import TYPE_CHECKING, Any, NamedTuple

from ._general import attempt_each, call_each
from ._hot import observed_worker, plain_worker
from ._sinks import Outcomes
from ._sources import ItemSource

if TYPE_CHECKING:
    import random
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

    from parallelize._aio import PullLock
    from parallelize._journal import RunSession
    from parallelize._observe import ItemHooks
    from parallelize._policies import ItemPolicy
    from parallelize._stats import StatsCounters

    from ._flow import Flow

__all__ = ("Assembly", "assemble")

# Iterators whose length hint is exact: how many items they have left.
_EXACT_HINTS: tuple[type, ...] = (
    type(iter([])),
    type(iter(())),
    type(iter(range(1))),
    type(iter(range(1 << 64))),
)


class Assembly(NamedTuple):
    """A run's worker (called once per worker task) and what it was built with."""

    worker: Callable[[], Coroutine[Any, Any, None]]
    items: ItemSource | None  # the general worker's item source
    source: Iterator[Any] | None  # the sync input, as the worker reads it


def assemble(
    flow: Flow,
    action: Callable[..., Any],
    *,
    name: str,
    sync_source: Iterator[Any] | None,
    async_source: AsyncIterator[Any] | None,
    lock: PullLock | None,
    policy: ItemPolicy | None,
    journal: RunSession | None,
    stats: StatsCounters | None,
    hooks: ItemHooks | None,
    ordered: bool,
    on_error_yield: bool,
    log_failures: bool,
    unpacked: tuple[type, ...],
    passthrough: bool,
    draw: random.Random,
) -> Assembly:
    """Return the worker for a run: one of the two inlined ones, or the general one.

    Sets what the chosen worker needs of ``flow`` and ``stats`` (the first action
    timed; how the items taken are counted).
    """
    general = ordered or sync_source is None or policy is not None or journal is not None
    if policy is None and (stats is not None or journal is not None):
        flow.timing = True  # the first action is timed; a journaled run's, every one
    if not general:
        source = sync_source
        assert source is not None
        if stats is None:
            return Assembly(
                functools.partial(
                    plain_worker,
                    flow,
                    source,
                    action,
                    name,
                    on_error_yield=on_error_yield,
                    unpacked=unpacked,
                ),
                None,
                source,
            )
        stats.derived = True
        # Count the items taken without a bytecode per item: a list's, a tuple's
        # or a range's iterator knows how many it has left; any other input goes
        # through itertools.compress() with a counter as its (always true)
        # selectors: C code, a number drawn per item.
        if isinstance(source, _EXACT_HINTS):
            stats.hinted_from = operator.length_hint(source)
        else:
            stats.counter = counter = itertools.count(1)
            source = itertools.compress(source, counter)
        return Assembly(
            functools.partial(
                observed_worker,
                flow,
                source,
                action,
                name,
                stats,
                on_error_yield=on_error_yield,
                unpacked=unpacked,
            ),
            None,
            source,
        )
    if stats is not None and policy is not None:
        stats.per_attempt = True
    outcomes = Outcomes(
        flow,
        name,
        journal,
        stats,
        hooks,
        on_error_yield=on_error_yield,
        log_failures=log_failures,
    )
    items = ItemSource(
        flow,
        sync_source,
        async_source,
        lock,
        policy,
        outcomes,
        journaled=journal is not None,
        passthrough=passthrough,
    )
    outcomes.retries = items.retries
    # The general worker: its loop for a run without a policy, or with one.
    worker: Callable[[], Coroutine[Any, Any, None]] = (
        functools.partial(call_each, flow, items, action, outcomes, unpacked, stats)
        if policy is None
        else functools.partial(
            attempt_each, flow, items, action, policy, outcomes, unpacked, stats, hooks, draw
        )
    )
    return Assembly(worker, items, sync_source)
