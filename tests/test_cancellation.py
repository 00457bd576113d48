"""Cancellation against actions that misbehave: the run ends promptly, no task left.

An action may swallow its cancellation and return a value (pyreqwest sometimes
hands back a reply its cancelled task finished), raise something else instead (a
closed client's error), or do so only after awaiting again. Whatever it does,
``break``, ``aclose()``, an error, the consumer's own cancellation and a signal
must end the run, on every kind of worker, with every task awaited.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import LOOPS
from parallelize import Interrupted, Retry, parallelize

# A hang ends the test process with every stack dumped (the signal method cannot
# interrupt a loop that waits for tasks that never end).
pytestmark = pytest.mark.timeout(10, method="thread")

FAST = 2  # items below this return at once; the others wait until cancelled


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def misbehaving(how: str, *, failing: int | None = None) -> Callable[[int], Any]:
    """An action whose slow items handle their cancellation ``how``."""

    async def action(i: int) -> int:
        if i < FAST:
            return i
        if i == failing:
            await asyncio.sleep(0.02)
            msg = f"item {i} failed"
            raise ValueError(msg)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if how == "returns":
                return -i
            if how == "returns later":
                await asyncio.sleep(0.001)
                return -i
            msg = "Client was closed"  # what a closed HTTP client says
            raise RuntimeError(msg) from None
        return i

    return action


async def agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "stats": {"stats": True},
    "yield failures": {"on_error": "yield"},
    "in order": {"ordered": True},
    "policy": {"timeout": 600.0},
    "retries": {"retry": Retry(on=RuntimeError, attempts=3)},
    "adaptive": {"adaptive": True},
    "journal": {"journal": "JOURNAL"},
    "async input": {"input": "async"},
    "async input, retries": {"input": "async", "retry": Retry(on=KeyError)},
}
HOWS = ["returns", "raises", "returns later"]


def build(config: str, tmp_path: Path, action: Callable[[int], Any], **more: Any) -> Any:
    options = dict(CONFIGS[config])
    options.update(more)
    source: Any = agen(10_000) if options.pop("input", None) == "async" else range(10_000)
    if options.get("journal") == "JOURNAL":
        options["journal"] = tmp_path / "j.db"
    return parallelize(action, source, 8, **options)


async def assert_no_task_left() -> None:
    """Every task of the run ends soon (a hang fails the test by its timeout)."""
    while other_tasks():  # noqa: ASYNC110 - polling the loop's own task set
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_break_inside_async_with_ends_the_run(
    run: Any, tmp_path: Path, config: str, how: str
) -> None:
    """break inside ``async with`` ends the run and awaits every task."""

    async def main() -> None:
        async with build(config, tmp_path, misbehaving(how)) as results:
            async for _ in results:
                break
        assert not other_tasks()

    run(main())


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_plain_break_ends_the_run(run: Any, tmp_path: Path, config: str, how: str) -> None:
    """break without ``async with``: the run's tasks end on their own, none leaks."""

    async def main() -> None:
        async for _ in build(config, tmp_path, misbehaving(how)):
            break
        await assert_no_task_left()

    run(main())


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_aclose_ends_the_run(run: Any, tmp_path: Path, config: str, how: str) -> None:
    """aclose() with every slow item in flight returns once every task has ended."""

    async def main() -> None:
        results = build(config, tmp_path, misbehaving(how))
        iterator = aiter(results)
        await anext(iterator)
        await asyncio.sleep(0.01)  # every worker is in a slow item
        await results.aclose()
        assert not other_tasks()

    run(main())


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("config", [c for c in CONFIGS if c != "yield failures"])
def test_an_error_ends_the_run(run: Any, tmp_path: Path, config: str, how: str) -> None:
    """One item's error (on_error="raise") ends the run with it, every task awaited."""

    async def main() -> None:
        async def consume() -> None:
            async with build(config, tmp_path, misbehaving(how, failing=3)) as results:
                async for _ in results:
                    pass

        with pytest.raises(ValueError, match=r"^item 3 failed$"):
            await consume()
        assert not other_tasks()

    run(main())


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_the_consumers_cancellation_ends_the_run(
    run: Any, tmp_path: Path, config: str, how: str
) -> None:
    """A timeout around the consumer (its own cancellation) ends the run too."""

    async def consume() -> None:
        async with build(config, tmp_path, misbehaving(how)) as results:
            async for _ in results:
                pass

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await consume()
        assert not other_tasks()

    run(main())


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_signal_ends_the_run(run: Any, tmp_path: Path, config: str, how: str) -> None:
    """SIGINT with a short grace: the slow items are cancelled and Interrupted ends it."""

    async def main() -> None:
        async def consume() -> None:
            async with build(config, tmp_path, misbehaving(how), handle_signals=0.02) as results:
                async for _ in results:
                    os.kill(os.getpid(), signal.SIGINT)

        with pytest.raises(Interrupted):
            await consume()
        assert not other_tasks()

    run(main())


@pytest.mark.parametrize("how", HOWS)
def test_a_worker_that_swallowed_its_cancellation_starts_no_other_item(run: Any, how: str) -> None:
    """After aclose(), no action starts, even on a worker whose action returned."""
    started_after: list[int] = []
    closed = False
    inner = misbehaving(how)

    async def action(i: int) -> int:
        if closed:
            started_after.append(i)
        return int(await inner(i))

    async def main() -> None:
        nonlocal closed
        results = parallelize(action, range(10_000), 8)
        await anext(aiter(results))
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(results.aclose())
        await asyncio.sleep(0)  # aclose() has cancelled the workers
        closed = True
        await closing

    run(main())
    assert started_after == []


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("config", ["plain", "policy", "async input, retries"])
def test_the_loops_shutdown_ends_a_run_left_open(
    loop_name: str, tmp_path: Path, config: str, how: str
) -> None:
    """A run driven by anext() and never closed: asyncio.run's shutdown cancels its
    tasks, and they end (a worker whose action swallowed it included)."""

    async def main() -> None:
        results = build(config, tmp_path, misbehaving(how))
        await anext(results)
        await asyncio.sleep(0.01)  # every worker is in a slow item; then main returns

    factory = LOOPS[loop_name]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
