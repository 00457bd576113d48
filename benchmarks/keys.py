"""Limits per key (issue 22): the engine's cost per item, and memory flat in the items.

    .venv/bin/python benchmarks/keys.py                      # both parts: about 20 minutes
    .venv/bin/python benchmarks/keys.py --parts cpu --rounds 7 --callgrind
    .venv/bin/python benchmarks/keys.py --parts memory --rounds 2
    .venv/bin/python benchmarks/keys.py --quick              # small sizes, a minute or two

Every measurement runs in a fresh subprocess (``--child SPEC``); rounds interleave
the cases, each round in another order, so the drift of a noisy machine spreads
over all of them. Medians over rounds.

**memory**: a lazy generator of URLs ``http://h{host}.test:80/p/{i}`` over 10,000
hosts, an action ``await asyncio.sleep(0)``, 200 workers. The peak RSS of the child
(``ru_maxrss``), less that of a child that imports the same and runs an empty
coroutine (``baseline``), at 10^5, 10^6 and 3 x 10^6 items:

- ``plain``: no ``per_key`` (the reference);
- ``interleaved``: ``per_key=PerKey(host_of, concurrency=2)``, hosts in turn
  (``i % 10000``): a host comes back every 10,000 items, so its limit hardly binds,
  but every host is known;
- ``runs``: the same ``PerKey``, each host's URLs in a run of 100 (``(i // 100) %
  10000``): 98 of each 100 wait aside, up to the bound on items set aside (10,000);
  at 10^5 items only 1,000 hosts are met;
- ``runs-1000``: ``runs`` with ``set_aside=1000``: the bound is reached, and the
  input is read no further until a key may go.

What should hold: no growth from 10^6 to 3 x 10^6 items (every one of the 10,000
hosts known in both): memory is O(workers + buffers + set_aside + keys), not
O(items). The child also reads ``run.keys.statistics()`` every 10,000 results:
the peak of items set aside, the keys known.

**cpu**: ``async def noop(x): return x`` over 200,000 items of ``range(n)``, 100
workers; ``time.process_time()`` around the consumption of the results (setup off
the clock):

- ``plain``: no option (the hot path, for reference);
- ``retry``: ``retry=Retry(on=ValueError)``, which never fires (no item fails): the policy path
  with nothing to do per item;
- ``timeout``: ``timeout=60``: the policy path with a timeout per attempt;
- ``one-key``: ``per_key=PerKey(lambda _: 0, concurrency=100)``: the policy path
  with one key that never binds (against ``retry``: the cost of ``per_key``);
- ``one-key+timeout``: both (against ``timeout``: the cost of ``per_key`` again);
- ``keys-10k``: ``per_key=PerKey(lambda i: i % 10000, concurrency=2)`` (against
  ``retry``).

``--callgrind`` (valgrind installed) also counts instructions per item of the same
cases: each child under ``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0`` at
10,000 and 50,000 items, (Ir(50k) - Ir(10k)) / 40k, after a native warm-up run of
each (so that no measured run compiles a .pyc). Exact and repeatable, unlike CPU
time on a shared machine.

Writes ``benchmarks/out/keys.md`` and every raw sample in ``keys.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    HERE,
    child_cmd,
    child_env,
    errors_into,
    fmt,
    imported_from,
    load_average,
    machine,
    markdown,
    rotated,
    run_measurement,
    src_state,
    warn_if_src_changed,
    write_report,
)

OUT_DIR = HERE / "out"
HOSTS = 10_000
RUN = 100  # the runs layout: each host's URLs come this many in a row
MEMORY_WORKERS = 200
CPU_WORKERS = 100
MEMORY_CASES = {
    "baseline": "imports, and an empty coroutine in the same loop",
    "plain": "no per_key",
    "interleaved": "PerKey(host_of, concurrency=2), host i % 10000",
    "runs": f"PerKey(host_of, concurrency=2), runs of {RUN} URLs of one host",
    "runs-1000": "the same, set_aside=1000",
}
CPU_CASES = {
    "plain": "no option (the hot path)",
    "retry": "retry=Retry(on=ValueError) (the policy path, bare: none fails)",
    "timeout": "timeout=60 (the policy path)",
    "one-key": "PerKey(lambda _: 0, concurrency=100)",
    "one-key+timeout": "the same, and timeout=60",
    "keys-10k": "PerKey(lambda i: i % 10000, concurrency=2)",
}
CALLGRIND_SIZES = (10_000, 50_000)
POLL_EVERY = 10_000


# What each case of the cpu part is compared with: the same run without per_key.
REFERENCE = {"one-key": "retry", "one-key+timeout": "timeout", "keys-10k": "retry"}


# --------------------------------------------------------------------------- #
# The children
# --------------------------------------------------------------------------- #


def urls(n: int, layout: str) -> Any:
    """The input of the memory cases, lazily: ``n`` URLs over ``HOSTS`` hosts."""
    for i in range(n):
        host = i % HOSTS if layout == "interleaved" else (i // RUN) % HOSTS
        yield f"http://h{host}.test:80/p/{i}"


async def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    from parallelize import PerKey, host_of, parallelize  # noqa: PLC0415

    case, n = spec["case"], spec["n"]
    report: dict[str, Any] = {}
    if case == "baseline":
        await asyncio.sleep(0)
        return report

    async def touch(url: str) -> None:
        await asyncio.sleep(0)

    options: dict[str, Any] = {}
    if case != "plain":
        set_aside = 1000 if case == "runs-1000" else 10_000
        options["per_key"] = PerKey(host_of, concurrency=2, set_aside=set_aside)
    layout = "interleaved" if case == "interleaved" else "runs"
    run = parallelize(touch, urls(n, layout), MEMORY_WORKERS, **options)
    count = peak_aside = peak_keys = 0
    started = time.perf_counter()
    async for _ in run:
        count += 1
        if count % POLL_EVERY == 0 and run.keys is not None:
            keys = run.keys.statistics()
            peak_aside = max(peak_aside, keys.set_aside)
            peak_keys = max(peak_keys, keys.keys)
    report["elapsed"] = time.perf_counter() - started
    report["results"] = count
    if run.keys is not None:
        keys = run.keys.statistics()
        report |= {
            "peak_set_aside": peak_aside,
            "peak_keys": peak_keys,
            "keys_at_end": keys.keys,
            "held": keys.held,
            "set_aside_at_end": keys.set_aside,
        }
    return report


async def cpu_child(spec: dict[str, Any]) -> dict[str, Any]:
    from parallelize import PerKey, Retry, parallelize  # noqa: PLC0415

    case, n = spec["case"], spec["n"]

    async def noop(x: int) -> int:
        return x

    options: dict[str, Any] = {}
    if "timeout" in case:
        options["timeout"] = 60.0
    if case == "retry":
        options["retry"] = Retry(on=ValueError)
    if case.startswith("one-key"):
        options["per_key"] = PerKey(lambda _: 0, concurrency=100)
    elif case == "keys-10k":
        options["per_key"] = PerKey(lambda i: i % HOSTS, concurrency=2)
    run = parallelize(noop, range(n), CPU_WORKERS, **options)
    total = count = 0
    cpu, started = time.process_time(), time.perf_counter()
    async for x in run:
        total += x
        count += 1
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - started
    return {"cpu": cpu, "elapsed": elapsed, "results": count, "sum_ok": total == n * (n - 1) // 2}


def child(spec: dict[str, Any]) -> None:
    report: dict[str, Any] = {"spec": spec}
    with errors_into(report):
        measure = memory_child if spec["part"] == "memory" else cpu_child
        report |= asyncio.run(measure(spec))
    # Peak RSS of this whole process: KiB on Linux.
    report["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report), flush=True)


# --------------------------------------------------------------------------- #
# The parent: plans, rounds, tables
# --------------------------------------------------------------------------- #


def problems(spec: dict[str, Any], sample: dict[str, Any]) -> list[str]:
    if "error" in sample:
        return [sample["error"]]
    if spec["case"] == "baseline":
        return []
    found = []
    if sample.get("results") != spec["n"]:
        found.append(f"{sample.get('results')} results of {spec['n']}")
    if sample.get("sum_ok") is False:
        found.append("wrong sum")
    if sample.get("set_aside_at_end"):
        found.append(f"{sample['set_aside_at_end']} still set aside at the end")
    return found


def measure(
    spec: dict[str, Any], timeout: float, prefix: list[str] | None = None
) -> dict[str, Any]:
    cmd = [*(prefix or []), *child_cmd(__file__, spec)]
    sample = run_measurement(cmd, timeout, child_env(PYTHONHASHSEED="0"))
    sample["problems"] = problems(spec, sample)
    return sample


def run_memory(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    plan = [("baseline", args.memory_sizes[0])]
    plan += [(case, n) for n in args.memory_sizes for case in MEMORY_CASES if case != "baseline"]
    samples: dict[str, list[dict[str, Any]]] = {f"{case}@{n}": [] for case, n in plan}
    for round_no in range(args.rounds):
        for case, n in rotated(plan, round_no):
            sample = measure({"part": "memory", "case": case, "n": n}, args.timeout)
            samples[f"{case}@{n}"].append(sample)
            extra = ""
            if "peak_set_aside" in sample:
                extra = (
                    f", set aside peak {sample['peak_set_aside']:,}, keys {sample['peak_keys']:,}"
                    f", held {sample['held']:,}"
                )
            print(
                f"[{round_no + 1}/{args.rounds}] memory {case:12} n={n:>9,}: "
                f"{sample.get('maxrss_mb', 0):6.1f} MB, {sample.get('elapsed', 0):6.2f} s"
                f"{extra} {'; '.join(sample['problems']) or 'ok'}",
                flush=True,
            )
    return samples


def run_cpu(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {case: [] for case in CPU_CASES}
    for round_no in range(args.rounds):
        for case in rotated(list(CPU_CASES), round_no):
            sample = measure({"part": "cpu", "case": case, "n": args.cpu_n}, args.timeout)
            samples[case].append(sample)
            print(
                f"[{round_no + 1}/{args.rounds}] cpu {case:16} "
                f"{sample.get('cpu', 0) / args.cpu_n * 1e6:6.2f} us/item CPU, "
                f"{sample.get('elapsed', 0):5.2f} s {'; '.join(sample['problems']) or 'ok'}",
                flush=True,
            )
    return samples


def callgrind_total(out: Path) -> int | None:
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return None


def run_callgrind(args: argparse.Namespace, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    if shutil.which("valgrind") is None:
        print("callgrind: valgrind is not installed; skipped", flush=True)
        return {}
    for case in CPU_CASES:  # warm every .pyc first: no measured run compiles
        measure({"part": "cpu", "case": case, "n": 1000}, args.timeout)
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in CPU_CASES}
    for repeat in range(args.callgrind_runs):
        for case in CPU_CASES:
            pair: dict[str, Any] = {}
            for n in CALLGRIND_SIZES:
                out = tmp / f"callgrind.{case}.{n}.{repeat}"
                prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
                spec = {"part": "cpu", "case": case, "n": n}
                sample = measure(spec, args.timeout * 20, prefix)
                ir = callgrind_total(out) if out.exists() else None
                if ir is None:
                    sample["problems"].append("no callgrind total")
                pair[str(n)] = sample | {"instructions": ir}
                print(
                    f"callgrind [{repeat + 1}/{args.callgrind_runs}] {case:16} n={n:>6,}: "
                    f"{ir or 0:>14,} instructions {'; '.join(sample['problems']) or 'ok'}",
                    flush=True,
                )
            results[case].append(pair)
    return results


def per_item(pair: dict[str, Any]) -> float | None:
    small, large = (pair[str(n)] for n in CALLGRIND_SIZES)
    if small["problems"] or large["problems"]:
        return None
    extra = CALLGRIND_SIZES[1] - CALLGRIND_SIZES[0]
    return float(large["instructions"] - small["instructions"]) / extra


def median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def growth_of(peak: float | None, base: float | None) -> float | None:
    return None if peak is None or base is None else peak - base


def spread_of(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    return f"{(max(values) - min(values)) / statistics.median(values):.0%}"


def memory_table(samples: dict[str, list[dict[str, Any]]], sizes: list[int]) -> str:
    def rss(case: str, n: int) -> list[float]:
        return [s["maxrss_mb"] for s in samples.get(f"{case}@{n}", []) if not s["problems"]]

    base = median(rss("baseline", sizes[0]))
    large = sizes[-1]
    blank = [""] * (len(sizes) + 4)
    rows = [["baseline", MEMORY_CASES["baseline"], fmt(base, ".1f"), *blank[1:], "ok"]]
    for case, what in MEMORY_CASES.items():
        if case == "baseline":
            continue
        growth = [growth_of(median(rss(case, n)), base) for n in sizes]
        last, before = growth[-1], growth[-2] if len(growth) > 1 else None
        kept = [s for s in samples.get(f"{case}@{large}", []) if not s["problems"]]
        aside = median([s["peak_set_aside"] for s in kept if "peak_set_aside" in s])
        keys = median([s["peak_keys"] for s in kept if "peak_keys" in s])
        rate = median([large / s["elapsed"] for s in kept])
        measured = [s for n in sizes for s in samples.get(f"{case}@{n}", [])]
        bad = [problem for s in measured for problem in s["problems"]]
        rows.append(
            [
                case,
                what,
                *(fmt(g, "+.1f") for g in growth),
                fmt(None if last is None or before is None else last - before, "+.1f"),
                fmt(aside, ",.0f"),
                fmt(keys, ",.0f"),
                fmt(rate, ",.0f"),
                "ok" if not bad else f"{len(bad)} bad: {bad[0]}"[:80],
            ]
        )
    header = [
        "case",
        "what",
        *(f"growth MB @{n:,}" for n in sizes),
        "last - previous MB",
        f"peak set aside @{large:,}",
        f"keys known @{large:,}",
        f"items/s @{large:,}",
        "check",
    ]
    note = (
        "\n\nbaseline: its peak RSS in MB; growth: the case's median peak RSS minus the "
        "baseline's. Peak set aside and keys: the most seen by reading "
        f"`run.keys.statistics()` every {POLL_EVERY:,} results."
    )
    return markdown(header, rows, right_from=2) + note


def cpu_table(
    samples: dict[str, list[dict[str, Any]]],
    callgrind: dict[str, list[dict[str, Any]]],
    n: int,
) -> str:
    def us(case: str) -> list[float]:
        return [s["cpu"] / n * 1e6 for s in samples.get(case, []) if not s["problems"]]

    def ir(case: str) -> list[float]:
        return [x for x in map(per_item, callgrind.get(case, [])) if x is not None]

    rows = []
    for case, what in CPU_CASES.items():
        cpu, instructions = median(us(case)), median(ir(case))
        than = REFERENCE.get(case)
        cpu_delta = ir_delta = None
        if than is not None:
            other_cpu, other_ir = median(us(than)), median(ir(than))
            if cpu is not None and other_cpu is not None:
                cpu_delta = cpu - other_cpu
            if instructions is not None and other_ir is not None:
                ir_delta = instructions - other_ir
        bad = [p for s in samples.get(case, []) for p in s["problems"]]
        rows.append(
            [
                case,
                what,
                than or "",
                fmt(cpu, ".2f"),
                fmt(cpu_delta, "+.2f"),
                spread_of(us(case)),
                fmt(instructions, ",.0f"),
                fmt(ir_delta, "+,.0f"),
                ", ".join(f"{x:,.0f}" for x in ir(case)) or "-",
                "ok" if not bad else f"{len(bad)} bad: {bad[0]}"[:80],
            ]
        )
    header = [
        "case",
        "what",
        "against",
        "CPU us/item",
        "CPU vs against",
        "spread",
        "instructions/item",
        "instructions vs against",
        "each callgrind pair",
        "check",
    ]
    note = (
        f"\n\nCPU: `time.process_time()` over {n:,} items, median of the rounds; "
        "instructions: callgrind, (Ir(50k) - Ir(10k)) / 40k, median of the pairs. "
        "`vs against`: minus the case it is against (the same run without per_key)."
    )
    return markdown(header, rows, right_from=3) + note


def setup_lines(args: argparse.Namespace) -> list[str]:
    sizes = ", ".join(f"{n:,}" for n in args.memory_sizes)
    callgrind = f"on, {args.callgrind_runs} pair(s) per case" if args.callgrind else "off"
    return [
        f"project: {src_state()}",
        f"parallelize imported from: {imported_from()}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"machine: {machine()}",
        f"load average at start: {load_average()}",
        f"parts: {', '.join(args.parts)}; rounds {args.rounds}, interleaved, fresh subprocesses",
        f"memory: n {sizes} URLs over {HOSTS:,} hosts, {MEMORY_WORKERS} workers, sleep(0)",
        f"cpu: n {args.cpu_n:,} no-op items, {CPU_WORKERS} workers; callgrind {callgrind}",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="memory,cpu", type=lambda s: s.split(","))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-sizes", default="100000,1000000,3000000")
    parser.add_argument("--cpu-n", type=int, default=200_000)
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--callgrind-runs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="10^4 / 10^5 URLs, 50k items")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "keys.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.memory_sizes, args.cpu_n = "10000,100000", 50_000
    args.memory_sizes = [int(n) for n in args.memory_sizes.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    started = time.monotonic()
    setup = setup_lines(args)
    print("\n".join(setup), "", sep="\n", flush=True)
    raw: dict[str, Any] = {"setup": setup}
    tables = []
    if "memory" in args.parts:
        raw["memory"] = run_memory(args)
        tables.append("### Memory\n\n" + memory_table(raw["memory"], args.memory_sizes))
    if "cpu" in args.parts:
        raw["cpu"] = run_cpu(args)
        raw["callgrind"] = {}
        if args.callgrind:
            with tempfile.TemporaryDirectory() as tmp:
                raw["callgrind"] = run_callgrind(args, Path(tmp))
        tables.append(
            "### Engine cost per item\n\n" + cpu_table(raw["cpu"], raw["callgrind"], args.cpu_n)
        )
    setup.append(f"load average at end: {load_average()}")
    warn_if_src_changed(setup)
    minutes = (time.monotonic() - started) / 60
    title = "Limits per key: engine cost and memory"
    write_report(args.out, title, "keys.py", argv, minutes, setup, tables, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
