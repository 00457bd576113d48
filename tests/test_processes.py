"""``executor="process"``: plain functions in child processes, one item per child.

The actions live in ``process_actions`` (children import them by name). What is
checked: results and errors come back as they were; the children use every core;
a child killed mid-item fails that item only (``ProcessCrashed``), never hangs the
run, and the next items get a new child; a timeout or a closed run kills the child
running the late item; no child outlives the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import process_actions as actions
from parallelize import (
    ActionError,
    Backoff,
    Failure,
    ProcessCrashed,
    Retry,
    parallelize,
)
from proctools import alive, no_children_left

pytestmark = pytest.mark.timeout(60)


def test_results_come_back_from_the_children(run: Any) -> None:
    async def main() -> list[int]:
        return [x async for x in parallelize(actions.square, range(200), 2, executor="process")]

    assert sorted(run(main())) == [x * x for x in range(200)]
    assert no_children_left()


def test_one_child_per_worker_each_reused(run: Any) -> None:
    import multiprocessing  # noqa: PLC0415 - only to list what it started

    async def main() -> set[int]:
        pids = set()
        async for pid in parallelize(actions.pid_of, range(100), 2, executor="process"):
            pids.add(pid)
            # Never more children than workers: those started as the run starts
            # and those the first items would start are the same ones.
            assert len(multiprocessing.active_children()) <= 2
        return pids

    pids = run(main())
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids
    assert not any(alive(pid) for pid in pids)


def test_cpu_bound_items_run_at_once_on_two_cores(run: Any) -> None:
    """Two sleeping items take one sleep, not two: they run in two processes."""

    async def main() -> tuple[float, set[int]]:
        began = time.perf_counter()
        results = [
            r async for r in parallelize(actions.sleep_then, [0.5, 0.5], 2, executor="process")
        ]
        return time.perf_counter() - began, {pid for pid, _ in results}

    elapsed, pids = run(main())
    assert len(pids) == 2
    assert elapsed < 0.95  # two 0.5 s sleeps at once (plus start-up), not one after the other


def test_an_exception_comes_back_with_its_type_and_remote_traceback(run: Any) -> None:
    async def main() -> None:
        # The first failure ends the run: item 4's, or 9's when 4's child was slow
        # to start (a busy machine) and the other worker got there first.
        with pytest.raises(ValueError, match=r"^bad item (4|9)$") as caught:
            async for _ in parallelize(actions.fail_on, range(10), 2, executor="process"):
                pass
        assert "fail_on" in str(caught.value.__cause__)  # the child's traceback, as text
        outcomes = [
            o
            async for o in parallelize(
                actions.fail_on, range(10), 2, executor="process", on_error="yield"
            )
        ]
        failures = sorted(o.item for o in outcomes if isinstance(o, Failure))
        assert failures == [4, 9]

    run(main())
    assert no_children_left()


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (actions.raise_unpicklable, "Unpicklable: unpicklable in its worker process"),
        (actions.raise_system_exit, "raised SystemExit"),
        (actions.return_unpicklable, "returned a function that cannot be pickled"),
    ],
)
def test_what_cannot_cross_the_boundary_fails_the_item_clearly(
    run: Any, action: Any, message: str
) -> None:
    async def main() -> list[Any]:
        return [
            o async for o in parallelize(action, [1, 2], 2, executor="process", on_error="yield")
        ]

    outcomes = run(main())
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, Failure)
        assert isinstance(outcome.exception, ActionError)
        assert message in str(outcome.exception)


def test_a_killed_child_fails_its_item_only_and_is_replaced(run: Any) -> None:
    async def main() -> list[Any]:
        return [
            o
            async for o in parallelize(
                actions.kill_self_on, range(12), 2, executor="process", on_error="yield"
            )
        ]

    outcomes = run(main())
    failures = [o for o in outcomes if isinstance(o, Failure)]
    assert [f.item for f in failures] == [3]
    crash = failures[0].exception
    assert isinstance(crash, ProcessCrashed)
    assert crash.exitcode == -signal.SIGKILL
    assert "killed by SIGKILL" in str(crash)
    assert sorted(o for o in outcomes if not isinstance(o, Failure)) == [
        i for i in range(12) if i != 3
    ]
    assert no_children_left()


def test_a_crash_under_the_default_policy_ends_the_run(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(ProcessCrashed, match=r"exit code 7"):
            async for _ in parallelize(actions.exit_on, range(100), 2, executor="process"):
                pass

    run(main())
    assert no_children_left()


def test_a_child_that_dies_starting_is_told_by_its_own_exit_code(run: Any) -> None:
    """A child that cannot rebuild its action exits by itself (code 1); the error says
    so, not the SIGKILL it would have got had the pool killed it first."""

    async def main() -> None:
        with pytest.raises(ProcessCrashed, match=r"died while starting \(exit code 1\)") as caught:
            async for _ in parallelize(actions.Unbuildable(), [1], 1, executor="process"):
                pass
        assert (caught.value.starting, caught.value.exitcode) == (True, 1)

    run(main())
    assert no_children_left()


def test_an_item_that_kills_every_child_fails_after_its_attempts(run: Any) -> None:
    async def main() -> list[Any]:
        return [
            o
            async for o in parallelize(
                actions.kill_self_on,
                range(6),
                2,
                executor="process",
                on_error="yield",
                retry=Retry(on=ProcessCrashed, attempts=3, backoff=Backoff(initial=0)),
            )
        ]

    outcomes = run(main())
    failures = [o for o in outcomes if isinstance(o, Failure)]
    assert len(failures) == 1
    assert (failures[0].item, failures[0].attempts) == (3, 3)
    assert isinstance(failures[0].exception, ProcessCrashed)
    assert len(outcomes) == 6


def test_a_timeout_kills_the_child_running_the_late_item(run: Any) -> None:
    async def main() -> tuple[list[Any], float]:
        began = time.perf_counter()
        outcomes = [
            o
            async for o in parallelize(
                actions.sleep_then,
                [30, 0.01, 0.01],
                2,
                executor="process",
                timeout=0.5,
                on_error="yield",
            )
        ]
        return outcomes, time.perf_counter() - began

    outcomes, elapsed = run(main())
    assert elapsed < 5  # not the 30 s the late item would have taken
    late = [o for o in outcomes if isinstance(o, Failure)]
    assert len(late) == 1
    assert isinstance(late[0].exception, TimeoutError)
    assert no_children_left()


@pytest.mark.parametrize("how", ["break", "cancel"])
def test_leaving_the_run_kills_the_children_at_once(run: Any, how: str) -> None:
    async def main() -> float:
        pipeline = parallelize(actions.sleep_then, [0.01, 30, 30, 30], 2, executor="process")
        began = time.perf_counter()
        if how == "break":
            async with pipeline:
                async for _ in pipeline:
                    break
        else:

            async def consume() -> None:
                async for _ in pipeline:
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return time.perf_counter() - began

    assert run(main()) < 10
    assert no_children_left()


def test_children_ignore_sigint_the_run_decides(run: Any) -> None:
    """Ctrl-C reaches the whole process group; a child must not die of it."""

    async def main() -> list[Any]:
        import multiprocessing  # noqa: PLC0415

        # A first run starts the fork server: the next children start in milliseconds.
        # (A child still importing when SIGINT comes dies of it: it fails its item.)
        async for _ in parallelize(actions.square, [1], 1, executor="process"):
            pass
        run_ = parallelize(actions.sleep_then, [1.0, 1.0], 2, executor="process")
        outcomes = []
        async with run_:
            results = aiter(run_)
            first = asyncio.ensure_future(anext(results))
            await asyncio.sleep(0.5)
            for child in multiprocessing.active_children():
                os.kill(child.pid or 0, signal.SIGINT)
            outcomes.append(await first)
            outcomes.extend([outcome async for outcome in results])
        return outcomes

    assert len(run(main())) == 2


def test_generator_functions_fan_out_in_processes(run: Any) -> None:
    async def main() -> list[str]:
        return [x async for x in parallelize(actions.links, range(12), 2, executor="process")]

    assert sorted(run(main())) == sorted(f"{p}/{i}" for p in range(12) for i in range(p % 4))


def test_a_users_own_executor_is_used_and_left_open(run: Any) -> None:
    with concurrent.futures.ProcessPoolExecutor(2) as pool:

        async def main() -> list[int]:
            return [x async for x in parallelize(actions.square, range(20), 2, executor=pool)]

        assert sorted(run(main())) == [x * x for x in range(20)]
        assert pool.submit(actions.square, 3).result() == 9  # still open
        with concurrent.futures.ThreadPoolExecutor(2) as threads:

            async def in_threads() -> list[str]:
                return [x async for x in parallelize(actions.links, [5, 6], 2, executor=threads)]

            assert sorted(run(in_threads())) == ["5/0", "6/0", "6/1"]


def test_bad_executors_are_refused_before_anything_runs() -> None:
    async def coroutine_action(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="is an async def, which runs on the event loop"):
        parallelize(coroutine_action, [1], 1, executor="process")
    with pytest.raises(TypeError, match='executor must be "thread", "process"'):
        parallelize(actions.square, [1], 1, executor="processes")  # type: ignore[call-overload]
    with pytest.raises(
        TypeError,
        match=(
            r"^action test_bad_executors_are_refused_before_anything_runs\.<locals>\.<lambda> "
            r'is a lambda: executor="process" sends the action to its child processes by '
            r"module and name, and a lambda has none; define it with def at the top level "
            r"of a module$"
        ),
    ):
        parallelize(lambda x: x, [1], 1, executor="process")

    def nested(x: int) -> int:
        return x

    with pytest.raises(
        TypeError,
        match=(
            r"^action test_bad_executors_are_refused_before_anything_runs\.<locals>\.nested "
            r"is defined inside test_bad_executors_are_refused_before_anything_runs\(\): "
            r'executor="process" sends the action to its child processes by module and '
            r"name, and a child cannot import what is local to a function; define it at "
            r"the top level of a module$"
        ),
    ):
        parallelize(nested, [1], 1, executor="process")


def run_python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run our interpreter as a user would, with the tests' actions importable."""
    path = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(  # noqa: S603 - our own interpreter and scripts
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_child_that_cannot_start_says_why(tmp_path: Path) -> None:
    """The classic mistake: a script without the ``__main__`` guard. Each child runs
    the script's top level again while starting, and dies of it: a clear error that
    names the guard and how the child ended (its own exit, not a kill), not a hang."""
    script = tmp_path / "job.py"
    script.write_text(
        "import asyncio\n"
        "import process_actions\n"
        "from parallelize import parallelize\n"
        "async def main():\n"
        "    async for _ in parallelize(process_actions.square, [1, 2], 2, executor='process'):\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    done = run_python(tmp_path, str(script))
    assert done.returncode == 1
    assert "ProcessCrashed: a worker process" in done.stderr
    assert "died while starting (exit code 1)" in done.stderr
    assert '`if __name__ == "__main__":` guard' in done.stderr


# A user's program: a run cut short at a given moment (a timeout of so many seconds,
# or a pipeline whose process stage gets an argument it cannot send), then a whole
# run of 10 items, three times in one interpreter; the first time, the fork server
# is still starting.
CUT_SHORT = """
import asyncio
import contextlib
import sys
import threading

import process_actions
from parallelize import Failure, parallelize


async def cut_short(when):
    if when == "unpicklable":
        async def fetch(x):
            return threading.Lock()

        with contextlib.suppress(TypeError):
            stage = parallelize(fetch, range(10), 2)
            async for _ in stage.then(process_actions.square, 2, executor="process"):
                pass
    else:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(float(when)):
                run = parallelize(process_actions.square, range(10), 2, executor="process")
                async for _ in run:
                    pass


async def main(when):
    # Development mode, for its warnings; a slow step on a busy machine is no fault.
    asyncio.get_running_loop().slow_callback_duration = 10
    for _ in range(3):
        await cut_short(when)
        outcomes = [
            o
            async for o in parallelize(
                process_actions.square, range(10), 2, executor="process", on_error="yield"
            )
        ]
        failed = [o for o in outcomes if isinstance(o, Failure)]
        errors = {repr(f.exception) for f in failed}
        print(len(outcomes) - len(failed), "of", len(outcomes), *errors)


if __name__ == "__main__":
    when, loop = sys.argv[1:3]
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(when))
"""


@pytest.mark.parametrize("when", ["0.0001", "0.001", "0.01", "0.05", "unpicklable"])
def test_a_run_cut_short_leaves_the_next_one_sound(
    tmp_path: Path, loop_name: str, when: str
) -> None:
    """However abruptly a process run ends (cancelled while the fork server starts,
    while a child starts or runs an item; an argument it cannot send), the next
    run's items all succeed, and nothing is left for asyncio (or the fork server)
    to complain about: in development mode, stderr stays empty."""
    script = tmp_path / "cut_short.py"
    script.write_text(CUT_SHORT)
    done = run_python(tmp_path, "-X", "dev", str(script), when, loop_name)
    assert (done.stdout, done.stderr, done.returncode) == ("10 of 10\n" * 3, "", 0)


# A user's program whose action is defined in __main__, run as `python -c` (or,
# with a file, as a script): {define} binds the action to `action`.
DEFINED_IN_MAIN = """
import asyncio
from parallelize import parallelize
{define}

async def main():
    print(sorted([x async for x in parallelize(action, range(4), 2, executor="process")]))

if __name__ == "__main__":
    asyncio.run(main())
"""

NO_FILE = (
    r"cannot run in child processes \(executor=\"process\"\): {what} is defined in "
    r"__main__, and this __main__ has no file \(python -c, an interactive session or a "
    r"notebook\), so the children, which import the action by its module and name, "
    r"cannot find it\. Define it at the top level of a module file and import it from "
    r"there \(or run a script, `python script\.py`, with its main code under "
    r'`if __name__ == "__main__":`\)$'
)


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (
            "def action(x):\n    return x * x",
            r"^TypeError: action action " + NO_FILE.format(what="it"),
        ),
        (
            (
                "import functools\n"
                "def power(x, n):\n    return x**n\n"
                "action = functools.partial(power, n=2)"
            ),
            r"^TypeError: action functools\.partial\(<function power at 0x[0-9a-f]+>, n=2\) "
            + NO_FILE.format(what="power, which it refers to,"),
        ),
        (
            "action = lambda x: x * x",
            (
                r'^TypeError: action <lambda> is a lambda: executor="process" sends the '
                r"action to its child processes by module and name, and a lambda has none; "
                r"define it with def at the top level of a module$"
            ),
        ),
        (
            (
                "def outer():\n    def square(x):\n        return x * x\n    return square\n"
                "action = outer()"
            ),
            (
                r"^TypeError: action outer\.<locals>\.square is defined inside outer\(\): "
                r'executor="process" sends the action to its child processes by module and '
                r"name, and a child cannot import what is local to a function; define it "
                r"at the top level of a module$"
            ),
        ),
    ],
    ids=["function", "partial", "lambda", "nested"],
)
def test_an_action_the_children_cannot_import_is_refused_before_any_starts(
    tmp_path: Path, define: str, message: str
) -> None:
    """Under `python -c` (as in a notebook), an action defined in __main__ is refused
    at once with what to do, rather than every child dying as it starts."""
    done = run_python(tmp_path, "-c", DEFINED_IN_MAIN.format(define=define))
    assert done.returncode == 1
    assert "ProcessCrashed" not in done.stderr
    assert re.match(message, done.stderr.splitlines()[-1]), done.stderr


def test_an_action_defined_in_a_guarded_script_runs(tmp_path: Path) -> None:
    """What works stays working: a script's own function, its main code guarded."""
    script = tmp_path / "job.py"
    script.write_text(DEFINED_IN_MAIN.format(define="def action(x):\n    return x * x"))
    done = run_python(tmp_path, str(script))
    assert (done.stdout, done.stderr, done.returncode) == ("[0, 1, 4, 9]\n", "", 0)


def test_a_process_stage_in_a_pipeline(run: Any) -> None:
    async def main() -> list[int]:
        async def fetch(x: int) -> int:
            await asyncio.sleep(0)
            return x

        pipeline = (
            parallelize(fetch, range(50), 8)
            .then(actions.square, 2, executor="process")
            .then(str, 1)
        )
        return sorted([int(s) async for s in pipeline])

    assert run(main()) == [x * x for x in range(50)]
    assert no_children_left()
