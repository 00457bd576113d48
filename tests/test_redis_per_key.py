"""RedisQueue.per_key(): limits per key kept for the whole fleet, against a real redis-server.

The fleet tests run real worker processes (redis_per_key_worker.py), each with its
own limits per key, on one run; they log every call's start and end with the
machine's monotonic clock, and the test reads the fleet's calls from that log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from parallelize import PerKey, parallelize
from parallelize.redis import QueueUnavailableError, RedisQueue, SharedPerKey
from redistools import RedisServer, finish, running, spawn_worker


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running(tmp_path_factory.mktemp("redis")) as redis:
        yield redis


def new_run() -> str:
    return f"k{uuid.uuid4().hex[:10]}"


def key_of(item: str) -> str:
    return item.split(":", 1)[0]


def shared_of(per_key: PerKey) -> SharedPerKey:
    assert isinstance(per_key.shared, SharedPerKey)
    return per_key.shared


@contextlib.asynccontextmanager
async def two_processes(
    url: str, run: str, per_key: PerKey
) -> AsyncIterator[tuple[SharedPerKey, SharedPerKey]]:
    """The shared limits of two queues on one run: two processes of a fleet."""
    async with RedisQueue(url, run=run) as first, RedisQueue(url, run=run) as second:
        yield shared_of(first.per_key(per_key)), shared_of(second.per_key(per_key))


def spawn(url: str, run: str, log: Path, mode: str, *limits: str) -> Any:
    return spawn_worker(url, run, str(log), mode, *limits, script="redis_per_key_worker.py")


def calls_of(log: Path) -> list[tuple[str, str, int, float]]:
    """The log's lines as (sign, key, pid, time), in the order of their times."""
    rows = []
    for line in log.read_text().splitlines():
        sign, key, pid, at = line.split()
        rows.append((sign, key, int(pid), float(at)))
    # At one time, an end before a start: the end was written before its place was
    # given back, so before the next start.
    return sorted(rows, key=lambda row: (row[3], row[0] == "+"))


def wait_for_workers(url: str, run: str, count: int) -> None:
    """Wait until ``count`` workers have joined the run (each reports at once)."""

    async def joined() -> None:
        async with RedisQueue(url, run=run) as queue:
            while True:
                progress = await queue.progress()
                if sum(w.state == "working" for w in progress.workers) >= count:
                    return
                await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(joined(), 30))


def produce(url: str, run: str, items: list[str]) -> None:
    async def main() -> None:
        async with RedisQueue(url, run=run) as queue:
            await queue.produce(items, key=lambda item: item)

    asyncio.run(main())


async def run_keys(queue: RedisQueue) -> list[str]:
    found: list[str] = await queue._redis().keys(f"parallelize:{{{queue.run}}}:*")
    return found


# -- the fleet: two worker processes ----------------------------------------------------


@pytest.mark.timeout(90)
def test_two_processes_keep_a_key_at_its_concurrency_together(
    server: RedisServer, tmp_path: Path
) -> None:
    """Two processes with per-key concurrency 2 each: never more than 2 of a key in flight
    in the fleet (alone, each would run 2: 4 together), and both take part."""
    name, log = new_run(), tmp_path / "calls.log"
    workers = [spawn(server.url, name, log, "work", "2", "-", "1", "60", "0.03") for _ in "xy"]
    wait_for_workers(server.url, name, 2)
    produce(server.url, name, [f"{key}:{i}" for i in range(40) for key in "ab"])
    for worker in workers:
        out, err = finish(worker, 60)
        assert worker.returncode == 0, err
        assert out.startswith("done ")
    calls = calls_of(log)
    in_flight: collections.Counter[str] = collections.Counter()
    peak: collections.Counter[str] = collections.Counter()
    for sign, key, _, _ in calls:
        in_flight[key] += 1 if sign == "+" else -1
        peak[key] = max(peak[key], in_flight[key])
    assert sum(sign == "+" for sign, *_ in calls) == 80
    assert peak == {"a": 2, "b": 2}
    assert len({pid for _, _, pid, _ in calls}) == 2  # both processes ran calls


@pytest.mark.timeout(90)
def test_two_processes_keep_a_key_at_its_rate_together(server: RedisServer, tmp_path: Path) -> None:
    """Two processes with per-key rate 20/s, burst 2 each: the fleet's starts of a key
    keep to 20/s in all (GCRA: n starts span (n - burst) / 20 s at least)."""
    name, log = new_run(), tmp_path / "calls.log"
    workers = [spawn(server.url, name, log, "work", "-", "20", "2", "60", "0.001") for _ in "xy"]
    wait_for_workers(server.url, name, 2)
    produce(server.url, name, [f"a:{i}" for i in range(30)])
    for worker in workers:
        _, err = finish(worker, 60)
        assert worker.returncode == 0, err
    starts = [at for sign, _, _, at in calls_of(log) if sign == "+"]
    assert len(starts) == 30
    # Alone, each process would start 20 a second: 40 together, in 0.7 s.
    assert starts[-1] - starts[0] >= (30 - 2) / 20 * 0.95
    # In any half second: at most the burst and 20 * 0.5 (and one for timers).
    for i, at in enumerate(starts):
        assert sum(1 for t in starts[i:] if t - at < 0.5) <= 2 + 10 + 1


@pytest.mark.timeout(60)
def test_a_killed_process_holds_its_places_for_a_lease_at_most(
    run: Any, server: RedisServer, tmp_path: Path
) -> None:
    """A live process keeps its place however long its call (past two leases); killed,
    its place comes back to the fleet within a lease."""
    name, log = new_run(), tmp_path / "calls.log"
    holder = spawn(server.url, name, log, "hold", "1", "-", "1", "1.0", "0")
    try:

        async def main() -> float:
            async with RedisQueue(server.url, run=name) as queue:
                shared = shared_of(queue.per_key(PerKey(key_of, concurrency=1), lease=1.0))
                while not log.exists() or not log.read_text():  # noqa: ASYNC110 - another process
                    await asyncio.sleep(0.02)
                began = time.monotonic()
                while time.monotonic() < began + 2.5:  # the holder renews its lease
                    assert await shared.acquire("a") is not None
                    await asyncio.sleep(0.1)
                holder.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                while await shared.acquire("a") is not None:  # noqa: ASYNC110 - Redis's state
                    await asyncio.sleep(0.02)
                freed = time.monotonic() - killed
                shared.release("a", None)
                return freed

        freed = run(main())
    finally:
        holder.kill()
        holder.communicate()
    # Renewed every third of the lease: its last lease had 2/3 to 1 lease to go.
    assert 0.3 < freed < 1.0 + 0.5


# -- one process, several queues --------------------------------------------------------


@pytest.mark.timeout(30)
def test_an_attempt_takes_one_round_trip_at_most(
    run: Any, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """300 workers ask at once: their asks go together (no connection each: redis-py's
    pool holds 100), at most one round trip per attempt; the places are given back a
    batch at a time, and the run leaves no place held."""
    name = new_run()

    async def call(item: str) -> str:
        await asyncio.sleep(0.01)
        return item

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            polite = queue.per_key(PerKey(key_of, concurrency=100))
            items = [f"{key}:{i}" for i in range(300) for key in "abc"]
            got = [r async for r in parallelize(call, items, 300, per_key=polite)]
            assert sorted(got) == sorted(items)
            shared = shared_of(polite)
            assert (shared.asked, shared.taken, shared.refused) == (900, 900, 0)
            assert 0 < shared.round_trips < 900
            await asyncio.sleep(0.05)  # the last places given back
            assert 0 < queue._leases.give_round_trips < 900
            assert await run_keys(queue) == [queue.connection.keys.meta]  # no place left

    with caplog.at_level(logging.WARNING, logger="parallelize.redis"):
        run(main())
    # Never "Redis does not answer (Too many connections)".
    assert [r.getMessage() for r in caplog.records if r.name == "parallelize.redis"] == []


@pytest.mark.timeout(30)
def test_two_queues_share_a_key_and_a_retry_after_pauses_it_for_both(
    run: Any, server: RedisServer
) -> None:
    """Two processes (two queues) share a key's places; a Retry-After seen by one
    pauses the key for the other; a failure that is no overload pauses nothing."""
    name = new_run()

    class Overloaded(ConnectionError):
        retry_after = 0.6

    async def main() -> None:
        limits = PerKey(key_of, concurrency=2, rate=1000, burst=5)
        async with two_processes(server.url, name, limits) as (one, two):
            assert await one.acquire("a") is None
            assert await two.acquire("a") is None
            wait = await one.acquire("a")  # both places held: asked again soon
            assert wait is not None
            assert 0 < wait <= 0.25
            one.release("a", ValueError("not an overload"))
            await asyncio.sleep(0.05)
            assert await two.acquire("a") is None  # the place given back, no pause
            two.release("a", Overloaded())
            two.release("a", "a result")
            await asyncio.sleep(0.05)
            wait = await one.acquire("a")
            assert wait is not None
            assert 0.4 < wait <= 0.6  # the other's Retry-After

    run(main())


@pytest.mark.timeout(30)
def test_delete_removes_the_keys_places(run: Any, server: RedisServer) -> None:
    """The keys' sorted sets expire once unused, and delete() removes them at once."""
    name = new_run()

    async def main() -> None:
        async with RedisQueue(server.url, run=name) as queue:
            shared = shared_of(queue.per_key(PerKey(key_of, concurrency=3, rate=10), lease=5))
            for key in ("a", "b", "c", "*", "with space", 17):
                assert await shared.acquire(key) is None
            client = queue._redis()
            places = [k for k in await run_keys(queue) if ":key:" in k]
            assert len(places) == 6
            for place in places:
                assert 0 < await client.pttl(place) <= 6000
            await queue.delete()
            assert await run_keys(queue) == []
        async with RedisQueue(server.url, run=name) as queue:
            assert await run_keys(queue) == []  # nothing came back at the close

    run(main())


@pytest.mark.timeout(30)
def test_redis_down_while_asking_is_queue_unavailable(run: Any, tmp_path: Path) -> None:
    """Redis gone for longer than reconnect_timeout: asking says so, as every call does."""

    async def main(own: RedisServer) -> None:
        async with RedisQueue(own.url, run="x", reconnect_timeout=0.5) as queue:
            shared = shared_of(queue.per_key(PerKey(key_of, concurrency=1)))
            assert await shared.acquire("a") is None
            own.stop()
            with pytest.raises(
                QueueUnavailableError,
                match=r"^Redis at .* did not answer for 0.5 s while taking a place of a key ",
            ):
                await shared.acquire("b")

    with running(tmp_path / "redis-data") as own:
        run(main(own))


@pytest.mark.timeout(30)
def test_per_key_arguments_are_checked(run: Any, server: RedisServer) -> None:
    async def main() -> None:
        async with RedisQueue(server.url, run=new_run()) as queue:
            polite = queue.per_key(PerKey(key_of, concurrency=2, rate=1.5, burst=3), lease=10)
            assert polite.concurrency == 2
            assert repr(polite.shared) == (
                "SharedPerKey(concurrency=2, rate=1.5, burst=3, lease=10)"
            )
            with pytest.raises(TypeError, match=r"^per_key must be a PerKey, got 2$"):
                queue.per_key(2)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match=r"^per_key has a shared= already"):
                queue.per_key(polite)
            with pytest.raises(ValueError, match=r"^lease must be > 0 seconds, got 0$"):
                queue.per_key(PerKey(key_of, concurrency=2), lease=0)
        with pytest.raises(RuntimeError, match=r"is not open"):
            await shared_of(polite).acquire("a")

    run(main())


@pytest.mark.timeout(30)
def test_an_ask_cut_short_holds_no_place(run: Any, server: RedisServer) -> None:
    """An acquire() cancelled wherever its round trip was leaves no place taken."""
    name = new_run()

    async def main() -> None:
        async with two_processes(server.url, name, PerKey(key_of, concurrency=1)) as (one, two):
            for steps in range(0, 64, 3):  # a round trip takes some 20 to 50 steps
                task = asyncio.ensure_future(one.acquire("a"))
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                if not task.cancelled():
                    one.release("a", None)  # it ended before the cancel: a place taken
                async with asyncio.timeout(2):  # a place left taken: for its lease, 60 s
                    while await two.acquire("a") is not None:  # noqa: ASYNC110 - in Redis
                        await asyncio.sleep(0.005)
                two.release("a", None)
                await asyncio.sleep(0.02)  # given back

    run(main())
