"""Deadlines: asyncio.timeout for many tasks with one loop timer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parallelize._aio import Deadlines, PullLock


async def guarded(deadlines: Deadlines, seconds: float) -> str:
    entry = deadlines.enter()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if deadlines.expired(entry):
            return "timeout"
        raise
    finally:
        deadlines.leave(entry)
    return "done"


def test_only_the_late_ones_time_out(run: Any) -> None:
    """Tasks that end in time are left alone; the late ones get their timeout, each
    no earlier than its own deadline; the queue and the timer are gone after."""

    async def main() -> None:
        deadlines = Deadlines(0.1)
        loop = asyncio.get_running_loop()
        began = loop.time()
        outcomes = []
        async with asyncio.TaskGroup() as group:
            tasks = []
            for n in range(40):
                tasks.append(group.create_task(guarded(deadlines, 0.3 if n % 4 == 0 else 0.01)))
                await asyncio.sleep(0.002)  # staggered deadlines
        outcomes = [task.result() for task in tasks]
        assert outcomes == ["timeout" if n % 4 == 0 else "done" for n in range(40)]
        assert loop.time() - began < 0.3  # the late ones were cut, not waited for
        assert not deadlines._queue
        assert deadlines._handle is None

    run(main())


def test_a_cancel_from_outside_is_not_a_timeout(run: Any) -> None:
    async def main() -> None:
        deadlines = Deadlines(10)
        task = asyncio.create_task(guarded(deadlines, 5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines._queue

    run(main())


def test_a_timeout_inside_an_outer_cancel_scope_stays_a_cancel(run: Any) -> None:
    """An asyncio.timeout around the guarded block that fires first wins, as nesting
    asyncio.timeout would."""

    async def main() -> None:
        deadlines = Deadlines(0.2)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await guarded(deadlines, 5)

    run(main())


def test_pull_lock_is_taken_at_once_when_free_even_with_waiters(run: Any) -> None:
    """No convoy: a released lock is free to the next taker; the woken waiter waits
    again, first in line, and gets it at the next release."""

    async def main() -> None:
        lock = PullLock()
        assert lock.acquire_nowait()
        waiting = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)
        lock.release()
        assert lock.acquire_nowait(), "free, though a task waits"
        await asyncio.sleep(0)  # the woken waiter finds it taken and waits again
        assert not waiting.done()
        lock.release()
        await waiting
        assert lock.locked()
        lock.release()

    run(main())


def test_pull_lock_passes_the_turn_on_past_cancelled_waiters(run: Any) -> None:
    """A waiter cancelled in line leaves it; one cancelled after being woken hands its
    turn to the next: nobody waits for a free lock."""

    async def main() -> None:
        lock = PullLock()
        await lock.acquire()
        first, second, third = (asyncio.create_task(lock.acquire()) for _ in range(3))
        await asyncio.sleep(0)
        second.cancel()  # in line
        lock.release()  # wakes the first
        first.cancel()  # woken, not yet run
        async with asyncio.timeout(1):
            await third
        assert first.cancelled()
        assert second.cancelled()
        assert lock.locked()
        lock.release()
        async with lock:
            assert lock.locked()
        assert not lock.locked()

    run(main())
