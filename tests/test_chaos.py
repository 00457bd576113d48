"""A chaos property: any mix of failures, each item ends in exactly one outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallelize import Backoff, Failure, RateLimit, RetriesExhausted, Retry, parallelize

# What each attempt of an item does, in turn; the last entry repeats.
OK, EXPECTED, UNEXPECTED, HANG, RETRY_AFTER, BAD_RESULT = range(6)
PLANS = st.lists(st.sampled_from(range(6)), min_size=1, max_size=4)


class Expected(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class Unexpected(Exception):
    pass


# The hang guard has room for the slowest examples hypothesis may draw: with one
# worker, 400 items that hang wait out 400 * 20 ms = 8 s of timeouts alone, before the
# retries' backoffs, and debug mode on a loaded machine is several times slower: the
# whole test once went over the suite's 30 s in CI.
@pytest.mark.timeout(120)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plans=st.lists(PLANS, min_size=1, max_size=400),
    numworkers=st.integers(1, 30),
    attempts=st.integers(1, 4),
    ordered=st.booleans(),
    limited=st.booleans(),
)
def test_every_item_ends_in_exactly_one_outcome(  # noqa: PLR0917 - hypothesis arguments
    run: Any,
    plans: list[list[int]],
    numworkers: int,
    attempts: int,
    ordered: bool,
    limited: bool,
) -> None:
    """Successes, expected and unexpected errors, timeouts and Retry-After, mixed."""
    calls = [0] * len(plans)
    state = {"now": 0, "peak": 0}

    async def action(index: int) -> int:
        plan = plans[index]
        step = plan[min(calls[index], len(plan) - 1)]
        calls[index] += 1
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            await asyncio.sleep(0)
            if step == EXPECTED:
                raise Expected
            if step == UNEXPECTED:
                raise Unexpected
            if step == HANG:
                await asyncio.sleep(3600)
            if step == RETRY_AFTER:
                raise Expected(retry_after=0.002)
            return -1 if step == BAD_RESULT else index
        finally:
            state["now"] -= 1

    retry: Retry[int] = Retry(
        on=Expected,
        attempts=attempts,
        backoff=Backoff(initial=0.001, maximum=0.004),
        if_result=lambda value: value == -1,
    )
    limit = RateLimit(20_000, burst=50) if limited else None

    async def main() -> list[Any]:
        results = parallelize(
            action,
            range(len(plans)),
            numworkers,
            ordered=ordered,
            on_error="yield",
            timeout=0.02,
            retry=retry,
            rate_limit=limit,
        )
        return [outcome async for outcome in results]

    outcomes = run(main())
    items = [o.item if isinstance(o, Failure) else o for o in outcomes]
    assert sorted(items) == list(range(len(plans)))  # exactly one outcome per item
    if ordered:
        assert items == list(range(len(plans)))
    assert state["peak"] <= numworkers
    for outcome in outcomes:
        index = outcome.item if isinstance(outcome, Failure) else outcome
        assert 1 <= calls[index] <= attempts
        if isinstance(outcome, Failure):
            assert outcome.attempts == calls[index]
            last = plans[index][min(calls[index] - 1, len(plans[index]) - 1)]
            kind = {
                EXPECTED: Expected,
                RETRY_AFTER: Expected,
                UNEXPECTED: Unexpected,
                HANG: TimeoutError,
                BAD_RESULT: RetriesExhausted,
            }[last]
            assert isinstance(outcome.exception, kind)
            assert outcome.expected == (last != UNEXPECTED)
        else:
            assert plans[index][min(calls[index] - 1, len(plans[index]) - 1)] == OK
