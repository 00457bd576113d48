"""Benchmark parallelize against its peers, each measurement in a fresh subprocess.

Run with the project's venv (after `pip install -e .`):

    .venv/bin/python benchmarks/run.py            # default run, ~17 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --quick    # small sizes, one round, ~3 minutes
    .venv/bin/python benchmarks/run.py --only W1,W3 --peers aiometer,tasklane --rounds 5

Rounds are interleaved (round 1 of every workload and contender, then round
2, ...), so slow drift of a noisy machine spreads over everyone. The tables
(medians and ratios) are printed at the end and written as markdown to
benchmarks/out/latest.md, with every raw sample in benchmarks/out/latest.json.
See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _harness import bench_server, read_report, version_of
from contenders import CONTENDERS, Contender
from report import Cell, Results, Sample, Table, build_table, render_markdown, render_text
from workloads import Workload, workloads

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
OUT_DIR = HERE / "out"
PY312_VENV = HERE / ".venv-py312"
PY312_PACKAGES = ["pyarallel==0.11.0", "aiohttp", "uvloop"]
ALWAYS = ("parallelize", "sequential", "bare_tasks")  # every run has these
# W3 measurements predicted to take longer than --cap-seconds are skipped (and
# the table says so), except for these: the project's own numbers are the point.
NEVER_CAPPED = ("parallelize", "sequential", "bare_tasks")
PEER_PACKAGES = ["aiometer", "aiostream", "tasklane", "streamable", "aiohttp", "uvloop"]
PY312_REPORTED = ["pyarallel", "aiohttp", "uvloop"]


@dataclass(frozen=True)
class Job:
    workload: Workload
    contender: Contender
    n: int | None  # None: the import-only RSS baseline of W3


@dataclass
class Interpreters:
    """Which Python runs each contender, or why it cannot run."""

    project: str
    py312: str | None
    py312_problem: str = ""

    def for_contender(self, contender: Contender) -> str | None:
        return self.project if contender.python == "project" else self.py312


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    parser.add_argument(
        "--rss-rounds",
        type=int,
        default=1,
        help="rounds of W3 (default 1: peak RSS hardly varies between rounds; 10^7 runs are long)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and one round")
    parser.add_argument("--only", default="", help="workloads, e.g. W1,W3 (W5 = W5-W1,W5-W4)")
    parser.add_argument(
        "--peers",
        default="",
        help="contenders to run besides parallelize and the floors (default: all). "
        f"Known: {', '.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--cap-seconds",
        type=float,
        default=None,
        help="skip a W3 measurement predicted (from this run's own W1/W3 speed) to take longer "
        "(default 30, --quick 20)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per measurement, s (600)")
    parser.add_argument("--py312", default=None, help="a Python 3.12+ for pyarallel's venv")
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR / "latest.md", help="markdown (out/latest.md)"
    )
    parser.add_argument(
        "--tables-from",
        type=Path,
        default=None,
        help="only print the tables of an earlier run's JSON (give the same --quick/--only/--peers)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.cap_seconds is None:
        args.cap_seconds = 20.0 if args.quick else 30.0
    return args


def select_workloads(only: str, quick: bool) -> list[Workload]:
    chosen = workloads(quick)
    if not only:
        return chosen
    wanted = {key.strip().upper() for key in only.split(",") if key.strip()}
    known = {w.key.upper() for w in chosen} | {"W5"}
    if unknown := wanted - known:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return [w for w in chosen if w.key.upper() in wanted or w.key.split("-")[0] in wanted]


def select_contenders(peers: str) -> list[Contender]:
    if not peers:
        return list(CONTENDERS.values())
    wanted = {name.strip() for name in peers.split(",") if name.strip()} | set(ALWAYS)
    if unknown := wanted - set(CONTENDERS):
        raise SystemExit(f"unknown contender(s): {', '.join(sorted(unknown))}")
    return [c for c in CONTENDERS.values() if c.name in wanted]


# --------------------------------------------------------------------------- #
# Interpreters: the project's venv, and a Python 3.12 venv for pyarallel
# --------------------------------------------------------------------------- #


def find_python312(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        versions = sorted(Path(root, "versions").glob("3.12.*/bin/python"))
        if versions:
            return str(versions[-1])
    return shutil.which("python3.12")


def py312_ready(python: Path) -> bool:
    probe = "import pyarallel, aiohttp, uvloop; assert pyarallel.__version__ == '0.11.0'"
    return (
        python.exists()
        and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0
    )


def ensure_py312_venv(explicit: str | None) -> tuple[str | None, str]:
    """Create benchmarks/.venv-py312 with pyarallel once; return its python or why not."""
    python = PY312_VENV / "bin" / "python"
    if py312_ready(python):
        return str(python), ""
    base = find_python312(explicit)
    if base is None:
        return None, "unavailable: no Python 3.12 found (pass --py312)"
    print(f"setting up {PY312_VENV.relative_to(PROJECT_ROOT)} with {base} ...", flush=True)
    steps = [
        [base, "-m", "venv", "--clear", str(PY312_VENV)],
        [str(python), "-m", "pip", "install", "-q", *PY312_PACKAGES],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return None, f"unavailable: `{' '.join(step[:4])} ...` failed"
    if not py312_ready(python):
        return None, "unavailable: pyarallel 0.11.0 does not import in the py312 venv"
    return str(python), ""


def interpreters(contenders: Sequence[Contender], explicit_py312: str | None) -> Interpreters:
    result = Interpreters(project=sys.executable, py312=None)
    if any(c.python == "py312" for c in contenders):
        result.py312, result.py312_problem = ensure_py312_venv(explicit_py312)
    return result


# --------------------------------------------------------------------------- #
# The local HTTP server of W4 and W5-W4
# --------------------------------------------------------------------------- #


@contextmanager
def http_server(needed: bool) -> Iterator[str | None]:
    """Run benchmarks/server.py on 127.0.0.1 for the whole run; yield its URL."""
    if not needed:
        yield None
        return
    with bench_server() as (base, _pid):
        yield f"{base}/"


# --------------------------------------------------------------------------- #
# Planning and running measurements
# --------------------------------------------------------------------------- #


def jobs_for(workload: Workload, contender: Contender) -> list[Job]:
    """The measurements of one contender on one workload in one round."""
    if workload.metric != "rss":
        return [Job(workload, contender, workload.n)]
    return [Job(workload, contender, None)] + [Job(workload, contender, n) for n in workload.sizes]


def predicted_seconds(job: Job, results: Results) -> float | None:
    """How long a W3 job should take, from this contender's W1/W3 speed earlier in this run."""
    if job.workload.metric != "rss" or job.n is None:
        return None
    rates = []
    for (workload_key, name, size), cell in results.cells.items():
        elapsed = cell.median_elapsed()
        if name == job.contender.name and size != "baseline" and elapsed:
            if workload_key in ("W1", "W3"):
                rates.append(int(size) / elapsed)
    return job.n / max(rates) if rates else None


def skip_reason(job: Job, results: Results, interp: Interpreters, cap: float) -> str:
    w, c = job.workload, job.contender
    if c.name in w.skip:
        return w.skip[c.name]
    if interp.for_contender(c) is None:
        return f"{interp.py312_problem}"
    earlier = results.get(w.key, c.name, job.n)
    if earlier is not None and earlier.skipped:
        return earlier.skipped
    if earlier is not None and any(s.error for s in earlier.samples):
        return ""  # keep measuring: the check column shows every error
    if w.cap_materializing and c.holds_all and job.n is not None and job.n > w.sizes[0]:
        return f"capped: {c.holds_all}"
    guess = predicted_seconds(job, results)
    if c.name not in NEVER_CAPPED and guess is not None and guess > cap:
        return f"skipped: ~{guess:.0f} s predicted > {cap:.0f} s cap"
    return ""


def command(job: Job, python: str, url: str | None) -> list[str]:
    w = job.workload
    cmd = [python, str(HERE / "measure.py"), job.contender.name]
    cmd += ["--kind", w.kind, "--workers", str(w.workers), "--loop", w.loop]
    cmd += ["--n", str(job.n or 0), "--delay", str(w.delay)]
    if w.kind == "http" and url:
        cmd += ["--url", url]
    if job.n is None:
        cmd.append("--baseline")
    return cmd


def child_env(contender: Contender) -> dict[str, str]:
    """The py312 venv does not install the project: it imports it from src/."""
    env = dict(os.environ)
    if contender.python == "py312":
        env["PYTHONPATH"] = str(PROJECT_ROOT / "src")
    return env


def run_job(job: Job, python: str, url: str | None, timeout: float) -> Sample:
    """Run one measurement in a fresh subprocess and parse the JSON line it prints."""
    try:
        done = subprocess.run(
            command(job, python, url),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PROJECT_ROOT,
            env=child_env(job.contender),
        )
    except subprocess.TimeoutExpired:
        return Sample(error=f"timeout after {timeout:.0f} s")
    report = read_report(done)  # or {"error": ...}
    fields = {f.name for f in dataclasses.fields(Sample)}
    return Sample(**{k: v for k, v in report.items() if k in fields})


def describe(job: Job, sample: Sample) -> str:
    if sample.error:
        return f"ERROR {sample.error}"
    if job.n is None:
        return f"baseline rss {sample.maxrss_kb / 1024:.1f} MB" if sample.maxrss_kb else "?"
    assert sample.elapsed is not None
    text = f"{sample.elapsed:8.3f} s"
    if job.workload.metric == "rss" and sample.maxrss_kb:
        text += f"  rss {sample.maxrss_kb / 1024:.1f} MB"
    if sample.count != job.n:
        text += f"  COUNT {sample.count} != {job.n}"
    return text


def run_all(
    args: argparse.Namespace,
    chosen: Sequence[Workload],
    contenders: Sequence[Contender],
    interp: Interpreters,
    url: str | None,
) -> Results:
    results = Results()
    for round_no in range(1, args.rounds + 1):
        for w in chosen:
            if w.metric == "rss" and round_no > args.rss_rounds:
                continue
            for c in contenders:
                for job in jobs_for(w, c):
                    cell = results.cell(w.key, c.name, job.n)
                    reason = skip_reason(job, results, interp, args.cap_seconds)
                    if reason:
                        cell.skipped = reason
                        continue
                    python = interp.for_contender(c)
                    assert python is not None
                    sample = run_job(job, python, url, args.timeout)
                    cell.samples.append(sample)
                    size = "baseline" if job.n is None else f"{job.n:,}"
                    print(
                        f"[round {round_no}/{args.rounds}] {w.key:6} {c.name:20} {size:>11}  "
                        f"{describe(job, sample)}",
                        flush=True,
                    )
    return results


# --------------------------------------------------------------------------- #
# Setup description and output
# --------------------------------------------------------------------------- #


def python_version(python: str) -> str:
    code = "import platform; print(platform.python_version())"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def setup_lines(
    args: argparse.Namespace, chosen: Sequence[Workload], interp: Interpreters
) -> list[str]:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    if interp.py312:
        py312 = f"{python_version(interp.py312)} ({interp.py312})"
    else:
        py312 = interp.py312_problem or "not needed"
    versions = [f"parallelize {version_of('parallelize')}"]
    versions += [f"{package} {version_of(package)}" for package in PEER_PACKAGES]
    if interp.py312:
        in_py312 = ", ".join(f"{p} {version_of(p, interp.py312)}" for p in PY312_REPORTED)
        versions.append(f"py312 venv: {in_py312}")
    rss_rounds = min(args.rss_rounds, args.rounds)
    lines = [
        f"project: {project_commit()}",
        f"python {platform.python_version()} ({sys.executable})",
        f"python for the py312 contenders: {py312}",
        f"platform {platform.platform()}, cpu count {cpus} (usable {usable})",
        f"loops: asyncio's default ({default_loop_name()}); uvloop {version_of('uvloop')} in W5",
        f"rounds {args.rounds} (W3: {rss_rounds}), interleaved, one fresh subprocess each, gc on",
        f"W3 cap: skip what is predicted > {args.cap_seconds:.0f} s, never {', '.join(NEVER_CAPPED)}",
        "versions: " + ", ".join(versions),
        "workloads:",
    ]
    for w in chosen:
        sizes = " and ".join(f"{n:,}" for n in w.sizes)
        lines.append(f"  {w.key:6} n={sizes}, numworkers={w.workers}, loop={w.loop}: {w.title}")
    return lines


def project_commit() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    git = ["git", "-C", str(PROJECT_ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True)
    return f"commit {head.stdout.strip()}" + (" + uncommitted src/" if dirty.stdout.strip() else "")


def default_loop_name() -> str:
    import asyncio  # noqa: PLC0415 - only to name the default loop class

    loop = asyncio.new_event_loop()
    loop.close()
    return type(loop).__name__


def write_markdown(path: Path, setup: list[str], tables: list[Table], minutes: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "## Benchmark results",
        "",
        f"Command: `{' '.join(['python benchmarks/run.py', *sys.argv[1:]])}` ({minutes:.1f} min)",
        "",
        "```",
        *setup,
        "```",
        "",
    ]
    for table in tables:
        parts += [render_markdown(table), ""]
    path.write_text("\n".join(parts))


def write_json(path: Path, results: Results) -> None:
    raw = {
        " / ".join(key): {
            "skipped": cell.skipped,
            "samples": [dataclasses.asdict(s) for s in cell.samples],
        }
        for key, cell in results.cells.items()
    }
    path.write_text(json.dumps(raw, indent=1))


def read_json(path: Path) -> Results:
    results = Results()
    for key, raw in json.loads(path.read_text()).items():
        workload, name, size = key.split(" / ")
        samples = [Sample(**sample) for sample in raw["samples"]]
        results.cells[workload, name, size] = Cell(samples, raw["skipped"])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = select_workloads(args.only, args.quick)
    contenders = select_contenders(args.peers)
    if args.tables_from:  # only re-render the tables of an earlier run
        results = read_json(args.tables_from)
        for w in chosen:
            print(render_text(build_table(w, contenders, results)), end="\n\n")
        return 0

    interp = interpreters(contenders, args.py312)
    setup = setup_lines(args, chosen, interp)
    print("\n".join(setup), "", sep="\n", flush=True)

    started = time.perf_counter()
    with http_server(any(w.kind == "http" for w in chosen)) as url:
        results = run_all(args, chosen, contenders, interp, url)
    minutes = (time.perf_counter() - started) / 60

    tables = [build_table(w, contenders, results) for w in chosen]
    print()
    for table in tables:
        print(render_text(table), end="\n\n")
    print(f"total time {minutes:.1f} min")
    write_markdown(args.out, setup, tables, minutes)
    write_json(args.out.with_suffix(".json"), results)
    print(f"markdown: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
