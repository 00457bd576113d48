"""The Redis queue: 1, 2 and 4 worker processes, round trips per item, cost vs SQLite.

    .venv/bin/python benchmarks/redis_scale.py                 # default run, ~4 minutes on 2 cores
    .venv/bin/python benchmarks/redis_scale.py --quick         # N=10,000, 1 round, ~30 seconds
    .venv/bin/python benchmarks/redis_scale.py --parts scale --procs 1,2 --workers 50 --total 0
    .venv/bin/python benchmarks/redis_scale.py --parts overhead --rounds 5

Two parts, every measurement with its own fresh redis-server (7.x, 127.0.0.1, a
free port, its own temporary directory, ``--save '' --appendonly yes
--appendfsync everysec``) and fresh subprocesses of this script (re-invoked), each
on uvloop. The action is ``async def work(i): await asyncio.sleep(0.01); return i``
(10 ms of waiting, no CPU) or, in part 2, also ``async def noop(i): return i``.

- scale: a producer child adds ``range(N)`` (N = 100,000) to a fresh run with
  ``RedisQueue.produce`` before the clock. It opens its queue with
  ``max_pending=2*N``, so that the whole input is in the stream before the clock
  (a producer waits for room before each batch once the stream holds
  ``max_pending`` entries). Then K worker children
  (K = 1, 2, 4; ``--procs``) each open the queue, say "ready" on stdout and wait
  for "go" on stdin; the parent sends "go" to all of them at once and each runs
  ``queue.work(work, W)`` until the run is finished, counting what it yields.

  The clock runs from "go" to the moment the last outcome was stored: the id of
  the last entry of the run's results stream (the library appends one per stored
  outcome, in the same script that acks and deletes the item's entry, so that is
  the moment ``progress().finished`` turns true), a millisecond timestamp of the
  server's clock, which is this machine's clock. Polling ``progress()`` from the
  parent instead would add its own commands to the counts below and the poll's
  jitter to the time; "go" instead of the first outcome keeps the start-up of
  each worker (its first reads) inside the clock, as a real fleet pays it. The
  time to the last worker's exit is kept in the JSON too.

  Two series: W = 100 workers per process (``--workers``), whose ceiling is K * W
  / 10 ms (10,000 items/s per process: the rate if only the sleep bound it), and
  a fixed total of 400 workers split over K processes (``--total``, 0 to skip):
  one process with 400 workers has a ceiling of 40,000 items/s that it cannot
  reach on CPU, so that series shows what more processes buy when the CPU is the
  bound, without the ceiling growing with K as it does in the first series.

  CPU: each worker measures its own user+sys seconds (``getrusage``) from "go" to
  the end of its loop; redis-server's is utime+stime of /proc/<pid>/stat (every
  thread: the AOF's fsync runs in one) before "go" and after the last worker
  exited, with its reaped children's (cutime+cstime: the fork that rewrites the
  AOF, which its growth triggers about once per 100,000 items here); the
  machine's busy time comes from /proc/stat, and what of it was neither ours nor
  Redis's is shown as "other load" (the noise of this shared machine). All per
  item.

  Round trips: each child counts its own Redis traffic on the client side
  (redis-py's connection, wrapped in the child): every write to the socket is
  one round trip (a pipeline of several commands is one), every command packed is
  one command, and an EVALSHA is told apart by its script (TAKE reads a batch of
  entries, STORE stores and acks a batch of outcomes). The server's ``INFO
  commandstats`` (calls + rejected_calls) before "go" and after the exit counts
  every command executed, including those run inside the Lua scripts (Redis 7
  counts them under their own names: xreadgroup, xack, hsetnx, xadd...). So
  "inside scripts" = the server's count - what the clients sent (- the parent's
  one INFO call).

- overhead: one process, ``parallelize(action, range(N), 100, journal=J)`` with
  (a) no journal, (b) ``SQLiteJournal`` on a fresh file, (c) a ``RedisQueue`` on a
  fresh run of a fresh server (the same process adds the input and works on it):
  items/s, the process's CPU µs per item (its own and its ended children's: the
  SQLite journal writes from a child process), redis-server's CPU µs per item for
  (c), and round trips for (c). The queue is opened (and the run deleted) before
  the clock; everything else is inside. The 10 ms action over N = 100,000
  (``--n``); the no-op over 3,000,000, 300,000 and 50,000 items for (a), (b) and
  (c) (``--noop-n``), a second or more each: per item is what compares.

Rounds interleave every configuration of both parts, rotated each round
(``--rounds``, default 3); the tables show medians. Every run is checked:
``progress()`` must show produced = ok = N, failed = dead = remaining = in_flight
= 0, finished, and the results the workers yielded must be N in count and
sum(range(N)) in sum. A bad sample is printed at once, shown in the check column,
left out of the medians, listed at the end, and makes the exit status 1.

The tables are printed and written as markdown to benchmarks/out/redis.md, with
every raw sample in benchmarks/out/redis.json. Every redis-server and child this
starts is ended before it returns, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import (
    HERE,
    PROJECT_ROOT,
    check,
    child_cmd,
    child_env,
    errors_into,
    filesystem_of,
    fmt,
    good,
    imported_from,
    load_average,
    machine,
    machine_cpu,
    markdown,
    median_of,
    remove_sqlite,
    rotated,
    run_measurement,
    spread,
    src_state,
    version_of,
    write_report,
)

OUT_DIR = HERE / "out"
RUN = "bench"
SLEEP = 0.01  # the action's work, seconds
SINGLE_WORKERS = 100  # numworkers of the overhead part
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
JOURNALS = {"none": "(a) no journal", "sqlite": "(b) SQLiteJournal", "redis": "(c) RedisQueue"}
ACTIONS = {"sleep": "10 ms sleep", "noop": "no-op"}
# Commands whose first argument is a subcommand: INFO commandstats names them "a|b".
CONTAINERS = {"client", "script", "xgroup", "xinfo", "config", "command", "object", "memory"}


# --------------------------------------------------------------------------- #
# The children: producer, worker, single process
# --------------------------------------------------------------------------- #


async def work(i: int) -> int:
    await asyncio.sleep(SLEEP)
    return i


async def noop(i: int) -> int:
    return i


def own_cpu() -> float:
    """CPU seconds of this process and its ended children (the SQLite journal's writer)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class Wire:
    """One process's Redis traffic, counted on the client side: writes to the socket
    (round trips: a pipeline of commands is one write), commands by name, and
    EVALSHA calls by script name."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.commands: Counter[str] = Counter()
        self.scripts: Counter[str] = Counter()

    def reset(self) -> None:
        self.round_trips = 0
        self.commands.clear()
        self.scripts.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "round_trips": self.round_trips,
            "commands": dict(self.commands),
            "scripts": dict(self.scripts),
        }

    @classmethod
    def install(cls) -> Wire:
        """Wrap redis-py's asyncio connection class to count into a new Wire."""
        from redis.asyncio.connection import AbstractConnection  # noqa: PLC0415

        from parallelize._redis import _scripts  # noqa: PLC0415

        script_names = {
            hashlib.sha1(getattr(_scripts, name).encode()).hexdigest(): name  # noqa: S324
            for name in _scripts.__all__
        }
        wire = cls()
        pack = AbstractConnection.pack_command
        send = AbstractConnection.send_packed_command

        def pack_command(conn: Any, *args: Any) -> Any:
            name = command_name(args)
            wire.commands[name] += 1
            if name in {"evalsha", "evalsha_ro"}:
                sha = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
                wire.scripts[script_names.get(sha, sha)] += 1
            return pack(conn, *args)

        async def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
            wire.round_trips += 1
            await send(conn, command, check_health)

        AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        return wire


def command_name(args: tuple[Any, ...]) -> str:
    """The name INFO commandstats gives the command ``args`` ("get", "client|setinfo")."""
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
    parts = words[0].split() + words[1:]
    name = parts[0].lower()
    if name in CONTAINERS and len(parts) > 1:
        name += "|" + parts[1].lower()
    return name


def server_cpu(pid: int | None) -> float | None:
    """CPU seconds of redis-server ``pid`` so far: utime + stime of all its threads (the
    AOF's fsync runs in one) + cutime + cstime, its reaped children: the fork that
    rewrites the AOF when it has grown (once a run here, at 64 MB)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def sync_client(url: str) -> Any:
    """A redis-py sync client for INFO: one connection, made before the first snapshot,
    so that the only command of ours between two snapshots is the first INFO."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url, decode_responses=True)
    client.ping()
    return client


def info_snapshot(client: Any) -> dict[str, Any]:
    """One ``INFO all`` of the server: commands, traffic, CPU."""
    return parse_info(client.info("all"))


def parse_info(info: dict[str, Any]) -> dict[str, Any]:
    commands = {
        name.removeprefix("cmdstat_"): int(v["calls"]) + int(v.get("rejected_calls", 0))
        for name, v in info.items()
        if name.startswith("cmdstat_")
    }
    return {
        "commands": commands,
        "total_commands_processed": int(info["total_commands_processed"]),
        "net_in": int(info["total_net_input_bytes"]),
        "net_out": int(info["total_net_output_bytes"]),
        "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
    }


def info_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    names = set(before["commands"]) | set(after["commands"])
    commands = {
        name: after["commands"].get(name, 0) - before["commands"].get(name, 0) for name in names
    }
    return {
        "commands": {name: calls for name, calls in sorted(commands.items()) if calls},
        "total_commands_processed": after["total_commands_processed"]
        - before["total_commands_processed"],
        "net_in": after["net_in"] - before["net_in"],
        "net_out": after["net_out"] - before["net_out"],
        "cpu_info": after["cpu"] - before["cpu"],
    }


async def progress_of(url: str) -> dict[str, Any]:
    """The run's ``progress()`` as plain data, workers summed up."""
    from parallelize.redis import RedisQueue  # noqa: PLC0415

    async with RedisQueue(url, run=RUN) as queue:
        progress = await queue.progress()
    data = progress.as_dict()
    workers = data.pop("workers")
    data["workers"] = len(workers)
    data["workers_ok"] = sum(w["ok"] for w in workers)
    data["workers_failed"] = sum(w["failed"] for w in workers)
    return data


async def produce_child(spec: dict[str, Any], report: dict[str, Any]) -> None:
    from parallelize.redis import RedisQueue  # noqa: PLC0415

    n = spec["n"]
    async with RedisQueue(spec["url"], run=RUN, max_pending=2 * n) as queue:
        await queue.delete()
        start = time.perf_counter()
        report["produced"] = await queue.produce(range(n))
        report["elapsed"] = time.perf_counter() - start
        progress = await queue.progress()
    report["input_done"] = progress.input_done
    report["remaining"] = progress.remaining


async def worker_child(spec: dict[str, Any], report: dict[str, Any]) -> None:
    from parallelize.redis import RedisQueue  # noqa: PLC0415

    wire = Wire.install()
    async with RedisQueue(spec["url"], run=RUN) as queue:  # connects, before "go"
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "go":
            raise RuntimeError(f"expected 'go' on stdin, got {line!r}")
        wire.reset()
        cpu = own_cpu()
        report["t_go"] = time.time()
        count = checksum = 0
        async for result in queue.work(work, spec["workers"]):
            if not count:
                report["t_first"] = time.time()
            count += 1
            checksum += result
        report["t_end"] = time.time()
        report["cpu"] = own_cpu() - cpu
        report["count"] = count
        report["checksum"] = checksum
    report["wire"] = wire.snapshot()  # with the goodbye status the queue writes on close


async def single_child(spec: dict[str, Any], report: dict[str, Any]) -> None:
    from parallelize import SQLiteJournal, parallelize  # noqa: PLC0415
    from parallelize.redis import RedisQueue  # noqa: PLC0415

    action = work if spec["action"] == "sleep" else noop
    n = spec["n"]
    async with contextlib.AsyncExitStack() as stack:
        wire = None
        journal: Any = None
        if spec["journal"] == "sqlite":
            journal = SQLiteJournal(spec["path"])
        elif spec["journal"] == "redis":
            wire = Wire.install()
            journal = await stack.enter_async_context(RedisQueue(spec["url"], run=RUN))
            await journal.delete()
            info = sync_client(spec["url"])
            stack.callback(info.close)
            info_before = info_snapshot(info)
            redis_cpu = server_cpu(spec["redis_pid"])
            wire.reset()
        count = checksum = 0
        busy = machine_cpu()
        cpu = own_cpu()
        start = time.perf_counter()
        async for result in parallelize(action, range(n), SINGLE_WORKERS, journal=journal):
            count += 1
            checksum += result
        report["elapsed"] = time.perf_counter() - start
        report["cpu"] = own_cpu() - cpu  # the SQLite writer was waited for: the run ended
        busy_after = machine_cpu()
        report["machine_cpu"] = None if None in (busy, busy_after) else busy_after - busy
        report["count"] = count
        report["checksum"] = checksum
        if spec["journal"] == "sqlite":
            report["journal_counts"] = SQLiteJournal(spec["path"]).counts()
        elif wire is not None:
            after = server_cpu(spec["redis_pid"])
            report["redis_cpu"] = None if None in (after, redis_cpu) else after - redis_cpu
            report["wire"] = wire.snapshot()
            report["server"] = info_delta(info_before, info_snapshot(info))
            progress = await journal.progress()
            data = progress.as_dict()
            data["workers"] = len(data["workers"])
            report["progress"] = data


def child(spec: dict[str, Any]) -> None:
    """Run one child's part; print one JSON line last (the parent reads the last line)."""
    import uvloop  # noqa: PLC0415

    import parallelize.redis  # noqa: PLC0415, F401 - imported before any clock starts

    role = {"produce": produce_child, "work": worker_child, "single": single_child}
    report: dict[str, Any] = {}
    with errors_into(report), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(role[spec["role"]](spec, report))
    report["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(report), flush=True)


# --------------------------------------------------------------------------- #
# The parent: redis-server, workers, checks
# --------------------------------------------------------------------------- #


@dataclass
class Server:
    url: str
    pid: int
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[Server]:
    """A fresh redis-server on 127.0.0.1 with its own directory; ended on the way out."""
    import redis  # noqa: PLC0415

    port = free_port()
    where = tmp / f"redis-{port}"
    where.mkdir()
    argv = [
        REDIS_SERVER,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
        "--dir",
        str(where),
    ]
    with (where / "server.log").open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        client.ping()
                        break
                    except redis.ConnectionError:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            tail = (where / "server.log").read_text().strip().splitlines()[-3:]
                            raise RuntimeError(f"redis-server did not start: {tail}") from None
                        time.sleep(0.02)
            finally:
                client.close()
            yield Server(f"redis://127.0.0.1:{port}/0", proc.pid, port)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            shutil.rmtree(where, ignore_errors=True)


def results_span(url: str) -> tuple[float | None, float | None, int]:
    """Server times (s) of the first and last outcome stored, and how many: the run's
    results stream, whose entry ids are the server's clock in ms."""
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        key = f"parallelize:{{{RUN}}}:results"
        first = client.xrange(key, count=1)
        last = client.xrevrange(key, count=1)
        length = client.xlen(key)
    finally:
        client.close()

    def at(entries: list[Any]) -> float | None:
        return int(entries[0][0].split("-")[0]) / 1000 if entries else None

    return at(first), at(last), int(length)


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    err: Path
    ready: bool = False
    report: dict[str, Any] | None = None

    def error(self, what: str) -> dict[str, Any]:
        try:
            tail = (self.err.read_text().strip().splitlines() or ["no stderr"])[-1]
        except OSError:
            tail = "no stderr"
        return {"error": f"{what} (exit {self.proc.poll()}): {tail[:200]}"}


def start_workers(tmp: Path, url: str, k: int, w: int) -> list[Worker]:
    workers = []
    for i in range(k):
        err = tmp / f"worker-{i}.err"
        with err.open("w") as stderr:
            proc = subprocess.Popen(
                child_cmd(__file__, {"role": "work", "url": url, "workers": w}),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=child_env(),
            )
        workers.append(Worker(proc, err))
    return workers


def wait_ready(workers: list[Worker], deadline: float) -> str | None:
    """Wait until every worker said "ready"; None, or why not."""
    waiting = {w.proc.stdout: w for w in workers if w.proc.stdout is not None}
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout: workers not ready"
        readable, _, _ = select.select(list(waiting), [], [], left)
        for stream in readable:
            worker = waiting.pop(stream)
            line = stream.readline().strip()
            if line != "ready":
                return worker.error(f"worker said {line[:100]!r} instead of ready")["error"]
            worker.ready = True
    return None


def finish_worker(worker: Worker, deadline: float) -> dict[str, Any]:
    proc = worker.proc
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return {"error": "timeout: the worker did not end"}
    assert proc.stdout is not None
    lines = proc.stdout.read().strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return worker.error("no report")
    return report


def stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        proc = worker.proc
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def measure_scale(args: argparse.Namespace, tmp: Path, k: int, w: int) -> dict[str, Any]:
    n = args.n
    sample: dict[str, Any] = {"part": "scale", "k": k, "w": w, "n": n}
    with redis_server(tmp) as server:
        produced = run_measurement(
            child_cmd(__file__, {"role": "produce", "url": server.url, "n": n}),
            args.timeout,
            env=child_env(),
        )
        sample["produce"] = produced
        if produced.get("error"):
            sample["problems"] = [f"producer: {produced['error']}"]
            return sample
        workers: list[Worker] = []
        info = sync_client(server.url)
        try:
            workers = start_workers(tmp, server.url, k, w)
            deadline = time.monotonic() + args.timeout
            why = wait_ready(workers, deadline)
            if why is not None:
                sample["problems"] = [why]
                return sample
            before = info_snapshot(info)
            redis_cpu = server_cpu(server.pid)
            busy = machine_cpu()
            t_go = time.time()
            for worker in workers:
                assert worker.proc.stdin is not None
                worker.proc.stdin.write("go\n")
                worker.proc.stdin.flush()
            reports = [finish_worker(worker, deadline) for worker in workers]
            t_exit = time.time()
            redis_after = server_cpu(server.pid)
            busy_after = machine_cpu()
            after = info_snapshot(info)
            if any(r.get("error", "").startswith("timeout") for r in reports):
                # a hang: say where the run stood before killing the workers
                sample["progress_at_timeout"] = asyncio.run(progress_of(server.url))
        finally:
            stop_workers(workers)
            info.close()
        sample["workers"] = reports
        sample["t_go"] = t_go
        sample["elapsed_exit"] = t_exit - t_go
        sample["redis_cpu"] = None if None in (redis_cpu, redis_after) else redis_after - redis_cpu
        sample["machine_cpu"] = None if None in (busy, busy_after) else busy_after - busy
        sample["server"] = info_delta(before, after)
        sample["progress"] = asyncio.run(progress_of(server.url))
        first, last, stored = results_span(server.url)
        sample["results_stream"] = stored
    if last is not None:
        sample["elapsed"] = last - t_go
        sample["first_outcome_after"] = None if first is None else first - t_go
    ends = [r["t_end"] for r in reports if "t_end" in r]
    if ends:
        sample["elapsed_loops"] = max(ends) - t_go
    sample["problems"] = scale_problems(sample)
    derive(sample)
    return sample


def progress_problems(progress: dict[str, Any], n: int) -> list[str]:
    found = []
    expect = {
        "produced": n,
        "ok": n,
        "failed": 0,
        "dead": 0,
        "remaining": 0,
        "in_flight": 0,
        "input_done": True,
        "finished": True,
    }
    for field, value in expect.items():
        if progress.get(field) != value:
            found.append(f"progress {field}={progress.get(field)} != {value}")
    return found


def scale_problems(sample: dict[str, Any]) -> list[str]:
    n = sample["n"]
    found = []
    produce = sample["produce"]
    if produce.get("produced") != n or not produce.get("input_done"):
        found.append(
            f"producer: produced {produce.get('produced')}, done {produce.get('input_done')}"
        )
    for i, report in enumerate(sample["workers"]):
        if report.get("error"):
            found.append(f"worker {i}: {report['error']}")
    count = sum(r.get("count", 0) for r in sample["workers"])
    checksum = sum(r.get("checksum", 0) for r in sample["workers"])
    if count != n:
        found.append(f"workers yielded {count} results != {n}")
    if checksum != n * (n - 1) // 2:
        found.append(f"sum of results {checksum} != {n * (n - 1) // 2}")
    found += progress_problems(sample["progress"], n)
    if sample["progress"].get("workers_ok") != n:
        found.append(f"workers' own ok counts sum to {sample['progress'].get('workers_ok')}")
    if sample["results_stream"] != n:
        found.append(f"results stream holds {sample['results_stream']} != {n}")
    if "elapsed" not in sample:
        found.append("no outcome stored: no end time")
    return found


def measure_single(
    args: argparse.Namespace, tmp: Path, action: str, journal: str
) -> dict[str, Any]:
    n = args.n if action == "sleep" else args.noop_n[journal]
    spec: dict[str, Any] = {"role": "single", "action": action, "journal": journal, "n": n}
    sample: dict[str, Any]
    if journal == "redis":
        with redis_server(tmp) as server:
            spec |= {"url": server.url, "redis_pid": server.pid}
            sample = run_measurement(child_cmd(__file__, spec), args.timeout, env=child_env())
    elif journal == "sqlite":
        spec["path"] = str(tmp / "journal.db")
        try:
            sample = run_measurement(child_cmd(__file__, spec), args.timeout, env=child_env())
        finally:
            remove_sqlite(spec["path"], ".lock")
    else:
        sample = run_measurement(child_cmd(__file__, spec), args.timeout, env=child_env())
    sample |= {"part": "overhead", "action": action, "journal": journal, "n": n}
    found = []
    if sample.get("error"):
        found.append(sample["error"])
    else:
        if sample["count"] != n:
            found.append(f"count {sample['count']} != {n}")
        if sample["checksum"] != n * (n - 1) // 2:
            found.append(f"checksum {sample['checksum']} != {n * (n - 1) // 2}")
        if journal == "sqlite" and sample["journal_counts"] != {"ok": n, "failed": 0}:
            found.append(f"journal {sample['journal_counts']}")
        if journal == "redis":
            found += progress_problems(sample["progress"], n)
    sample["problems"] = found
    derive(sample)
    return sample


# --------------------------------------------------------------------------- #
# Per-sample figures
# --------------------------------------------------------------------------- #


# Our own commands between two INFO snapshots: the first INFO (the second is not
# counted in its own answer).
OWN_COMMANDS = {"info": 1}


def inside_scripts(server: dict[str, int], client: dict[str, int]) -> dict[str, int]:
    """Per command, what the server ran minus what the clients (and the snapshots)
    sent: what the Lua scripts ran. Only the commands the server counted: redis-py 8
    also sends CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS on each new connection,
    which Redis 7.0 does not know (rejected, in no cmdstat_ line)."""
    return {
        name: calls - client.get(name, 0) - OWN_COMMANDS.get(name, 0)
        for name, calls in server.items()
        if calls - client.get(name, 0) - OWN_COMMANDS.get(name, 0)
    }


def client_totals(sample: dict[str, Any]) -> dict[str, Any]:
    """The clients' counts: all workers' (scale), or the one process's (overhead)."""
    wires = [r["wire"] for r in sample.get("workers", []) if "wire" in r]
    if "wire" in sample:
        wires.append(sample["wire"])
    commands: Counter[str] = Counter()
    scripts: Counter[str] = Counter()
    for wire in wires:
        commands.update(wire["commands"])
        scripts.update(wire["scripts"])
    return {
        "round_trips": sum(wire["round_trips"] for wire in wires),
        "commands": dict(commands),
        "scripts": dict(scripts),
    }


def derive(sample: dict[str, Any]) -> None:
    """Add the per-item figures the tables use (None where not measured)."""
    n = sample["n"]
    elapsed = sample.get("elapsed")
    sample["rate"] = None if not elapsed else n / elapsed
    # Each CPU time over its own span: a worker's from "go" to its loop's end; Redis's
    # and the machine's from "go" to the last exit (scale), or the run (overhead).
    span = sample.get("elapsed_exit", elapsed)
    if sample["part"] == "scale":
        reports = sample["workers"]
        cpus = [r.get("cpu") for r in reports]
        ok = None not in cpus and all("t_end" in r for r in reports)
        sample["cpu"] = sum(cpus) if ok else None  # type: ignore[arg-type]
        shares = [r["cpu"] / (r["t_end"] - r["t_go"]) for r in reports] if ok else []
        sample["cpu_share"] = statistics.mean(shares) if shares else None  # per process
    else:
        cpu = sample.get("cpu")
        sample["cpu_share"] = None if cpu is None or not elapsed else cpu / elapsed
    for field in ("cpu", "redis_cpu"):
        value = sample.get(field)
        sample[f"{field}_us"] = None if value is None else value / n * 1e6
    redis_cpu = sample.get("redis_cpu")
    sample["redis_cpu_share"] = None if redis_cpu is None or not span else redis_cpu / span
    busy = sample.get("machine_cpu")
    sample["machine_busy"] = (
        None if busy is None or not span else busy / span / (os.cpu_count() or 1)
    )
    ours = [sample.get("cpu"), redis_cpu or 0.0]
    sample["other_load"] = (
        None if busy is None or None in ours or not span else (busy - sum(ours)) / span  # type: ignore[arg-type]
    )
    server = sample.get("server")
    if server is None:
        return
    client = client_totals(sample)
    sample["client"] = client
    sample["scripted"] = scripted = inside_scripts(server["commands"], client["commands"])
    sent = sum(client["commands"].values())
    received = sum(server["commands"].values())
    sample["rt_per_item"] = client["round_trips"] / n
    sample["sent_per_item"] = sent / n
    sample["server_per_item"] = received / n
    sample["scripted_per_item"] = sum(scripted.values()) / n
    sample["take_per_item"] = client["scripts"].get("TAKE", 0) / n
    sample["store_per_item"] = client["scripts"].get("STORE", 0) / n
    sample["bytes_per_item"] = (server["net_in"] + server["net_out"]) / n


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def label(k: int, w: int) -> str:
    return f"{k} x {w}"


def per_item(value: float | None, spec: str = ".2f") -> str:
    return fmt(value, spec)


def share(value: float | None) -> str:
    return fmt(None if value is None else value * 100, ".0f", "%")


def scale_table(
    title: str, note: str, configs: list[tuple[int, int]], scale: dict[str, list[dict[str, Any]]]
) -> str:
    base = median_of(scale[label(*configs[0])], "rate")
    k0 = configs[0][0]
    rows = []
    for k, w in configs:
        samples = scale[label(k, w)]
        rate = median_of(samples, "rate")
        ceiling = k * w / SLEEP
        speedup = None if rate is None or not base else rate / base
        rows.append(
            [
                f"{k} x {w}",
                f"{k * w}",
                f"{ceiling:,.0f}",
                fmt(rate, ",.0f"),
                share(None if rate is None else rate / ceiling),
                fmt(speedup, ".2f", "x"),
                fmt(None if speedup is None else speedup * k0 / k, ".0%"),
                per_item(median_of(samples, "cpu_us"), ".1f"),
                per_item(median_of(samples, "redis_cpu_us"), ".1f"),
                share(median_of(samples, "cpu_share")),
                share(median_of(samples, "redis_cpu_share")),
                share(median_of(samples, "machine_busy")),
                fmt(median_of(samples, "other_load"), ".2f"),
                spread(samples),
                check(samples),
            ]
        )
    header = [
        "processes x workers",
        "workers",
        "ceiling items/s",
        "items/s",
        "of ceiling",
        "speedup",
        "efficiency",
        "worker CPU µs/item",
        "Redis CPU µs/item",
        "CPU per worker process",
        "Redis CPU",
        "machine busy",
        "other load",
        "spread",
        "check",
    ]
    return f"### {title}\n\n{note}\n\n" + markdown(header, rows)


def round_trip_rows(name: str, samples: list[dict[str, Any]]) -> list[str]:
    take = median_of(samples, "take_per_item")
    store = median_of(samples, "store_per_item")
    return [
        name,
        per_item(median_of(samples, "rt_per_item"), ".4f"),
        per_item(median_of(samples, "sent_per_item"), ".4f"),
        per_item(median_of(samples, "server_per_item"), ".2f"),
        per_item(median_of(samples, "scripted_per_item"), ".2f"),
        per_item(take, ".4f"),
        fmt(None if not take else 1 / take, ".1f"),
        per_item(store, ".4f"),
        fmt(None if not store else 1 / store, ".1f"),
        fmt(median_of(samples, "bytes_per_item"), ".0f"),
        check(samples, 40),
    ]


def round_trip_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    header = [
        "run",
        "client round trips/item",
        "client commands/item",
        "server commands/item",
        "inside scripts/item",
        "TAKE/item",
        "items per TAKE",
        "STORE/item",
        "items per STORE",
        "net bytes/item",
        "check",
    ]
    rows = [round_trip_rows(name, samples) for name, samples in runs.items()]
    return (
        "### Redis round trips per item\n\n"
        "Client side: every process's writes to its socket (round trips; a pipeline is "
        "one) and commands sent, summed over the processes, per item. Server side: "
        "INFO commandstats (calls + rejected_calls) over the same span, which counts "
        "the commands the Lua scripts run too; inside scripts = server - client "
        "(- our INFO call), over the commands the server counted. TAKE and STORE are the EVALSHA calls of those scripts "
        '(client side); "items per" is N divided by their count, so a TAKE that found '
        "nothing (a poll) lowers it. Net bytes: in + out of redis-server. Scale runs: "
        'from "go" to the last worker\'s exit; (c) RedisQueue: the whole run in one '
        "process, producing included.\n\n" + markdown(header, rows)
    )


def command_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Calls per 1,000 items of every command, as client + inside scripts."""
    medians: dict[str, dict[str, tuple[float, float | None]]] = {}
    names: set[str] = set()
    for run, samples in runs.items():
        ok = [s for s in good(samples) if "server" in s]
        if not ok:
            continue
        every = {name for s in ok for name in s["server"]["commands"]}
        every |= {name for s in ok for name in s["client"]["commands"]}
        names |= every
        cells: dict[str, tuple[float, float | None]] = {}
        for name in every:
            sent = [s["client"]["commands"].get(name, 0) * 1000 / s["n"] for s in ok]
            ran = [s["scripted"].get(name, 0) * 1000 / s["n"] for s in ok]
            counted = any(name in s["server"]["commands"] for s in ok)
            cells[name] = (statistics.median(sent), statistics.median(ran) if counted else None)
        medians[run] = cells
    if not medians:
        return "### Commands per 1,000 items\n\nno good sample"

    def total(name: str) -> float:
        cells = [run.get(name, (0.0, 0.0)) for run in medians.values()]
        return sum(client + (scripted or 0.0) for client, scripted in cells)

    rows = []
    for name in sorted(names, key=lambda x: (-total(x), x)):
        row = [name]
        for cells in medians.values():
            client, scripted = cells.get(name, (0.0, 0.0))
            if scripted is None:
                row.append(f"{client:.2f} + n/a")
            else:
                row.append(f"{client:.2f} + {scripted:.2f}" if client or scripted else "-")
        if any(cell != "-" for cell in row[1:]):
            rows.append(row)
    return (
        "### Commands per 1,000 items, by name: sent by clients + run inside scripts\n\n"
        "Medians over rounds. The first number is what the clients sent (the EVALSHA "
        "of a script counts here, once), the second is the server's count minus that "
        "(and minus our one INFO call): the commands the scripts ran. n/a: the server "
        "counted none, as it does with the CLIENT SETINFO and CLIENT "
        "MAINT_NOTIFICATIONS redis-py 8 sends on each new connection, unknown to Redis "
        "7.0 (rejected). New connections after the start (hello, ping, client|...) are "
        "the pool of each process growing to the concurrent calls it makes.\n\n"
        + markdown(["command", *medians], rows, check_column=False)
    )


def overhead_table(args: argparse.Namespace, single: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for action, action_title in ACTIONS.items():
        ref = median_of(single[f"{action}/none"], "cpu_us")
        for journal, title in JOURNALS.items():
            samples = single[f"{action}/{journal}"]
            rate = median_of(samples, "rate")
            cpu = median_of(samples, "cpu_us")
            n = args.n if action == "sleep" else args.noop_n[journal]
            rows.append(
                [
                    action_title,
                    title,
                    f"{n:,}",
                    fmt(rate, ",.0f"),
                    fmt(None if not rate else 1e6 / rate, ".1f"),
                    fmt(cpu, ".1f"),
                    "-"
                    if journal == "none"
                    else fmt(None if None in (cpu, ref) else cpu - ref, "+.1f"),  # type: ignore[operator]
                    fmt(median_of(samples, "redis_cpu_us"), ".1f"),
                    fmt(median_of(samples, "rt_per_item"), ".4f"),
                    fmt(median_of(samples, "other_load"), ".2f"),
                    spread(samples),
                    check(samples),
                ]
            )
    header = [
        "action",
        "journal",
        "N",
        "items/s",
        "wall µs/item",
        "process CPU µs/item",
        "CPU vs (a) µs/item",
        "Redis CPU µs/item",
        "round trips/item",
        "other load",
        "spread",
        "check",
    ]
    return (
        f"### Overhead per item in one process: {SINGLE_WORKERS} workers, uvloop\n\n"
        "parallelize(action, range(N), 100, journal=...). Process CPU: user + sys of the "
        "process and its ended children (SQLiteJournal's writer process), over the run. "
        "Other load: the machine's busy time neither this process's nor Redis's, in cores. "
        f"The 10 ms action's ceiling is {SINGLE_WORKERS / SLEEP:,.0f} items/s.\n\n"
        + markdown(header, rows, right_from=2)
    )


# --------------------------------------------------------------------------- #
# Setup and main
# --------------------------------------------------------------------------- #


def src_content() -> str:
    """A fingerprint of what src/ holds (its files' paths and bytes): unlike the
    commit, it stays the same when commits change only files outside src/."""
    digest = hashlib.sha1()  # noqa: S324 - a fingerprint
    for path in sorted((PROJECT_ROOT / "src").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(PROJECT_ROOT)}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def redis_version() -> str:
    done = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def setup_lines(args: argparse.Namespace, tmp: Path) -> list[str]:
    noop_sizes = ", ".join(f"{n:,} {journal}" for journal, n in args.noop_n.items())
    return [
        f"project: {src_state()}",
        f"src/ content: sha1 {src_content()} (of its files)",
        f"parallelize imported from: {imported_from()}",
        (
            f"python: {sys.version.split()[0]} ({sys.executable}), loop uvloop "
            f"{version_of('uvloop')} in every child; redis-py {version_of('redis')}"
        ),
        f"redis-server: {redis_version()} ({REDIS_SERVER})",
        (
            "redis-server: fresh per measurement, 127.0.0.1, --save '' --appendonly yes "
            "--appendfsync everysec"
        ),
        f"machine: {machine()}",
        f"load average at start: {load_average()}",
        f"temporary files in: {tmp.parent} on {filesystem_of(tmp)}",
        (f"rounds: {args.rounds} interleaved (rotated), medians; parts: {', '.join(args.parts)}"),
        (
            f"scale: N={args.n:,}, processes {args.procs}, {args.workers} workers each"
            + (f"; and {args.total} in total" if args.total else "")
            + "; producer: max_pending=2*N, before the clock"
        ),
        (
            f"overhead: 10 ms action N={args.n:,}, no-op N={noop_sizes}, "
            f"{SINGLE_WORKERS} workers; RedisQueue and SQLiteJournal defaults"
        ),
    ]


def scale_configs(args: argparse.Namespace) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    per_process = [(k, args.workers) for k in args.procs]
    fixed = [(k, args.total // k) for k in args.procs] if args.total else []
    return per_process, fixed


def log(sample: dict[str, Any], what: str) -> None:
    if sample.get("problems"):
        text = "PROBLEM: " + "; ".join(sample["problems"])
    else:
        text = (
            f"{sample['elapsed']:7.2f} s {sample['rate']:>9,.0f}/s"
            f"  cpu {fmt(sample.get('cpu_us'), '6.1f')} µs/item"
            f"  redis {fmt(sample.get('redis_cpu_us'), '6.1f')} µs/item"
        )
        if sample.get("rt_per_item") is not None:
            text += f"  {sample['rt_per_item']:.4f} round trips/item"
    print(f"{what:48} {text}", flush=True)


def measure_rounds(
    args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    per_process, fixed = scale_configs(args)
    configs = list(dict.fromkeys(per_process + fixed)) if "scale" in args.parts else []
    singles = [(a, j) for a in ACTIONS for j in JOURNALS] if "overhead" in args.parts else []
    plan: list[tuple[str, Any]] = [("scale", c) for c in configs]
    plan += [("overhead", s) for s in singles]
    scale: dict[str, list[dict[str, Any]]] = {label(*c): [] for c in configs}
    single: dict[str, list[dict[str, Any]]] = {f"{a}/{j}": [] for a, j in singles}
    for round_no in range(args.rounds):
        for part, config in rotated(plan, round_no):
            prefix = f"[{round_no + 1}/{args.rounds}]"
            if part == "scale":
                sample = measure_scale(args, tmp, *config)
                scale[label(*config)].append(sample)
                log(sample, f"{prefix} scale {label(*config)}")
            else:
                sample = measure_single(args, tmp, *config)
                single[f"{config[0]}/{config[1]}"].append(sample)
                log(sample, f"{prefix} overhead {ACTIONS[config[0]]}, {JOURNALS[config[1]]}")
    return scale, single


def tables(
    args: argparse.Namespace,
    scale: dict[str, list[dict[str, Any]]],
    single: dict[str, list[dict[str, Any]]],
) -> list[str]:
    out = []
    per_process, fixed = scale_configs(args)
    if scale:
        out.append(
            scale_table(
                f"Scale: {args.n:,} items of 10 ms, {args.workers} workers per process",
                'K worker processes, each `queue.work(work, W)`; from "go" to the last '
                "outcome stored. Ceiling: K * W / 10 ms, the rate if only the sleep bound "
                "it. Efficiency = rate(K) / (K * rate(1)). CPU per item: all workers' "
                "user+sys (from go to their loop's end) and redis-server's, divided by N. "
                "CPU per worker process and Redis CPU: share of one core over the run; "
                "machine busy: of all cores (/proc/stat), other load: the machine's busy "
                "time that was neither the workers' nor Redis's, in cores (the noise of "
                "other processes, plus the workers' exit).",
                per_process,
                scale,
            )
        )
        if fixed:
            out.append(
                scale_table(
                    f"Scale, total fixed: {args.total} workers split over K processes",
                    "The same, with K * W constant: the ceiling no longer grows with K, so "
                    "what more processes buy here is CPU. Speedup and efficiency are "
                    "against the first row (efficiency = speedup / K).",
                    fixed,
                    scale,
                )
            )
        runs = {f"scale {name}": samples for name, samples in scale.items()}
    else:
        runs = {}
    for action, title in ACTIONS.items():
        if f"{action}/redis" in single:
            runs[f"(c) one process, {title}"] = single[f"{action}/redis"]
    if runs:
        out.append(round_trip_table(runs))
        out.append(command_table(runs))
    if single:
        out.append(overhead_table(args, single))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="N=10,000 everywhere, 1 round")
    parser.add_argument("--n", type=int, default=None, help="items of 10 ms (100,000)")
    parser.add_argument(
        "--noop-n",
        default=None,
        help="no-op items without journal, with SQLite, with Redis (3000000,300000,50000)",
    )
    parser.add_argument("--workers", type=int, default=100, help="workers per process (100)")
    parser.add_argument(
        "--total", type=int, default=400, help="fixed-total series: workers in all (400; 0: skip)"
    )
    parser.add_argument("--procs", default="1,2,4", help="worker processes (1,2,4)")
    parser.add_argument(
        "--parts", default="scale,overhead", help="scale, overhead or both (default)"
    )
    parser.add_argument("--tmpdir", type=Path, default=None, help="where servers and files live")
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement, s (300)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "redis.md", help="markdown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.n is None:
        args.n = 10_000 if args.quick else 100_000
    if args.noop_n is None:
        args.noop_n = "300000,30000,5000" if args.quick else "3000000,300000,50000"
    args.noop_n = dict(zip(JOURNALS, (int(n) for n in args.noop_n.split(",")), strict=True))
    args.procs = [int(k) for k in args.procs.split(",")]
    args.parts = [p.strip() for p in args.parts.split(",")]
    if unknown := set(args.parts) - {"scale", "overhead"}:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    # SIGTERM ends the run as Ctrl-C does: through the finally blocks, which end every
    # redis-server and child started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="parallelize-redis-bench-", dir=args.tmpdir))
    try:
        setup = setup_lines(args, tmp)
        print("\n".join(setup), "", sep="\n", flush=True)
        started = time.perf_counter()
        scale, single = measure_rounds(args, tmp)
        minutes = (time.perf_counter() - started) / 60
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    content = src_content()
    if f"src/ content: sha1 {content} (of its files)" not in setup:
        setup.append(f"WARNING: src/ content changed during the run; at the end: sha1 {content}")
    elif (now := src_state()) != setup[0].removeprefix("project: "):
        setup.append(f"note: the checkout moved to {now} during the run, src/ content unchanged")
    out = tables(args, scale, single)
    bad = [
        f"{name}, round {i + 1}: " + "; ".join(sample["problems"])
        for runs in (scale, single)
        for name, samples in runs.items()
        for i, sample in enumerate(samples)
        if sample.get("problems")
    ]
    if bad:
        out.append("### PROBLEMS\n\n" + "\n".join(f"- {line}" for line in bad))
    raw = {"setup": setup, "scale": scale, "overhead": single}
    write_report(
        args.out, "Redis queue benchmark", "redis_scale.py", argv, minutes, setup, out, raw
    )
    if bad:
        print(f"\n{len(bad)} bad samples: see PROBLEMS above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
