"""What the standalone benchmarks share: setup lines, measuring children, statistics, tables.

journal.py, observe.py and pipeline.py (and, for a few helpers, run.py and
adaptive.py) import this module by its bare name, ``import _harness``: a script
run as ``python benchmarks/X.py`` has ``benchmarks/`` first on ``sys.path``, and
so have the children each re-invokes as a script. pipeline.py's process-pool
children import ``pipeline`` (and through it this module) from ``PYTHONPATH``,
which its parent points at ``benchmarks/``. So: the standard library only, nothing
slow at import time.

The samples these helpers read are the children's JSON reports, one dict per
measurement, with ``elapsed`` in seconds and, added by the parent, ``problems``
(a list of strings; empty when the sample is good).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent

T = TypeVar("T")
Sample = dict[str, Any]


# --------------------------------------------------------------------------- #
# The setup block: what was measured, on what
# --------------------------------------------------------------------------- #


def git(*argv: str) -> str:
    """``git -C <project> *argv``'s output, stripped; empty if git fails."""
    done = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), *argv], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def src_state() -> str:
    """The commit, and a fingerprint of uncommitted changes under src/ (if any)."""
    head = git("rev-parse", "--short", "HEAD") or "not a git checkout"
    if not git("status", "--porcelain", "src"):
        return f"commit {head}, src/ clean"
    diff = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "diff", "HEAD", "--", "src"],
        capture_output=True,
        check=False,
    ).stdout
    files = len(git("status", "--porcelain", "src").splitlines())
    fingerprint = hashlib.sha1(diff).hexdigest()[:10]  # noqa: S324 - a fingerprint
    return f"commit {head} + uncommitted src/ ({files} files, diff sha1 {fingerprint})"


def warn_if_src_changed(setup: list[str]) -> None:
    """Append a warning to ``setup`` (whose first line is ``project: <src_state()>``,
    taken at the start) if src/ is not as it was then."""
    after = src_state()
    if after != setup[0].removeprefix("project: "):
        setup.append(f"WARNING: src/ changed during the run; at the end: {after}")


def imported_from() -> str:
    """Where the children import parallelize from (PYTHONPATH can point elsewhere)."""
    import parallelize  # noqa: PLC0415

    where = Path(parallelize.__file__).resolve().parent
    inside = where.is_relative_to(PROJECT_ROOT / "src")
    return f"{where}" + ("" if inside else "  (NOT this checkout's src/: commit above n/a)")


def version_of(package: str, python: str | None = None) -> str:
    """The installed version of ``package``: here, or in the interpreter ``python``."""
    if python is not None:
        code = f"import importlib.metadata as m; print(m.version({package!r}))"
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
        return done.stdout.strip() or "?"
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine() -> str:
    """The platform, the CPU count and the CPU model."""
    return f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu_model()})"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def filesystem_of(path: Path) -> str:
    """The file system ``path`` is on (Linux: the longest mount point above it), or "?"."""
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, f"{fields[2]} ({fields[0]} on {point})"
    return kind


# --------------------------------------------------------------------------- #
# CPU time (Linux's /proc; None elsewhere)
# --------------------------------------------------------------------------- #


def machine_cpu() -> float | None:
    """CPU seconds all processes of the machine used so far (Linux), else None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # without guest time


def process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux), else None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- #
# Measuring children: a fresh subprocess per measurement, JSON in and out
# --------------------------------------------------------------------------- #


def child_cmd(script: str | Path, spec: dict[str, Any]) -> list[str]:
    """The command that re-invokes ``script`` to run the measurement ``spec``."""
    return [sys.executable, str(Path(script).resolve()), "--child", json.dumps(spec)]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, with ``extra``, for children that write .pyc files."""
    env = os.environ | extra
    # The children write .pyc files and use them: the first child of a run compiles
    # the package, none of the measured ones does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def read_report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object on a child's last line of output, or ``{"error": ...}`` saying
    why there is none (its exit status and the last line of its stderr)."""
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:150]}"}
    return report


def run_measurement(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one measuring child (seconds ``timeout`` at most; ``env`` None: this one's),
    and return its report (see ``read_report``), or ``{"error": "timeout ..."}``."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    return read_report(done)


@contextmanager
def errors_into(report: dict[str, Any]) -> Iterator[None]:
    """In a child: an exception from the block goes to ``report["error"]`` (its
    traceback to stderr), so that the child still prints its report."""
    try:
        yield
    except BaseException as exc:
        traceback.print_exc()
        report["error"] = f"{type(exc).__name__}: {exc}"[:200]


def rotated(plan: Sequence[T], round_no: int) -> list[T]:
    """``plan`` rotated left by ``round_no``: round after round a different measurement
    runs first, so that slow drift of a noisy machine spreads over all of them."""
    shift = round_no % len(plan)
    return [*plan[shift:], *plan[:shift]]


def remove_sqlite(path: str, *more_suffixes: str) -> None:
    """Remove the SQLite file ``path``, its companions (WAL, shared memory, rollback
    journal), and ``path`` + each of ``more_suffixes``, where they exist."""
    for suffix in ("", "-wal", "-shm", "-journal", *more_suffixes):
        Path(path + suffix).unlink(missing_ok=True)


@contextmanager
def bench_server() -> Iterator[tuple[str, int]]:
    """benchmarks/server.py (uvloop) on 127.0.0.1 for a whole run: its base URL (no
    trailing slash) and its pid."""
    server = subprocess.Popen(
        [sys.executable, str(HERE / "server.py"), "--uvloop", "--max-seconds", "7200"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        assert server.stdin is not None
        server.stdin.close()  # the server exits when its stdin closes
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait()


# --------------------------------------------------------------------------- #
# Sample statistics
# --------------------------------------------------------------------------- #


def good(samples: list[Sample]) -> list[Sample]:
    """The samples without problems."""
    return [s for s in samples if not s.get("problems")]


def median_of(samples: list[Sample], field: str) -> float | None:
    """The median of ``field`` over the good samples that have it, or None."""
    values = [s[field] for s in good(samples) if s.get(field) is not None]
    return statistics.median(values) if values else None


def spread(samples: list[Sample]) -> str:
    """(max - min) / median of the good samples' elapsed times, or "-" below two."""
    times = [s["elapsed"] for s in good(samples)]
    if len(times) < 2:
        return "-"
    return f"{(max(times) - min(times)) / statistics.median(times):.0%}"


def check(samples: list[Sample], width: int = 80) -> str:
    """ "ok", or how many samples are bad and the first one's problems (``width``
    characters of them at most)."""
    bad = [s for s in samples if s.get("problems")]
    if not bad:
        return "ok"
    return f"{len(bad)}/{len(samples)} bad: " + "; ".join(bad[0]["problems"])[:width]


def paired_ratio(a: list[Sample], b: list[Sample]) -> float | None:
    """The median over rounds of elapsed(a) / elapsed(b), the same round's samples
    paired; rounds where either has problems are left out. None if none is left."""
    pairs = [
        x["elapsed"] / y["elapsed"]
        for x, y in zip(a, b, strict=True)
        if not x.get("problems") and not y.get("problems")
    ]
    return statistics.median(pairs) if pairs else None


# --------------------------------------------------------------------------- #
# Tables and the report
# --------------------------------------------------------------------------- #


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """``value`` formatted by ``spec``, then ``suffix``; "-" for None."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def markdown(
    header: list[str], rows: list[list[str]], right_from: int = 1, check_column: bool = True
) -> str:
    """A markdown table; columns from ``right_from`` on aligned right, except the last
    if it is a check column."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    if check_column:
        align[-1] = "---"
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    out: Path,
    title: str,
    script: str,
    argv: Sequence[str] | None,
    minutes: float,
    setup: list[str],
    tables: list[str],
    raw: Any,
    json_indent: int | None = 1,
) -> None:
    """Print the report (a title, the command, the setup block, the tables) and write
    it to the markdown file ``out``, with ``raw`` (every sample) beside it as JSON.

    The command is ``python benchmarks/<script>`` and ``argv``, else this process's
    arguments.
    """
    command = " ".join([f"python benchmarks/{script}", *(argv or sys.argv[1:])])
    text = "\n".join(
        [
            f"## {title}",
            "",
            f"Command: `{command}` ({minutes:.1f} min)",
            "",
            "```",
            *setup,
            "```",
            "",
            "\n\n".join(tables),
            "",
        ]
    )
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(raw, indent=json_indent))
    print(f"markdown: {out}")
