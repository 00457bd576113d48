"""The cost of observability on W1: stats=, a progress bar, a polling dashboard.

    .venv/bin/python benchmarks/observe.py                 # default: 7 rounds, ~1.5 minutes
    .venv/bin/python benchmarks/observe.py --pin           # every measured child on CPU 0
    .venv/bin/python benchmarks/observe.py --quick         # 200,000 items, 3 rounds
    .venv/bin/python benchmarks/observe.py --progress-rates 0.5,40   # + the bar at 0.5 and 40 Hz
    .venv/bin/python benchmarks/observe.py --callgrind     # + instructions per item (valgrind)
    .venv/bin/python benchmarks/observe.py --pool benchmarks/out/observe*.json   # re-report
    .venv/bin/python benchmarks/observe.py --rounds 0 --callgrind --callgrind-runs 3
                                                           # instructions only, ~5 minutes

W1: ``async def noop(x): return x`` over 10^6 items, 100 workers, the results
consumed with ``async for``. Four modes, each over two inputs:

- ``plain``: ``parallelize(noop, inp, 100)``, the reference.
- ``stats``: ``stats=True``, and ``run.statistics()`` read once at the end.
- ``progress``: ``progress=Progress(file=FakeTTY())``: a text stream on /dev/null
  whose ``isatty()`` is True, so the rich display really renders at its default
  10 Hz (rich is imported before the clock starts: a one-time cost, not per item;
  the children report how long that import took). Once per run, untimed, a child
  counts the characters the display wrote, to prove it drew.
- ``stats+poll``: ``stats=True``, and the consumer reads ``run.statistics()``
  every 10,000 items, like a dashboard.

Inputs: ``range`` (``range(10**6)``, the W1 input) and ``generator`` (a generator
function yielding ``range(10**6)``). The observed worker counts the items of a
range or a list for free, through its iterator's length hint, and zips any other
input with a C counter: both are reported.

Every measurement is a fresh subprocess (this script, re-invoked); the rounds
interleave every mode of both inputs (the order rotates each round); the tables
show medians, the ratio to ``plain`` of the same input (of the medians, and the
median of the per-round ratios), and the spread (max - min) / median. The issue's
target: progress + stats cost W1 under 5%. This machine is noisy: read the
ratios together with the spread.

Untimed extras, for a cost model that noise does not blur: the progress check
run times each redraw; the stats+poll runs time their statistics() calls; one
child times reading a generator bare and counted by a C counter, as the
observed worker reads it (best of 5).

``--callgrind`` (valgrind installed) counts instructions per item instead of time:
each of plain and stats, on each input, runs 10,000 and 50,000 items under
``valgrind --tool=callgrind``, and the difference / 40,000 is the cost of one item,
without the interpreter's start-up. Note: the stats worker times one action every
10 ms of wall-clock time (its 100 Hz sampler, which cannot be turned off), and
under valgrind everything runs ~50x slower, so the sampler fires ~50x more often
per item than in a native run: the 'stats' count is inflated by that (the children
report how many actions were timed). ``--callgrind-runs N`` repeats each pair and
reports the median (single pairs varied by ~150 per item: timer-driven work
follows wall-clock time).

The tables are printed and written as markdown to benchmarks/out/observe.md, with
every raw sample in benchmarks/out/observe.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    HERE,
    check,
    child_cmd,
    child_env,
    errors_into,
    fmt,
    git,
    good,
    load_average,
    machine,
    markdown,
    median_of,
    paired_ratio,
    rotated,
    run_measurement,
    spread,
    version_of,
    write_report,
)

OUT_DIR = HERE / "out"
WORKERS = 100
POLL_EVERY = 10_000
TARGET = 0.05  # the issue: progress + stats cost W1 under 5%
MODES = {
    "plain": "parallelize(noop, inp, 100)",
    "stats": "stats=True, statistics() at the end",
    "progress": "progress=Progress(file=FakeTTY()), rich at 10 Hz",
    "stats+poll": f"stats=True, statistics() every {POLL_EVERY:,} items",
}
INPUTS = {
    "range": "range(N)",
    "generator": "a generator function yielding range(N)",
}
CALLGRIND_SIZES = (10_000, 50_000)
CALLGRIND_MODES = ("plain", "stats")
# Children's environment: a terminal type and width, so that rich renders as on
# a real terminal (colours, a fixed width) whatever the parent's environment is.
# (And .pyc files on: the children's imports are off the clock anyway, but not off
# callgrind's count; see _harness.child_env.)
CHILD_ENV = {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}


# --------------------------------------------------------------------------- #
# The measuring child
# --------------------------------------------------------------------------- #


async def noop(x: int) -> int:
    return x


def gen(n: int):
    yield from range(n)


class FakeTTY(io.TextIOWrapper):
    """A text stream on /dev/null that says it is a terminal."""

    def __init__(self) -> None:
        super().__init__(open(os.devnull, "wb"), encoding="utf-8")  # noqa: SIM115

    def isatty(self) -> bool:
        return True


class CountingTTY(FakeTTY):
    """FakeTTY that counts what is written (the untimed check only)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.writes = 0

    def write(self, text: str) -> int:
        self.written += len(text)
        self.writes += 1
        return super().write(text)


def time_draws(draws: list[float]) -> None:
    """Time each redraw of the progress display (the untimed check run only)."""
    from parallelize import _progress  # noqa: PLC0415

    # A redraw: the board renders every run's line, draws, and sets its next timer.
    tick = _progress._Board._tick  # noqa: SLF001

    def timed(self: Any) -> None:
        began = time.perf_counter()
        tick(self)
        draws.append(time.perf_counter() - began)

    _progress._Board._tick = timed  # type: ignore[method-assign]  # noqa: SLF001


def make_input(kind: str, n: int):
    return range(n) if kind == "range" else gen(n)


async def run_mode(spec: dict[str, Any], tty: FakeTTY | None) -> dict[str, Any]:
    from parallelize import Progress, parallelize  # noqa: PLC0415

    mode, n = spec["mode"], spec["n"]
    inp = make_input(spec["input"], n)
    count = checksum = polls = 0
    poll_s = 0.0  # time inside the dashboard's statistics() calls
    stats = None
    start = time.perf_counter()
    if mode == "plain":
        run = parallelize(noop, inp, WORKERS)
    elif mode == "progress":
        display = Progress(file=tty, refresh_per_second=spec.get("hz", 10.0))
        run = parallelize(noop, inp, WORKERS, progress=display)
    else:
        run = parallelize(noop, inp, WORKERS, stats=True)
    if mode == "stats+poll":
        next_poll = POLL_EVERY
        async for result in run:
            count += 1
            checksum += result
            if count == next_poll:
                next_poll += POLL_EVERY
                began = time.perf_counter()
                run.statistics()
                poll_s += time.perf_counter() - began
                polls += 1
    else:
        async for result in run:
            count += 1
            checksum += result
    if mode != "plain":
        stats = run.statistics()
    elapsed = time.perf_counter() - start
    report: dict[str, Any] = {"elapsed": elapsed, "count": count, "checksum": checksum}
    if stats is not None:
        report["stats_done"] = stats.done
        report["stats_finished"] = stats.finished
        report["timed_actions"] = stats.latency.count if stats.latency else 0
        report["polls"] = polls
        report["poll_s"] = poll_s
    return report


def counter_cost(n: int) -> dict[str, Any]:
    """ns per item of reading a generator bare, and counted by a C counter as the
    observed worker reads it (itertools.compress with a count as its selectors; best of
    5 each, alternated)."""
    import itertools  # noqa: PLC0415

    def bare() -> None:
        for _ in gen(n):
            pass

    def zipped() -> None:
        for _ in itertools.compress(gen(n), itertools.count(1)):
            pass

    best = {"bare": float("inf"), "zipped": float("inf")}
    for _ in range(5):
        for name, loop in (("bare", bare), ("zipped", zipped)):
            began = time.perf_counter()
            loop()
            best[name] = min(best[name], time.perf_counter() - began)
    return {f"{name}_ns": t / n * 1e9 for name, t in best.items()}


def child(spec: dict[str, Any]) -> None:
    """Run one measurement; print one JSON line (the parent reads the last line)."""
    import parallelize  # noqa: PLC0415, F401 - imported before the clock starts

    if spec.get("pin"):
        os.sched_setaffinity(0, {0})
    if spec.get("sample_every"):
        # Under valgrind (~50x slower) the 100 Hz latency sampler would fire ~50x
        # more often per item than natively: slow it down by as much.
        import parallelize._engine as engine  # noqa: PLC0415

        engine._SAMPLE_EVERY = spec["sample_every"]  # noqa: SLF001
    if spec["mode"] == "counter":
        print(json.dumps(counter_cost(spec["n"])), flush=True)
        return
    report: dict[str, Any] = {}
    tty: FakeTTY | None = None
    if spec["mode"] == "progress":
        began = time.perf_counter()
        # What the display imports when it starts: a one-time cost, kept off the clock
        # (table and progress_bar: what it drew with before commit 5c9718b; kept, so
        # that runs before and after compare).
        import rich.console  # noqa: PLC0415, F401
        import rich.live  # noqa: PLC0415, F401
        import rich.progress_bar  # noqa: PLC0415, F401
        import rich.table  # noqa: PLC0415, F401
        import rich.text  # noqa: PLC0415, F401

        report["rich_import_s"] = time.perf_counter() - began
        tty = CountingTTY() if spec.get("count_bytes") else FakeTTY()
    draws: list[float] = []
    if spec.get("count_bytes"):
        time_draws(draws)
    with errors_into(report):
        report.update(asyncio.run(run_mode(spec, tty)))
    if isinstance(tty, CountingTTY):
        report["tty_chars"] = tty.written
        report["tty_writes"] = tty.writes
        report["draw_s"] = draws
    print(json.dumps(report), flush=True)


# --------------------------------------------------------------------------- #
# The parent: plan, run, check
# --------------------------------------------------------------------------- #


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    sample = run_measurement(child_cmd(__file__, spec), timeout, child_env(**CHILD_ENV))
    sample["problems"] = problems(spec, sample)
    return sample


def problems(spec: dict[str, Any], sample: dict[str, Any]) -> list[str]:
    """What is wrong with a sample: lost or doubled items, statistics that disagree."""
    if sample.get("error"):
        return [sample["error"]]
    if spec["mode"] == "counter":
        return []
    n = spec["n"]
    found = []
    if sample["count"] != n:
        found.append(f"count {sample['count']} != {n}")
    if sample["checksum"] != n * (n - 1) // 2:
        found.append(f"checksum {sample['checksum']}")
    if spec["mode"] != "plain":
        if sample["stats_done"] != n or not sample["stats_finished"]:
            found.append(f"statistics: done {sample['stats_done']}, finished")
        if spec["mode"] == "stats+poll" and sample["polls"] != n // POLL_EVERY:
            found.append(f"polls {sample['polls']} != {n // POLL_EVERY}")
    if spec.get("count_bytes") and not sample.get("tty_chars"):
        found.append("the progress display wrote nothing")
    return found


def spec_of(args: argparse.Namespace, inp: str, mode: str, **extra: Any) -> dict[str, Any]:
    spec = {"mode": mode, "input": inp, "n": args.n, "pin": args.pin} | extra
    if mode.startswith("progress@"):  # --progress-rates: the display at another rate
        spec["mode"] = "progress"
        spec["hz"] = float(mode.removeprefix("progress@").removesuffix("Hz"))
    return spec


def log(label: str, sample: dict[str, Any], n: int) -> None:
    if sample.get("error"):
        text = f"ERROR {sample['error']}"
    else:
        text = f"{sample['elapsed']:7.3f} s  {sample['elapsed'] / n * 1e6:6.3f} us/item"
        if "timed_actions" in sample:
            text += f"  timed {sample['timed_actions']:>5}"
        if sample["problems"]:
            text += "  " + "; ".join(sample["problems"])
    print(f"{label:40} {text}", flush=True)


def draw_summary(sample: dict[str, Any]) -> str:
    """What the display wrote and what its redraws cost, from the check run."""
    if sample.get("problems"):
        return "FAILED: " + "; ".join(sample["problems"])
    draws = sample["draw_s"]
    text = (
        f"{sample['tty_chars']:,} characters in {sample['tty_writes']:,} writes, "
        f"{len(draws)} redraws in {sample['elapsed']:.2f} s"
    )
    if len(draws) >= 2:
        text += (
            f"; first {draws[0] * 1e3:.1f} ms, then median "
            f"{statistics.median(draws[1:]) * 1e3:.2f} ms each; all redraws "
            f"{sum(draws) / sample['elapsed']:.1%} of the run"
        )
    return text


def check_progress(args: argparse.Namespace) -> dict[str, Any]:
    """One untimed progress run per input that counts what the display wrote."""
    checks = {}
    for inp in INPUTS:
        spec = spec_of(args, inp, "progress", count_bytes=True)
        sample = run_child(spec, args.timeout)
        checks[inp] = sample
        if sample["problems"]:
            print(f"progress check ({inp}): FAILED: {'; '.join(sample['problems'])}", flush=True)
        else:
            print(f"progress check ({inp}): {draw_summary(sample)}", flush=True)
    return checks


def measure_rounds(args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        inp: {mode: [] for mode in args.modes} for inp in INPUTS
    }
    plan = [(inp, mode) for inp in INPUTS for mode in args.modes]
    for round_no in range(args.rounds):
        for inp, mode in rotated(plan, round_no):  # no mode always first
            sample = run_child(spec_of(args, inp, mode), args.timeout)
            samples[inp][mode].append(sample)
            log(f"[{round_no + 1}/{args.rounds}] {inp:9} {mode}", sample, args.n)
    return samples


# --------------------------------------------------------------------------- #
# Callgrind
# --------------------------------------------------------------------------- #


def callgrind_instructions(spec: dict[str, Any], tmp: Path, timeout: float) -> dict[str, Any]:
    """Run one child under callgrind; its sample plus the total instructions (Ir)."""
    out = tmp / f"callgrind.{spec['input']}.{spec['mode']}.{spec['n']}"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        *child_cmd(__file__, spec),
    ]
    sample = run_measurement(cmd, timeout, child_env(**CHILD_ENV))
    sample["problems"] = problems(spec, sample)
    if sample.get("error"):
        return sample  # timed out or crashed: nothing to count
    ir = None
    if out.exists():
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                ir = int(line.split()[1])
                break
    if ir is None:
        sample.setdefault("problems", []).append("no callgrind total")
    sample["instructions"] = ir
    return sample


def measure_callgrind(args: argparse.Namespace, tmp: Path) -> dict[str, list[dict[int, Any]]]:
    """Each mode on each input, ``--callgrind-runs`` times: {"input/mode": [{n: sample}]}."""
    if shutil.which("valgrind") is None:
        print("callgrind: valgrind is not installed; skipped", flush=True)
        return {}
    # Warm every .pyc (the package and its lazy imports) with a native run of each
    # child first, so that no measured run pays for compiling.
    for inp in INPUTS:
        for mode in CALLGRIND_MODES:
            run_child({"mode": mode, "input": inp, "n": 1000, "pin": False}, args.timeout)
    results: dict[str, list[dict[int, Any]]] = {
        f"{inp}/{mode}": [] for inp in INPUTS for mode in CALLGRIND_MODES
    }
    for repeat in range(args.callgrind_runs):
        for inp in INPUTS:
            for mode in CALLGRIND_MODES:
                runs = {}
                for n in CALLGRIND_SIZES:
                    spec = {
                        "mode": mode,
                        "input": inp,
                        "n": n,
                        "pin": False,
                        "sample_every": args.callgrind_sample_every,
                    }
                    sample = callgrind_instructions(spec, tmp, args.timeout * 10)
                    runs[n] = sample
                    extra = ""
                    if "timed_actions" in sample:
                        extra = f", timed actions {sample['timed_actions']}"
                    status = "; ".join(sample["problems"]) or "ok"
                    print(
                        f"callgrind [{repeat + 1}/{args.callgrind_runs}] {inp:9} {mode:6} "
                        f"n={n:>6,}: {sample.get('instructions') or 0:>14,} instructions"
                        f"{extra} ({status})",
                        flush=True,
                    )
                results[f"{inp}/{mode}"].append(runs)
    return results


def per_item(runs: dict[int, dict[str, Any]]) -> float | None:
    """Instructions per item of one pair of runs: the difference over the extra items."""
    small, large = (runs[n] for n in CALLGRIND_SIZES)
    if small.get("problems") or large.get("problems"):
        return None
    return (large["instructions"] - small["instructions"]) / (
        CALLGRIND_SIZES[1] - CALLGRIND_SIZES[0]
    )


def per_items(repeats: list[dict[int, Any]]) -> list[float]:
    return [x for x in map(per_item, repeats) if x is not None]


def callgrind_table(results: dict[str, list[dict[int, Any]]]) -> str:
    rows = []
    small, large = CALLGRIND_SIZES
    repeats = max(len(r) for r in results.values())
    for inp in INPUTS:
        plain_all = per_items(results[f"{inp}/plain"])
        plain = statistics.median(plain_all) if plain_all else None
        for mode in CALLGRIND_MODES:
            values = per_items(results[f"{inp}/{mode}"])
            ir = statistics.median(values) if values else None
            timed = [
                f"{r[small]['timed_actions']:,} / {r[large]['timed_actions']:,}"
                for r in results[f"{inp}/{mode}"]
                if "timed_actions" in r[small] and "timed_actions" in r[large]
            ]
            rows.append(
                [
                    inp,
                    mode,
                    fmt(ir, ",.0f"),
                    ", ".join(f"{v:,.0f}" for v in values) or "-",
                    "-"
                    if mode == "plain"
                    else fmt(None if ir is None or plain is None else ir - plain, "+,.0f"),
                    fmt(None if ir is None or plain is None else ir / plain, ".3f", "x"),
                    ", ".join(timed) or "-",
                ]
            )
    header = [
        "input",
        "mode",
        "instructions per item (median)",
        "each run",
        "vs plain",
        "ratio",
        f"timed actions at {small:,} / {large:,} items",
    ]
    return (
        f"### Instructions per item (callgrind, ({large:,} - {small:,} items) / "
        f"{large - small:,}, {WORKERS} workers, {repeats} run(s) of each)\n\n"
        + markdown(header, rows, right_from=2, check_column=False)
        + "\n\nUnder valgrind the run is ~50x slower, so the stats worker's 100 Hz latency "
        "sampler (one timed action per 10 ms of wall-clock time) would fire ~50x more "
        "often per item than natively; the children set its period to "
        "--callgrind-sample-every seconds (0: left at 10 ms) to keep the per-item rate "
        "native-like (compare the timed actions above with the native runs' ~90 per "
        "10^6 items)."
    )


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def ratios(
    samples: dict[str, list[dict[str, Any]]], mode: str
) -> tuple[float | None, float | None]:
    """Time vs plain: of the medians, and the median of the per-round ratios."""
    ref = median_of(samples["plain"], "elapsed")
    mine = median_of(samples[mode], "elapsed")
    medians = None if ref is None or mine is None else mine / ref
    return medians, paired_ratio(samples[mode], samples["plain"])


def wall_table(
    args: argparse.Namespace, samples: dict[str, dict[str, list[dict[str, Any]]]]
) -> str:
    n = args.n
    rows = []
    for inp in INPUTS:
        for mode in args.modes:
            elapsed = median_of(samples[inp][mode], "elapsed")
            medians, paired = ratios(samples[inp], mode)
            timed = median_of(samples[inp][mode], "timed_actions")
            rows.append(
                [
                    inp,
                    mode,
                    fmt(None if elapsed is None else elapsed / n * 1e6, ".3f"),
                    fmt(None if elapsed is None else n / elapsed, ",.0f"),
                    fmt(medians, ".3f", "x"),
                    "-"
                    if mode == "plain"
                    else fmt(None if medians is None else medians - 1, "+.1%"),
                    "-" if mode == "plain" else fmt(None if paired is None else paired - 1, "+.1%"),
                    spread(samples[inp][mode]),
                    fmt(timed, ",.0f"),
                    check(samples[inp][mode]),
                ]
            )
    header = [
        "input",
        "mode",
        "us/item",
        "items/s",
        "time vs plain",
        "overhead (medians)",
        "overhead (paired)",
        "spread",
        "timed actions",
        "check",
    ]
    return (
        f"### W1 observed: {n:,} no-op actions, {WORKERS} workers, {args.rounds} rounds\n\n"
        "time vs plain: median time of the mode / median time of `plain` on the same "
        "input; paired: the median over rounds of the same ratio within a round.\n\n"
        + markdown(header, rows, right_from=2)
    )


def poll_note(samples: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """What the dashboard's statistics() calls cost, timed inside the stats+poll runs."""
    parts = []
    for inp in INPUTS:
        runs = [s for s in good(samples[inp]["stats+poll"]) if s.get("polls")]
        if not runs:
            continue
        each = statistics.median(s["poll_s"] / s["polls"] for s in runs)
        share = statistics.median(s["poll_s"] / s["elapsed"] for s in runs)
        parts.append(f"{inp}: {each * 1e6:.0f} us per call, {share:.2%} of the run")
    if not parts:
        return "stats+poll: no poll timings."
    return (
        f"stats+poll, time inside the {POLL_EVERY:,}-item statistics() calls (medians): "
        + "; ".join(parts)
        + "."
    )


def counter_note(
    args: argparse.Namespace, counter: dict[str, Any], samples: dict[str, dict[str, list[Any]]]
) -> str:
    """What counting a generator's items costs the observed worker, natively."""
    if counter.get("problems"):
        return "generator counting: not measured (" + "; ".join(counter["problems"]) + ")."
    extra = counter["zipped_ns"] - counter["bare_ns"]
    plain = median_of(samples["generator"]["plain"], "elapsed")
    share = "" if plain is None else f" ({extra * 1e-9 * args.n / plain:.1%} of plain's time)"
    return (
        "generator counting, in one untimed child (best of 5): reading the generator "
        f"bare {counter['bare_ns']:.0f} ns per item, counted by a C counter (compress) as the "
        f"observed worker reads it {counter['zipped_ns']:.0f} ns: +{extra:.0f} ns per item"
        f"{share}. A range is counted by its length hint: nothing per item."
    )


def verdict(args: argparse.Namespace, samples: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = []
    for inp in INPUTS:
        for mode in args.modes[1:]:
            medians, paired = ratios(samples[inp], mode)
            if medians is None or paired is None:
                lines.append(f"- {inp}, {mode}: not measured (a sample failed)")
                continue
            under = [medians - 1 < TARGET, paired - 1 < TARGET]
            word = "under" if all(under) else "over" if not any(under) else "mixed"
            lines.append(
                f"- {inp}, {mode}: {word} {TARGET:.0%} "
                f"(medians {medians - 1:+.1%}, paired {paired - 1:+.1%}; "
                f"spread {spread(samples[inp][mode])})"
            )
    return (
        f"Target: progress + stats cost W1 under {TARGET:.0%}. Wall-clock overheads "
        f"smaller than the spreads are within this machine's noise; the untimed "
        "component costs above and --callgrind do not depend on it.\n\n" + "\n".join(lines)
    )


def pooled_table(paths: list[Path]) -> str:
    """Every round of several runs, pooled: the median of the per-round ratios to plain,
    with a bootstrap 95% interval (resampled rounds; seeded, so it repeats)."""
    import random  # noqa: PLC0415

    runs = [json.loads(path.read_text()) for path in paths]
    rng = random.Random(7)
    rows = []
    for inp in INPUTS:
        modes = dict.fromkeys(m for run in runs for m in run.get("samples", {}).get(inp, {}))
        for mode in modes:
            if mode == "plain":
                continue
            pairs = [
                (x["elapsed"], y["elapsed"])
                for run in runs
                if mode in run.get("samples", {}).get(inp, {})
                for x, y in zip(
                    run["samples"][inp]["plain"], run["samples"][inp][mode], strict=True
                )
                if not x.get("problems") and not y.get("problems")
            ]
            if not pairs:
                continue
            ratios = [b / a for a, b in pairs]
            boots = sorted(
                statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(4000)
            )
            medians = statistics.median(b for _, b in pairs) / statistics.median(
                a for a, _ in pairs
            )
            rows.append(
                [
                    inp,
                    mode,
                    str(len(pairs)),
                    f"{medians - 1:+.1%}",
                    f"{statistics.median(ratios) - 1:+.1%}",
                    f"{boots[100] - 1:+.1%} .. {boots[3899] - 1:+.1%}",
                ]
            )
    header = [
        "input",
        "mode",
        "rounds",
        "overhead (medians)",
        "overhead (paired)",
        "paired, bootstrap 95%",
    ]
    files = ", ".join(path.name for path in paths)
    return f"### Pooled rounds ({files})\n\n" + markdown(
        header, rows, right_from=2, check_column=False
    )


# --------------------------------------------------------------------------- #
# Setup and main
# --------------------------------------------------------------------------- #


def src_state() -> str:
    """The commit, and the files under src/ with uncommitted changes (if any)."""
    head = git("rev-parse", "--short", "HEAD") or "not a git checkout"
    dirty = [
        line.split(maxsplit=1)[-1] for line in git("status", "--porcelain", "src").splitlines()
    ]
    if not dirty:
        return f"commit {head}, src/ clean"
    return f"commit {head} + uncommitted changes in {', '.join(dirty)}"


def setup_lines(args: argparse.Namespace) -> list[str]:
    import parallelize  # noqa: PLC0415

    return [
        f"project: {src_state()}",
        f"parallelize imported from: {Path(parallelize.__file__).resolve().parent}",
        f"python: {sys.version.split()[0]} ({sys.executable}), loop asyncio (default)",
        f"parallelize {version_of('parallelize')}, rich {version_of('rich')}",
        f"machine: {machine()}",
        f"load average at start: {load_average()}",
        (
            f"rounds: {args.rounds} interleaved (order rotated each round), medians; "
            "one fresh subprocess per measurement"
            + ("; children pinned to CPU 0, this parent to CPU 1" if args.pin else "")
        ),
        f"W1: n={args.n:,}, numworkers={WORKERS}; children: .pyc on, env "
        + " ".join(f"{k}={v}" for k, v in CHILD_ENV.items()),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7, --quick 3)")
    parser.add_argument("--n", type=int, default=None, help="items per run (default 10^6)")
    parser.add_argument("--quick", action="store_true", help="200,000 items, 3 rounds")
    parser.add_argument("--pin", action="store_true", help="measured children on CPU 0")
    parser.add_argument(
        "--callgrind", action="store_true", help="also count instructions per item (valgrind)"
    )
    parser.add_argument(
        "--callgrind-runs", type=int, default=1, help="pairs of callgrind runs per row (1)"
    )
    parser.add_argument(
        "--callgrind-sample-every",
        type=float,
        default=0.5,
        help="the latency sampler's period under valgrind, seconds (0.5: ~50x the native "
        "10 ms, as valgrind is ~50x slower; 0: unchanged)",
    )
    parser.add_argument(
        "--progress-rates",
        default="",
        help="extra progress modes at these redraw rates, Hz, comma-separated (e.g. 1,40)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per measurement, s (120)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "observe.md", help="markdown")
    parser.add_argument(
        "--pool",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="measure nothing: pool the rounds of these runs' observe*.json files",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    if args.n is None:
        args.n = 200_000 if args.quick else 1_000_000
    rates = [float(x) for x in args.progress_rates.split(",") if x.strip()]
    if any(not 0 < hz <= 100 for hz in rates):
        parser.error("--progress-rates: each rate in (0, 100]")
    args.modes = list(MODES) + [f"progress@{hz:g}Hz" for hz in rates]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.pool:
        print(pooled_table(args.pool))
        return 0
    setup = setup_lines(args)
    print("\n".join(setup), "", sep="\n", flush=True)
    started = time.perf_counter()
    if args.pin:
        os.sched_setaffinity(0, {1})  # the parent waits on CPU 1; the children move to 0
    tables = []
    raw: dict[str, Any] = {"setup": setup}
    if args.rounds > 0:
        raw["progress_check"] = check_progress(args)
        counter = run_child(spec_of(args, "generator", "counter"), args.timeout)
        raw["counter"] = counter
        samples = measure_rounds(args)
        raw["samples"] = samples
        imports = [
            s["rich_import_s"]
            for inp in INPUTS
            for s in good(samples[inp]["progress"])
            if "rich_import_s" in s
        ]
        drawn = "; ".join(f"{inp}: {draw_summary(s)}" for inp, s in raw["progress_check"].items())
        notes = f"progress, one untimed check run per input with its redraws timed ({drawn}). " + (
            "In the timed runs rich is imported before the clock starts, in "
            f"{statistics.median(imports) * 1e3:.0f} ms (median; once per run, not per item)."
            if imports
            else "rich import time not measured."
        )
        tables += [
            wall_table(args, samples),
            notes,
            poll_note(samples),
            counter_note(args, counter, samples),
            verdict(args, samples),
        ]
    if args.callgrind:
        tmp = Path(tempfile.mkdtemp(prefix="parallelize-observe-callgrind-"))
        try:
            results = measure_callgrind(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        raw["callgrind"] = {
            key: [{str(n): s for n, s in runs.items()} for runs in repeats]
            for key, repeats in results.items()
        }
        if results:
            tables.append(callgrind_table(results))
    minutes = (time.perf_counter() - started) / 60
    title = "Observability benchmark"
    write_report(args.out, title, "observe.py", argv, minutes, setup, tables, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
