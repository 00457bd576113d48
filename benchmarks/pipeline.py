"""CPU work in processes, and a fetch -> parse -> store pipeline (issue 8).

    .venv/bin/python benchmarks/pipeline.py               # 3 rounds, about 4.5 minutes on 2 cores
    .venv/bin/python benchmarks/pipeline.py --quick       # small sizes, 1 round, about 40 s
    .venv/bin/python benchmarks/pipeline.py --parts pipeline --docs 2000 --fetch-ms 0
    .venv/bin/python benchmarks/pipeline.py --parts hard --hard-n 30000000 --rounds 5
    .venv/bin/python benchmarks/pipeline.py --parts stages --callgrind   # issue 25, ~6 min

Five parts, every measurement in a fresh subprocess (this script, re-invoked),
rounds interleaved with the order rotated each round, medians and per-round
(paired) ratios within the run:

- hard: the seed article's ``do_real_work`` (``for i in range(N): output += 1``)
  over 8 items: sequential in one process, ``parallelize(..., executor="thread")``
  with 2 and 8 workers, an ``async def`` action with 8 workers (on the loop),
  ``executor="process"`` with 2 and 8 workers, two references without our pool
  (``concurrent.futures.ProcessPoolExecutor(2).map`` alone, and that pool handed to
  ``parallelize(..., executor=pool)``), and the ceiling: 2 processes forked and
  waiting before the clock starts. Wall time, speedup over sequential (target:
  processes >= 1.8x on 2 cores; threads and async about 1x), share of the ceiling.
- overhead: the same actions with N=0, so only the executor costs: the time to
  the first result of 8 items (the pool's start-up) and per item over more items.
- pipeline: JSON documents from a local aiohttp server (benchmarks/server.py,
  its own process), fetched by 50 workers, parsed (``json.loads`` plus word and
  bigram counts) in 2 processes, and stored one row per document, committed one
  at a time, into a fresh SQLite file by one writer (a sync function: a thread).
  Each stage alone over the same inputs, then the whole pipeline
  ``parallelize(fetch, urls, 50).then(parse, 2, executor="process").then(store, 1)``.
  Reported: end to end over the slowest stage alone (target: <= 1.10), next to
  the sum of the stages over the slowest (what no overlap at all would give).
- control: the same pipeline with every stage sleeping instead of working, so
  that nothing but the engine competes for the CPUs: pipelining alone.
- stages: what a stage costs the engine, per item: 1, 2, 3 and 4 stages of a no-op
  ``async def`` (100 workers each), plain and with ``stats=True`` on every stage,
  over ``--stages-items`` ints: µs per item (medians over the rounds) and, with
  ``--callgrind`` (valgrind), instructions per item: (Ir(50,000 items) -
  Ir(10,000 items)) / 40,000, after a warm-up run, ``PYTHONHASHSEED=0``.

The tables are printed and written as markdown to benchmarks/out/pipeline.md,
with every raw sample in benchmarks/out/pipeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from _harness import (
    HERE,
    bench_server,
    child_cmd,
    child_env,
    errors_into,
    filesystem_of,
    fmt,
    good,
    load_average,
    machine,
    machine_cpu,
    markdown,
    median_of,
    paired_ratio,
    process_cpu,
    remove_sqlite,
    rotated,
    run_measurement,
    spread,
    src_state,
    version_of,
    warn_if_src_changed,
    write_report,
)
from _harness import check as harness_check

OUT_DIR = HERE / "out"
PARTS = ("hard", "overhead", "pipeline", "control", "stages")
STAGE_COUNTS = (1, 2, 3, 4)
CALLGRIND_SIZES = (10_000, 50_000)  # per item: the difference over the extra items
HARD_TARGET = 1.8  # the issue: processes at least 1.8x sequential on 2 cores
NO_SPEEDUP = 1.2  # threads and async: "about 1x" means below this
PIPELINE_TARGET = 1.10  # the issue: end to end within 10% of the slowest stage alone

# (key, label, action kind, workers); "workers" None: the --hard-items count
HARD_MODES = [
    ("sequential", "sequential (one process, a for loop)", "sequential", 1),
    ("thread-2", 'executor="thread"', "thread", 2),
    ("thread-8", 'executor="thread"', "thread", 8),
    ("async-8", "async def action (on the loop)", "async", 8),
    ("process-2", 'executor="process"', "process", 2),
    ("process-8", 'executor="process"', "process", 8),
    ("pool-map-2", "ref: ProcessPoolExecutor(2).map, no parallelize", "pool_map", 2),
    ("user-pool-2", "ref: executor=ProcessPoolExecutor(2)", "user_pool", 2),
    ("ceiling-2", "ceiling: 2 processes started off the clock", "ceiling", 2),
]
OVERHEAD_MODES = [
    ("process-2", 'executor="process"', "process", 2),
    ("user-pool-2", "executor=ProcessPoolExecutor(2)", "user_pool", 2),
    ("pool-map-2", "ProcessPoolExecutor(2).map, no parallelize", "pool_map", 2),
    ("pool-map-fs-2", "ProcessPoolExecutor(2, forkserver).map, no parallelize", "pool_map_fs", 2),
    ("thread-2", 'executor="thread"', "thread", 2),
]
STAGES = {
    "fetch": "stage 1 alone: fetch",
    "parse": "stage 2 alone: parse",
    "store": "stage 3 alone: store",
    "pipeline": "pipeline, end to end",
}


# --------------------------------------------------------------------------- #
# The work. Module level, in a module that is not __main__: the process pool
# pickles these by module and name (``pipeline.parse``), and its processes
# import this module through PYTHONPATH. Nothing here imports aiohttp.
# --------------------------------------------------------------------------- #


def do_real_work(number: int, n: int) -> int:
    """The article's hard_work.py loop, without its prints; ``number`` names the item."""
    output = 0
    for _i in range(n):
        output += 1
    return output


async def do_real_work_async(number: int, n: int) -> int:
    """The same loop in an ``async def``: it never awaits, so it holds the loop."""
    output = 0
    for _i in range(n):
        output += 1
    return output


def parse(body: bytes) -> tuple[int, int, int, int, int, str, int, int]:
    """Stage 2: one document's row (id, records, cents, words, bigrams, top word, its
    count, bytes): ``json.loads``, then word and bigram counts over every record's text."""
    doc = json.loads(body)
    words: Counter[str] = Counter()
    bigrams: Counter[tuple[str, str]] = Counter()
    cents = 0
    for record in doc["records"]:
        cents += round(record["price"] * 100)
        text = record["text"].lower().split()
        words.update(text)
        bigrams.update(zip(text, text[1:], strict=False))
    top, top_count = max(words.items(), key=lambda pair: (pair[1], pair[0]))
    records = len(doc["records"])
    return (doc["id"], records, cents, len(words), len(bigrams), top, top_count, len(body))


def digest(row: tuple[Any, ...]) -> int:
    """An int summing a row's fields, to check that no row was lost or changed."""
    return sum(x if isinstance(x, int) else len(x) for x in row)


ROW_SQL = "INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
SCHEMA = (
    "CREATE TABLE docs (id INTEGER PRIMARY KEY, records INTEGER, cents INTEGER, "
    "words INTEGER, bigrams INTEGER, top_word TEXT, top_count INTEGER, bytes INTEGER)"
)


def open_db(path: str, sync: str) -> sqlite3.Connection:
    """A fresh SQLite file in WAL mode; usable from the store stage's one thread."""
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(SCHEMA)
    conn.commit()
    return conn


# --------------------------------------------------------------------------- #
# The measuring child
# --------------------------------------------------------------------------- #


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def cpu_meter(report: dict[str, Any], server_pid: int | None = None) -> Iterator[None]:
    """CPU seconds over the block: this process (loop and threads), the server, the machine."""
    before = (own_cpu(), process_cpu(server_pid), machine_cpu())
    yield
    after = (own_cpu(), process_cpu(server_pid), machine_cpu())
    for name, a, b in zip(("cpu_client", "cpu_server", "cpu_machine"), before, after, strict=True):
        report[name] = None if a is None or b is None else b - a


async def consume(run: Any, report: dict[str, Any], start: float, value: Any) -> None:
    """Iterate ``run`` inside ``async with`` (so its close is timed too); count and sum."""
    count = checksum = 0
    async with run:
        async for result in run:
            if count == 0:
                report["first"] = time.perf_counter() - start
            count += 1
            checksum += value(result)
    report["count"], report["checksum"] = count, checksum


def share_of_work(ready: Any, go: Any, results: Any, items: list[tuple[int, int]]) -> None:
    """The ceiling's process: wait for the signal, run these items, report their sum."""
    ready.release()
    go.wait()
    results.put(sum(do_real_work(*item) for item in items))


def start_ceiling(workers: int, items: list[tuple[int, int]]) -> tuple[Any, Any, list[Any]]:
    """``workers`` forked processes, each waiting to run its share of ``items``.

    What the machine can do at best: no pool, no pickled item, nothing started on
    the clock; only running the loops side by side and joining the processes.
    """
    import multiprocessing  # noqa: PLC0415

    context = multiprocessing.get_context("fork")
    ready, go, results = context.Semaphore(0), context.Event(), context.SimpleQueue()
    processes = [
        context.Process(target=share_of_work, args=(ready, go, results, items[w::workers]))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for _process in processes:
        ready.acquire()
    return go, results, processes


async def measure_hard(spec: dict[str, Any], report: dict[str, Any]) -> None:
    import multiprocessing  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    from parallelize import parallelize  # noqa: PLC0415

    kind, workers, n = spec["kind"], spec["workers"], spec["n"]
    items = [(i, n) for i in range(spec["items"])]  # a tuple is unpacked: action(i, n)
    if kind == "ceiling":
        go, results, processes = start_ceiling(workers, items)
    with cpu_meter(report):
        start = time.perf_counter()
        if kind == "ceiling":
            go.set()
            checksum = 0
            for _process in processes:
                checksum += results.get()
                report.setdefault("first", time.perf_counter() - start)  # a share is done
            for process in processes:
                process.join()
            report["count"], report["checksum"] = len(items), checksum
        elif kind == "sequential":
            count = checksum = 0
            for item in items:
                checksum += do_real_work(*item)
                count += 1
                report.setdefault("first", time.perf_counter() - start)
            report["count"], report["checksum"] = count, checksum
        elif kind in ("pool_map", "pool_map_fs"):
            count = checksum = 0
            method = "forkserver" if kind == "pool_map_fs" else None  # None: fork, on Linux
            context = multiprocessing.get_context(method)
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for result in pool.map(do_real_work, *zip(*items, strict=True)):
                    report.setdefault("first", time.perf_counter() - start)
                    count += 1
                    checksum += result
            report["count"], report["checksum"] = count, checksum
        elif kind == "user_pool":
            with ProcessPoolExecutor(workers) as pool:
                run = parallelize(do_real_work, items, workers, executor=pool)
                await consume(run, report, start, int)
        elif kind == "async":
            await consume(parallelize(do_real_work_async, items, workers), report, start, int)
        else:  # "thread", "process"
            run = parallelize(do_real_work, items, workers, executor=kind)
            await consume(run, report, start, int)
        report["elapsed"] = time.perf_counter() - start


async def timed_stages(
    spec: dict[str, Any],
    report: dict[str, Any],
    actions: tuple[Any, Any, Any],
    inputs: list[Any],
    prepared: list[Any] | None,
    parsed: Any,
) -> None:
    """Time one stage alone (over ``prepared``, its inputs made off the clock) or the
    whole pipeline over ``inputs``; ``parsed`` turns a parse result into an int."""
    from parallelize import parallelize  # noqa: PLC0415

    fetch, parse_action, store = actions
    stage, fetchers, parsers = spec["stage"], spec["fetch_workers"], spec["parse_workers"]
    with cpu_meter(report, spec.get("server_pid")):
        start = time.perf_counter()
        if stage == "fetch":
            await consume(parallelize(fetch, inputs, fetchers), report, start, len)
        elif stage == "parse":
            run = parallelize(parse_action, prepared, parsers, executor="process")
            await consume(run, report, start, parsed)
        elif stage == "store":
            await consume(parallelize(store, prepared, 1), report, start, int)
        else:
            run = (
                parallelize(fetch, inputs, fetchers)
                .then(parse_action, parsers, executor="process")
                .then(store, 1)
            )
            await consume(run, report, start, int)
        report["elapsed"] = time.perf_counter() - start


async def measure_pipe(spec: dict[str, Any], report: dict[str, Any]) -> None:
    import aiohttp  # noqa: PLC0415

    from parallelize import parallelize  # noqa: PLC0415

    stage, docs, kb, ms = spec["stage"], spec["docs"], spec["kb"], spec["ms"]
    base = spec["base"]
    urls = [f"{base}/doc/{i}?kb={kb}&ms={ms}" for i in range(docs)]
    conn = open_db(spec["db"], spec["sync"]) if stage in ("store", "pipeline") else None
    connector = aiohttp.TCPConnector(limit=spec["fetch_workers"])
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> bytes:
            async with session.get(url) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url}: HTTP {resp.status}")
                return body

        def store(row: tuple[Any, ...]) -> int:
            assert conn is not None
            conn.execute(ROW_SQL, row)
            conn.commit()  # one row, one transaction: each is on disk before the next
            return digest(row)

        # The inputs of a stage alone, prepared off the clock.
        prepared = None
        if stage == "parse":
            fast = [f"{base}/doc/{i}?kb={kb}" for i in range(docs)]  # no latency
            prepared = [body async for body in parallelize(fetch, fast, spec["fetch_workers"])]
        elif stage == "store":
            # What parse() yields for doc i, each wrapped so that store gets the row whole,
            # as it does from the previous stage (whose results are never unpacked).
            prepared = [(expected_row(kb, i),) for i in range(docs)]
        await timed_stages(spec, report, (fetch, parse, store), urls, prepared, digest)
    if conn is not None:
        report["db_rows"], report["db_ids"] = conn.execute(
            "SELECT count(*), coalesce(sum(id), 0) FROM docs"
        ).fetchone()
        conn.close()


CONTROL_PARSE_S = 0.010  # the control's parse: a 10 ms sleep in its process
CONTROL_STORE_S = 0.0005  # the control's store: a 0.5 ms sleep in its thread


def parse_sleeping(body: bytes) -> int:
    """The control's stage 2: wait instead of computing (the body still travels)."""
    time.sleep(CONTROL_PARSE_S)
    return len(body)


async def measure_control(spec: dict[str, Any], report: dict[str, Any]) -> None:
    """The pipeline's shape with every stage waiting instead of working: no server, no
    database, nothing competing for the CPUs but the engine's own plumbing."""
    from server import DOC_VARIANTS, document  # noqa: PLC0415

    docs, kb, ms = spec["docs"], spec["kb"], spec["ms"]
    for n in range(DOC_VARIANTS):
        document(kb, n)  # built and cached off the clock, as the server's are

    async def fetch(i: int) -> bytes:
        await asyncio.sleep(ms / 1000)
        return document(kb, i)  # the same bytes as /doc/{i}, made here

    def store(value: int) -> int:
        time.sleep(CONTROL_STORE_S)
        return value

    prepared = None
    if spec["stage"] == "parse":
        prepared = [document(kb, i) for i in range(docs)]
    elif spec["stage"] == "store":
        prepared = [len(document(kb, i)) for i in range(docs)]
    actions = (fetch, parse_sleeping, store)
    await timed_stages(spec, report, actions, list(range(docs)), prepared, int)


async def noop(x: int) -> int:
    return x


async def measure_stages(spec: dict[str, Any], report: dict[str, Any]) -> None:
    """``spec["stages"]`` stages of ``noop`` over ``spec["items"]`` ints, each stage
    with 100 workers and ``stats=spec["stats"]``."""
    from parallelize import parallelize  # noqa: PLC0415

    run: Any = parallelize(noop, range(spec["items"]), 100, stats=spec["stats"])
    for _ in range(spec["stages"] - 1):
        run = run.then(noop, 100, stats=spec["stats"])
    start = time.perf_counter()
    await consume(run, report, start, int)
    report["elapsed"] = time.perf_counter() - start


def child(spec: dict[str, Any]) -> None:
    """Run one measurement; print one JSON line (the parent reads the last line)."""
    import parallelize  # noqa: PLC0415, F401 - imported before the clock starts

    if spec["part"] == "pipeline":
        import aiohttp  # noqa: PLC0415, F401

    report: dict[str, Any] = {}
    measures = {"pipeline": measure_pipe, "control": measure_control, "stages": measure_stages}
    measure = measures.get(spec["part"], measure_hard)
    with errors_into(report):
        asyncio.run(measure(spec, report))
    report["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(report), flush=True)


# --------------------------------------------------------------------------- #
# Expected values (the parent's checks, and stage 3's input)
# --------------------------------------------------------------------------- #

_VARIANT_ROWS: dict[tuple[int, int], tuple[Any, ...]] = {}


def expected_row(kb: int, n: int) -> tuple[Any, ...]:
    """The row parse() yields for document n: its variant's row, with n's id and size."""
    from server import DOC_VARIANTS, document  # noqa: PLC0415 - imports aiohttp

    key = (kb, n % DOC_VARIANTS)
    if key not in _VARIANT_ROWS:
        _VARIANT_ROWS[key] = parse(document(kb, n))
    row = _VARIANT_ROWS[key]
    return (n, *row[1:-1], len(document(kb, n)))


def expected(spec: dict[str, Any]) -> tuple[int, int]:
    """The count and checksum a correct measurement returns."""
    if spec["part"] == "hard":
        return spec["items"], spec["items"] * spec["n"]
    if spec["part"] == "stages":
        return spec["items"], sum(range(spec["items"]))
    from server import document  # noqa: PLC0415

    docs, kb = spec["docs"], spec["kb"]
    if spec["stage"] == "fetch" or spec["part"] == "control":
        return docs, sum(len(document(kb, i)) for i in range(docs))
    return docs, sum(digest(expected_row(kb, i)) for i in range(docs))


# --------------------------------------------------------------------------- #
# The parent: plan, run, check
# --------------------------------------------------------------------------- #


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    # This script's directory on the path of the child and of its pool's processes
    # (which import this module, and _harness, by name).
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    sample = run_measurement(child_cmd(__file__, spec), timeout, child_env(PYTHONPATH=path))
    sample["problems"] = problems(spec, sample)
    return sample


def problems(spec: dict[str, Any], sample: dict[str, Any]) -> list[str]:
    """What is wrong with a sample: an error, lost or changed results, missing rows."""
    if sample.get("error"):
        return [sample["error"]]
    count, checksum = spec["expect"]
    found = []
    if sample["count"] != count:
        found.append(f"count {sample['count']} != {count}")
    if sample["checksum"] != checksum:
        found.append(f"checksum {sample['checksum']} != {checksum}")
    if "db_rows" in sample and sample["db_rows"] != count:
        found.append(f"{sample['db_rows']} rows in the database, not {count}")
    return found


def plan_round(args: argparse.Namespace, db_dir: Path, base: str | None, pid: int | None) -> list:
    """One round's measurements: (part, key, spec), in the base order."""
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    if "hard" in args.parts:
        for key, _label, kind, workers in HARD_MODES:
            spec = {"part": "hard", "kind": kind, "workers": workers, "n": args.hard_n}
            jobs.append(("hard", key, spec | {"items": args.hard_items}))
    if "overhead" in args.parts:
        for items in (8, args.overhead_items):
            for key, _label, kind, workers in OVERHEAD_MODES:
                spec = {"part": "hard", "kind": kind, "workers": workers, "n": 0}
                jobs.append(("overhead", f"{key}@{items}", spec | {"items": items}))
    for part in ("pipeline", "control"):
        if part not in args.parts:
            continue
        for stage in STAGES:
            spec = {
                "part": part,
                "stage": stage,
                "docs": args.docs,
                "kb": args.doc_kb,
                "ms": args.fetch_ms,
                "fetch_workers": args.fetch_workers,
                "parse_workers": args.parse_workers,
            }
            if part == "pipeline":  # the control needs no server and no database
                spec |= {
                    "base": base,
                    "server_pid": pid,
                    "sync": args.sync,
                    "db": str(db_dir / f"{stage}.db"),
                }
            jobs.append((part, stage, spec))
    for _part, _key, spec in jobs:
        spec["expect"] = expected(spec)
    return jobs


def log(label: str, sample: dict[str, Any]) -> None:
    if sample.get("error"):
        text = f"ERROR {sample['error']}"
    else:
        text = f"{sample['elapsed']:8.3f} s  first {sample.get('first', 0):7.3f} s"
        if sample["problems"]:
            text += "  " + "; ".join(sample["problems"])
    print(f"{label:44} {text}", flush=True)


def warm_server(base: str, args: argparse.Namespace) -> None:
    """Have the server build its cached documents before anything is timed."""
    import urllib.request  # noqa: PLC0415

    from server import DOC_VARIANTS  # noqa: PLC0415

    for n in range(DOC_VARIANTS):
        with urllib.request.urlopen(f"{base}/doc/{n}?kb={args.doc_kb}", timeout=30) as resp:
            resp.read()


def measure_rounds(
    args: argparse.Namespace, base: str | None, pid: int | None, db_dir: Path
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_no in range(args.rounds):
        jobs = plan_round(args, db_dir, base, pid)
        for part, key, spec in rotated(jobs, round_no):
            sample = run_child(spec, args.timeout)
            samples.setdefault(part, {}).setdefault(key, []).append(sample)
            log(f"[{round_no + 1}/{args.rounds}] {part} {key}", sample)
            if "db" in spec:
                remove_sqlite(spec["db"])
    return samples


def stage_spec(stages: int, stats: bool, items: int) -> dict[str, Any]:
    spec = {"part": "stages", "stages": stages, "stats": stats, "items": items}
    return spec | {"expect": expected(spec)}


def callgrind_sample(spec: dict[str, Any], tmp: Path, timeout: float) -> dict[str, Any]:
    """One child under callgrind: its sample, with the instructions it ran (Ir)."""
    out = tmp / f"callgrind.{spec['stages']}.{spec['stats']}.{spec['items']}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = child_env(PYTHONPATH=path, PYTHONHASHSEED="0")
    sample = run_measurement([*cmd, *child_cmd(__file__, spec)], timeout, env)
    sample["problems"] = problems(spec, sample)
    if not sample.get("error") and out.exists():
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                sample["instructions"] = int(line.split()[1])
                break
    if "instructions" not in sample:
        sample["problems"].append("no callgrind total")
    return sample


def measure_stage_series(args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The stage-count series: {"time": {key: samples}, "callgrind": {key: [pair]}}."""
    keys = [(stages, stats) for stats in (False, True) for stages in STAGE_COUNTS]
    timed: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(args.rounds):
        for stages, stats in rotated(keys, round_no):
            key = f"{stages}/{'stats' if stats else 'plain'}"
            sample = run_child(stage_spec(stages, stats, args.stages_items), args.timeout)
            timed.setdefault(key, []).append(sample)
            log(f"[{round_no + 1}/{args.rounds}] stages {key}", sample)
    counted: dict[str, list[dict[str, Any]]] = {}
    if args.callgrind and shutil.which("valgrind") is None:
        print("callgrind: valgrind is not installed; skipped", flush=True)
    elif args.callgrind:
        with tempfile.TemporaryDirectory(prefix="parallelize-callgrind-") as tmp:
            for stages, stats in keys:
                run_child(stage_spec(stages, stats, 1_000), args.timeout)  # warm the .pyc
                key = f"{stages}/{'stats' if stats else 'plain'}"
                for items in CALLGRIND_SIZES:
                    spec = stage_spec(stages, stats, items)
                    sample = callgrind_sample(spec, Path(tmp), args.timeout * 20)
                    counted.setdefault(key, []).append(sample)
                    print(
                        f"callgrind stages {key:8} n={items:>6,}: "
                        f"{sample.get('instructions') or 0:>14,} instructions "
                        f"({'; '.join(sample['problems']) or 'ok'})",
                        flush=True,
                    )
    return {"time": timed, "callgrind": counted}


def per_item_instructions(pair: list[dict[str, Any]]) -> float | None:
    small, large = pair
    if small["problems"] or large["problems"]:
        return None
    extra = CALLGRIND_SIZES[1] - CALLGRIND_SIZES[0]
    return float(large["instructions"] - small["instructions"]) / extra


def stages_table(args: argparse.Namespace, series: dict[str, Any]) -> str:
    timed, counted = series["time"], series["callgrind"]
    rows = []
    for stats in (False, True):
        for stages in STAGE_COUNTS:
            key = f"{stages}/{'stats' if stats else 'plain'}"
            elapsed = median_of(timed[key], "elapsed")
            per_item = None if key not in counted else per_item_instructions(counted[key])
            rows.append(
                [
                    f"{stages} stage{'s' if stages > 1 else ''}",
                    "`stats=True`" if stats else "-",
                    fmt(None if elapsed is None else elapsed / args.stages_items * 1e6, ".2f"),
                    fmt(per_item, ",.0f"),
                    check(timed[key] + counted.get(key, [])),
                ]
            )
    header = ["pipeline", "stats", "µs per item", "instructions per item", "check"]
    title = (
        f"### Stages: a no-op `async def` per stage, 100 workers each, "
        f"{args.stages_items:,} items, {args.rounds} rounds\n\n"
        "`parallelize(noop, range(n), 100).then(noop, 100)...`, every stage with the "
        "same `stats=`; µs per item: wall time over the items (medians); instructions "
        "per item (callgrind, `--callgrind`): (Ir(50,000) - Ir(10,000)) / 40,000.\n\n"
    )
    return title + markdown(header, rows, right_from=2)


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def check(samples: list[dict[str, Any]]) -> str:
    """The check column: 90 characters of a bad sample's problems (the others' 80)."""
    return harness_check(samples, width=90)


def machine_use(samples: list[dict[str, Any]]) -> float | None:
    """The median share of the machine's CPUs busy during the timed region."""
    shares = [
        s["cpu_machine"] / (s["elapsed"] * (os.cpu_count() or 1))
        for s in good(samples)
        if s.get("cpu_machine") is not None
    ]
    return statistics.median(shares) if shares else None


def hard_table(args: argparse.Namespace, hard: dict[str, list[dict[str, Any]]]) -> str:
    seq = hard["sequential"]
    ref = median_of(seq, "elapsed")
    rows = []
    for key, label, _kind, workers in HARD_MODES:
        elapsed = median_of(hard[key], "elapsed")
        rows.append(
            [
                label,
                str(workers) if key != "sequential" else "-",
                fmt(elapsed, ".2f"),
                fmt(None if elapsed is None or ref is None else ref / elapsed, ".2f", "x"),
                fmt(paired_ratio(seq, hard[key]), ".2f", "x"),
                fmt(paired_ratio(hard["ceiling-2"], hard[key]), ".0%"),
                fmt(median_of(hard[key], "first"), ".2f"),
                fmt(median_of(hard[key], "cpu_client"), ".1f"),
                fmt(machine_use(hard[key]), ".0%"),
                spread(hard[key]),
                check(hard[key]),
            ]
        )
    header = [
        "mode",
        "workers",
        "wall s",
        "speedup",
        "speedup (paired)",
        "of the ceiling (paired)",
        "first result s",
        "CPU s (this process)",
        "machine busy",
        "spread",
        "check",
    ]
    one = median_of(seq, "elapsed")
    per_item = "" if one is None else f" (sequential: {one / args.hard_items:.2f} s per item)"
    return (
        f"### hard_work: {args.hard_items} items of do_real_work(N={args.hard_n:,}){per_item}, "
        f"{args.rounds} rounds\n\n"
        "speedup: sequential's median wall time over the row's; paired: the median over "
        "rounds of the same ratio within a round. The ceiling: the same items split between "
        "2 processes forked and waiting before the clock starts (no pool, nothing pickled), "
        "what this machine's 2 CPUs can do at best; of the ceiling: its time over the row's, "
        "paired. CPU s (this process): the measuring "
        "process only (its loop and threads, not the pool's processes); machine busy: the "
        "share of all CPUs busy during the run, anything on the machine included.\n\n"
        + markdown(header, rows, right_from=1)
        + "\n\n"
        + hard_verdict(hard)
    )


def hard_verdict(hard: dict[str, list[dict[str, Any]]]) -> str:
    seq = hard["sequential"]
    ceiling = paired_ratio(seq, hard["ceiling-2"])
    lines = [
        (
            f"- the ceiling (2 processes, nothing else): {fmt(ceiling, '.2f', 'x')} sequential "
            "(paired): the most any process pool can reach on this machine"
        )
    ]
    for key, label, kind, workers in HARD_MODES:
        if kind not in ("process", "thread", "async"):
            continue
        ref, mine = median_of(seq, "elapsed"), median_of(hard[key], "elapsed")
        pair = paired_ratio(seq, hard[key])
        if ref is None or mine is None or pair is None:
            lines.append(f"- {label}, {workers} workers: not measured ({check(hard[key])})")
            continue
        speedups = [ref / mine, pair]
        if kind == "process":
            ok = all(x >= HARD_TARGET for x in speedups)
            goal = f">= {HARD_TARGET}x"
            share = paired_ratio(hard["ceiling-2"], hard[key])
            note = f"; {fmt(share, '.0%')} of the ceiling (paired)"
        else:
            ok = all(x < NO_SPEEDUP for x in speedups)
            goal = f"about 1x (< {NO_SPEEDUP}x)"
            note = ""
        lines.append(
            f"- {label}, {workers} workers: {'PASS' if ok else 'FAIL'} {goal}: "
            f"{ref / mine:.2f}x (medians), {pair:.2f}x (paired){note}"
        )
    return "Targets: processes >= 1.8x sequential; threads and async about 1x.\n\n" + "\n".join(
        lines
    )


def overhead_table(args: argparse.Namespace, over: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for items in (8, args.overhead_items):
        for key, label, _kind, workers in OVERHEAD_MODES:
            samples = over[f"{key}@{items}"]
            elapsed, first = median_of(samples, "elapsed"), median_of(samples, "first")
            after = [
                (s["elapsed"] - s["first"]) / (items - 1) * 1e6
                for s in good(samples)
                if s.get("first") is not None
            ]
            rows.append(
                [
                    label,
                    str(workers),
                    f"{items:,}",
                    fmt(None if first is None else first * 1e3, ".1f"),
                    fmt(None if elapsed is None else elapsed * 1e3, ".1f"),
                    fmt(statistics.median(after) if after else None, ",.0f"),
                    spread(samples),
                    check(samples),
                ]
            )
    header = [
        "mode",
        "workers",
        "items",
        "first result ms",
        "total ms",
        "µs/item after the first",
        "spread",
        "check",
    ]
    return (
        f"### Executor overhead: do_real_work(N=0), {args.rounds} rounds\n\n"
        "The action does nothing, so the times are the executor's own: with 8 items the "
        "first result's time is about the pool's start-up (processes spawned, the action "
        "sent, one round trip); total includes closing the pool. µs/item after the first: "
        "(total - first) / (items - 1), the per-item cost once the pool runs (the close is "
        "in it too, so it is an upper bound at 8 items).\n\n" + markdown(header, rows, right_from=1)
    )


def pipeline_table(
    args: argparse.Namespace, pipe: dict[str, list[dict[str, Any]]], control: bool = False
) -> str:
    rows = []
    for stage, label in STAGES.items():
        samples = pipe[stage]
        elapsed = median_of(samples, "elapsed")
        rows.append(
            [
                label,
                fmt(elapsed, ".2f"),
                fmt(None if elapsed is None else args.docs / elapsed, ",.0f"),
                fmt(median_of(samples, "first"), ".3f"),
                fmt(median_of(samples, "cpu_client"), ".2f"),
                fmt(median_of(samples, "cpu_server"), ".2f"),
                fmt(median_of(samples, "cpu_machine"), ".2f"),
                fmt(machine_use(samples), ".0%"),
                spread(samples),
                check(samples),
            ]
        )
    header = [
        "measurement",
        "wall s",
        "docs/s",
        "first result s",
        "CPU s client",
        "CPU s server",
        "CPU s machine",
        "machine busy",
        "spread",
        "check",
    ]
    if control:
        title = (
            f"### Control: the same pipeline, every stage waiting instead of working "
            f"({args.docs:,} documents of ~{args.doc_kb} KB, {args.rounds} rounds)\n\n"
            f"stage 1: `asyncio.sleep({args.fetch_ms / 1000:g})`, then the same document "
            f"bytes made locally (no server), {args.fetch_workers} workers; stage 2: "
            f"`time.sleep({CONTROL_PARSE_S:g})` in a process (the body still pickled to "
            f'it), {args.parse_workers} workers, `executor="process"`; stage 3: '
            f"`time.sleep({CONTROL_STORE_S:g})` in a thread, 1 worker. Nothing but the "
            "engine's own plumbing competes for the CPUs, so the ratio shows pipelining "
            "alone.\n\n"
        )
    else:
        title = (
            f"### Pipeline: {args.docs:,} JSON documents of ~{args.doc_kb} KB, "
            f"{args.rounds} rounds\n\n"
            f"stage 1: `fetch`, {args.fetch_workers} workers (aiohttp; the server holds "
            f"each reply {args.fetch_ms:g} ms); stage 2: `parse`, {args.parse_workers} "
            f'workers, `executor="process"`; stage 3: `store`, 1 worker (a thread), one '
            f"INSERT and commit per row, WAL, synchronous={args.sync}. CPU s client: the "
            "measuring process (loop, threads); server: the server's process; machine: "
            "every CPU second spent on the machine during the run (the parse processes, "
            "the server, the client and anything else).\n\n"
        )
    return title + markdown(header, rows, right_from=1) + "\n\n" + pipeline_verdict(pipe)


def pipeline_verdict(pipe: dict[str, list[dict[str, Any]]]) -> str:
    stages = ("fetch", "parse", "store")
    alone = {stage: median_of(pipe[stage], "elapsed") for stage in stages}
    whole = median_of(pipe["pipeline"], "elapsed")
    if whole is None or any(v is None for v in alone.values()):
        return "Pipeline ratio: not measured (a sample failed)."
    slowest = max(stages, key=lambda s: alone[s] or 0.0)
    top = alone[slowest] or 0.0
    total = sum(v or 0.0 for v in alone.values())
    # Per round: end to end over that round's slowest stage alone.
    per_round = []
    for r, sample in enumerate(pipe["pipeline"]):
        if sample.get("problems"):
            continue
        round_stages = [pipe[stage][r] for stage in stages]
        if any(s.get("problems") for s in round_stages):
            continue
        per_round.append(sample["elapsed"] / max(s["elapsed"] for s in round_stages))
    pair = statistics.median(per_round) if per_round else None
    ratio = whole / top
    ok = ratio <= PIPELINE_TARGET and (pair is None or pair <= PIPELINE_TARGET)
    overlap = (total - whole) / (total - top) if total > top else None
    return (
        f"- slowest stage alone: {slowest} ({top:.2f} s); the stages alone add up to "
        f"{total:.2f} s ({total / top:.2f}x the slowest: what no overlap at all would give)\n"
        f"- end to end: {whole:.2f} s = **{ratio:.3f}x** the slowest stage alone "
        f"(medians); paired, the median over rounds: {fmt(pair, '.3f', 'x')}\n"
        f"- overlap: (sum - end to end) / (sum - slowest) = {fmt(overlap, '.0%')} "
        "(100%: the other stages hide entirely behind the slowest; 0%: none)\n"
        f"- target: end to end <= {PIPELINE_TARGET:.2f}x the slowest stage alone: "
        f"{'PASS' if ok else 'FAIL'}"
    )


# --------------------------------------------------------------------------- #
# Setup and main
# --------------------------------------------------------------------------- #


def probe_process_executor() -> str:
    """Whether ``executor="process"`` works in this checkout (a one-item run, in a child)."""
    code = (
        "import asyncio\nfrom parallelize import parallelize\n"
        "async def main():\n"
        '    print([r async for r in parallelize(abs, [-1], 1, executor="process")])\n'
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode == 0 and done.stdout.strip() == "[1]":
        return "works"
    tail = (done.stderr.strip().splitlines() or [done.stdout.strip() or "no output"])[-1]
    return f"NOT AVAILABLE ({tail[:120]})"


def setup_lines(args: argparse.Namespace, db_dir: Path) -> list[str]:
    import multiprocessing  # noqa: PLC0415

    import parallelize  # noqa: PLC0415

    lines = [
        f"project: {src_state()}",
        f"parallelize imported from: {Path(parallelize.__file__).resolve().parent}",
        (
            f"python: {sys.version.split()[0]} ({sys.executable}), loop asyncio (default); "
            f"multiprocessing default start method: {multiprocessing.get_start_method()}"
        ),
        (
            f"parallelize {version_of('parallelize')}, aiohttp {version_of('aiohttp')}, "
            f"uvloop {version_of('uvloop')} (server only), sqlite {sqlite3.sqlite_version}"
        ),
        f"machine: {machine()}",
        f"load average at start: {load_average()}",
        f'executor="process": {probe_process_executor()}',
        (
            f"rounds: {args.rounds} interleaved (order rotated each round), medians; "
            f"one fresh subprocess per measurement; parts: {', '.join(args.parts)}"
        ),
    ]
    if "hard" in args.parts:
        lines.append(f"hard: {args.hard_items} items, N={args.hard_n:,}")
    if "overhead" in args.parts:
        lines.append(f"overhead: N=0, 8 and {args.overhead_items:,} items")
    if "pipeline" in args.parts:
        lines.append(
            f"pipeline: {args.docs:,} docs of ~{args.doc_kb} KB, fetch {args.fetch_workers} "
            f"workers with {args.fetch_ms:g} ms server latency, parse {args.parse_workers} "
            f"processes, store 1 thread; SQLite files in {db_dir.parent} on "
            f"{filesystem_of(db_dir)}, synchronous={args.sync}"
        )
    if "stages" in args.parts:
        lines.append(
            f"stages: 1-4 stages of a no-op, 100 workers each, {args.stages_items:,} items; "
            f"callgrind: {'yes' if args.callgrind else 'no (--callgrind)'}"
        )
    if "control" in args.parts:
        lines.append(
            f"control: the pipeline's shape, stages sleeping (fetch {args.fetch_ms:g} ms, "
            f"parse {CONTROL_PARSE_S * 1000:g} ms in a process, store "
            f"{CONTROL_STORE_S * 1000:g} ms in a thread)"
        )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    parser.add_argument(
        "--quick", action="store_true", help="N=3*10^6, 500 overhead items, 200 docs, 1 round"
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated: hard,overhead,pipeline,control,stages (all)",
    )
    parser.add_argument("--hard-n", type=int, default=None, help="loop length N (15*10^6)")
    parser.add_argument("--hard-items", type=int, default=8, help="hard_work items (8)")
    parser.add_argument("--overhead-items", type=int, default=None, help="N=0 items (2,000)")
    parser.add_argument("--docs", type=int, default=None, help="documents (1,000)")
    parser.add_argument("--doc-kb", type=int, default=100, help="size of a document, KiB (100)")
    parser.add_argument(
        "--fetch-ms", type=float, default=150.0, help="server latency per document, ms (150)"
    )
    parser.add_argument("--fetch-workers", type=int, default=50, help="stage 1 workers (50)")
    parser.add_argument("--parse-workers", type=int, default=2, help="stage 2 processes (2)")
    parser.add_argument(
        "--sync",
        default="FULL",
        choices=["OFF", "NORMAL", "FULL"],
        help="SQLite synchronous for stage 3 (FULL: an fsync per commit)",
    )
    parser.add_argument("--db-dir", type=Path, default=None, help="where SQLite files go")
    parser.add_argument(
        "--stages-items", type=int, default=None, help="stages: items (200,000; --quick 50,000)"
    )
    parser.add_argument(
        "--callgrind", action="store_true", help="stages: also count instructions (valgrind)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement, s (300)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "pipeline.md", help="markdown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.hard_n is None:
        args.hard_n = 3_000_000 if args.quick else 15_000_000
    if args.overhead_items is None:
        args.overhead_items = 500 if args.quick else 2_000
    if args.docs is None:
        args.docs = 200 if args.quick else 1_000
    if args.stages_items is None:
        args.stages_items = 50_000 if args.quick else 200_000
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; choose from {PARTS}")
    if args.overhead_items < 9:
        parser.error("--overhead-items: at least 9")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    db_dir = Path(tempfile.mkdtemp(prefix="parallelize-pipeline-bench-", dir=args.db_dir))
    try:
        setup = setup_lines(args, db_dir)
        print("\n".join(setup), "", sep="\n", flush=True)
        started = time.perf_counter()
        # benchmarks/server.py for the pipeline part: its base URL and pid.
        server = bench_server() if "pipeline" in args.parts else nullcontext((None, None))
        with server as (base, pid):
            if base is not None:
                warm_server(base, args)
            others = set(args.parts) - {"stages"}
            samples = measure_rounds(args, base, pid, db_dir) if others else {}
        series = measure_stage_series(args) if "stages" in args.parts else None
        minutes = (time.perf_counter() - started) / 60
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)

    warn_if_src_changed(setup)
    tables = []
    if "hard" in samples:
        tables.append(hard_table(args, samples["hard"]))
    if "overhead" in samples:
        tables.append(overhead_table(args, samples["overhead"]))
    if "pipeline" in samples:
        tables.append(pipeline_table(args, samples["pipeline"]))
    if "control" in samples:
        tables.append(pipeline_table(args, samples["control"], control=True))
    if series is not None:
        tables.append(stages_table(args, series))
    title = "Processes and pipelines benchmark"
    raw = {"setup": setup, "samples": samples, "stages": series}
    write_report(
        args.out, title, "pipeline.py", argv, minutes, setup, tables, raw, json_indent=None
    )
    return 0


if __name__ == "__main__":
    # Run as the module `pipeline`, not `__main__`: the actions are pickled by module
    # and name, and `__main__` would name another module in each pool process.
    import pipeline

    sys.exit(pipeline.main())
