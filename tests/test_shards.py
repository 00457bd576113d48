"""``processes=N``: an async action in child processes, many calls in flight in each.

The actions live in ``shard_actions`` (children import them by name). What is
checked: values and errors come back as they were, spread over the children; the
run's policies stay in the parent (a timeout cancels the child's task, a rate limit
is one budget); a child killed mid-run fails its own calls only and is replaced;
``process_setup`` runs once per child, and its failure is told; a journaled run
keeps exactly one outcome per item through a SIGKILL of the parent, whose children
die with it; no child outlives the run.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import shard_actions as actions
from parallelize import (
    ActionError,
    Backoff,
    Failure,
    ProcessCrashed,
    RateLimit,
    Retry,
    parallelize,
)
from proctools import alive, no_children_left

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).parent


def test_calls_are_spread_over_the_children_and_values_come_back(run: Any) -> None:
    async def main() -> list[int]:
        return [x async for x in parallelize(actions.pid_after, [0.02] * 200, 50, processes=2)]

    pids = collections.Counter(run(main()))
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert min(pids.values()) >= 60  # the fewest in flight gets the next call
    assert no_children_left()


def test_tuples_are_spread_results_keep_their_order_when_asked(run: Any) -> None:
    async def main() -> list[int]:
        items = [(i, i) for i in range(2000)]
        return [x async for x in parallelize(actions.add, items, 64, processes=2, ordered=True)]

    assert run(main()) == [2 * i for i in range(2000)]


def test_errors_come_back_with_their_type_and_remote_traceback(run: Any) -> None:
    async def main() -> list[Any]:
        return [
            x
            async for x in parallelize(
                actions.fail_on_odd, range(20), 8, processes=2, on_error="yield", ordered=True
            )
        ]

    out = run(main())
    assert out[::2] == list(range(0, 20, 2))
    failures = out[1::2]
    assert all(isinstance(f, Failure) for f in failures)
    error = failures[0].exception
    assert isinstance(error, ValueError)
    assert str(error) == "odd: 1"
    assert "fail_on_odd" in str(error.__cause__)  # the child's traceback


def test_what_cannot_cross_fails_its_item_alone(run: Any) -> None:
    async def main() -> list[Any]:
        got = [
            x
            async for x in parallelize(
                actions.returns_unpicklable, [1], 2, processes=2, on_error="yield"
            )
        ]
        got += [
            x
            async for x in parallelize(
                actions.raises_system_exit, [2], 2, processes=2, on_error="yield"
            )
        ]
        got += [
            x
            async for x in parallelize(
                actions.double, [1, threading_lock(), 3], 2, processes=2, on_error="yield"
            )
        ]
        return got

    unpicklable, exited, *rest = run(main())
    assert isinstance(unpicklable.exception, ActionError)
    assert "cannot be pickled" in str(unpicklable.exception)
    assert isinstance(exited.exception, ActionError)
    assert "SystemExit" in str(exited.exception)
    assert sorted(x for x in rest if isinstance(x, int)) == [2, 6]
    (bad,) = [x for x in rest if isinstance(x, Failure)]
    assert isinstance(bad.exception, TypeError)
    assert "cannot be sent to a child process" in str(bad.exception)


def threading_lock() -> Any:
    import threading  # noqa: PLC0415 - one unpicklable object

    return threading.Lock()


def test_generator_actions_fan_out(run: Any) -> None:
    async def main() -> list[str]:
        return [x async for x in parallelize(actions.pages, [1, 2, 3], 3, processes=2)]

    assert sorted(run(main())) == ["1/0", "2/0", "2/1", "3/0", "3/1", "3/2"]


def test_a_timeout_cancels_the_childs_task_and_the_child_lives_on(run: Any) -> None:
    async def main() -> tuple[list[Any], list[int]]:
        late = [
            x
            async for x in parallelize(
                actions.sleep_forever, range(6), 6, processes=2, on_error="yield", timeout=0.2
            )
        ]
        fine = [x async for x in parallelize(actions.double, range(4), 4, processes=2)]
        return late, fine

    late, fine = run(main())
    assert [type(f.exception) for f in late] == [TimeoutError] * 6
    assert sorted(fine) == [0, 2, 4, 6]
    assert no_children_left()


def test_a_killed_child_fails_its_own_calls_and_a_new_one_takes_its_place(
    run: Any, tmp_path: Path
) -> None:
    """The calls in flight in a child that dies fail with ProcessCrashed, the others
    succeed; retried (the poison kills only once), every item succeeds in a new child."""
    marker = str(tmp_path / "killed")

    async def main() -> tuple[list[Any], list[Any]]:
        crashed = [
            x
            async for x in parallelize(
                actions.kill_self_on, range(40), 40, processes=2, on_error="yield"
            )
        ]
        retried = parallelize(
            functools.partial(actions.kill_once_on, marker=marker),
            range(40),
            40,
            processes=2,
            on_error="yield",
            retry=Retry(attempts=3, on=ProcessCrashed, backoff=Backoff(initial=0.01)),
        )
        return crashed, [x async for x in retried]

    crashed, again = run(main())
    failed = [x for x in crashed if isinstance(x, Failure)]
    assert 1 <= len(failed) <= 25  # the dead child's calls only (about half)
    assert all(isinstance(f.exception, ProcessCrashed) for f in failed)
    crash = failed[0].exception
    assert isinstance(crash, ProcessCrashed)
    assert crash.exitcode == -signal.SIGKILL
    assert sum(1 for x in crashed if isinstance(x, int)) == 40 - len(failed)
    assert sorted(again) == list(range(40))  # the dead child's calls, retried, all succeeded
    assert no_children_left()


def test_process_setup_runs_once_in_each_child_and_is_exited(run: Any, tmp_path: Path) -> None:
    log = tmp_path / "closed.log"
    setup = functools.partial(actions.opened, str(log))  # a partial of a module's function

    async def main() -> list[tuple[int, str, int]]:
        return [
            x
            async for x in parallelize(
                actions.read_resource, range(100), 20, processes=2, process_setup=setup
            )
        ]

    out = run(main())
    assert all(name == f"resource-{pid}" for _, name, pid in out)
    pids = {pid for _, _, pid in out}
    assert len(pids) == 2
    assert sorted(log.read_text().split("\n")[:-1]) == sorted(f"closed {p}" for p in pids)


def test_a_failed_process_setup_fails_the_run_with_its_error(run: Any) -> None:
    async def main() -> None:
        async for _ in parallelize(
            actions.double, range(100), 10, processes=2, process_setup=actions.broken
        ):
            pass

    with pytest.raises(ActionError, match="process_setup failed in a child process") as caught:
        run(main())
    assert "no database today" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert len(caught.traceback) < 40  # one error per call: no traceback grown by each raise


def test_the_rate_limit_is_one_budget_for_every_process(run: Any) -> None:
    """100 a second for the run, whatever the processes: not 100 a second each."""

    async def main() -> float:
        started = time.monotonic()
        limit = RateLimit(100, burst=1)
        async for _ in parallelize(actions.double, range(101), 20, processes=2, rate_limit=limit):
            pass
        return time.monotonic() - started

    assert 0.95 <= run(main()) < 3


def test_bad_options_are_refused_before_anything_starts() -> None:
    def plain(x: int) -> int:
        return x

    async def local(x: int) -> int:
        return x

    with pytest.raises(ValueError, match='use executor="process" for a plain function'):
        parallelize(plain, [1], 1, processes=2)
    with pytest.raises(TypeError, match="is defined inside"):
        parallelize(local, [1], 1, processes=2)
    with pytest.raises(ValueError, match="processes must be"):
        parallelize(actions.double, [1], 1, processes=0)
    with pytest.raises(ValueError, match="give processes= too"):
        parallelize(actions.double, [1], 1, process_setup=actions.opened)
    with pytest.raises(TypeError, match="process_setup"):
        parallelize(actions.double, [1], 1, processes=2, process_setup=lambda: 1)  # type: ignore[arg-type, return-value]
    assert no_children_left()


def test_auto_is_the_cores_this_process_may_use(run: Any) -> None:
    async def main() -> set[int]:
        return {x async for x in parallelize(actions.pid_after, [0.01] * 50, 20, processes="auto")}

    assert len(run(main())) == len(os.sched_getaffinity(0))


# -- a SIGKILL of the parent: its children die with it, the journal stays exact ----------------


PARENT = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import shard_actions as actions
from parallelize import parallelize

async def main():
    run = parallelize(actions.pid_after, [0.05] * {items}, 20, processes=2, journal={journal!r})
    async for pid in run:
        print(pid, flush=True)
    print("done", flush=True)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _start_parent(tmp_path: Path, items: int) -> subprocess.Popen[bytes]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(tests=str(HERE), items=items, journal=str(tmp_path / "j.db")))
    return subprocess.Popen(  # noqa: S603 - our interpreter, our script
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )


def _keys(journal: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(journal, timeout=60)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if "outcomes" not in tables:
            return []
        return [key for (key,) in conn.execute("SELECT key FROM outcomes")]


@pytest.mark.parametrize("lines", [30, 200])
def test_a_killed_parent_takes_its_children_and_the_journal_stays_exact(
    tmp_path: Path, lines: int
) -> None:
    """SIGKILL of the parent mid-run: no child outlives it (they exit on their socket's
    end, or the kernel kills them with the fork server); the journal is sound, and the
    resumed run leaves exactly one outcome per item."""
    parent = _start_parent(tmp_path, 400)
    assert parent.stdout is not None
    pids = {int(parent.stdout.readline()) for _ in range(lines)}
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=10)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids), "a child outlived its parent"
    journal = tmp_path / "j.db"
    with contextlib.closing(sqlite3.connect(journal, timeout=60)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = _keys(journal)
    assert len(kept) == len(set(kept)) < 400
    again = _start_parent(tmp_path, 400)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err.decode()
    assert out.decode().count("\n") == 400 - len(kept) + 1  # the rest, then "done"
    assert sorted(_keys(journal)) == list(range(400))


def test_children_killed_at_random_leave_exactly_one_outcome_per_item(
    run: Any, tmp_path: Path
) -> None:
    """A journaled run whose children are SIGKILLed three times at random moments:
    with Retry(on=ProcessCrashed), every item ends once, recorded once, succeeded."""
    journal = tmp_path / "j.db"
    rng = random.Random(23)

    async def main() -> tuple[list[int], int]:
        pids: set[int] = set()
        killed = 0
        retry = Retry(attempts=10, on=ProcessCrashed, backoff=Backoff(initial=0.01))
        shards = parallelize(
            actions.pid_after, [0.01] * 3000, 100, processes=2, journal=journal, retry=retry
        )
        got = []
        async for pid in shards:
            got.append(pid)
            pids.add(pid)
            if killed < 3 and rng.random() < 0.004:
                victim = rng.choice(sorted(pids))
                pids.clear()  # learn the living from the next results
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    continue  # a result of a child killed before, read late
                killed += 1
        return got, killed

    got, killed = run(main())
    assert killed == 3
    assert len(got) == 3000
    keys = _keys(journal)
    assert sorted(keys) == list(range(3000))  # one outcome each, none twice
    assert no_children_left()
