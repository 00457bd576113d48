"""The consumer's side: the async generators that hand a run's results to ``async for``.

Each takes results from the flow's buffer and gives their credits back; when none is
ready it calls the run's slow path (wait, finish, or raise the run's error). An async
generator's C-level ``__anext__`` is the cheapest per result (design.md). A journaled
run's outcomes are recorded here once the consumer is done with them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from parallelize._aio import start_without_hooks
from parallelize._outcomes import Failure

from ._flow import MISSING

if TYPE_CHECKING:
    from parallelize._journal import Entry, RunSession

    from ._flow import Flow

__all__ = (
    "flattened",
    "journaled_results",
    "open_results",
    "ordered_results",
    "recorded",
    "results",
)

SlowPath = Callable[[], Awaitable[Any]]
Unstorable = Callable[[Any], Awaitable[Any]]


def open_results(
    flow: Flow,
    journal: RunSession | None,
    next_slow: SlowPath,
    unstorable: Unstorable,
    *,
    ordered: bool,
    fan_out: bool,
) -> AsyncGenerator[Any, None]:
    """Return the generator that yields a run's results, started (see ``start_without_hooks``).

    In completion or input order; recorded in the journal once taken, if any; a
    generator action's values flattened (``fan_out``). ``next_slow`` waits for the
    next result; ``unstorable`` settles one that the journal cannot store.
    """
    if journal is None:
        chain = (ordered_results if ordered else results)(flow, next_slow)
    elif ordered:
        chain = ordered_results(flow, next_slow)
        start_without_hooks(chain)
        chain = recorded(chain, flow, journal, unstorable)
    else:
        chain = journaled_results(flow, journal, next_slow, unstorable)
    start_without_hooks(chain)
    if fan_out:
        chain = flattened(chain)
        start_without_hooks(chain)
    return chain


async def results(flow: Flow, next_slow: SlowPath) -> AsyncGenerator[Any, None]:
    """Yield results in completion order."""
    yield MISSING  # taken by start_without_hooks()
    out = flow.out
    wake_at = flow.wake_at
    while True:
        if out and flow.error is None:
            # The fast path, once per result: take it and give its credit back
            # (Flow.give_credit(), inlined).
            free = flow.credits + 1
            flow.credits = free
            if free == wake_at:
                flow.wake_worker()
            yield out.popleft()
        else:
            value = await next_slow()
            if value is MISSING:
                return
            yield value


async def ordered_results(flow: Flow, next_slow: SlowPath) -> AsyncGenerator[Any, None]:
    """Yield results in input order, holding early finishers in ``flow.pending``."""
    yield MISSING  # taken by start_without_hooks()
    pending = flow.pending
    while True:
        value = pending.pop(flow.next_index, MISSING)
        if value is not MISSING and flow.error is None:
            flow.next_index += 1
            flow.give_credit()
            yield value
        else:
            value = await next_slow()
            if value is MISSING:
                return
            yield value


async def journaled_results(
    flow: Flow,
    journal: RunSession,
    next_slow: SlowPath,
    unstorable: Callable[[Any], Awaitable[Any]],
) -> AsyncGenerator[Any, None]:
    """Yield a journaled run's outcomes in completion order; record each once taken.

    ``results()`` and ``recorded()`` in one: an outcome is recorded when the
    consumer asks for the next one (its ``async for`` body is done with it).
    Outcomes come tagged by the workers as ``(entry, outcome, attempts, elapsed)``.
    """
    yield MISSING  # taken by start_without_hooks()
    record = journal.record
    prepare = journal.prepare
    out = flow.out
    wake_at = flow.wake_at
    taken: Any = None
    while True:
        if taken is not None:
            record(*taken)  # the consumer is done with it
            taken = None
        if out and flow.error is None:
            free = flow.credits + 1  # give_credit(), inlined as in results()
            flow.credits = free
            if free == wake_at:
                flow.wake_worker()
            taken = out.popleft()
        else:
            taken = await next_slow()
            if taken is MISSING:
                break
        prepared = prepare(taken)  # a result the journal cannot store fails here
        if prepared is not taken:
            taken = await unstorable(prepared)
        yield taken[1]
    journal.close(finished=not flow.stopping)  # stopped early (Run.stop): interrupted


async def recorded(
    results: AsyncGenerator[Any, None],
    flow: Flow,
    journal: RunSession,
    unstorable: Callable[[Any], Awaitable[Any]],
) -> AsyncGenerator[Any, None]:
    """Yield the outcomes of tagged ``results``; record each once it was taken.

    An outcome is recorded when the consumer asks for the next one: its
    ``async for`` body is done with it. Items come tagged by the workers as
    ``(entry, outcome, attempts, elapsed)``.
    """
    yield MISSING  # taken by start_without_hooks()
    taken: tuple[Entry, Any, int, float | None] | None = None
    while True:
        if taken is not None:
            # The consumer asks for the next outcome: it is done with this one.
            journal.record(*taken)
            taken = None
        try:
            tagged = await anext(results)
        except StopAsyncIteration:
            break
        taken = journal.prepare(tagged)
        if taken is not tagged:
            taken = await unstorable(taken)
        yield taken[1]
    journal.close(finished=not flow.stopping)  # stopped early (Run.stop): interrupted


async def flattened(results: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """Yield each value of each item's list (a generator action's values)."""
    yield MISSING  # taken by start_without_hooks()
    async for values in results:
        if type(values) is Failure:
            yield values
        else:
            for value in values:
                yield value
