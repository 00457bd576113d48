"""The command line over Redis: ``--run NAME`` on fetch and run, and ``parallelize queue``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clitools import by_url, cli, records, write_lines
from parallelize.redis import RedisQueue
from redistools import RedisServer, free_port, running


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def env(redis: RedisServer) -> Iterator[None]:
    """$PARALLELIZE_REDIS names the test's Redis, for this process and its children."""
    before = os.environ.get("PARALLELIZE_REDIS")
    os.environ["PARALLELIZE_REDIS"] = redis.url
    yield
    if before is None:
        del os.environ["PARALLELIZE_REDIS"]
    else:
        os.environ["PARALLELIZE_REDIS"] = before


def new_run() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


async def run_keys(url: str, run: str) -> list[str]:
    """Every key of the run in Redis."""
    async with RedisQueue(url, run="probe") as queue:
        found: list[str] = await queue._redis().keys(f"parallelize:{{{run}}}:*")
        return found


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "parallelize", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def status(run: str) -> dict[str, Any]:
    result = cli("queue", "status", "--run", run, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("env")
def test_fetch_on_two_processes_writes_each_url_once(server: str, tmp_path: Path) -> None:
    """Machine B starts first with no input; machine A adds the URLs and works too."""
    run = new_run()
    urls = [f"{server}/page/{n}" for n in range(300)]
    urls += [f"{server}/status/404?n={n}" for n in range(20)]
    worker = start("fetch", "--run", run, "-w", "10", "-o", str(tmp_path / "b.jsonl"))
    producer = cli(
        "fetch",
        str(write_lines(tmp_path / "urls.txt", urls)),
        "--run",
        run,
        "-w",
        "10",
        "-o",
        str(tmp_path / "a.jsonl"),
    )
    assert producer.returncode in {0, 4}, producer.stderr  # 4 if a 404 (final) was its own
    _, err = worker.communicate(timeout=30)
    assert worker.returncode in {0, 4}, err  # 4 if a 404 (final) was its own
    assert "done by all workers" in producer.stderr
    written = (tmp_path / "a.jsonl").read_text() + (tmp_path / "b.jsonl").read_text()
    got = Counter(record["url"] for record in records(written))
    assert sorted(got) == sorted(urls)
    assert set(got.values()) == {1}  # nobody died: no URL was fetched twice
    # Every line the workers wrote, from any machine, the failures included.
    results = cli("queue", "results", "--run", run)
    assert results.returncode == 0, results.stderr
    assert sorted(results.stdout.splitlines()) == sorted(written.splitlines())
    assert by_url(results.stdout)[f"{server}/status/404?n=3"]["status"] == 404
    progress = status(run)
    assert progress["finished"]
    assert (progress["ok"], progress["failed"], progress["produced"]) == (300, 20, 320)
    assert len(progress["workers"]) == 2
    text = cli("queue", "status", "--run", run)
    assert f"run {run}: finished; 320 added, 320 done (300 ok, 20 failed)" in text.stdout


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("env")
def test_add_only_then_workers_of_run(tmp_path: Path) -> None:
    run = new_run()
    module = tmp_path / "jobs.py"
    module.write_text(
        "import asyncio\nasync def add(a, b):\n    await asyncio.sleep(0.001)\n    return a + b\n"
    )
    lines = [json.dumps([n, n]) for n in range(100)]
    added = cli(
        "run",
        "jobs:add",
        "--input",
        str(write_lines(tmp_path / "args.jsonl", lines)),
        "--run",
        run,
        "--add-only",
        cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    assert f"run {run} has 100 calls, all added" in added.stderr
    assert status(run)["produced"] == 100
    worker = cli("run", "jobs:add", "--run", run, "-w", "5", cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    got = {record["line"]: record["result"] for record in records(worker.stdout)}
    assert got == {n + 1: 2 * n for n in range(100)}


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("env")
def test_a_worker_stopped_by_sigterm_leaves_the_rest_to_others(server: str, tmp_path: Path) -> None:
    """The stopped worker gives back what it held: the next takes it at once, not in 30 s."""
    run = new_run()
    urls = [f"{server}/slow/20?n={n}" for n in range(200)]
    out = tmp_path / "first.jsonl"
    first = start(
        "fetch",
        str(write_lines(tmp_path / "urls.txt", urls)),
        "--run",
        run,
        "-w",
        "5",
        "-o",
        str(out),
    )
    while status(run)["done"] < 20:
        assert first.poll() is None
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 130, err
    started = time.monotonic()
    second = cli("fetch", "--run", run, "-w", "20")  # the default idle timeout: 30 s
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 15  # nothing waited for the idle timeout
    got = Counter(r["url"] for r in records(out.read_text() + second.stdout))
    assert sorted(got) == sorted(urls)
    progress = status(run)
    assert progress["finished"]
    assert progress["ok"] == 200


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("env")
def test_rate_with_run_is_one_quota_for_all_workers(server: str, tmp_path: Path) -> None:
    """Two workers with --rate 10 share 10 requests a second, not 10 each."""
    run = new_run()
    urls = [f"{server}/page/{n}" for n in range(30)]
    started = time.monotonic()
    first = start(
        "fetch",
        str(write_lines(tmp_path / "urls.txt", urls)),
        "--run",
        run,
        "--rate",
        "10",
        "-w",
        "2",
    )
    second = start("fetch", "--run", run, "--rate", "10", "-w", "2")
    outputs = []
    for proc in (first, second):
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        outputs.append(out)
    took = time.monotonic() - started
    assert sorted(r["url"] for r in records("".join(outputs))) == sorted(urls)
    assert min(len(o.splitlines()) for o in outputs) > 0  # both fetched
    # One quota: 30 requests at 10/s take 2.9 s at least (two quotas: about 1.5 s).
    assert took >= 2.9


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("env")
def test_max_deliveries_bounds_a_poison_item_of_a_cli_fleet(tmp_path: Path) -> None:
    """--max-deliveries 2: the call that kills its worker runs twice, then is dead-lettered."""
    run = new_run()
    (tmp_path / "jobs.py").write_text(
        "import asyncio, os\n"
        "async def square(n):\n"
        "    if n == 13:\n"
        "        with open('calls.log', 'a') as log:\n"
        "            log.write('13\\n')\n"
        "        os._exit(9)  # as a segfault would: no clean-up, no outcome\n"
        "    await asyncio.sleep(0.001)\n"
        "    return n * n\n"
    )
    lines = [json.dumps(n) for n in range(30)]
    args = str(write_lines(tmp_path / "args.jsonl", lines))
    added = cli("run", "jobs:square", "--input", args, "--run", run, "--add-only", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    options = ("--run", run, "-w", "4", "--idle-timeout", "0.3", "--max-deliveries", "2")
    deaths = 0
    while True:  # a supervisor: restart the worker whenever it dies
        worker = cli("run", "jobs:square", *options, cwd=tmp_path)
        if worker.returncode != 9:
            break
        deaths += 1
        assert deaths < 5, worker.stderr
    assert worker.returncode == 0, worker.stderr
    assert deaths == 2  # by default: 2 in company, then 3 alone
    assert (tmp_path / "calls.log").read_text().split() == ["13", "13"]
    progress = status(run)
    assert (progress["ok"], progress["dead"], progress["remaining"]) == (29, 1, 0)
    dead = cli("queue", "dead", "--run", run)
    (letter,) = records(dead.stdout)
    assert (letter["item"], letter["deliveries"]) == ([14, "13"], 2)  # line 14 of the input


def test_usage_errors_say_what_to_do(tmp_path: Path) -> None:
    urls = str(write_lines(tmp_path / "urls.txt", ["http://127.0.0.1:9/"]))
    for args, message in (
        (["fetch"], "URLS is missing: give the input, or --run NAME"),
        (["fetch", urls, "--run", "x", "--journal", "j.db"], "do not go together"),
        (["fetch", "--run", "x", "--add-only"], "--add-only adds URLS to the run"),
        (["fetch", urls, "--add-only"], "--add-only goes with --run NAME"),
        (["run", "m:f"], "--input is missing"),
        (["queue"], "choose an action"),
        (["fetch", urls, "--run", "a b"], "run must be a non-empty name"),
        (["fetch", urls, "--run", "x", "--redis", "http://x"], "must be a Redis URL"),
        (["fetch", urls, "--max-deaths", "2"], "--max-deaths goes with --run NAME"),
        (["fetch", urls, "--max-deliveries", "2"], "--max-deliveries goes with --run NAME"),
        (["fetch", urls, "--run", "x", "--max-deaths", "0"], "--max-deaths must be >= 1, got 0"),
        (["run", "m:f", "--run", "x", "--max-deliveries", "1"], "must be >= 2, got 1: an"),
        (["fetch", urls, "--run", "x", "--max-deliveries", "two"], "invalid int value"),
    ):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("env")
def test_reading_a_run_creates_nothing_and_delete_leaves_nothing(redis: RedisServer) -> None:
    run = new_run()

    async def keys() -> list[str]:
        return await run_keys(redis.url, run)

    for action in ("status", "results", "dead"):
        result = cli("queue", action, "--run", run)
        assert result.returncode == 0, result.stderr
    assert "0 added" in cli("queue", "status", "--run", run).stdout
    assert asyncio.run(keys()) == []  # a typo in --run leaves no trace in Redis
    added = cli("fetch", "--run", run, "--add-only", "-", stdin="http://127.0.0.1:9/\n")
    assert added.returncode == 0, added.stderr
    assert asyncio.run(keys()) != []
    assert cli("queue", "delete", "--run", run).returncode == 0
    assert asyncio.run(keys()) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "command",
    [
        ["queue", "status"],
        ["fetch", "-"],  # adds and works
        ["fetch", "-", "--add-only"],
        ["fetch"],  # works
    ],
)
@pytest.mark.parametrize("where", ["refused", "bad db"])
def test_a_bad_redis_url_is_one_line_at_once(
    redis: RedisServer, command: list[str], where: str
) -> None:
    """--redis at a refused port or a bad DB number: exit 2 with one line, not 300 s of
    retries or a traceback."""
    url = {
        "refused": f"redis://127.0.0.1:{free_port()}/0",
        "bad db": redis.url.replace("/0", "/99"),
    }[where]
    message = {
        "refused": r"cannot reach Redis at redis://127\.0\.0\.1:\d+/0 while connecting "
        r"\(ConnectionError: .*\)\. Check that a Redis server runs there",
        "bad db": r"Redis at redis://127\.0\.0\.1:\d+/99 refused the database number in the "
        r"URL while connecting: DB index is out of range\. Give one the server has",
    }[where]
    started = time.monotonic()
    result = cli(*command, "--run", new_run(), "--redis", url, stdin="http://127.0.0.1:9/\n")
    assert time.monotonic() - started < 15
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert re.match(rf"^parallelize (queue|fetch): {message}", line), line


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("env")
def test_queue_delete_refuses_under_a_worker_and_force_fences_it(
    server: str, tmp_path: Path, redis: RedisServer
) -> None:
    """A worker is on the run: delete says so (exit 2, one line, names it, --force); with
    --force the run is gone, the worker stops with one line, and no key comes back."""
    run = new_run()
    urls = [f"{server}/slow/20?n={n}" for n in range(1000)]
    worker = start("fetch", str(write_lines(tmp_path / "urls.txt", urls)), "--run", run, "-w", "2")
    try:
        while not [w for w in status(run)["workers"] if w["state"] == "working"]:
            assert worker.poll() is None
            time.sleep(0.02)
        (name,) = [w["name"] for w in status(run)["workers"]]
        refused = cli("queue", "delete", "--run", run)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines() == [
            (
                f"parallelize queue: the run {run} has 1 worker alive ({name}), so it was not "
                f"deleted: stop them (or wait until they have been silent for their "
                f"--idle-timeout), or pass --force: their later writes are then refused, "
                f"and they stop with an error"
            )
        ]
        assert status(run)["produced"] == 1000  # nothing was deleted
        forced = cli("queue", "delete", "--run", run, "--force")
        assert forced.returncode == 0, forced.stderr
        _, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
        worker.communicate()
    assert worker.returncode == 2, err
    assert re.match(
        rf"^parallelize fetch: the run '{run}' was deleted from Redis at .* while this "
        r"process was on it .* It stopped; start it again to work on a new run$",
        err.splitlines()[-1],
    ), err
    assert "Traceback" not in err
    assert asyncio.run(run_keys(redis.url, run)) == []
