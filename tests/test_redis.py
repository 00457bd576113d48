"""parallelize.redis: one run over many processes, against a real redis-server.

The server is started by the fixture on 127.0.0.1 with persistence on; the workers
of the multi-process tests are real processes (redis_worker.py), killed with
SIGKILL where the test says so.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallelize import Backoff, Failure, JournalError, RateLimit, Retry, parallelize
from parallelize.redis import NO_INPUT, QueueInUseError, QueueUnavailableError, RedisQueue
from redistools import RedisServer, finish, free_port, running, spawn_worker


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running(tmp_path_factory.mktemp("redis")) as redis:
        yield redis


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own, to restart or stop."""
    with running(tmp_path / "redis-data") as redis:
        yield redis


def new_run() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def double(item: int) -> int:
    await asyncio.sleep(0)
    return 2 * item


def stored_keys(url: str, run: str) -> collections.Counter[Any]:
    """Count the keys in the run's results stream (each outcome appended once)."""

    async def read() -> collections.Counter[Any]:
        async with RedisQueue(url, run=run) as queue:
            return collections.Counter([o.key async for o in queue.results()])

    return asyncio.run(read())


def progress_of(url: str, run: str) -> Any:
    async def read() -> Any:
        async with RedisQueue(url, run=run) as queue:
            return await queue.progress()

    return asyncio.run(read())


def produce(url: str, run: str, items: Any, **options: Any) -> int:
    async def main() -> int:
        async with RedisQueue(url, run=run, **options) as queue:
            return await queue.produce(items)

    return asyncio.run(main())


# -- one process ----------------------------------------------------------------------


def test_one_process_is_a_journal_swap(run: Any, server: RedisServer) -> None:
    """parallelize(..., journal=queue): the same call, results and outcomes stored."""
    name = new_run()

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            got = [r async for r in parallelize(double, range(1000), 50, journal=queue)]
            assert sorted(got) == [2 * i for i in range(1000)]
            progress = await queue.progress()
            assert (progress.produced, progress.ok, progress.failed) == (1000, 1000, 0)
            assert progress.finished
            assert progress.remaining == 0
            assert progress.in_flight == 0
            stored = await queue.get(17)
            assert stored is not None
            assert stored.ok
            assert stored.result == 34
            assert stored.worker == queue.consumer
            assert await queue.get(5000) is None
            keys = [o.key async for o in queue.results()]
            assert sorted(keys) == list(range(1000))
            # Run again: the input was added in full, every outcome is stored.
            again = [r async for r in parallelize(double, range(1000), 50, journal=queue)]
            assert again == []

    run(main())


def test_failures_are_stored_with_their_error_and_data(run: Any, server: RedisServer) -> None:
    name = new_run()

    async def flaky(item: int) -> int:
        if item % 10 == 3:
            raise ValueError(f"bad {item}")
        return item

    def describe(failure: Failure) -> dict[str, Any]:
        return {"item": failure.item, "why": str(failure.exception)}

    async def main() -> None:
        async with RedisQueue(server.url, run=name, failure_data=describe) as queue:
            outcomes = [
                o
                async for o in parallelize(
                    flaky,
                    range(100),
                    10,
                    journal=queue,
                    on_error="yield",
                    retry=Retry(on=ValueError, attempts=2, backoff=Backoff(initial=0.001)),
                )
            ]
            assert sum(isinstance(o, Failure) for o in outcomes) == 10
            progress = await queue.progress()
            assert (progress.ok, progress.failed) == (90, 10)
            stored = await queue.get(13)
            assert stored is not None
            assert not stored.ok
            assert stored.error_type == "ValueError"
            assert stored.error_message == "bad 13"
            assert stored.attempts == 2
            assert stored.expected
            assert stored.result == {"item": 13, "why": "bad 13"}

    run(main())


def test_keys_identify_items_and_duplicates_run_once(run: Any, server: RedisServer) -> None:
    name = new_run()
    calls: list[str] = []

    async def fetch(url: str) -> int:
        calls.append(url)
        await asyncio.sleep(0)
        return len(url)

    urls = [f"https://example.com/{i % 50}" for i in range(200)]  # each URL 4 times

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            async for _ in parallelize(fetch, urls, 1, journal=queue, key=lambda u: u):
                pass
            progress = await queue.progress()
            assert progress.produced == 200
            assert progress.ok == 50
            assert progress.finished
            stored = await queue.get("https://example.com/7")
            assert stored is not None
            assert stored.result == len("https://example.com/7")

    run(main())
    assert sorted(set(calls)) == sorted(set(urls))
    assert len(calls) == 50  # one worker: a repeated key is found stored, never run again


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    keys=st.lists(st.integers(0, 30), min_size=0, max_size=80),
    failing=st.sets(st.integers(0, 30)),
    workers=st.integers(1, 8),
)
def test_property_each_key_stored_exactly_once(
    server: RedisServer, keys: list[int], failing: set[int], workers: int
) -> None:
    """Whatever the keys (repeated) and failures: one stored outcome per distinct key."""
    name = new_run()

    async def action(item: int) -> int:
        await asyncio.sleep(0)
        if item in failing:
            raise KeyError(item)
        return item

    async def main() -> None:
        async with RedisQueue(server.url, run=name, batch=7) as queue:
            run = parallelize(
                action, keys, workers, journal=queue, key=lambda k: k, on_error="yield"
            )
            async for _ in run:
                pass
            progress = await queue.progress()
            distinct = set(keys)
            assert progress.produced == len(keys)
            assert progress.ok == len(distinct - failing)
            assert progress.failed == len(distinct & failing)
            assert progress.finished
            stored = collections.Counter([o.key async for o in queue.results()])
            assert set(stored) == distinct
            assert all(count == 1 for count in stored.values())

    asyncio.run(main())


def test_stopping_early_loses_nothing(run: Any, server: RedisServer) -> None:
    """A worker that leaves early: what it took is stored, the rest runs later."""
    name = new_run()

    async def main() -> None:
        async with RedisQueue(server.url, run=name, idle_timeout=0.5) as queue:
            run = parallelize(double, range(500), 20, journal=queue)
            async with run:
                taken = 0
                async for _ in run:
                    taken += 1
                    if taken == 100:
                        break
        async with RedisQueue(server.url, run=name, idle_timeout=0.5) as queue:
            progress = await queue.progress()
            assert progress.done >= 99  # the last one taken is recorded on the next ask
            assert not progress.finished
            rest = [r async for r in queue.work(double, 20)]
            progress = await queue.progress()
            assert progress.ok == 500
            assert progress.finished
            assert len(rest) + taken >= 500  # some run twice (in flight at the break)
            keys = collections.Counter([o.key async for o in queue.results()])
            assert sorted(keys) == list(range(500))
            assert max(keys.values()) == 1

    run(main())


# -- many processes -------------------------------------------------------------------


def _wait_all(workers: list[Any], timeout: float = 60) -> list[str]:
    outputs = []
    for worker in workers:
        out, err = finish(worker, timeout)
        assert worker.returncode == 0, err
        outputs.append(out)
    return outputs


def _done(output: str) -> int:
    return int(output.rsplit(maxsplit=1)[-1])


@pytest.mark.timeout(120)
def test_several_worker_processes_store_each_outcome_once(
    server: RedisServer, tmp_path: Path
) -> None:
    name = new_run()
    n = 3000
    log = tmp_path / "calls.log"
    workers = [spawn_worker(server.url, name, "square", "30", "5", str(log)) for _ in range(3)]
    assert produce(server.url, name, range(n), max_pending=500) == n
    outputs = _wait_all(workers)
    assert sum(_done(o) for o in outputs) == n
    assert all(_done(o) > 0 for o in outputs)  # the work was shared
    progress = progress_of(server.url, name)
    assert (progress.ok, progress.failed, progress.dead, progress.remaining) == (n, 0, 0, 0)
    assert {w.state for w in progress.workers} == {"finished"}
    assert sum(w.ok for w in progress.workers) == n
    keys = stored_keys(server.url, name)
    assert sorted(keys) == list(range(n))
    assert max(keys.values()) == 1


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_run_loses_nothing(server: RedisServer, tmp_path: Path) -> None:
    name = new_run()
    n = 3000
    log = tmp_path / "calls.log"
    victim = spawn_worker(server.url, name, "square", "50", "1", str(log))
    produce(server.url, name, range(n), max_pending=1000)
    deadline = time.monotonic() + 30
    while progress_of(server.url, name).done < 300:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    progress = progress_of(server.url, name)
    assert progress.in_flight > 0  # it died holding entries
    survivor = spawn_worker(server.url, name, "square", "50", "1", str(log))
    _wait_all([survivor])
    progress = progress_of(server.url, name)
    assert (progress.ok, progress.failed, progress.dead, progress.remaining) == (n, 0, 0, 0)
    keys = stored_keys(server.url, name)
    assert sorted(keys) == list(range(n))
    assert max(keys.values()) == 1
    calls = collections.Counter(int(line) for line in log.read_text().split())
    assert set(calls) == set(range(n))  # every item ran; some twice (the victim's)


@pytest.mark.timeout(120)
def test_a_poison_item_goes_to_the_dead_letters_alone(server: RedisServer, tmp_path: Path) -> None:
    """Item 13 kills every worker that runs it: it alone is dead-lettered."""
    name = new_run()
    n = 200
    log = tmp_path / "calls.log"
    produce(server.url, name, range(n))
    deaths = 0
    deadline = time.monotonic() + 90
    while True:  # a supervisor: restart a worker whenever one dies
        worker = spawn_worker(server.url, name, "poison", "20", "0.5", str(log), "2")
        _out, err = finish(worker, 60)
        if worker.returncode == 0:
            break
        assert worker.returncode == -signal.SIGKILL, err
        deaths += 1
        assert time.monotonic() < deadline
    # Twice in company (the second time, its neighbours have been handed out twice:
    # suspects), then twice alone: dead-lettered at max_deaths=2.
    assert deaths == 4
    progress = progress_of(server.url, name)
    assert (progress.ok, progress.failed, progress.dead, progress.remaining) == (n - 1, 0, 1, 0)

    async def letters() -> Any:
        async with RedisQueue(server.url, run=name) as queue:
            return await queue.dead_letters()

    (letter,) = asyncio.run(letters())
    assert letter.key == 13
    assert letter.item == 13
    assert "died or stopped answering 2 times while it ran alone" in letter.reason
    calls = collections.Counter(int(line) for line in log.read_text().split())
    assert calls[13] == 4


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("max_deliveries", "runs"), [(2, 2), (3, 3), (4, 4)])
def test_only_started_attempts_count_toward_the_dead_letters(
    server: RedisServer, tmp_path: Path, max_deliveries: int, runs: int
) -> None:
    """Item 13 kills its worker: only it is dead-lettered, at max_deliveries started runs.

    Each worker holds many entries it never starts (the rest of its batch of 8, a
    batch read ahead, suspects queued behind item 13): they must not be charged.
    """
    name = new_run()
    n = 40
    log = tmp_path / "calls.log"
    produce(server.url, name, range(n))
    deaths = 0
    deadline = time.monotonic() + 60
    while True:  # a supervisor: restart a worker whenever one dies
        args = ("poison", "4", "0.3", str(log), "3", str(max_deliveries), "8")
        worker = spawn_worker(server.url, name, *args)
        _out, err = finish(worker, 30)
        if worker.returncode == 0:
            break
        assert worker.returncode == -signal.SIGKILL, err
        deaths += 1
        assert time.monotonic() < deadline
    assert deaths == runs  # the last runs alone, so that it alone is charged
    progress = progress_of(server.url, name)
    assert (progress.ok, progress.failed, progress.dead, progress.remaining) == (n - 1, 0, 1, 0)
    keys = stored_keys(server.url, name)
    assert sorted(keys) == [k for k in range(n) if k != 13]
    assert set(keys.values()) == {1}

    async def letters() -> Any:
        async with RedisQueue(server.url, run=name) as queue:
            return await queue.dead_letters()

    (letter,) = asyncio.run(letters())
    assert (letter.key, letter.deliveries) == (13, max_deliveries)
    assert f"started {max_deliveries} times without an outcome" in letter.reason
    calls = collections.Counter(int(line) for line in log.read_text().split())
    assert calls[13] == runs


def test_a_long_item_is_never_taken_from_a_live_worker(run: Any, server: RedisServer) -> None:
    """An item running 5 idle timeouts long stays with its worker (heartbeats)."""
    name = new_run()
    calls: collections.Counter[int] = collections.Counter()

    async def action(item: int) -> int:
        calls[item] += 1
        await asyncio.sleep(1.5 if item == 0 else 0.01)
        return item

    async def main() -> None:
        async with (
            RedisQueue(server.url, run=name, idle_timeout=0.3) as first,
            RedisQueue(server.url, run=name, idle_timeout=0.3, batch=1) as second,
        ):
            await first.produce(range(60))
            done = await asyncio.gather(
                collect(first.work(action, 1)), collect(second.work(action, 2))
            )
            assert sorted(done[0] + done[1]) == list(range(60))
            assert calls[0] == 1  # the other worker looked every 0.15 s, and left it

    run(main())


async def collect(run: Any) -> list[Any]:
    return [r async for r in run]


@pytest.mark.timeout(120)
def test_redis_restarted_mid_run_loses_nothing(own_server: RedisServer, tmp_path: Path) -> None:
    name = new_run()
    n = 3000
    log = tmp_path / "calls.log"
    url = own_server.url
    produce(url, name, range(n))
    worker = spawn_worker(url, name, "square", "20", "5", str(log))
    deadline = time.monotonic() + 30
    while progress_of(url, name).done < 500:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    own_server.restart(down_for=1.0)
    _out, err = finish(worker, 60)
    assert worker.returncode == 0, err
    assert "does not answer" in err
    assert "answers again" in err
    progress = progress_of(url, name)
    assert (progress.ok, progress.failed, progress.dead, progress.remaining) == (n, 0, 0, 0)
    keys = stored_keys(url, name)
    assert sorted(keys) == list(range(n))
    assert max(keys.values()) == 1


@pytest.mark.timeout(30)
def test_entries_read_while_the_answer_was_lost_are_run(run: Any, server: RedisServer) -> None:
    """A read whose answer the connection lost (Redis restarting) leaves entries
    pending for this worker that it never saw: it runs them, and the run ends."""
    import redis.asyncio as aioredis  # noqa: PLC0415 - the test's own client

    name = new_run()
    produce(server.url, name, range(40))

    async def main() -> None:
        async with RedisQueue(server.url, run=name, idle_timeout=1.0) as queue:
            raw = aioredis.from_url(server.url)
            try:
                # What XREADGROUP did on the server while its answer was lost.
                await raw.xreadgroup(
                    "workers", queue.consumer, {f"parallelize:{{{name}}}:items": ">"}, count=5
                )
            finally:
                await raw.aclose()
            got = [r async for r in parallelize(double, NO_INPUT, 4, journal=queue)]
            assert sorted(got) == [2 * i for i in range(40)]

    run(main())
    assert sorted(stored_keys(server.url, name)) == list(range(40))


@pytest.mark.timeout(60)
def test_a_restart_of_redis_is_not_taken_for_a_takeover(
    own_server: RedisServer, tmp_path: Path
) -> None:
    """Redis down longer than idle_timeout: the worker keeps its entries, and says nothing.

    Twice: after each restart, its heartbeat or its look for silent workers may
    reach Redis first (the second took its own entries back, ran them twice, then
    warned that they were taken over by others).
    """
    name = new_run()
    n = 200
    url = own_server.url
    produce(url, name, range(n))
    worker = spawn_worker(url, name, "slow", "20", "1", str(tmp_path / "calls.log"))
    deadline = time.monotonic() + 30
    for done in (20, 80):
        while progress_of(url, name).done < done:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        own_server.restart(down_for=2.0)  # every entry held is idle for longer than 1 s
    _out, err = finish(worker, 40)
    assert worker.returncode == 0, err
    assert "answers again" in err
    assert "taken over by others" not in err
    assert "took over" not in err  # nor did it take its own entries back
    progress = progress_of(url, name)
    assert (progress.ok, progress.dead, progress.remaining) == (n, 0, 0)
    keys = stored_keys(url, name)
    assert set(keys.values()) == {1}
    calls = collections.Counter(int(line) for line in (tmp_path / "calls.log").read_text().split())
    assert set(calls.values()) == {1}  # nothing ran twice


@pytest.mark.timeout(60)
def test_a_worker_frozen_past_idle_timeout_is_told_its_entries_were_taken(
    server: RedisServer, tmp_path: Path
) -> None:
    """SIGSTOP for 3 idle timeouts: another worker takes its entries; woken, it says so."""
    name = new_run()
    n = 120
    log = str(tmp_path / "calls.log")
    produce(server.url, name, range(n))
    frozen = spawn_worker(server.url, name, "slow", "20", "1", log)
    deadline = time.monotonic() + 30
    while progress_of(server.url, name).in_flight < 20:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    frozen.send_signal(signal.SIGSTOP)
    other = spawn_worker(server.url, name, "slow", "20", "1", log)
    time.sleep(3.0)
    frozen.send_signal(signal.SIGCONT)
    _out, err = frozen.communicate(timeout=40)
    assert frozen.returncode == 0, err
    assert "entries held by this worker were taken over by others" in err
    _wait_all([other], timeout=40)
    progress = progress_of(server.url, name)
    assert (progress.ok, progress.dead, progress.remaining) == (n, 0, 0)


# -- the shared rate limit --------------------------------------------------------------


def test_a_rate_limit_shared_by_two_workers_holds_in_total(run: Any, server: RedisServer) -> None:
    name = new_run()
    starts: list[float] = []

    async def call(item: int) -> int:
        starts.append(time.monotonic())
        return item

    async def worker(queue: RedisQueue, limit: Any) -> int:
        return len([r async for r in queue.work(call, 10, rate_limit=limit)])

    async def main() -> None:
        async with (
            RedisQueue(server.url, run=name) as first,
            RedisQueue(server.url, run=name) as second,
        ):
            await first.produce(range(60))
            done = await asyncio.gather(
                worker(first, first.rate_limit(40)), worker(second, second.rate_limit(40))
            )
            assert sum(done) == 60
            assert min(done) > 0

    run(main())
    starts.sort()
    # GCRA: 60 calls at 40/s with burst 1 take at least 59/40 s.
    assert starts[-1] - starts[0] >= 59 / 40 * 0.95
    # In any window of 0.5 s, at most 1 + 40 * 0.5 calls (and a little for timers).
    for i, at in enumerate(starts):
        inside = sum(1 for t in starts[i:] if t - at < 0.5)
        assert inside <= 1 + 20 + 1


def test_a_concurrency_budget_is_shared_by_the_workers_alive(run: Any, server: RedisServer) -> None:
    """Two workers with adaptive_limit(total=6): at most 6 calls in flight in all."""
    name = new_run()
    in_flight = 0
    samples: list[tuple[float, int]] = []

    async def call(item: int) -> int:
        nonlocal in_flight
        in_flight += 1
        samples.append((time.monotonic(), in_flight))
        await asyncio.sleep(0.01)
        in_flight -= 1
        return item

    async def worker(queue: RedisQueue) -> int:
        limit = queue.adaptive_limit(6, initial=10)
        done = len([r async for r in queue.work(call, 10, adaptive=limit)])
        assert limit.limit <= 6
        return done

    async def main() -> None:
        async with (
            RedisQueue(server.url, run=name, idle_timeout=0.3) as first,
            RedisQueue(server.url, run=name, idle_timeout=0.3) as second,
        ):
            await first.produce(range(600))
            started = time.monotonic()
            done = await asyncio.gather(worker(first), worker(second))
            assert sum(done) == 600
            assert min(done) > 0
            # Once both have reported (a third of idle_timeout), 3 each at most.
            settled = [n for at, n in samples if at > started + 0.3]
            assert settled
            assert max(settled) <= 6

    run(main())


# -- misuse and outages ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_redis_down_says_so_after_the_reconnect_timeout(run: Any, own_server: RedisServer) -> None:
    """A server reached once, then gone: waited for reconnect_timeout, then said so."""

    async def main() -> None:
        async with RedisQueue(own_server.url, run="x", reconnect_timeout=0.5) as queue:
            own_server.stop()
            with pytest.raises(
                QueueUnavailableError, match=r"^Redis at .* did not answer for 0.5 s .*nothing is"
            ):
                await queue.progress()

    run(main())


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        (
            "refused",
            QueueUnavailableError,
            (
                r"^cannot reach Redis at redis://127\.0\.0\.1:\d+/0 while connecting "
                r"\(ConnectionError: .*\)\. Check that a Redis server runs there, and the "
                r"host and port in the URL .* Not retried: .* \(up to reconnect_timeout, 60 s\)$"
            ),
        ),
        (
            "unknown host",
            QueueUnavailableError,
            (
                r"^cannot reach Redis at redis://nosuchhost\.invalid:6379/0 while connecting "
                r"\(ConnectionError: .*\)\. Check that a Redis server runs there"
            ),
        ),
        (
            "bad db",
            JournalError,
            (
                r"^Redis at redis://127\.0\.0\.1:\d+/99 refused the database number in the "
                r"URL while connecting: DB index is out of range\. Give one the server has"
            ),
        ),
    ],
)
def test_a_server_never_reached_fails_at_once(
    run: Any, server: RedisServer, where: str, error: type[Exception], message: str
) -> None:
    """A refused port, an unknown host, a bad DB number: a clear error at the first connection,
    not reconnect_timeout of retries (a server reached once is waited for: tests above)."""
    url = {
        "refused": f"redis://127.0.0.1:{free_port()}/0",
        "unknown host": "redis://nosuchhost.invalid:6379/0",
        "bad db": server.url.replace("/0", "/99"),
    }[where]

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(error, match=message):
            async with RedisQueue(url, run="x", reconnect_timeout=60):
                pass
        assert time.monotonic() - started < 20  # not retried for reconnect_timeout

    run(main())


async def run_keys(url: str, run: str) -> list[str]:
    """Every key of the run in Redis."""
    async with RedisQueue(url, run="probe") as queue:
        found: list[str] = await queue._redis().keys(f"parallelize:{{{run}}}:*")
        return found


@pytest.mark.timeout(30)
def test_delete_refuses_while_a_worker_is_on_the_run(run: Any, server: RedisServer) -> None:
    """A worker is alive: delete() names it and deletes nothing; once it is gone, it deletes."""
    name = new_run()
    started = asyncio.Event()
    gate = asyncio.Event()

    async def held(item: int) -> int:
        started.set()
        await gate.wait()
        return item

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as admin:
            async with RedisQueue(server.url, run=name, idle_timeout=5) as worker:
                await worker.produce(range(3))
                task = asyncio.create_task(collect(worker.work(held, 3)))
                await started.wait()
                with pytest.raises(
                    QueueInUseError,
                    match=rf"^the run '{name}' has 1 worker alive \({worker.consumer}\), so "
                    r"it was not deleted: .* Stop them \(or wait until they have been silent "
                    r"for their idle_timeout\), or call delete\(force=True\)",
                ) as refused:
                    await admin.delete()
                assert refused.value.workers == (worker.consumer,)
                gate.set()
                assert sorted(await task) == [0, 1, 2]  # the run went on, whole
            await admin.delete()  # the worker left: it is not alive any more
            assert await run_keys(server.url, name) == []

    run(main())


@pytest.mark.timeout(30)
def test_a_deleted_run_stays_deleted_under_a_worker_that_finished(
    run: Any, server: RedisServer
) -> None:
    """A worker whose run ended keeps its queue open: once the run is deleted, no report of
    its brings a key back, its own delete() is not refused by itself, and it runs anew."""
    name = new_run()

    async def main() -> None:
        async with (
            RedisQueue(server.url, run=name, idle_timeout=0.3) as worker,
            RedisQueue(server.url, run=name) as admin,
        ):
            await worker.produce(range(5))
            assert sorted(await collect(worker.work(double, 5))) == [0, 2, 4, 6, 8]
            while True:  # until the worker has said it finished (at once, not in 0.1 s)
                try:
                    await admin.delete()
                    break
                except QueueInUseError:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # five of the worker's report periods
            assert await run_keys(server.url, name) == []
            got = [r async for r in parallelize(double, range(3), 3, journal=worker)]
            assert sorted(got) == [0, 2, 4]  # a new run: none skipped
            await worker.delete()  # its own part ended: not in the way
            assert await run_keys(server.url, name) == []

    run(main())


@pytest.mark.timeout(30)
def test_delete_force_fences_the_workers_out(run: Any, server: RedisServer) -> None:
    """delete(force=True) under a worker: its late writes are refused (no key comes back),
    it stops with a clear error, and a new run of that name runs every item."""
    name = new_run()
    started = asyncio.Event()
    gate = asyncio.Event()

    async def held(item: int) -> int:
        started.set()
        await gate.wait()
        return item

    async def work_while_deleted() -> None:
        async with RedisQueue(server.url, run=name, idle_timeout=0.3) as worker:
            await worker.produce(range(3))
            task = asyncio.create_task(collect(worker.work(held, 3)))
            await started.wait()
            async with RedisQueue(server.url, run=name) as admin:
                await admin.delete(force=True)
            gate.set()  # their outcomes go to the storer: refused
            await task

    async def main() -> None:
        with pytest.raises(
            JournalError,
            match=rf"^the run '{name}' was deleted from Redis at .* while this process was on "
            r"it \(delete\(force=True\), or parallelize queue delete --force\): its writes "
            r"are refused",
        ):
            await work_while_deleted()
        assert await run_keys(server.url, name) == []
        async with RedisQueue(server.url, run=name) as again:
            got = [r async for r in parallelize(double, range(3), 3, journal=again)]
        assert sorted(got) == [0, 2, 4]  # none skipped as done

    run(main())


def test_a_wrong_password_is_a_clear_error(tmp_path: Path) -> None:
    async def main(redis: RedisServer) -> None:
        url = redis.url.replace("s3cret", "wrong")
        with pytest.raises(JournalError, match=r"refused us.*user and password") as caught:
            async with RedisQueue(url, run="x"):
                pass
        assert "wrong" not in str(caught.value)  # the password is not repeated
        async with RedisQueue(redis.url, run="x") as queue:  # the right one works
            assert (await queue.progress()).produced == 0

    with running(tmp_path, password="s3cret") as redis:  # noqa: S106 - a test server's
        asyncio.run(main(redis))


def test_tls_with_a_password(tmp_path: Path) -> None:
    """rediss:// with the certificate authority to trust, and a password: a whole run."""

    async def main(redis: RedisServer) -> None:
        assert redis.url.startswith("rediss://:s3cret@")
        async with RedisQueue(redis.url, run="tls", ssl_ca_certs=str(redis.ca_file)) as queue:
            got = [r async for r in parallelize(double, range(300), 20, journal=queue)]
            assert sorted(got) == [2 * i for i in range(300)]
            assert (await queue.progress()).finished
        # Without trusting its certificate: refused at once, saying what to give.
        untrusted = RedisQueue(redis.url, run="tls", reconnect_timeout=60)
        started = time.monotonic()
        with pytest.raises(JournalError, match=r"TLS with Redis .* ssl_ca_certs=") as caught:
            async with untrusted:
                pass
        assert time.monotonic() - started < 10  # not retried: trying again cannot help
        assert "s3cret" not in str(caught.value)

    with running(tmp_path, password="s3cret", tls=True) as redis:  # noqa: S106 - a test's
        asyncio.run(main(redis))


def test_bad_arguments_say_what_to_do(run: Any, server: RedisServer) -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        RedisQueue("http://localhost", run="x")
    with pytest.raises(ValueError, match="run must be"):
        RedisQueue(server.url, run="a b")
    with pytest.raises(ValueError, match=r"^max_deliveries must be >= 2, got 1: .* Pass 2 "):
        RedisQueue(server.url, run="x", max_deliveries=1)
    with pytest.raises(ValueError, match=r"^max_deaths must be >= 1, got 0$"):
        RedisQueue(server.url, run="x", max_deaths=0)
    queue = RedisQueue(server.url, run="x")
    with pytest.raises(ValueError, match="ordered=True"):
        parallelize(double, range(3), 2, journal=queue, ordered=True)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="async with"):
            await queue.progress()
        async with RedisQueue(server.url, run=new_run()) as opened:
            with pytest.raises(ValueError, match="per_second must be > 0"):
                opened.rate_limit(0)
            with pytest.raises(TypeError, match="per_second must be a number"):
                opened.rate_limit("10")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="travel as JSON"):
                await opened.produce([object()])
        name = new_run()
        async with RedisQueue(server.url, run=name) as opened:
            await opened.produce(range(3))
            async for _ in opened.work(double, 2):
                pass

            async def other(item: int) -> int:
                return item

            with pytest.raises(JournalError, match="same action"):
                async for _ in opened.work(other, 2):
                    pass

    run(main())


def test_a_run_gone_from_redis_is_a_clear_error(run: Any, server: RedisServer) -> None:
    name = new_run()

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            await queue.produce(range(10))
            await queue._redis().delete(queue._items)
            with pytest.raises(JournalError, match="gone from Redis"):
                async for _ in queue.work(double, 2):
                    pass

    run(main())


def test_produce_resumes_and_refuses_a_changed_input(run: Any, server: RedisServer) -> None:
    name = new_run()

    def items(stop_at: int | None) -> Iterator[int]:
        for i in range(1000):
            if i == stop_at:
                raise RuntimeError("input broke")
            yield i

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            with pytest.raises(RuntimeError, match="input broke"):
                await queue.produce(items(700))
            assert (await queue.progress()).produced == 512  # the full batches
            assert await queue.produce(items(None)) == 1000
            keys = [r async for r in queue.work(double, 10)]
            assert sorted(keys) == [2 * i for i in range(1000)]
        changed = new_run()
        async with RedisQueue(server.url, run=changed) as queue:
            with pytest.raises(RuntimeError):
                await queue.produce(items(600))
            with pytest.raises(JournalError, match="input changed"):
                await queue.produce(i + 1 for i in range(1000))

    run(main())


def test_the_producer_pauses_at_max_pending_and_ends_without_workers(
    run: Any, server: RedisServer
) -> None:
    """Backpressure: at most max_pending (plus a batch) waiting; the last batch ends it."""
    name = new_run()

    async def main() -> None:
        async with RedisQueue(server.url, run=name, max_pending=512) as queue:
            assert await queue.produce(range(512)) == 512  # no worker: it still ends
            assert (await queue.progress()).input_done
        other = new_run()
        async with (
            RedisQueue(server.url, run=other, max_pending=300) as producer_side,
            RedisQueue(server.url, run=other) as worker_side,
        ):
            task = asyncio.create_task(producer_side.produce(range(2000)))
            await asyncio.sleep(0.5)
            progress = await producer_side.progress()
            assert not task.done()  # paused, waiting for workers
            assert progress.produced <= 300 + 256
            assert progress.remaining <= 300 + 256
            done = [r async for r in parallelize(double, NO_INPUT, 20, journal=worker_side)]
            assert await task == 2000
            assert sorted(done) == [2 * i for i in range(2000)]

    run(main())


def test_workers_may_start_before_the_producer(run: Any, server: RedisServer) -> None:
    name = new_run()

    async def main() -> None:
        async with (
            RedisQueue(server.url, run=name) as worker_side,
            RedisQueue(server.url, run=name) as producer_side,
        ):

            async def work() -> list[int]:
                return [r async for r in parallelize(double, NO_INPUT, 5, journal=worker_side)]

            task = asyncio.create_task(work())
            await asyncio.sleep(0.3)
            assert not task.done()  # waiting for items, not finished
            await producer_side.produce(range(50))
            assert sorted(await task) == [2 * i for i in range(50)]

    run(main())


@pytest.mark.parametrize("workers", [1, 10])
def test_every_policy_applies_as_on_one_machine(
    run: Any, server: RedisServer, workers: int
) -> None:
    """Timeouts, retries and a local rate limit, through the queue (one worker too)."""
    name = new_run()
    tries: collections.Counter[int] = collections.Counter()

    async def slow_then_fast(item: int) -> int:
        tries[item] += 1
        if tries[item] == 1 and item % 5 == 0:
            await asyncio.sleep(10)  # timed out, then retried
        return item

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            got = [
                r
                async for r in parallelize(
                    slow_then_fast,
                    range(20),
                    workers,
                    journal=queue,
                    timeout=0.2,
                    retry=Retry(on=TimeoutError, attempts=2, backoff=Backoff(initial=0.01)),
                    rate_limit=RateLimit(1000),
                )
            ]
            assert sorted(got) == list(range(20))
            stored = await queue.get(5)
            assert stored is not None
            assert stored.attempts == 2

    run(main())


def test_messages_name_the_queue_without_its_password() -> None:
    queue = RedisQueue("redis://user:hunter2@127.0.0.1:1/0", run="x")
    assert "hunter2" not in repr(queue)
    assert "hunter2" not in queue.location


@given(
    value=st.one_of(
        st.text(),
        st.integers(),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.lists(st.one_of(st.text(), st.integers()), max_size=4),
    )
)
def test_property_the_short_json_is_the_encoders(value: Any) -> None:
    """Keys, arguments and results skip the encoder when they can, byte for byte the same."""
    from parallelize._redis._records import encode as _encode  # noqa: PLC0415 - internal
    from parallelize._redis._records import to_json as _json  # noqa: PLC0415 - internal

    assert _json(value) == _encode(value)


@pytest.mark.timeout(30)
def test_a_lone_surrogate_or_an_unstorable_result_does_not_stall_the_run(
    run: Any, server: RedisServer
) -> None:
    """A result with a lone surrogate (real web data) is stored and read back as it
    is; a set (JSON cannot hold it) fails its item alone, recorded as a failure: the
    run finishes with 20 of 20 outcomes, nothing dead-lettered."""
    import json  # noqa: PLC0415

    from parallelize import UnstorableResult  # noqa: PLC0415

    name = new_run()
    odd = json.loads('"caf\\ud83d"')

    async def action(i: int) -> Any:
        if i == 4:
            return odd
        if i == 7:
            return {i}
        return i

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            got = [
                r async for r in parallelize(action, range(20), 4, journal=queue, on_error="yield")
            ]
            [failure] = [r for r in got if isinstance(r, Failure)]
            assert isinstance(failure.exception, UnstorableResult)
            assert odd in got
            progress = await queue.progress()
            assert (progress.ok, progress.failed, progress.dead) == (19, 1, 0)
            assert progress.finished
            stored = await queue.get(4)
            assert stored is not None
            assert stored.result == odd

    run(main())
