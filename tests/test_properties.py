"""Properties over random inputs: exactly once, the concurrency bound, lazy pulls, order."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallelize import Failure, parallelize

# Each item: (how many times the action yields to the loop, whether it raises).
ITEMS = st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=200)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class Boom(Exception):
    pass


def make_action(plan: list[tuple[int, bool]]) -> tuple[Any, dict[str, int]]:
    state = {"now": 0, "peak": 0}

    async def action(index: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            yields, fails = plan[index]
            for _ in range(yields):
                await asyncio.sleep(0)
            if fails:
                raise Boom(index)
            return index
        finally:
            state["now"] -= 1

    return action, state


@SETTINGS
@given(
    plan=ITEMS,
    numworkers=st.integers(1, 20),
    ordered=st.booleans(),
    max_buffered=st.integers(0, 10),
)
def test_exactly_one_outcome_per_item_within_the_bound(
    run: Any, plan: list[tuple[int, bool]], numworkers: int, ordered: bool, max_buffered: int
) -> None:
    """Every item ends as one result or one Failure; never more than numworkers run."""
    action, state = make_action(plan)

    async def main() -> list[Any]:
        results = parallelize(
            action,
            range(len(plan)),
            numworkers,
            ordered=ordered,
            on_error="yield",
            max_buffered=max_buffered,
        )
        return [r async for r in results]

    outcomes = run(main())
    seen = sorted(o.item if isinstance(o, Failure) else o for o in outcomes)
    assert seen == list(range(len(plan)))
    failed = {o.item for o in outcomes if isinstance(o, Failure)}
    assert failed == {i for i, (_, fails) in enumerate(plan) if fails}
    assert state["peak"] <= numworkers
    if plan:
        assert state["peak"] >= 1
    if ordered:
        assert [o.item if isinstance(o, Failure) else o for o in outcomes] == list(range(len(plan)))


@SETTINGS
@given(
    n=st.integers(0, 500),
    numworkers=st.integers(1, 20),
    max_buffered=st.integers(0, 10),
    stop_after=st.integers(1, 600),
    is_async=st.booleans(),
)
def test_input_is_never_read_past_the_credit_bound(  # noqa: PLR0917 - hypothesis arguments
    run: Any, n: int, numworkers: int, max_buffered: int, stop_after: int, is_async: bool
) -> None:
    """Items pulled never exceed items consumed + numworkers + max_buffered."""
    pulled = 0

    def source() -> Any:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    async def asource() -> Any:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    async def action(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def main() -> int:
        consumed = 0
        results = parallelize(
            action,
            asource() if is_async else source(),
            numworkers,
            max_buffered=max_buffered,
        )
        async with results:
            async for _ in results:
                consumed += 1
                assert pulled <= consumed + numworkers + max_buffered
                if consumed == stop_after:
                    break
        return consumed

    consumed = run(main())
    assert consumed == min(n, stop_after)
    assert pulled <= consumed + numworkers + max_buffered


# -- statistics add up, whatever the worker and the error mode ---------------------------

KINDS: dict[str, dict[str, Any]] = {
    "plain": {},
    "ordered": {"ordered": True},
    "policy": {"timeout": 30.0},
    "thread": {"thread": True},
    "async input": {"async_input": True},
}


@SETTINGS
@given(
    kind=st.sampled_from(sorted(KINDS)),
    on_error=st.sampled_from(["raise", "yield"]),
    failing=st.sets(st.integers(0, 59), max_size=6),
    delays=st.lists(st.integers(0, 3), min_size=60, max_size=60),
    numworkers=st.integers(1, 8),
)
def test_counts_are_never_negative_and_add_up(
    kind: str, on_error: str, failing: set[int], delays: list[int], numworkers: int
) -> None:
    """stats=True on every kind of worker, in both error modes: no count below 0, done
    is the sum of its parts, and in yield mode the counts are the results seen."""
    options = dict(KINDS[kind])
    thread = options.pop("thread", False)
    async_input = options.pop("async_input", False)

    def sync_action(i: int) -> int:
        if i in failing:
            raise ValueError(i)
        return i

    async def action(i: int) -> int:
        for _ in range(delays[i]):
            await asyncio.sleep(0)
        return sync_action(i)

    async def source() -> Any:
        for i in range(60):
            await asyncio.sleep(0)
            yield i

    async def main() -> tuple[Any, list[Any]]:
        chosen: Any = sync_action if thread else action  # either kind, chosen at run time
        run_ = parallelize(
            chosen,
            source() if async_input else range(60),
            numworkers,
            stats=True,
            on_error="yield" if on_error == "yield" else "raise",
            **options,
        )
        seen: list[Any] = []
        try:
            async with run_:
                async for outcome in run_:
                    seen.append(outcome)  # noqa: PERF401 - kept when the loop raises
        except ValueError:
            assert on_error == "raise"
        return run_.statistics(), seen

    stats, seen = asyncio.run(main())
    counts = (stats.succeeded, stats.failed, stats.done, stats.in_flight, stats.undone)
    if on_error == "yield":  # every outcome was seen, as the counts say
        assert sum(isinstance(o, Failure) for o in seen) == stats.failed
    assert min(counts) >= 0, stats
    assert stats.done == stats.succeeded + stats.failed + stats.replayed + stats.skipped
    assert stats.succeeded + stats.failed + stats.undone <= 60, stats
    if on_error == "yield":
        assert stats.failed == len(failing)
        assert stats.succeeded == 60 - len(failing)
    elif failing:
        assert stats.failed >= 1
