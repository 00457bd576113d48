"""The general worker, assembled from the parts: every run but the two hot ones.

Each item travels the same way, whatever the options: the item source hands out the
next item (``_sources.py``: a new one under a credit, or a due retry), one attempt
runs, and the outcome sink settles it (``_sinks.py``: buffer, journal tag, retry
heap, error; counting and hooks). A new option adds to a part, not a worker.

The worker has one loop per way to run an attempt, chosen once per run
(``_assemble.py``): ``attempt_each`` runs ``ItemPolicy.attempt`` (limits, timeout,
the retry verdict) on an ``ItemState``; ``call_each``, for a run without a policy,
calls the action inline on the item as it comes, with no state, no coroutine and,
while an item is at hand, no call of the item source per item (its fast path is
inlined: ``docs/design.md`` gives the cost of each part).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parallelize._policies import DONE, RETRY

from ._hot import TIME_EVERY_ITEM_OVER
from ._sources import DELIVERED

if TYPE_CHECKING:
    import random

    from parallelize._observe import ItemHooks
    from parallelize._policies import ItemPolicy
    from parallelize._stats import StatsCounters

    from ._flow import Flow
    from ._sinks import Outcomes
    from ._sources import ItemSource

__all__ = ("attempt_each", "call_each")


async def call_each(  # noqa: C901, PLR0912, PLR0915, PLR0917 - the source's fast path inlined
    flow: Flow,
    items: ItemSource,
    action: Callable[..., Any],
    outcomes: Outcomes,
    unpacked: tuple[type, ...],
    stats: StatsCounters | None,
) -> None:
    """Call the action once per item: a run without a policy (no state per item).

    With ``stats`` each item is counted, and timed when ``flow.timing`` is set, as
    the observed worker does; a journaled run times every action (its outcome is
    recorded with its duration), so ``flow.timing`` stays set there.
    """
    clock = time.perf_counter
    journaled = outcomes.journal is not None
    admit = items.admit  # None when every item goes to the action as it comes
    delivered = DELIVERED
    entries = journaled and not items.passthrough  # no stage's failure among them
    source = items.at_hand
    last_kind: type | None = None
    unpack = False
    tag: Any = None  # what the input gave, in a journaled run: the item's entry
    while True:
        # ItemSource.next_nowait(), inlined: a new item of a sync input under a free
        # credit. The call and its tuple would cost 500 instructions per item
        # (docs/design.md); anything else (a wait, an async input) takes take().
        if source is not None and (free := flow.credits) > 0 and not flow.stopping:
            flow.credits = free - 1
            try:
                item = next(source)
            except StopIteration:
                flow.credits += 1
                items.exhaust()
                source = None
                continue
            except Exception as exc:
                flow.worker_failed(exc)
                raise
            index = flow.pulled
            flow.pulled = index + 1
            if admit is not None:
                tag = item  # a journal's entry, in a journaled run
                if entries and tag.stored is None:
                    item = tag.item  # an entry to run: admit()'s commonest case, inlined
                else:
                    item = admit(index, item)
                    if item is delivered:
                        continue  # replayed, or a passing failure
        else:
            taken = await items.take()
            if taken is None:
                return
            index, item, tag = taken
            source = items.at_hand
        kind = type(item)
        if kind is not last_kind:
            last_kind = kind
            unpack = issubclass(kind, unpacked)
        began = clock() if flow.timing else 0.0  # perf_counter() is never 0
        try:
            value = await (action(*item) if unpack else action(item))
        except Exception as exc:
            elapsed = clock() - began if began else None
            if stats is not None:
                if elapsed is not None:
                    stats.latency.record(elapsed)
                stats.failed += 1
            if not journaled:
                elapsed = None  # a Failure's elapsed: the journal's alone
            outcomes.failed(index, item, tag, exc, 1, elapsed, expected=False, unpack=unpack)
            continue
        if began:
            duration = clock() - began
            if stats is not None:
                stats.succeeded += 1
                stats.latency.record(duration)
                flow.timing = journaled or duration >= TIME_EVERY_ITEM_OVER
            if journaled:
                flow.deliver(index, (tag, value, 1, duration))  # Outcomes.done, inlined
                continue
        elif stats is not None:
            stats.succeeded += 1
        flow.deliver(index, value)


async def attempt_each(  # noqa: PLR0917 - the parts, assembled
    flow: Flow,
    items: ItemSource,
    action: Callable[..., Any],
    policy: ItemPolicy,
    outcomes: Outcomes,
    unpacked: tuple[type, ...],
    stats: StatsCounters | None,
    hooks: ItemHooks | None,
    draw: random.Random,
) -> None:
    """Run one attempt of the policy per step: a due retry, or a new item's first."""
    started_hooks = () if hooks is None else hooks.started
    last_kind: type | None = None
    unpack = False
    while (state := await items.next()) is not None:
        item = state.item
        kind = type(item)
        if kind is not last_kind:
            last_kind = kind
            unpack = issubclass(kind, unpacked)
        for hook in started_hooks:
            hook(item, state.attempts + 1)
        attempts = state.attempts
        verdict, payload, delay, expected = await policy.attempt(
            action, unpack, state, draw.random()
        )
        assert flow.loop is not None
        elapsed = flow.loop.time() - state.started
        if stats is not None:
            outcomes.observe(state, attempts, verdict, payload, delay, elapsed, expected)
        if verdict == RETRY:
            outcomes.retry(state, payload, delay)
        elif verdict == DONE:
            outcomes.done(state.index, state.tag, payload, state.attempts, elapsed)
        else:
            outcomes.failed(
                state.index,
                item,
                state.tag,
                payload,
                state.attempts,
                elapsed,
                expected=expected,
                unpack=unpack,
            )
