"""``Run.stop()``: take no new item, let those in flight finish and be yielded, end."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallelize import Failure, SQLiteJournal, parallelize

pytestmark = pytest.mark.timeout(60)


def test_stop_ends_the_run_after_the_items_in_flight(run: Any) -> None:
    started: list[int] = []

    async def action(n: int) -> int:
        started.append(n)
        await asyncio.sleep(0.01 if n % 3 else 0.03)
        return n

    async def main() -> list[int]:
        got = []
        async with parallelize(action, range(10_000), 8) as results:
            async for value in results:
                got.append(value)
                if len(got) == 20:
                    results.stop()
                    results.stop()  # again: nothing more
        return got

    got = run(main())
    # The items in flight at the stop, and those done but not yet taken, no more.
    assert 20 <= len(got) <= 100
    assert sorted(got) == sorted(started)  # every item started was yielded


def test_stop_keeps_failures_and_retries_of_the_items_in_flight(run: Any) -> None:
    async def action(n: int) -> int:
        await asyncio.sleep(0.005)
        if n % 2:
            raise ValueError(n)
        return n

    async def main() -> tuple[int, int]:
        ok = failed = 0
        async with parallelize(action, range(1000), 4, on_error="yield") as results:
            async for outcome in results:
                if isinstance(outcome, Failure):
                    failed += 1
                    if failed == 5:
                        results.stop()
                else:
                    ok += 1
        return ok, failed

    ok, failed = run(main())
    assert failed >= 5
    assert ok + failed <= 100  # stopped early: a few dozen, not 1000


@given(stop_after=st.integers(1, 60), workers=st.integers(1, 16))
@settings(max_examples=15, deadline=None)
def test_a_stopped_run_with_a_journal_resumes_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, stop_after: int, workers: int
) -> None:
    """What was yielded is recorded; a rerun does the rest; each item once in all."""
    path = tmp_path_factory.mktemp("stop") / "journal.sqlite"
    calls: list[int] = []

    async def action(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0.001 * (n % 4))
        return n

    async def first() -> list[int]:
        got = []
        async with parallelize(action, range(100), workers, journal=str(path)) as results:
            async for value in results:
                got.append(value)
                if len(got) == stop_after:
                    results.stop()
        return got

    async def second() -> list[int]:
        async with parallelize(action, range(100), workers, journal=str(path)) as results:
            return [value async for value in results]

    done = asyncio.run(first())
    assert len(done) >= min(stop_after, 100)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # `with conn` does not close
        state = conn.execute("SELECT value FROM meta WHERE name = 'state'").fetchone()[0]
    assert state == ("finished" if len(done) == 100 else "interrupted")
    rest = asyncio.run(second())
    assert sorted(done + rest) == list(range(100))
    assert sorted(calls) == list(range(100))  # none run twice
    assert SQLiteJournal(str(path)).counts() == {"ok": 100, "failed": 0}


def test_stop_before_the_first_item_ends_with_nothing(run: Any) -> None:
    async def action(n: int) -> int:
        return n

    async def main() -> list[int]:
        results = parallelize(action, range(100), 4)
        results.stop()
        async with results:
            return [value async for value in results]

    assert run(main()) == []


def test_a_path_journal_argument_type(tmp_path: Path) -> None:
    """The hypothesis test above passes journal= as a str; a Path works the same."""

    async def action(n: int) -> int:
        return n

    async def main() -> list[int]:
        async with parallelize(action, range(5), 2, journal=tmp_path / "j.sqlite") as results:
            return sorted([value async for value in results])

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "options",
    [
        {"stats": True},
        {"ordered": True},
        {"timeout": 5},
        {"handle_signals": True},
        {"rate_limit": 10_000},
    ],
    ids=",".join,
)
def test_stop_works_whichever_worker_the_run_takes(run: Any, options: dict[str, Any]) -> None:
    started: list[int] = []

    async def action(n: int) -> int:
        started.append(n)
        await asyncio.sleep(0.002)
        return n

    async def main() -> list[int]:
        got = []
        kwargs = dict(options)
        if "rate_limit" in kwargs:
            from parallelize import RateLimit  # noqa: PLC0415

            kwargs["rate_limit"] = RateLimit(kwargs["rate_limit"])
        async with parallelize(action, range(5000), 6, **kwargs) as results:
            async for value in results:
                got.append(value)
                if len(got) == 10:
                    results.stop()
        return got

    got = run(main())
    assert 10 <= len(got) <= 100
    assert sorted(got) == sorted(started)
