"""The cost of a journal: W1 and W4 with and without one, and memory on resume.

    .venv/bin/python benchmarks/journal.py                # default run, ~3 minutes on 2 cores
    .venv/bin/python benchmarks/journal.py --quick        # small sizes, 2 rounds, ~1 minute
    .venv/bin/python benchmarks/journal.py --rounds 3 --no-memory
    .venv/bin/python benchmarks/journal.py --profile      # cProfile one W1 journal run
    .venv/bin/python benchmarks/journal.py --no-memory --pin   # W4 with client and server on their own CPUs

Three parts, every measurement in a fresh subprocess (this script, re-invoked):

- W1 journal: ``async def noop(i): return i`` over ``range(N)``, 100 workers:
  (a) no journal, (b) a fresh journal file, (c) a fresh journal with ``durable=True``
  (an fsync per batch), (d) resume: a rerun over the journal (b) just wrote, which
  holds all N outcomes, so every item is skipped (the skip scan). Rounds interleave
  a, b, c, d; the tables show medians and ratios vs (a) within this run.
- W4 journal: GETs to the local aiohttp server of benchmarks/server.py (its own
  process, 127.0.0.1), one ``ClientSession``, 100 workers, the action returns
  ``resp.status`` after reading the body: (a) no journal, (b) a fresh journal.
  The overhead is 1 - b/a of requests/s (the issue's target: under 5%).
- Memory on resume (one round): a journal holding 10^6 outcomes (written by a real
  journaled run over ``range(10^6)``), then reruns over ``range(10^6)`` (all skipped)
  and ``range(2*10^6)`` (the second half runs), against a run without a journal
  over ``range(2*10^6)``: peak RSS (``ru_maxrss``) of each child. A journal that
  loaded every done key would grow with the first number; a bounded one does not.

Journals live in a temporary directory (``--tmpdir`` to choose the disk), removed
at the end. The tables are printed and written as markdown to
benchmarks/out/journal.md, with every raw sample in benchmarks/out/journal.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    HERE,
    bench_server,
    check,
    child_cmd,
    errors_into,
    filesystem_of,
    fmt,
    imported_from,
    load_average,
    machine,
    markdown,
    median_of,
    paired_ratio,
    remove_sqlite,
    run_measurement,
    spread,
    src_state,
    version_of,
    warn_if_src_changed,
    write_report,
)

OUT_DIR = HERE / "out"
WORKERS = 100
W1_MODES = {
    "a": "no journal",
    "b": "journal (fresh file)",
    "c": "journal, durable=True",
    "d": "resume: all N done, all skipped",
}
W4_MODES = {"a": "no journal", "b": "journal (fresh file)"}
W4_TARGET = 0.05  # the issue: the journal may cost W4 at most 5% of its requests/s


# --------------------------------------------------------------------------- #
# The measuring child
# --------------------------------------------------------------------------- #


async def noop(i: int) -> int:
    return i


def journal_counts(path: str) -> dict[str, int]:
    from parallelize import SQLiteJournal  # noqa: PLC0415

    return SQLiteJournal(path).counts()


async def run_noop(spec: dict[str, Any]) -> dict[str, Any]:
    from parallelize import SQLiteJournal, parallelize  # noqa: PLC0415

    path = spec.get("journal")
    journal = None if path is None else SQLiteJournal(path, durable=spec.get("durable", False))
    count = checksum = 0
    start = time.perf_counter()
    async for result in parallelize(noop, range(spec["n"]), spec["workers"], journal=journal):
        count += 1
        checksum += result
    elapsed = time.perf_counter() - start
    return {"elapsed": elapsed, "count": count, "checksum": checksum}


async def run_http(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415

    from parallelize import SQLiteJournal, parallelize  # noqa: PLC0415

    url = spec["url"]
    path = spec.get("journal")
    journal = None if path is None else SQLiteJournal(path)
    connector = aiohttp.TCPConnector(limit=spec["workers"])
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(_i: int) -> int:
            async with session.get(url) as resp:
                await resp.read()
                return resp.status

        count = checksum = 0
        cpu = client_cpu()
        start = time.perf_counter()
        async for status in parallelize(get, range(spec["n"]), spec["workers"], journal=journal):
            count += 1
            checksum += status
        elapsed = time.perf_counter() - start
        cpu = client_cpu() - cpu  # the run ended: its writer process was waited for
    return {"elapsed": elapsed, "count": count, "checksum": checksum, "cpu": cpu}


def client_cpu() -> float:
    """CPU seconds of this process and its ended children (the journal's writer)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def child(spec: dict[str, Any]) -> None:
    """Run one measurement; print one JSON line (the parent reads the last line)."""
    import parallelize  # noqa: PLC0415, F401 - imported before the clock starts

    if spec["kind"] == "http":
        import aiohttp  # noqa: PLC0415, F401

    report: dict[str, Any] = {}
    if spec.get("pin"):
        os.sched_setaffinity(0, {0})  # away from the server; the writer inherits it
    path = spec.get("journal")
    with errors_into(report):
        if path is not None and spec.get("expect_before") is not None:
            report["journal_before"] = journal_counts(path)
        runner = run_http if spec["kind"] == "http" else run_noop
        report.update(asyncio.run(runner(spec)))
        if path is not None:
            report["journal_after"] = journal_counts(path)
    report["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(report), flush=True)


# --------------------------------------------------------------------------- #
# The parent: plan, run, check
# --------------------------------------------------------------------------- #


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    sample = run_measurement(child_cmd(__file__, spec), timeout)
    sample["problems"] = problems(spec, sample)
    return sample


def problems(spec: dict[str, Any], sample: dict[str, Any]) -> list[str]:
    """What is wrong with a sample: lost or doubled items, a journal not as expected."""
    if sample.get("error"):
        return [sample["error"]]
    found = []
    expect_count = spec["expect_count"]
    if sample["count"] != expect_count:
        found.append(f"count {sample['count']} != {expect_count}")
    if sample["checksum"] != spec["expect_checksum"]:
        found.append(f"checksum {sample['checksum']} != {spec['expect_checksum']}")
    if spec.get("expect_before") is not None:
        before = sample["journal_before"]
        if before != {"ok": spec["expect_before"], "failed": 0}:
            found.append(f"journal before {before}")
    if spec.get("journal") is not None:
        after = sample["journal_after"]
        if after != {"ok": spec["expect_after"], "failed": 0}:
            found.append(f"journal after {after}")
    return found


def remove_journal(path: str) -> None:
    remove_sqlite(path, ".lock")


def noop_spec(
    n: int, journal: str | None, *, durable: bool = False, done_before: int | None = None
) -> dict[str, Any]:
    """A W1-style child: no-op over range(n); done_before: outcomes the journal holds."""
    runs = range(done_before or 0, n)  # the items that actually run
    return {
        "kind": "noop",
        "n": n,
        "workers": WORKERS,
        "journal": journal,
        "durable": durable,
        "expect_count": len(runs),
        "expect_checksum": sum(runs),
        "expect_before": done_before,
        "expect_after": n,
    }


def http_spec(n: int, url: str, journal: str | None) -> dict[str, Any]:
    return {
        "kind": "http",
        "n": n,
        "workers": WORKERS,
        "url": url,
        "journal": journal,
        "expect_count": n,
        "expect_checksum": 200 * n,
        "expect_after": n,
    }


def log(part: str, label: str, sample: dict[str, Any], n: int | None = None) -> None:
    if sample.get("error"):
        text = f"ERROR {sample['error']}"
    else:
        text = f"{sample['elapsed']:8.3f} s  rss {sample['maxrss_kb'] / 1024:6.1f} MB"
        if n is not None:
            text += f"  {n / sample['elapsed']:>12,.0f}/s"
        if sample["problems"]:
            text += "  " + "; ".join(sample["problems"])
    print(f"{part:10} {label:50} {text}", flush=True)


def measure_rounds(
    args: argparse.Namespace, tmp: Path, url: str | None
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    w1: dict[str, list[dict[str, Any]]] = {mode: [] for mode in W1_MODES}
    w4: dict[str, list[dict[str, Any]]] = {mode: [] for mode in W4_MODES}
    for round_no in range(1, args.rounds + 1):
        part = f"[{round_no}/{args.rounds}] W1"
        fresh = str(tmp / f"w1-{round_no}.db")
        durable = str(tmp / f"w1-{round_no}-durable.db")
        specs = {
            "a": noop_spec(args.w1_n, None),
            "b": noop_spec(args.w1_n, fresh),
            "c": noop_spec(args.w1_n, durable, durable=True),
            # the file (b) just wrote: all N outcomes in it, nothing left to run
            "d": noop_spec(args.w1_n, fresh, done_before=args.w1_n),
        }
        for mode, spec in specs.items():
            if mode == "d" and w1["b"][-1].get("problems"):
                sample = {"error": "skipped: (b) of this round failed", "problems": ["skipped"]}
            else:
                sample = run_child(spec, args.timeout)
            w1[mode].append(sample)
            log(part, f"({mode}) {W1_MODES[mode]}", sample, args.w1_n)
        remove_journal(fresh)
        remove_journal(durable)
        if url is None:
            continue
        part = f"[{round_no}/{args.rounds}] W4"
        fresh = str(tmp / f"w4-{round_no}.db")
        for mode, journal in (("a", None), ("b", fresh)):
            spec = http_spec(args.w4_n, url, journal) | {"pin": args.pin}
            sample = run_child(spec, args.timeout)
            w4[mode].append(sample)
            log(part, f"({mode}) {W4_MODES[mode]}", sample, args.w4_n)
        remove_journal(fresh)
    return w1, w4


def measure_memory(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """One round: the rows of the memory table, each with its spec and sample."""
    n = args.memory_n
    path = str(tmp / "memory.db")
    plan = [
        ("no journal", noop_spec(2 * n, None)),
        ("fresh journal (writes the file)", noop_spec(n, path)),
        ("resume: all skipped", noop_spec(n, path, done_before=n)),
        ("resume: first half skipped, second half runs", noop_spec(2 * n, path, done_before=n)),
    ]
    rows = []
    for label, spec in plan:
        sample = run_child(spec, args.timeout)
        rows.append({"label": label, "spec": spec, "sample": sample})
        log("memory", f"{label}, range({spec['n']:,})", sample, spec["n"])
        if sample["problems"]:
            break  # the later rows depend on this one's journal
    remove_journal(path)
    return rows


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def w1_table(args: argparse.Namespace, w1: dict[str, list[dict[str, Any]]]) -> str:
    n = args.w1_n
    ref_time = median_of(w1["a"], "elapsed")
    ref_rss = median_of(w1["a"], "maxrss_kb")
    rows = []
    for mode, title in W1_MODES.items():
        elapsed = median_of(w1[mode], "elapsed")
        rss = median_of(w1[mode], "maxrss_kb")
        rate = None if elapsed is None else n / elapsed
        us = None if elapsed is None else elapsed / n * 1e6
        extra = None if us is None or ref_time is None else us - ref_time / n * 1e6
        ratio = None if elapsed is None or ref_time is None else ref_time / elapsed
        rows.append(
            [
                f"({mode}) {title}",
                fmt(rate, ",.0f"),
                fmt(us, ".2f"),
                "-" if mode == "a" else fmt(extra, "+.2f"),
                fmt(ratio, ".3f", "x"),
                fmt(paired_ratio(w1["a"], w1[mode]), ".3f", "x"),
                fmt(None if rss is None else rss / 1024, ".1f"),
                fmt(None if rss is None or ref_rss is None else (rss - ref_rss) / 1024, "+.1f"),
                spread(w1[mode]),
                check(w1[mode]),
            ]
        )
    header = [
        "mode",
        "items/s",
        "µs/item",
        "µs/item vs (a)",
        "items/s vs (a)",
        "paired vs (a)",
        "peak RSS MB",
        "RSS vs (a) MB",
        "spread",
        "check",
    ]
    return (
        f"### W1 journal: {n:,} no-op actions over range({n:,}), {WORKERS} workers\n\n"
        "(d) times the skip scan: every item is read, looked up and skipped; its items/s "
        "is items scanned per second.\n\n" + markdown(header, rows)
    )


def w4_table(args: argparse.Namespace, w4: dict[str, list[dict[str, Any]]]) -> str:
    n = args.w4_n
    ref_time = median_of(w4["a"], "elapsed")
    ref_cpu = median_of(w4["a"], "cpu")
    rows = []
    for mode, title in W4_MODES.items():
        elapsed = median_of(w4[mode], "elapsed")
        rate = None if elapsed is None else n / elapsed
        ratio = None if elapsed is None or ref_time is None else ref_time / elapsed
        paired = paired_ratio(w4["a"], w4[mode])
        cpu = median_of(w4[mode], "cpu")
        rows.append(
            [
                f"({mode}) {title}",
                fmt(rate, ",.0f"),
                fmt(None if cpu is None else cpu / n * 1e6, ".0f"),
                "-"
                if mode == "a" or cpu is None or ref_cpu is None
                else fmt(cpu / ref_cpu - 1, "+.1%"),
                fmt(ratio, ".3f", "x"),
                "-" if mode == "a" else fmt(None if ratio is None else 1 - ratio, ".1%"),
                "-" if mode == "a" else fmt(None if paired is None else 1 - paired, ".1%"),
                spread(w4[mode]),
                check(w4[mode]),
            ]
        )
    header = [
        "mode",
        "requests/s",
        "client CPU us/request",
        "client CPU vs (a)",
        "vs (a)",
        "overhead (1 - b/a)",
        "paired overhead",
        "spread",
        "check (all 200)",
    ]
    ratio_b = ref_time / e if ref_time and (e := median_of(w4["b"], "elapsed")) else None
    paired_b = paired_ratio(w4["a"], w4["b"])
    if ratio_b is None or paired_b is None:
        verdict = "target: overhead under 5% (not measured: a sample failed)"
    else:
        holds = 1 - ratio_b < W4_TARGET and 1 - paired_b < W4_TARGET
        verdict = (
            f"target: overhead under {W4_TARGET:.0%}: "
            f"{'holds' if holds else 'NOT MET'} (medians {1 - ratio_b:.1%}, paired "
            f"{1 - paired_b:.1%}; compare with the spread of the rows)"
        )
    return (
        f"### W4 journal: {n:,} GETs to a local aiohttp server, {WORKERS} workers\n\n"
        + markdown(header, rows)
        + f"\n\n{verdict}"
    )


def memory_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    first = rows[0]["sample"] if rows else {}
    ref = None if first.get("problems") else first.get("maxrss_kb")
    lines = []
    for row in rows:
        spec, sample = row["spec"], row["sample"]
        rss = None if sample.get("problems") else sample["maxrss_kb"]
        done = spec["expect_before"] or 0
        lines.append(
            [
                f"{row['label']}",
                f"range({spec['n']:,})",
                f"{done:,}" if spec["journal"] else "-",
                f"{spec['n'] - done:,}",
                fmt(None if rss is None else rss / 1024, ".1f"),
                fmt(None if rss is None or ref is None else (rss - ref) / 1024, "+.1f"),
                fmt(sample.get("elapsed"), ".2f"),
                check([sample]),
            ]
        )
    header = [
        "run",
        "input",
        "done in journal at start",
        "items run",
        "peak RSS MB",
        "vs no journal MB",
        "elapsed s",
        "check",
    ]
    n = args.memory_n
    return (
        f"### Memory on resume: a journal holding {n:,} outcomes, {WORKERS} workers, "
        "one round\n\n"
        "Peak RSS (ru_maxrss) of each child, whole process. What done items cost: "
        'compare "resume: all skipped" with "no journal", and the last row with '
        '"fresh journal", which runs as many items with an empty journal.\n\n'
        + markdown(header, lines, right_from=2)
    )


# --------------------------------------------------------------------------- #
# Setup and main
# --------------------------------------------------------------------------- #


def setup_lines(args: argparse.Namespace, tmp: Path) -> list[str]:
    parts = ["W1", "W4"] + ([] if args.no_memory else ["memory"])
    return [
        f"project: {src_state()}",
        f"parallelize imported from: {imported_from()}",
        f"python: {sys.version.split()[0]} ({sys.executable}), loop asyncio (default)",
        (
            f"sqlite: {sqlite3.sqlite_version}; parallelize {version_of('parallelize')}, "
            f"aiohttp {version_of('aiohttp')}"
        ),
        f"machine: {machine()}",
        f"load average at start: {load_average()}",
        f"journals in: {tmp.parent} on {filesystem_of(tmp)}",
        (
            f"rounds: {args.rounds} interleaved (memory: 1), medians; "
            f"one fresh subprocess per measurement; parts: {', '.join(parts)}"
        ),
        f"W1: n={args.w1_n:,}, numworkers={WORKERS}; W4: n={args.w4_n:,}, numworkers={WORKERS}"
        + ("" if args.no_memory else f"; memory: n={args.memory_n:,} and {2 * args.memory_n:,}")
        + ("; W4 pinned: server on CPU 1, client and its writer on CPU 0" if args.pin else ""),
        (
            "journal: SQLiteJournal defaults (flush_every=1000, flush_interval=0.2, WAL, "
            "synchronous=NORMAL; durable=True: FULL)"
        ),
    ]


def profile(args: argparse.Namespace, tmp: Path) -> None:
    """Run the W1 journal (b) once in this process under cProfile; print the top functions."""
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    spec = noop_spec(args.w1_n, str(tmp / "profile.db"))
    profiler = cProfile.Profile()
    profiler.enable()
    result = asyncio.run(run_noop(spec))
    profiler.disable()
    print(f"W1 journal (b), n={args.w1_n:,}, under cProfile: {result['elapsed']:.2f} s")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="W1 50k, W4 5k, memory 2*10^5")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory part")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="W4 server on CPU 1, measured runs (and their writer process) on CPU 0",
    )
    parser.add_argument("--memory-n", type=int, default=None, help="done items (10^6)")
    parser.add_argument("--tmpdir", type=Path, default=None, help="where journals are written")
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement, s (300)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "journal.md", help="markdown")
    parser.add_argument("--profile", action="store_true", help="cProfile one W1 journal run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    args.w1_n = 50_000 if args.quick else 200_000
    args.w4_n = 5_000 if args.quick else 20_000
    if args.memory_n is None:
        args.memory_n = 200_000 if args.quick else 1_000_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="parallelize-journal-bench-", dir=args.tmpdir))
    try:
        if args.profile:
            profile(args, tmp)
            return 0
        setup = setup_lines(args, tmp)
        print("\n".join(setup), "", sep="\n", flush=True)
        started = time.perf_counter()
        if args.pin:
            os.sched_setaffinity(0, {1})  # the server inherits CPU 1
        with bench_server() as (base, _pid):  # W4's server, as run.py's
            w1, w4 = measure_rounds(args, tmp, f"{base}/")
        memory = [] if args.no_memory else measure_memory(args, tmp)
        minutes = (time.perf_counter() - started) / 60
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    warn_if_src_changed(setup)
    tables = [w1_table(args, w1), w4_table(args, w4)]
    if memory:
        tables.append(memory_table(args, memory))
    raw = {"setup": setup, "w1": w1, "w4": w4, "memory": memory}
    write_report(args.out, "Journal benchmark", "journal.py", argv, minutes, setup, tables, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
