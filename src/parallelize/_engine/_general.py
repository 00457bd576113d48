"""The general worker: one loop assembled from the parts, for every run but the hot ones.

Each item travels the same way, whatever the options: the item source hands out the
next item (a due retry, or a new one under a credit: ``_sources.py``), one attempt
runs (``ItemPolicy.attempt``: its limits, timeout and retry verdict; or, without any
policy, the action called inline), and the outcome sink settles it (``_sinks.py``:
buffer, journal tag, retry heap, error; counting and hooks). A new option adds to a
part, not a worker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from parallelize._policies import DONE, RETRY

from ._hot import TIME_EVERY_ITEM_OVER

if TYPE_CHECKING:
    from parallelize._observe import ItemHooks
    from parallelize._policies import ItemPolicy
    from parallelize._stats import StatsCounters

    from ._flow import Flow
    from ._sinks import Outcomes
    from ._sources import ItemSource

__all__ = ("general_worker",)


async def general_worker(  # noqa: C901, PLR0912, PLR0917 - the parts, assembled
    flow: Flow,
    items: ItemSource,
    action: Callable[..., Any],
    policy: ItemPolicy | None,
    outcomes: Outcomes,
    unpacked: tuple[type, ...],
    stats: StatsCounters | None,
    hooks: ItemHooks | None,
    draw: random.Random,
) -> None:
    """Run items from ``items`` through one attempt each, until there are none.

    Without a policy the action is called inline and, with ``stats``, counted and
    timed when ``flow.timing`` is set, as the observed worker does: a pipeline's
    later stages and ordered runs take this way, two tests per item over the call.
    """
    clock = time.perf_counter
    started_hooks = () if hooks is None else hooks.started
    last_kind: type | None = None
    unpack = False
    while (state := await items.next()) is not None:
        item = state.item
        kind = type(item)
        if kind is not last_kind:
            last_kind = kind
            unpack = issubclass(kind, unpacked)
        if policy is None:
            began = clock() if flow.timing else 0.0  # never set without stats
            try:
                value = await (action(*item) if unpack else action(item))
            except Exception as exc:
                if stats is not None:
                    if began:
                        stats.latency.record(clock() - began)
                    stats.failed += 1
                outcomes.failed(state, exc, 1, None, expected=False, unpack=unpack)
                continue
            if stats is not None:
                stats.succeeded += 1
                if began:
                    duration = clock() - began
                    stats.latency.record(duration)
                    flow.timing = duration >= TIME_EVERY_ITEM_OVER
            flow.deliver(state.index, value)
            continue
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
            outcomes.done(state, payload, state.attempts, elapsed)
        else:
            outcomes.failed(
                state, payload, state.attempts, elapsed, expected=expected, unpack=unpack
            )
