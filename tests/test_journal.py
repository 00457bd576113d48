"""The SQLite journal: resume a run, replay it, refuse what cannot match, survive SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from parallelize import (
    Failure,
    JournalError,
    RecordedError,
    SQLiteJournal,
    UnstorableResult,
    parallelize,
)

HERE = Path(__file__).parent


class Calls:
    """An action that counts its calls per item; items in ``bad`` raise ValueError."""

    def __init__(self, bad: frozenset[int] = frozenset()) -> None:
        self.bad = bad
        self.calls: Counter[Any] = Counter()

    async def __call__(self, item: Any) -> dict[str, Any]:
        self.calls[item] += 1
        await asyncio.sleep(0)
        if item in self.bad:
            raise ValueError(f"bad {item}")
        return {"item": item}


async def take(run: Any, count: int | None = None) -> list[Any]:
    """The first ``count`` outcomes of ``run`` (all if None), leaving by break."""
    out = []
    async with run:
        async for outcome in run:
            out.append(outcome)
            if count is not None and len(out) == count:
                break
    return out


def test_a_rerun_skips_what_the_consumer_took_and_runs_the_rest(run: Any, tmp_path: Path) -> None:
    """Break after 300 of 1000: the rerun calls the action only for what was not taken."""
    path = tmp_path / "j.db"
    first, second = Calls(), Calls()
    taken = run(take(parallelize(first, range(1000), 10, journal=path), 300))
    rest = run(take(parallelize(second, range(1000), 10, journal=path)))
    # The 300th was taken but its loop body did not finish (break): it runs again.
    assert len(rest) == 701
    assert sorted(o["item"] for o in taken[:299] + rest) == list(range(1000))
    assert set(second.calls) == set(range(1000)) - {o["item"] for o in taken[:299]}
    assert SQLiteJournal(path).counts() == {"ok": 1000, "failed": 0}
    assert (path.stat().st_mode & 0o777) == 0o600


def test_replay_yields_the_stored_outcomes_in_their_place(run: Any, tmp_path: Path) -> None:
    """With replay=True and ordered=True a finished run comes back whole, in order, uncalled."""
    path = tmp_path / "j.db"
    bad = frozenset({3, 50})
    run(take(parallelize(Calls(bad), range(100), 8, journal=path, on_error="yield")))
    again = Calls(bad)
    journal = SQLiteJournal(path, replay=True)
    out = run(
        take(parallelize(again, range(100), 8, journal=journal, on_error="yield", ordered=True))
    )
    assert not again.calls
    assert [o["item"] for o in out if not isinstance(o, Failure)] == sorted(set(range(100)) - bad)
    failures = [o for o in out if isinstance(o, Failure)]
    assert [f.item for f in failures] == [3, 50]
    assert isinstance(failures[0].exception, RecordedError)
    assert str(failures[0].exception) == "ValueError: bad 3"
    assert failures[0].attempts == 1


def test_failures_are_final_unless_retry_failed(run: Any, tmp_path: Path) -> None:
    """A stored failure is skipped on a rerun; retry_failed=True runs it again, stores the fix."""
    path = tmp_path / "j.db"
    run(take(parallelize(Calls(frozenset({7})), range(20), 4, journal=path, on_error="yield")))
    skip = Calls()
    assert run(take(parallelize(skip, range(20), 4, journal=path, on_error="yield"))) == []
    retry = Calls()
    journal = SQLiteJournal(path, retry_failed=True)
    assert run(take(parallelize(retry, range(20), 4, journal=journal, on_error="yield"))) == [
        {"item": 7}
    ]
    assert dict(retry.calls) == {7: 1}
    assert SQLiteJournal(path).counts() == {"ok": 20, "failed": 0}


def test_a_failure_under_on_error_raise_is_not_recorded(run: Any, tmp_path: Path) -> None:
    """The run stopped on the error: a rerun tries that item again."""
    path = tmp_path / "j.db"
    with pytest.raises(ValueError, match=r"^bad 5$"):
        run(take(parallelize(Calls(frozenset({5})), range(10), 1, journal=path)))
    rerun = Calls()
    run(take(parallelize(rerun, range(10), 1, journal=path)))
    assert 5 in rerun.calls


def test_an_async_input_resumes_too(run: Any, tmp_path: Path) -> None:
    """Async generators are numbered and skipped like sync inputs, and closed in the run."""
    path = tmp_path / "j.db"
    closed: list[bool] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(200):
                yield i
        finally:
            closed.append(True)

    run(take(parallelize(Calls(), numbers(), 5, journal=path), 50))
    second = Calls()
    rest = run(take(parallelize(second, numbers(), 5, journal=path)))
    assert len(rest) == 151
    assert closed == [True, True]


def test_a_changed_input_is_refused_before_anything_is_skipped(run: Any, tmp_path: Path) -> None:
    """Positional keys are checked against a hash of the item: another input is an error."""
    path = tmp_path / "j.db"
    run(take(parallelize(Calls(), [f"u{i}" for i in range(10)], 2, journal=path)))
    other = Calls()
    message = r"^input item 0 is 'v0', but the journal recorded a different item at that position"
    with pytest.raises(JournalError, match=message):
        run(take(parallelize(other, [f"v{i}" for i in range(10)], 2, journal=path)))
    assert not other.calls


def test_key_identifies_items_whose_order_changes(run: Any, tmp_path: Path) -> None:
    """With key=, a shuffled rerun of the same items calls nothing."""
    path = tmp_path / "j.db"
    urls = [f"https://example.org/{i}" for i in range(300)]
    run(take(parallelize(Calls(), urls, 10, journal=path, key=str)))
    random.Random(1).shuffle(urls)
    again = Calls()
    assert run(
        take(parallelize(again, [*urls, "https://example.org/new"], 10, journal=path, key=str))
    ) == [{"item": "https://example.org/new"}]


def test_a_journal_cannot_switch_between_positions_and_keys(run: Any, tmp_path: Path) -> None:
    """Reopening a positional journal with key= says how it was written."""
    path = tmp_path / "j.db"
    run(take(parallelize(Calls(), range(3), 1, journal=path)))
    with pytest.raises(JournalError, match=r"identifies items by position in the input, but"):
        run(take(parallelize(Calls(), range(3), 1, journal=path, key=str)))


def test_a_journal_in_use_by_a_live_run_is_refused(run: Any, tmp_path: Path) -> None:
    """Two runs on one journal at once: the second fails at once, the first goes on."""
    path = tmp_path / "j.db"

    async def main() -> list[Any]:
        async with parallelize(Calls(), range(100), 2, journal=path) as first:
            outcomes = aiter(first)
            got = [await anext(outcomes)]
            with pytest.raises(JournalError, match=r"is in use by another run"):
                await take(parallelize(Calls(), range(100), 2, journal=path))
            got += [o async for o in outcomes]
        return got

    assert len(run(main())) == 100


def dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


@pytest.mark.timeout(30)
def test_a_dead_runs_writer_is_waited_for_then_the_journal_opens(run: Any, tmp_path: Path) -> None:
    """The lock is held but its run is dead: its writer process is storing the last
    batches it was sent. A resume waits for it instead of refusing (or skipping it)."""
    path = tmp_path / "j.db"
    run(take(parallelize(Calls(), range(10), 2, journal=path)))
    lock = Path(f"{path}.lock")
    lock.write_text(str(dead_pid()))
    holder = subprocess.Popen(  # noqa: S603 - a stand-in for the draining writer
        [sys.executable, "-c", HOLD_LOCK, str(lock), "0.5"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    started = time.monotonic()
    calls = Calls()
    run(take(parallelize(calls, range(12), 2, journal=path)))
    assert time.monotonic() - started >= 0.3  # it waited for the writer
    assert set(calls.calls) == {10, 11}
    holder.communicate()
    assert holder.returncode == 0


HOLD_LOCK = """
import fcntl, sys, time
with open(sys.argv[1], "r+b") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.timeout(30)
def test_a_writer_process_that_dies_is_a_clear_error(run: Any, tmp_path: Path) -> None:
    """The writer process is killed mid-run: the run ends with a JournalError that
    says so, and everything stored before stays stored."""
    path = tmp_path / "j.db"
    journal = SQLiteJournal(path, flush_every=10)

    async def main() -> int:
        taken = 0
        async with parallelize(Calls(), range(1000), 4, journal=journal) as outcomes:
            async for _ in outcomes:
                taken += 1
                if taken == 50:
                    writer = journal._writer
                    assert writer is not None
                    writer.kill()
                    writer.wait()
        return taken

    with pytest.raises(JournalError, match=r"writer process of journal .* failed"):
        run(main())
    assert 10 <= len(stored_ok(path)) < 1000
    calls = Calls()
    run(take(parallelize(calls, range(1000), 4, journal=path)))
    assert len(stored_ok(path)) == 1000  # the resume ran the rest


def stored_ok(path: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [key for (key,) in conn.execute("SELECT key FROM outcomes WHERE ok = 1")]


def test_a_corrupt_file_is_refused_and_left_as_it_was(run: Any, tmp_path: Path) -> None:
    """A file that is not a journal is an error naming it; its bytes are untouched."""
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match=r"is not a parallelize journal, or it is corrupt"):
        run(take(parallelize(Calls(), range(3), 1, journal=path)))
    assert path.read_bytes() == b"this is not a database" * 100


def test_a_journal_from_a_newer_version_is_refused(run: Any, tmp_path: Path) -> None:
    """A higher format number asks for an upgrade instead of guessing."""
    path = tmp_path / "j.db"
    run(take(parallelize(Calls(), range(3), 1, journal=path)))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'format'")
        conn.commit()
    with pytest.raises(JournalError, match=r"newer parallelize \(format 99"):
        run(take(parallelize(Calls(), range(3), 1, journal=path)))


def test_a_journal_in_a_missing_directory_is_a_journal_error(run: Any, tmp_path: Path) -> None:
    """Not a bare FileNotFoundError: the message says what to check."""
    calls = Calls()
    with pytest.raises(JournalError, match="check that its directory exists"):
        run(take(parallelize(calls, range(3), 1, journal=tmp_path / "nowhere" / "j.db")))
    assert not calls.calls


def test_a_result_json_cannot_store_is_a_clear_error_and_keeps_the_rest(
    run: Any, tmp_path: Path
) -> None:
    """Returning an object JSON cannot encode fails naming the item (UnstorableResult,
    before the loop body sees it); earlier outcomes stay."""
    path = tmp_path / "j.db"

    async def action(item: int) -> object:
        return object() if item == 5 else item

    with pytest.raises(
        UnstorableResult, match=r"^the journal's codec cannot store the result of item 5, a object"
    ):
        run(take(parallelize(action, range(10), 1, journal=path)))
    assert SQLiteJournal(path).counts() == {"ok": 5, "failed": 0}


def test_key_without_a_journal_is_refused() -> None:
    """key= alone would do nothing: say what it is for."""
    with pytest.raises(
        ValueError, match=r"^key= identifies items in a journal: pass journal= too$"
    ):
        parallelize(Calls(), range(3), 1, key=str)


# -- crashes: SIGKILL at random moments, then resume -------------------------------------


def read_calls(path: Path) -> Counter[int]:
    if not path.exists():
        return Counter()
    return Counter(int(line) for line in path.read_text().split())


def wait_for_the_writer(journal: Path) -> None:
    """Wait until a killed run's writer process has stored its last batches."""
    lock = Path(f"{journal}.lock")
    if lock.exists():
        with lock.open("r+b") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # the test's timeout bounds it


def stored(path: Path) -> dict[int, int]:
    # A long busy timeout: under a loaded machine a writer that outlived its killed
    # run may still hold the database for more than sqlite3's default 5 s.
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if "outcomes" not in tables:  # killed after the file was made, before its schema
            return {}
        return dict(conn.execute("SELECT key, CAST(data AS INTEGER) FROM outcomes WHERE ok = 1"))


@pytest.mark.timeout(180)
def test_sigkill_at_twenty_moments_loses_nothing_and_records_nothing_twice(tmp_path: Path) -> None:
    """20,000 items, killed 20 times at random moments and resumed: each item has exactly one
    outcome, and only items in flight, buffered or unflushed at a kill ran twice."""
    items, workers = 20_000, 20
    journal, calls_log = tmp_path / "crash.db", tmp_path / "calls.log"
    draws = random.Random(20261123)
    command = [sys.executable, str(HERE / "crash_worker.py"), str(journal), str(calls_log)]
    # What a kill can cost: the items in flight (workers), the results waiting for the
    # consumer (max_buffered = workers) and the outcomes not yet flushed (at most
    # flush_every = 1000, in practice flush_interval = 50 ms of work).
    bound = workers + workers + 1000
    rerun_per_kill = []
    for kill in range(20):
        before = read_calls(calls_log)
        done_before = set(stored(journal)) if journal.exists() else set()
        worker = subprocess.Popen([*command, str(items), str(workers), str(kill)])  # noqa: S603 - our own script
        time.sleep(draws.uniform(0.3, 0.7))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_for_the_writer(journal)  # it stores what it was sent, then lets go
        after = read_calls(calls_log)
        called_now = set((after - before).keys())
        done_after = set(stored(journal)) if journal.exists() else set()
        assert done_before <= done_after  # nothing recorded is ever lost
        rerun_per_kill.append(len(called_now - done_after))  # will run again
    final = subprocess.run(  # noqa: S603 - our own script
        [*command, str(items), str(workers), "99"], capture_output=True, text=True, check=True
    )
    assert final.stdout.startswith("done ")
    outcomes = stored(journal)
    assert sorted(outcomes) == list(range(items))
    assert all(value == 2 * key for key, value in outcomes.items())
    calls = read_calls(calls_log)
    assert set(calls) == set(range(items))
    twice = sum(1 for count in calls.values() if count > 1)
    sys.stdout.write(f"\nran more than once: {twice} items; per kill: {rerun_per_kill}\n")
    assert max(rerun_per_kill) <= bound
    assert twice <= sum(rerun_per_kill)
    assert journal.stat().st_mode & 0o777 == 0o600


# -- SIGINT / SIGTERM: a graceful stop, and a second signal --------------------------------


def start_signal_worker(
    tmp_path: Path, items: int, sleep: float, grace: float
) -> subprocess.Popen[bytes]:
    """Start signal_worker.py and wait for its first call.

    Unbuffered, so that reading "progress" leaves what follows in the pipe for
    communicate(): a buffered reader may take "done N" with it (a fast rerun
    prints both at once) and communicate() would then see nothing.
    """
    command = [
        sys.executable,
        str(HERE / "signal_worker.py"),
        str(tmp_path / "j.db"),
        str(tmp_path / "calls.log"),
        str(items),
        "10",
        str(sleep),
        str(grace),
    ]
    worker = subprocess.Popen(  # noqa: S603 - our own script
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )
    assert worker.stdout is not None
    assert worker.stdout.readline() == b"progress\n"
    return worker


def finish(worker: subprocess.Popen[bytes], timeout: float) -> tuple[str, str]:
    out, err = worker.communicate(timeout=timeout)
    return out.decode(), err.decode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_gracefully_and_it_resumes_without_rerunning(
    tmp_path: Path, signum: int
) -> None:
    """The items in flight finish and are recorded; the rerun runs each other item once."""
    worker = start_signal_worker(tmp_path, 2000, 0.02, 10.0)
    time.sleep(0.3)
    worker.send_signal(signum)
    _, stderr = finish(worker, 30)
    assert worker.returncode == 130
    name = signal.Signals(signum).name
    assert f"stopped by {name}; " in stderr
    assert f"outcomes were recorded in '{tmp_path / 'j.db'}' by this run" in stderr
    journal = tmp_path / "j.db"
    called = read_calls(tmp_path / "calls.log")
    assert set(stored(journal)) == set(called)  # every item started was finished and kept
    assert 0 < len(called) < 2000
    again = start_signal_worker(tmp_path, 2000, 0.0, 10.0)
    finish(again, 30)
    assert again.returncode == 0
    assert sorted(stored(journal)) == list(range(2000))
    assert set(read_calls(tmp_path / "calls.log").values()) == {1}  # nothing ran twice


@pytest.mark.timeout(60)
def test_a_second_signal_cancels_at_once_and_the_journal_stays_sound(tmp_path: Path) -> None:
    """Items that would take 30 s: the second Ctrl-C ends the process at once, journal intact."""
    worker = start_signal_worker(tmp_path, 100, 30.0, 30.0)
    time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    time.sleep(0.2)
    started = time.monotonic()
    worker.send_signal(signal.SIGINT)
    _, stderr = finish(worker, 20)
    assert time.monotonic() - started < 5
    assert worker.returncode == 130, stderr
    journal = tmp_path / "j.db"
    with contextlib.closing(sqlite3.connect(journal)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    again = start_signal_worker(tmp_path, 100, 0.0, 10.0)
    assert finish(again, 30)[0].startswith("done ")
    assert sorted(stored(journal)) == list(range(100))


def test_policies_and_the_journal_record_attempts_and_timing(run: Any, tmp_path: Path) -> None:
    """With retries, the journal stores each item's attempts; replay gives them back."""
    path = tmp_path / "j.db"
    seen: Counter[int] = Counter()

    async def flaky(item: int) -> int:
        seen[item] += 1
        await asyncio.sleep(0)
        return -1 if seen[item] == 1 and item % 2 else item  # odd items: one bad answer

    from parallelize import Backoff, Retry  # noqa: PLC0415 - only this test

    retry: Retry[int] = Retry(
        on=ValueError, attempts=3, backoff=Backoff(0.001), if_result=lambda v: v == -1
    )
    out = run(take(parallelize(flaky, range(10), 4, journal=path, retry=retry, ordered=True)))
    assert out == list(range(10))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        attempts = dict(conn.execute("SELECT key, attempts FROM outcomes"))
        elapsed = [e for (e,) in conn.execute("SELECT elapsed FROM outcomes")]
    assert attempts == {i: 2 if i % 2 else 1 for i in range(10)}
    assert all(e is not None and e >= 0 for e in elapsed)


def test_a_journal_or_signal_handling_alone_logs_no_failures(
    run: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures are logged under the user's policies only, as in a plain run."""
    for options in ({"journal": tmp_path / "j.db"}, {"handle_signals": True}):
        out = run(
            take(parallelize(Calls(frozenset({1})), range(3), 1, on_error="yield", **options))
        )
        assert sum(isinstance(o, Failure) for o in out) == 1
    assert not [r for r in caplog.records if r.name == "parallelize"]


def test_a_slow_async_input_is_not_held_back_by_the_lookup_batch(run: Any, tmp_path: Path) -> None:
    """Items read before the input stalls run at once (a pipe, tail -f), not after 256."""
    path = tmp_path / "j.db"

    async def main() -> list[int]:
        more = asyncio.Event()

        async def stalling() -> AsyncIterator[int]:
            yield 1
            yield 2
            await more.wait()  # the input goes quiet
            yield 3

        out = []
        results = parallelize(Calls(), stalling(), 4, journal=path)
        async with results:
            async for outcome in results:
                out.append(outcome["item"])
                if len(out) == 2:
                    more.set()  # only reached if 1 and 2 ran before the stall ended
        return out

    assert sorted(run(main())) == [1, 2, 3]
    assert sorted(stored(path)) == [0, 1, 2]


def test_leaving_while_the_async_input_stalls_closes_it_cleanly(run: Any, tmp_path: Path) -> None:
    """A break while the input waits ends its pending step and closes it; nothing leaks."""
    closed = []

    async def stalling() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.Event().wait()  # never
            yield 2
        finally:
            closed.append(True)

    async def main() -> list[Any]:
        results = parallelize(Calls(), stalling(), 2, journal=tmp_path / "j.db")
        async with results:
            async for outcome in results:
                return [outcome["item"]]
        return []

    assert run(main()) == [1]
    assert closed == [True]


def test_an_error_from_a_stalled_async_input_propagates(run: Any, tmp_path: Path) -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0.01)
        raise OSError("the pipe broke")

    with pytest.raises(OSError, match="the pipe broke"):
        run(take(parallelize(Calls(), failing(), 2, journal=tmp_path / "j.db")))


def test_settings_that_differ_are_refused_and_adopt_settings_reuses(tmp_path: Path) -> None:
    """SQLiteJournal(settings=...): a rerun with other settings is a JournalError
    naming the change; adopt_settings=True replays the outcomes and keeps the new."""
    path = tmp_path / "j.db"

    async def double(x: int) -> int:
        return 2 * x

    async def run_with(settings: dict[str, Any], *, adopt: bool = False) -> list[int]:
        journal = SQLiteJournal(path, replay=True, settings=settings, adopt_settings=adopt)
        return sorted([r async for r in parallelize(double, range(3), 2, journal=journal)])

    assert asyncio.run(run_with({"model": "v1"})) == [0, 2, 4]
    assert asyncio.run(run_with({"model": "v1"})) == [0, 2, 4]
    with pytest.raises(JournalError, match=r"other settings \(model 'v1' -> 'v2'\)"):
        asyncio.run(run_with({"model": "v2"}))
    assert asyncio.run(run_with({"model": "v2"}, adopt=True)) == [0, 2, 4]
    assert asyncio.run(run_with({"model": "v2"})) == [0, 2, 4]
    with pytest.raises(TypeError, match=r"^settings must map names to JSON values"):
        SQLiteJournal(path, settings={"f": object()})


# -- results the codec cannot store, or not as they are ------------------------------


def test_a_lone_surrogate_in_a_result_is_stored_and_replayed(tmp_path: Path) -> None:
    """Real web data has lone surrogates: item 4000's result with one is stored
    like every other (10,000 of 10,000), and a rerun replays it unchanged."""
    path = tmp_path / "j.db"
    odd = json.loads('"caf\\ud83d"')

    async def action(i: int) -> str:
        return odd if i == 4000 else str(i)

    async def run_once() -> list[Any]:
        journal = SQLiteJournal(path, replay=True)
        return [r async for r in parallelize(action, range(10_000), 50, journal=journal)]

    first = asyncio.run(run_once())
    assert len(first) == 10_000
    assert odd in first
    again = asyncio.run(run_once())
    assert sorted(again) == sorted(first)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM outcomes").fetchone() == (10_000,)


@pytest.mark.parametrize("bad", [b"bytes", {1, 2}, object()], ids=["bytes", "set", "object"])
def test_a_result_the_codec_cannot_store_fails_that_item_alone(tmp_path: Path, bad: Any) -> None:
    """An unstorable result is that item's Failure (UnstorableResult) before the loop
    body sees it, recorded as such; the others are stored; a rerun runs it again."""
    path = tmp_path / "j.db"
    calls: list[int] = []

    async def action(i: int) -> Any:
        calls.append(i)
        return bad if i == 3 else i

    async def run_once() -> list[Any]:
        journal = SQLiteJournal(path, retry_failed=True)
        return [
            r async for r in parallelize(action, range(10), 2, journal=journal, on_error="yield")
        ]

    got = asyncio.run(run_once())
    [failure] = [r for r in got if isinstance(r, Failure)]
    assert isinstance(failure.exception, UnstorableResult)
    assert failure.item == 3
    assert "cannot store the result of item 3" in str(failure.exception)
    assert sorted(r for r in got if not isinstance(r, Failure)) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    calls.clear()
    asyncio.run(run_once())
    assert calls == [3]


def test_an_unstorable_result_under_on_error_raise_ends_the_run_with_it(tmp_path: Path) -> None:
    """on_error="raise": the run raises UnstorableResult, not a JournalError later."""

    async def action(i: int) -> Any:
        return {i} if i == 5 else i

    async def main() -> None:
        async for _ in parallelize(action, range(100), 4, journal=tmp_path / "j.db"):
            pass

    with pytest.raises(UnstorableResult, match=r"cannot store the result of item 5, a set"):
        asyncio.run(main())


def test_a_lossy_round_trip_warns_once_naming_the_type(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(1, 2) would replay as [1, 2]: one warning per type, naming it and codec=."""

    async def pair(i: int) -> tuple[int, int]:
        return (i, i)

    async def main() -> list[Any]:
        return [r async for r in parallelize(pair, range(200), 4, journal=tmp_path / "j.db")]

    with caplog.at_level("WARNING", logger="parallelize"):
        assert len(asyncio.run(main())) == 200
    warnings = [r.getMessage() for r in caplog.records if "does not store" in r.getMessage()]
    assert len(warnings) == 1
    assert "a tuple result as it is" in warnings[0]
    assert "codec=" in warnings[0]


async def noop(x: Any) -> Any:
    return x


@pytest.mark.timeout(30)
def test_the_writers_death_surfaces_at_the_next_batch(tmp_path: Path) -> None:
    """The writer process killed: the run fails with a JournalError at the next
    batch (a thousand items), not once a megabyte of outcomes filled its pipe."""
    path = tmp_path / "j.db"
    taken = 0

    async def main() -> None:
        nonlocal taken
        journal = SQLiteJournal(path)
        async for _ in parallelize(noop, range(100_000), 10, journal=journal):
            taken += 1
            if journal._writer is not None and taken % 1000 == 0 and journal._writer.poll() is None:
                journal._writer.kill()
                journal._writer.wait()
                killed_at.append(taken)

    killed_at: list[int] = []
    with pytest.raises(JournalError, match=r"writer process .* failed: it exited"):
        asyncio.run(main())
    assert killed_at
    assert taken - killed_at[0] <= 2_000


class _Gone(Exception):
    """A failure that carries what its consumer needs to write it again."""

    def __init__(self, n: int, permanent: bool) -> None:
        super().__init__(f"item {n} gone")
        self.journal_data = {"n": n, "permanent": permanent}


def test_a_failure_keeps_its_journal_data_and_retry_failed_may_choose(
    run: Any, tmp_path: Path
) -> None:
    """journal_data is stored with a failure and read back as RecordedError.data; a
    retry_failed function runs again only the stored failures it picks."""
    path = tmp_path / "journal.sqlite"
    calls: list[int] = []

    async def action(n: int) -> int:
        calls.append(n)
        if n % 3 == 0:
            raise _Gone(n, permanent=n % 2 == 0)
        return n

    async def once(journal: SQLiteJournal) -> list[Any]:
        async with parallelize(action, range(30), 4, journal=journal, on_error="yield") as r:
            return [outcome async for outcome in r]

    first = run(once(SQLiteJournal(path)))
    assert sum(isinstance(o, Failure) for o in first) == 10
    calls.clear()
    chosen: list[Any] = []

    def redo(error: RecordedError) -> bool:
        chosen.append(error.data)
        return not error.data["permanent"]

    second = run(once(SQLiteJournal(path, replay=True, retry_failed=redo)))
    assert sorted(calls) == [3, 9, 15, 21, 27]  # the odd (not permanent) failures only
    assert len(chosen) == 10
    replayed = [
        o.exception
        for o in second
        if isinstance(o, Failure) and isinstance(o.exception, RecordedError)
    ]
    assert sorted(error.data["n"] for error in replayed) == [0, 6, 12, 18, 24]
    assert all(error.message.endswith("gone") for error in replayed)
    assert len(second) == 30
