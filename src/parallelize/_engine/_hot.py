"""The two hand-inlined workers: the measured hot path, and the same path counted.

Every operation here runs once per item of the commonest run (a sync input, results
in completion order, no policy, no journal); ``docs/design.md`` gives their
instruction counts. Every other run takes the general worker (``_general.py``),
built from the parts; these two are what a part costs when it is not inlined.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from parallelize._errors import explain_spread
from parallelize._outcomes import Failure

if TYPE_CHECKING:
    from parallelize._stats import StatsCounters

    from ._flow import Flow

__all__ = ("TIME_EVERY_ITEM_OVER", "UNPACKED", "observed_worker", "plain_worker")

# Items of these types are unpacked as positional arguments: action(*item).
UNPACKED = (tuple, list)
# Actions slower than this (seconds) are timed one by one; faster ones are sampled.
TIME_EVERY_ITEM_OVER = 50e-6


async def plain_worker(  # noqa: C901, PLR0912 - the hot path, inlined on purpose
    flow: Flow,
    source: Iterator[Any],
    action: Callable[..., Any],
    name: str,
    *,
    on_error_yield: bool,
    unpacked: tuple[type, ...] = UNPACKED,
) -> None:
    """Worker for a sync input, results in completion order: the hot path.

    Every operation here runs once per item; keep it that way.
    """
    out = flow.out
    last_kind: type | None = None
    unpack = False
    # Take the credit for the next pull before pulling (see the flow's invariants).
    if flow.credits > 0 and not flow.stopping:
        flow.credits -= 1
    elif not await flow.take_credit():
        return
    try:
        for item in source:
            # Unpack tuples and lists (and their subclasses). Inputs are nearly
            # always of one type: decide once per type, not once per item.
            kind = type(item)
            if kind is not last_kind:
                last_kind = kind
                unpack = issubclass(kind, unpacked)
            try:
                if unpack:
                    value = await action(*item)
                else:
                    value = await action(item)
            except Exception as exc:
                if unpack and type(exc) is TypeError:
                    exc = explain_spread(exc, item, name)
                if not on_error_yield:
                    flow.worker_failed(exc)
                    raise exc  # noqa: TRY201 - explain_spread may have replaced it
                value = Failure(item, exc, stage=name)
            out.append(value)
            waiter = flow.waiter
            if waiter is not None:
                flow.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
            free = flow.credits  # never negative
            if free and not flow.stopping:  # Run.stop() or a signal: no new item
                flow.credits = free - 1
            elif not await flow.take_credit():
                return
    except Exception as exc:
        flow.worker_failed(exc)  # from the input; an action's error was recorded above
        raise
    flow.credits += 1  # the input is exhausted: give back the unused credit


async def observed_worker(  # noqa: C901, PLR0912 - as plain_worker
    flow: Flow,
    source: Iterator[Any],
    action: Callable[..., Any],
    name: str,
    stats: StatsCounters,
    *,
    on_error_yield: bool,
    unpacked: tuple[type, ...] = UNPACKED,
) -> None:
    """``plain_worker`` that also counts, for ``stats=True`` and observers of the run.

    It counts only the failures: the items taken are counted by the input's
    iterator (see ``_assemble.assemble``), the finished ones are those minus the
    ones in flight (see ``statistics()``). An action is timed when ``flow.timing``
    is set: by a timer a hundred times a second, and for good while actions take
    over 50 us. The cost of an untimed item is one attribute test.
    """
    out = flow.out
    clock = time.perf_counter
    record = stats.latency.record
    last_kind: type | None = None
    unpack = False
    if flow.credits > 0 and not flow.stopping:
        flow.credits -= 1
    elif not await flow.take_credit():
        return
    try:
        for item in source:
            kind = type(item)
            if kind is not last_kind:
                last_kind = kind
                unpack = issubclass(kind, unpacked)
            # Timed inline (a helper coroutine would cost a frame per item).
            began = clock() if flow.timing else 0.0  # perf_counter() is never 0
            try:
                if unpack:
                    value = await action(*item)
                else:
                    value = await action(item)
            except Exception as exc:
                if unpack and type(exc) is TypeError:
                    exc = explain_spread(exc, item, name)
                if began:
                    record(clock() - began)
                stats.failed += 1
                if not on_error_yield:
                    flow.worker_failed(exc)
                    raise exc  # noqa: TRY201 - explain_spread may have replaced it
                value = Failure(item, exc, stage=name)
            else:
                if began:
                    duration = clock() - began
                    record(duration)
                    # Slow actions are all timed: it costs little next to them.
                    flow.timing = duration >= TIME_EVERY_ITEM_OVER
            out.append(value)
            waiter = flow.waiter
            if waiter is not None:
                flow.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
            free = flow.credits
            if free and not flow.stopping:
                flow.credits = free - 1
            elif not await flow.take_credit():
                return
    except Exception as exc:
        flow.worker_failed(exc)
        raise
    flow.credits += 1
