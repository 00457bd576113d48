"""``parallelize.sync(run)``: the same run as a plain iterator, break and errors included."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from parallelize import Failure, SQLiteJournal, parallelize, sync

pytestmark = pytest.mark.timeout(60)


async def double(n: int) -> int:
    await asyncio.sleep(0.001)
    return n * 2


def test_the_outcomes_are_those_of_async_for() -> None:
    got = list(sync(parallelize(double, range(200), 10, ordered=True)))
    assert got == [n * 2 for n in range(200)]


def test_a_plain_function_and_failures_as_in_the_async_run() -> None:
    def check(n: int) -> int:
        if n == 3:
            raise ValueError(n)
        return n

    got = list(sync(parallelize(check, range(6), 2, on_error="yield", ordered=True)))
    assert [o for o in got if not isinstance(o, Failure)] == [0, 1, 2, 4, 5]
    [failure] = [o for o in got if isinstance(o, Failure)]
    assert failure.item == 3


def test_an_error_of_the_run_is_raised_out_of_the_for_after_closing_it() -> None:
    started: list[int] = []

    async def action(n: int) -> int:
        started.append(n)
        if n == 5:
            raise KeyError(n)
        await asyncio.sleep(0.01)
        return n

    run = parallelize(action, range(1000), 4)
    with pytest.raises(KeyError):
        for _ in sync(run):
            pass
    assert len(started) < 100
    assert repr(run).startswith("<parallelize.Run closed")


def test_break_cancels_the_items_in_flight_and_awaits_every_task() -> None:
    cancelled: list[int] = []

    async def slow(n: int) -> int:
        try:
            await asyncio.sleep(0 if n < 3 else 30)
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return n

    run = parallelize(slow, range(100), 8)
    results = sync(run)
    for value in results:
        if value == 2:
            break
    results.close()  # what the for's end does to a generator no name holds
    assert repr(run).startswith("<parallelize.Run closed")
    assert len(cancelled) >= 1
    assert threading.active_count() == 1 or all(
        not t.name.startswith("parallelize") for t in threading.enumerate()
    )


def test_a_dropped_generator_closes_its_run() -> None:
    run = parallelize(double, range(1000), 4)
    for value in sync(run):
        if value == 10:
            break
    gc.collect()
    assert repr(run).startswith("<parallelize.Run closed")


def test_stop_and_statistics_work_between_two_items() -> None:
    run = parallelize(double, range(10_000), 4, stats=True)
    got = []
    for value in sync(run):
        got.append(value)
        if len(got) == 10:
            run.stop()
            assert run.statistics().succeeded >= 10
    assert 10 <= len(got) < 200


def test_a_journal_records_what_the_for_took(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    run = parallelize(double, range(100), 4, journal=SQLiteJournal(path))
    for n, _ in enumerate(sync(run)):
        if n == 29:
            break
    recorded = SQLiteJournal(path).counts()["ok"]
    assert 29 <= recorded <= 30
    rest = list(sync(parallelize(double, range(100), 4, journal=SQLiteJournal(path))))
    assert len(rest) == 100 - recorded


def test_uvloop_through_loop_factory() -> None:
    uvloop = pytest.importorskip("uvloop")
    loops: list[str] = []

    async def where(n: int) -> int:
        loops.append(type(asyncio.get_running_loop()).__module__)
        return n

    assert sorted(sync(parallelize(where, range(5), 2), loop_factory=uvloop.new_event_loop)) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert set(loops) == {"uvloop"}


def test_misuse_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"sync\(\) drives a run: pass parallelize\("):
        sync([1, 2, 3])  # type: ignore[arg-type]

    async def inside() -> None:
        sync(parallelize(double, range(3), 1))

    with pytest.raises(RuntimeError, match="in async code, use async for over the run"):
        asyncio.run(inside())


def test_ctrl_c_raises_keyboard_interrupt_after_closing_the_run(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, signal, sys
            from parallelize import parallelize, sync

            # As at a terminal: a job started in the background (CI's suites are)
            # inherits SIGINT ignored, and asyncio.Runner then leaves it so.
            signal.signal(signal.SIGINT, signal.default_int_handler)

            async def slow(n):
                await asyncio.sleep(60)

            run = parallelize(slow, range(10), 4)
            print("ready", flush=True)
            try:
                for _ in sync(run):
                    pass
            except KeyboardInterrupt:
                print("interrupted", repr(run).split()[1], flush=True)
                sys.exit(7)
            """
        )
    )
    proc = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:  # hung: no process left behind for another test
            proc.kill()
            proc.wait()
    assert proc.returncode == 7
    assert out.strip() == "interrupted closed"
