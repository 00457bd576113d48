"""Adaptive concurrency against a service with a hidden capacity K.

    .venv/bin/python benchmarks/adaptive.py [--quick] [--k 64] [--ms 40] [--plot PATH]

The local test server (``python -m parallelize.testing --capacity K --ms MS``, its own
process) serves ``/capacity/{n}``: up to K requests at once in MS milliseconds each,
the next K wait in line (latency grows), and a request arriving while 2K are in the
service gets a 503 at once. ``/capacity/set?k=...`` changes K while it runs. The
best one can do is K * 1000 / MS successful requests per second.

Every contender runs in a fresh client subprocess with one ``aiohttp.ClientSession``
(``TCPConnector(limit=0)``: the connector never caps concurrency) and
``parallelize(fetch, urls, numworkers, timeout=2.0, on_error="yield")`` over an
endless generator of URLs, stopped at the end of the run. A 503 is a returned
response; timeouts and other exceptions arrive as ``Failure``.

- Scenario A (steady, K the whole time): fixed 1000, fixed 10, a sweep of fixed
  numworkers (the best of them is "best fixed in hindsight"), and numworkers 1000 with
  ``adaptive=AdaptiveLimit()``.
- Scenario B (step): K for a phase, then K/4, then K again: fixed 1000, fixed 10,
  fixed K, fixed 3K/8, adaptive. The parent process changes K on the clock the child
  starts by (an overloaded client would send its own change late).
- Scenario C (the cost of re-measuring the no-load latency): K the whole time, fixed
  3K/2 (where the adaptive limit settles, never probing) and
  ``AdaptiveLimit(probe_interval=P)`` (default 5 s, over 16 s: three probes), and
  with ``--baseline-src DIR`` the same adaptive run against the library sources in
  DIR (say ``git archive <commit> src | tar -x -C DIR``) for a before/after. Goodput
  per 0.5 s window from 3 s on: the deepest window's dip under the run's median
  window, and the goodput lost overall against the median window.

``fetch`` returns the response (after reading its body), as the README advises:
the default ``overload_of`` reads the 503 from its ``status``. (An action returning
the bare int would hide it; ``overload=lambda o: o == 503`` would then be needed.)

A background task samples in-flight requests (and the adaptive limit) every 50 ms;
every completed request lands in a 50 ms bucket (200 / 503 / other status / timeout /
error, and its latency). The parent prints a setup block and markdown tables (also
written to ``benchmarks/out/adaptive.md``, raw samples to ``adaptive.json``) and
plots scenario B to ``docs/adaptive.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from _harness import machine_cpu, process_cpu

ROOT = Path(__file__).resolve().parent.parent
BUCKET = 0.05  # seconds: the sampling period and the width of a result bucket
TIMEOUT = 2.0  # seconds: parallelize(..., timeout=) of every contender
SWEEP = (16, 32, 48, 64, 80, 96, 128, 160, 192, 256)
QUICK_SWEEP = (32, 64, 96, 128, 192)
KINDS = ("ok", "busy", "other", "timeout", "error")  # 200, 503, other status, Failure...


# -- the client: one run in a fresh subprocess ------------------------------------------


async def measure(spec: dict) -> dict:
    import aiohttp  # noqa: PLC0415

    from parallelize import Failure, parallelize  # noqa: PLC0415

    base = spec["base"]
    duration = spec["duration"]
    nbuckets = math.ceil(duration / BUCKET)
    counts = {kind: [0] * nbuckets for kind in KINDS}
    lat_sum = [0.0] * nbuckets  # seconds, every completed response (200 and 503)
    lat_n = [0] * nbuckets
    lat200_sum = [0.0] * nbuckets
    # [t, in flight, limit, limit's in_flight, rtt, min_rtt, overloads, probes]
    samples: list[list] = []
    errors: dict[str, int] = {}
    in_flight = 0
    peak = 0
    t0 = time.monotonic()

    limit = None
    options: dict = {"timeout": TIMEOUT, "on_error": "yield"}
    if spec["adaptive"]:
        from parallelize import AdaptiveLimit  # noqa: PLC0415

        limit = AdaptiveLimit(**spec.get("adaptive_options", {}))
        options["adaptive"] = limit

    def bucket(t: float) -> int | None:
        i = int((t - t0) / BUCKET)
        return i if 0 <= i < nbuckets else None  # late ones (after the end) are dropped

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> aiohttp.ClientResponse:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            started = time.monotonic()
            try:
                async with session.get(url) as resp:
                    await resp.read()
                status = resp.status
            finally:
                in_flight -= 1
            done = time.monotonic()
            i = bucket(done)
            if i is not None:
                kind = "ok" if status == 200 else "busy" if status == 503 else "other"
                counts[kind][i] += 1
                lat_sum[i] += done - started
                lat_n[i] += 1
                if status == 200:
                    lat200_sum[i] += done - started
            return resp  # overload_of reads a 503 from its status

        async def sample() -> None:
            n = 0
            while True:
                n += 1
                await asyncio.sleep(max(0.0, t0 + n * BUCKET - time.monotonic()))
                row = [round(time.monotonic() - t0, 4), in_flight]
                if limit is not None:
                    s = limit.statistics()
                    row += [s.limit, s.in_flight, s.rtt, s.min_rtt, s.overloads, s.probes]
                samples.append(row)

        def urls():
            i = 0
            while time.monotonic() < end:
                yield f"{base}/capacity/{i}"
                i += 1

        def items():  # scenario D: n items whose latency is their own, no capacity
            n = spec["items"]
            draws = random.Random(25)
            for i in range(n):
                ms = 10 + i * 40 // n if spec["shape"] == "rising" else draws.randint(10, 49)
                yield f"{base}/slow/{ms}"

        # Start at the instant agreed with the parent, which changes k on this clock
        # (CLOCK_MONOTONIC is system-wide on Linux); an overloaded client loop would
        # send its own /capacity/set late.
        await asyncio.sleep(max(0.0, spec["start_at"] - time.monotonic()))
        t0 = time.monotonic()
        end = t0 + duration
        cpu0, server_cpu0 = time.process_time(), process_cpu(spec["server_pid"])
        machine0 = machine_cpu()
        async with asyncio.TaskGroup() as tg:
            sampler = tg.create_task(sample())
            try:
                source = items() if spec.get("shape") else urls()
                run = parallelize(fetch, source, spec["workers"], **options)
                async with run:
                    async for out in run:
                        now = time.monotonic()
                        if isinstance(out, Failure):
                            i = bucket(now)
                            kind = "timeout" if isinstance(out.exception, TimeoutError) else "error"
                            if i is not None:
                                counts[kind][i] += 1
                            if kind == "error":
                                name = type(out.exception).__name__
                                errors[name] = errors.get(name, 0) + 1
                        if now >= end:
                            break
            finally:
                sampler.cancel()
        elapsed = time.monotonic() - t0
        cpu, server_cpu = time.process_time() - cpu0, process_cpu(spec["server_pid"])
        machine = machine_cpu()
    server_pct = (
        None
        if server_cpu is None or server_cpu0 is None
        else 100 * (server_cpu - server_cpu0) / elapsed
    )
    final = None
    if limit is not None:
        s = limit.statistics()
        final = {"repr": repr(s), "probes": s.probes}
    import parallelize as library  # noqa: PLC0415 - where it came from (--baseline-src)

    return {
        "duration": duration,
        "elapsed": elapsed,
        "counts": counts,
        "lat_sum": lat_sum,
        "lat_n": lat_n,
        "lat200_sum": lat200_sum,
        "samples": samples,
        "t0": t0,
        "peak": peak,
        "errors": errors,
        "final": final,
        "client_cpu": 100 * cpu / elapsed,
        "server_cpu": server_pct,
        # Everything else on the machine (the parent sleeps): other work skews a run.
        "other_cpu": (
            None
            if server_pct is None or machine is None or machine0 is None
            else max(0.0, 100 * (machine - machine0 - cpu) / elapsed - server_pct)
        ),
        "src": source_digest(Path(library.__file__).parent),
        "src_path": str(Path(library.__file__).parent),
    }


def child(spec_json: str) -> None:
    result = asyncio.run(measure(json.loads(spec_json)))
    print(json.dumps(result))


# -- the parent: server, runs, tables, plot ---------------------------------------------


def set_k(base: str, k: int) -> None:
    with urllib.request.urlopen(f"{base}/capacity/set?k={k}", timeout=5) as resp:
        resp.read()


def wait_idle(most: float, period: float = 0.5, threshold: float = 0.25) -> float:
    """Let the server drain, then wait (up to ``most`` s) until the machine is idle.

    Idle: under ``threshold`` cores busy over ``period`` seconds. Other work on the
    machine (tests, builds) shares the 2 cores and skews a run. Return the seconds waited.
    """
    started = time.monotonic()
    while True:
        before = machine_cpu()
        time.sleep(period)
        after = machine_cpu()
        if before is None or after is None or (after - before) / period < threshold:
            break
        if time.monotonic() - started >= most:
            break
    return time.monotonic() - started


def run_one(base: str, server_pid: int, k: int, name: str, spec: dict, idle_wait: float) -> dict:
    """Reset the server to ``k``, let its line drain, run one contender; return its result."""
    set_k(base, k)
    waited = wait_idle(idle_wait)
    spec = {"base": base, "server_pid": server_pid, "steps": [], **spec}
    spec["start_at"] = time.monotonic() + 1.0  # after the child's imports (~0.5 s)
    ks: list[list] = []  # [seconds on the parent's clock from start_at, k] once confirmed
    # stderr to a file: a full pipe would block a child that logs a lot.
    with tempfile.TemporaryFile("w+") as err:
        env = None
        if spec.get("src_dir"):  # another version of the library, first on the path
            env = {**os.environ, "PYTHONPATH": spec["src_dir"]}
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        try:
            for at, k_new in spec["steps"]:
                time.sleep(max(0.0, spec["start_at"] + at - time.monotonic()))
                set_k(base, k_new)
                ks.append([time.monotonic() - spec["start_at"], k_new])
            stdout, _ = proc.communicate(timeout=spec["duration"] + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or ["?"]
        print(f"  {name}: FAILED (exit {proc.returncode}): {tail[0]}", flush=True)
        return {"name": name, "failed": f"exit {proc.returncode}: {tail[0]}", **spec}
    result = json.loads(stdout)
    result.update(name=name, **spec)
    late = result["t0"] - spec["start_at"]  # the child started late: shift the changes
    result["ks"] = [[round(t - late, 4), kk] for t, kk in ks]
    result["start_late"] = late
    result["waited_idle"] = waited
    if stderr.strip():
        result["stderr_tail"] = stderr.strip().splitlines()[-3:]
    whole = window(result, 0, result["duration"])
    print(
        f"  {name:14} {whole['goodput']:7,.0f} 200/s  503 {whole['busy_pct']:5.1f}%  "
        f"timeouts {whole['timeout_pct']:4.1f}%  errors {whole['error_pct']:4.1f}%  "
        f"peak in flight {result['peak']}  CPU client {result['client_cpu']:.0f}% "
        f"server {fmt(result['server_cpu'])}% other {fmt(result['other_cpu'])}% "
        f"(waited {waited:.1f} s for an idle machine)",
        flush=True,
    )
    return result


def window(result: dict, a: float, b: float) -> dict:
    """Sums and rates of the buckets in [a, b) seconds."""
    i, j = round(a / BUCKET), round(b / BUCKET)
    sums = {kind: sum(result["counts"][kind][i:j]) for kind in KINDS}
    total = sum(sums.values())
    lat_n = sum(result["lat_n"][i:j])
    pct = lambda n: 100 * n / total if total else 0.0  # noqa: E731
    inside = [s for s in result["samples"] if a <= s[0] < b]
    limits = [s[2] for s in inside if len(s) > 2]
    return {
        "goodput": sums["ok"] / (b - a),
        "requests": total / (b - a),
        "total": total,
        "busy_pct": pct(sums["busy"]),
        "timeout_pct": pct(sums["timeout"]),
        "error_pct": pct(sums["error"] + sums["other"]),
        "bad_pct": pct(sums["busy"] + sums["timeout"] + sums["error"] + sums["other"]),
        "latency_ms": 1000 * sum(result["lat_sum"][i:j]) / lat_n if lat_n else float("nan"),
        "latency200_ms": (
            1000 * sum(result["lat200_sum"][i:j]) / sums["ok"] if sums["ok"] else float("nan")
        ),
        "in_flight": sum(s[1] for s in inside) / len(inside) if inside else float("nan"),
        "limit": sum(limits) / len(limits) if limits else None,
    }


def settle(
    result: dict, start: float, end: float, lo: int, hi: int, hold: float | None
) -> float | None:
    """Seconds from ``start`` until the limit is in [lo, hi] and stays there.

    ``hold=None``: it stays until ``end``; else for at least ``hold`` seconds (before
    ``end``). None if that never happens.
    """
    rows = [(s[0], s[2]) for s in result["samples"] if start <= s[0] < end and len(s) > 2]
    for n, (t, _) in enumerate(rows):
        stop = end if hold is None else t + hold
        if stop > end + BUCKET:
            return None
        if all(lo <= v <= hi for u, v in rows[n:] if u <= stop):
            return t - start
    return None


def in_range(result: dict, lo: int, hi: int) -> tuple[float | None, float | None]:
    """When the limit first was in [lo, hi], and the share of the samples in it since."""
    rows = [s[2] for s in result["samples"] if s[0] < result["duration"]]
    first = next((n for n, v in enumerate(rows) if lo <= v <= hi), None)
    if first is None:
        return None, None
    inside = sum(lo <= v <= hi for v in rows[first:])
    return result["samples"][first][0], inside / len(rows[first:])


def per_second_limits(result: dict) -> list[float]:
    seconds: dict[int, list[int]] = {}
    for s in result["samples"]:
        seconds.setdefault(int(s[0]), []).append(s[2])
    return [sum(v) / len(v) for _, v in sorted(seconds.items())]


def fmt(x: float | None, spec: str = ".0f", none: str = "-") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def secs(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f} s"


def cpu(r: dict) -> str:
    return f"{r['client_cpu']:.0f} / {fmt(r['server_cpu'])} / {fmt(r.get('other_cpu'))}"


def source_digest(src: Path = ROOT / "src" / "parallelize") -> str:
    """A short hash of the library's sources as run (the work tree may be uncommitted)."""
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        digest.update(str(path.relative_to(src)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


ADAPTIVE = {
    "adaptive": "AdaptiveLimit(): numworkers 1000, the defaults",
    "probing": "scenario C: AdaptiveLimit(probe_interval=P), this tree",
    "probing-baseline": "scenario C: the same, the --baseline-src tree",
}
C_FROM = 3.0  # seconds: scenario C's windows start once the start phase is long over
C_WINDOW = 0.5  # seconds: scenario C's goodput windows


def c_windows(result: dict) -> list[float]:
    """Goodput (200/s) in each C_WINDOW window of a run, from C_FROM on."""
    n = int((result["duration"] - C_FROM) / C_WINDOW + 1e-9)
    return [
        window(result, C_FROM + i * C_WINDOW, C_FROM + (i + 1) * C_WINDOW)["goodput"]
        for i in range(n)
    ]


def report_c(data: dict, out: Callable[[str], None], verdict: Callable[..., None]) -> None:
    """Scenario C: goodput per window, the deepest dip and the cost of the probes."""
    args = data["args"]
    runs = data.get("C", [])
    out(
        f"## C. The cost of re-measuring the no-load latency: K={args['k']}, "
        f"{args['ms']:g} ms, a probe every {args['probe_interval']:g} s "
        f"(+-10% jitter), {args['probe_seconds']:g} s per run\n"
    )
    out(
        f"Goodput in each {C_WINDOW:g} s window from {C_FROM:g} s on. *Steady*: the median "
        f"window. *Deepest dip*: how far the lowest window falls under the median. *Cost*: "
        f"the goodput lost over all windows against the median, and against the fixed "
        f"run (which never probes; its own dip and cost are the measure's noise).\n"
    )
    out(
        "| contender | source | probes | steady 200/s | deepest window 200/s | deepest dip "
        "| mean 200/s | cost vs steady | cost vs fixed | 503 % | CPU % client / server / other |"
    )
    out("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    fixed = next((r for r in runs if not r["adaptive"] and "failed" not in r), None)
    fixed_mean = None
    if fixed is not None:
        fw = c_windows(fixed)
        fixed_mean = sum(fw) / len(fw)
    for r in runs:
        if "failed" in r:
            out(f"| {r['name']} | FAILED: {r['failed']} |")
            continue
        ws = c_windows(r)
        steady = sorted(ws)[len(ws) // 2]
        mean = sum(ws) / len(ws)
        dip = 1 - min(ws) / steady
        cost = 1 - mean / steady
        vs_fixed = None if fixed_mean is None else 1 - mean / fixed_mean
        probes = (r.get("final") or {}).get("probes", "-")
        w = window(r, 0, r["duration"])
        out(
            f"| {r['name']} | {r.get('src_dir') or 'this tree'} | {probes} | {steady:,.0f} "
            f"| {min(ws):,.0f} | {100 * dip:.1f}% | {mean:,.0f} | {100 * cost:.2f}% "
            f"| {fmt(None if vs_fixed is None else 100 * vs_fixed, '.2f')}% "
            f"| {w['busy_pct']:.2f} | {cpu(r)} |"
        )
        if r["adaptive"]:
            verdict(
                f"C: no {C_WINDOW:g} s window more than 10% under the steady goodput",
                r["name"],
                f"{100 * dip:.1f}% ({min(ws):,.0f} vs {steady:,.0f})",
                dip <= 0.10,
            )
            verdict(
                "C: goodput cost of the probes < 1%", r["name"], f"{100 * cost:.2f}%", cost < 0.01
            )
    out("")
    for r in runs:
        if "failed" not in r:
            series = ", ".join(f"{v:,.0f}" for v in c_windows(r))
            out(f"{r['name']}: 200/s per {C_WINDOW:g} s window from {C_FROM:g} s: {series}\n")


D_FIXED = (10, 50, 200)  # scenario D's fixed numworkers
D_ADAPTIVE = (50, 200)  # scenario D's adaptive runs: numworkers, the limit's maximum
D_CAP = 60.0  # seconds: scenario D's runs end with their items, or at this


def report_d(data: dict, out: Callable[[str], None], verdict: Callable[..., None]) -> None:
    """Scenario D: items per second of each run, against the fixed run at its numworkers."""
    runs = data.get("D", [])
    n = data["args"]["items"]
    out(
        f"## D. Latency that varies by item, no capacity: {n:,} GETs of /slow/{{ms}}, "
        f"ms = 10 + 40 i / n (rising) or 10-49 at random\n"
    )
    out(
        "Items per second over the whole run (all items). The target: an adaptive run "
        "gets at least 90% of the fixed run with its numworkers (the limit's maximum).\n"
    )
    out(
        "| shape | contender | source | items/s | % of fixed, same numworkers | mean limit | final statistics |"
    )
    out("| --- | --- | --- | ---: | ---: | ---: | --- |")
    rate = {r["name"]: n / r["elapsed"] for r in runs if "failed" not in r}
    for r in runs:
        if "failed" in r:
            out(f"| {r['shape']} | {r['name']} | FAILED: {r['failed']} |")
            continue
        limits = [s[2] for s in r["samples"] if len(s) > 2]
        share = ""
        if r["adaptive"]:
            fixed = rate.get(f"{r['shape']} fixed-{r['workers']}")
            if fixed:
                share = f"{100 * rate[r['name']] / fixed:.0f}%"
                verdict(
                    "D: items/s >= 90% of fixed at the same numworkers",
                    r["name"],
                    f"{rate[r['name']]:,.0f} = {share} of {fixed:,.0f}",
                    rate[r["name"]] >= 0.9 * fixed,
                )
        out(
            f"| {r['shape']} | {r['name']} | {r.get('src_dir') or 'this tree'} "
            f"| {rate[r['name']]:,.0f} | {share} "
            f"| {fmt(sum(limits) / len(limits) if limits else None)} "
            f"| {'`' + r['final']['repr'] + '`' if r.get('final') else ''} |"
        )
    out("")


def report(data: dict) -> str:
    args = data["args"]
    k, ms = args["k"], args["ms"]
    ideal = k * 1000 / ms
    lines: list[str] = []
    out = lines.append
    out("# Adaptive concurrency: a service with a hidden capacity\n")
    out("```")
    for key, value in data["setup"].items():
        out(f"{key:>10}: {value}")
    out("```\n")

    # target -> {adaptive contender: (value, passed or None)}
    targets: dict[str, dict[str, tuple[str, bool | None]]] = {}

    def verdict(target: str, name: str, value: str, ok: bool | None) -> None:
        targets.setdefault(target, {})[name] = (value, ok)

    runs_a = {r["name"]: r for r in data.get("A", [])}
    if runs_a:
        steady, sweep_s = args["steady"], args["sweep_seconds"]
        out(f"## A. Steady: K={k}, {ms:g} ms per request (ideal {ideal:,.0f} 200/s)\n")
        out(
            f"Goodput = 200 responses per second. *Steady* = the last two thirds of the run "
            f"([{steady / 3:.1f}, {steady:g}) s of {steady:g} s; [{sweep_s / 3:.1f}, {sweep_s:g}) s "
            f"for the {sweep_s:g} s sweep runs); *whole* = the whole run. 503 / timeout / error %: "
            f"of all requests of the whole run. Latency: mean of the 200s, whole run. "
            f"Convergence: first time after which the limit stays in [K, 2K] = [{k}, {2 * k}] "
            f"until the end; *in range after*: share of the 50 ms samples in [K, 2K] from the "
            f"first entry on. CPU: share of one core over the run used by the client process, "
            f"the server process, and everything else on the machine.\n"
        )
        out(
            "| contender | numworkers | goodput steady | % of ideal | goodput whole | requests/s "
            "| 503 % | timeouts % | errors % | latency ms | mean in flight (steady) "
            "| peak in flight | mean limit (steady) | convergence s | first in [K, 2K] s "
            "| in range after | CPU % client / server / other |"
        )
        out("| --- |" + " ---: |" * 16)
        sweep_rows = [r for r in data["A"] if r["name"].startswith("sweep") and "failed" not in r]
        steady_of = lambda r: window(r, r["duration"] / 3, r["duration"])  # noqa: E731
        best = max(sweep_rows, key=lambda r: steady_of(r)["goodput"], default=None)
        clean = [r for r in sweep_rows if window(r, 0, r["duration"])["bad_pct"] <= 1.0]
        best_clean = max(clean, key=lambda r: steady_of(r)["goodput"], default=None)

        def row_a(r: dict, label: str) -> None:
            if "failed" in r:
                out(f"| {label} | {r['workers']} | FAILED: {r['failed']} |")
                return
            d = r["duration"]
            s, w = steady_of(r), window(r, 0, d)
            conv = settle(r, 0, d, k, 2 * k, None) if r["adaptive"] else None
            entry, share = in_range(r, k, 2 * k) if r["adaptive"] else (None, None)
            out(
                f"| {label} | {r['workers']} | {s['goodput']:,.0f} | {100 * s['goodput'] / ideal:.0f}% "
                f"| {w['goodput']:,.0f} | {w['requests']:,.0f} | {w['busy_pct']:.2f} "
                f"| {w['timeout_pct']:.2f} | {w['error_pct']:.2f} | {fmt(w['latency200_ms'], '.1f')} "
                f"| {fmt(s['in_flight'])} | {r['peak']} | {fmt(s['limit'])} "
                f"| {fmt(conv, '.2f', 'never' if r['adaptive'] else '-')} "
                f"| {fmt(entry, '.2f', 'never' if r['adaptive'] else '-')} "
                f"| {fmt(share, '.1%')} | {cpu(r)} |"
            )

        for name in ("fixed-1000", "fixed-10"):
            if name in runs_a:
                row_a(runs_a[name], name)
        if best is not None:
            row_a(best, f"best fixed ({best['workers']})")
        if best_clean is not None and best_clean is not best:
            row_a(best_clean, f"best fixed with <= 1% 503+timeouts ({best_clean['workers']})")
        for name in ADAPTIVE:
            if name in runs_a:
                row_a(runs_a[name], name)
        out("")
        if sweep_rows:
            out(f"The whole sweep ({sweep_s:g} s each):\n")
            out(
                "| numworkers | goodput steady | % of ideal | goodput whole | 503 % | timeouts % | errors % | latency ms | peak in flight | CPU % client / server / other |"
            )
            out("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for r in sweep_rows:
                s, w = steady_of(r), window(r, 0, r["duration"])
                mark = " (best)" if r is best else ""
                out(
                    f"| {r['workers']}{mark} | {s['goodput']:,.0f} | {100 * s['goodput'] / ideal:.0f}% "
                    f"| {w['goodput']:,.0f} | {w['busy_pct']:.2f} | {w['timeout_pct']:.2f} "
                    f"| {w['error_pct']:.2f} | {fmt(w['latency200_ms'], '.1f')} | {r['peak']} "
                    f"| {cpu(r)} |"
                )
            out("")
        for name, what in ADAPTIVE.items():
            ad = runs_a.get(name)
            if ad is None:
                continue
            if "failed" in ad:
                verdict("A: the run", name, ad["failed"], False)
                continue
            means = ", ".join(f"{v:.0f}" for v in per_second_limits(ad))
            out(f"{name} ({what}): limit, mean of each 1 s window: {means}\n")
            if ad.get("final"):
                out(f"{name}: statistics at the end: `{ad['final']['repr']}`\n")
            d = ad["duration"]
            s, w = steady_of(ad), window(ad, 0, d)
            if best is not None:
                ratio = s["goodput"] / steady_of(best)["goodput"]
                verdict(
                    "A: goodput (steady) >= 95% of best fixed",
                    name,
                    f"{s['goodput']:,.0f} = {100 * ratio:.1f}% of {steady_of(best)['goodput']:,.0f} "
                    f"(numworkers {best['workers']})",
                    ratio >= 0.95,
                )
            if best_clean is not None:
                g = steady_of(best_clean)["goodput"]
                verdict(
                    "A (information): goodput vs best fixed with <= 1% 503+timeouts",
                    name,
                    f"{100 * s['goodput'] / g:.1f}% of {g:,.0f} (numworkers {best_clean['workers']})",
                    None,
                )
            bad = w["busy_pct"] + w["timeout_pct"]
            verdict(
                "A: <= 1% of requests 503 or timeout (whole run)",
                name,
                f"{bad:.2f}% ({w['busy_pct']:.2f}% 503, {w['timeout_pct']:.2f}% timeouts)",
                bad <= 1.0,
            )
            conv = settle(ad, 0, d, k, 2 * k, None)
            verdict(
                f"A: limit in [K, 2K] = [{k}, {2 * k}] within 5 s, for good",
                name,
                secs(conv),
                conv is not None and conv <= 5.0,
            )

    runs_b = data.get("B", [])
    if runs_b:
        phase = args["phase"]
        plan = step_plan(k, phase)
        out(
            f"## B. Step: K={k} for {phase:g} s, then K={plan[1][1]} for {phase:g} s, then "
            f"K={k} for {phase:g} s ({ms:g} ms per request)\n"
        )
        out(
            "Per phase: goodput, its share of that phase's ideal (K * 1000 / ms), the share of "
            "its requests answered 503 or failed (timeouts + errors), mean latency (200s and "
            "503s), mean in flight and mean limit. *settle s*: seconds from the phase's start "
            "until the limit is in [K, 2K] of the phase's K and stays there for at least 2 s.\n"
        )
        out(
            "| contender | phase | K | goodput | % of ideal | 503 % | timeouts+errors % | latency ms | mean in flight | mean limit | settle s | CPU % client / server / other (run) |"
        )
        out("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in runs_b:
            if "failed" in r:
                out(f"| {r['name']} | FAILED: {r['failed']} |")
                continue
            for n, (start, kp) in enumerate(plan):
                stop = start + phase
                s = window(r, start, stop)
                settled = settle(r, start, stop, kp, 2 * kp, 2.0) if r["adaptive"] else None
                out(
                    f"| {r['name']} | {n + 1}: {start:g}-{stop:g} s | {kp} | {s['goodput']:,.0f} "
                    f"| {100 * s['goodput'] / (kp * 1000 / ms):.0f}% | {s['busy_pct']:.1f} "
                    f"| {s['timeout_pct'] + s['error_pct']:.1f} | {fmt(s['latency_ms'], '.1f')} "
                    f"| {fmt(s['in_flight'])} | {fmt(s['limit'])} "
                    f"| {fmt(settled, '.2f', 'never' if r['adaptive'] else '-')} "
                    f"| {cpu(r) if n == 0 else ''} |"
                )
        out("")
        confirmed = [
            f"{r['name']} " + ", ".join(f"{t:.2f} s" for t, _ in r["ks"])
            for r in runs_b
            if "failed" not in r
        ]
        out(
            "Changes of K (sent by the parent process) confirmed by the server at: "
            + "; ".join(confirmed)
            + "\n"
        )
        for name in ADAPTIVE:
            ad = next((r for r in runs_b if r["name"] == name), None)
            if ad is None:
                continue
            if "failed" in ad:
                verdict("B: the run", name, ad["failed"], False)
                continue
            means = ", ".join(f"{v:.0f}" for v in per_second_limits(ad))
            out(f"{name}: limit, mean of each 1 s window: {means}\n")
            if ad.get("final"):
                out(f"{name}: statistics at the end: `{ad['final']['repr']}`\n")
            for label, (start, kp) in (("down", plan[1]), ("up", plan[2])):
                settled = settle(ad, start, start + phase, kp, 2 * kp, 2.0)
                verdict(
                    f"B: follows {label} (K -> {kp}) into [K, 2K] within 5 s",
                    name,
                    secs(settled),
                    settled is not None and settled <= 5.0,
                )
            w = window(ad, 0, ad["duration"])
            verdict(
                "B (information): 503 / timeouts, whole run",
                name,
                f"{w['busy_pct']:.2f}% / {w['timeout_pct']:.2f}%",
                None,
            )

    if data.get("C"):
        report_c(data, out, verdict)
    if data.get("D"):
        report_d(data, out, verdict)

    if targets:
        names = [n for n in ADAPTIVE if any(n in v for v in targets.values())]
        out("## Targets\n")
        out("| target | " + " | ".join(f"{n} ({ADAPTIVE[n]})" for n in names) + " |")
        out("| --- |" + " --- |" * len(names))
        for target, by_name in targets.items():
            cells = []
            for n in names:
                value, ok = by_name.get(n, ("-", None))
                cells.append(value if ok is None else f"{'PASS' if ok else 'FAIL'}: {value}")
            out(f"| {target} | " + " | ".join(cells) + " |")
        out("")
    every = [
        r
        for r in [*data.get("A", []), *data.get("B", []), *data.get("C", [])]
        if "failed" not in r and not r.get("src_dir")  # another tree has another digest
    ]
    digests = sorted({r.get("src", "?") for r in every})
    if len(digests) > 1:
        out(
            "**The library's sources changed during the run** (src/parallelize sha256 by run: "
            + ", ".join(f"{r['name']} {r.get('src', '?')}" for r in every)
            + ")\n"
        )
    busy = [r for r in every if (r.get("other_cpu") or 0) > 20]
    if busy:
        out(
            "**Other processes used the CPU during some runs** (% of one core: "
            + ", ".join(f"{r['name']} {r['other_cpu']:.0f}%" for r in busy)
            + "): those rows are skewed.\n"
        )
    errors = {}
    for r in every:
        for name, n in r.get("errors", {}).items():
            errors[f"{r['name']}: {name}"] = n
        if r.get("stderr_tail"):
            out(f"stderr of {r['name']} (last lines): `{' / '.join(r['stderr_tail'])}`\n")
    if errors:
        out(
            "Errors other than timeouts: "
            + ", ".join(f"{k_} x{n}" for k_, n in errors.items())
            + "\n"
        )
    return "\n".join(lines)


def step_plan(k: int, phase: float) -> list[tuple[float, int]]:
    """(start, K) of each phase of scenario B."""
    return [(0.0, k), (phase, max(1, k // 4)), (2 * phase, k)]


def plot(data: dict, path: Path) -> None:
    """Scenario B, one column per contender: concurrency, latency, responses per second."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: PLC0415

    runs = {r["name"]: r for r in data.get("B", []) if "failed" not in r}
    names = [n for n in (*ADAPTIVE, f"fixed-{data['args']['k']}", "fixed-1000") if n in runs]
    if not names:
        print("no scenario B runs to plot")
        return
    k, ms, phase = data["args"]["k"], data["args"]["ms"], data["args"]["phase"]
    plan = step_plan(k, phase)
    duration = runs[names[0]]["duration"]
    step_t = [t for t, _ in plan] + [duration]
    step_k = [kk for _, kk in plan] + [plan[-1][1]]
    fig, axes = plt.subplots(
        3,
        len(names),
        figsize=(max(8.0, 3.4 * len(names)), 9),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    rebin = 5  # 250 ms for rates and latency
    width = rebin * BUCKET
    for col, name in enumerate(names):
        r = runs[name]
        ax1, ax2, ax3 = axes[0][col], axes[1][col], axes[2][col]
        rows = [s for s in r["samples"] if s[0] < duration]
        ts = [s[0] for s in rows]
        ax1.step(step_t, step_k, where="post", color="black", lw=1.2, label="K")
        ax1.step(
            step_t,
            [2 * v for v in step_k],
            where="post",
            color="black",
            lw=1.2,
            ls="--",
            label="2K",
        )
        ax1.plot(ts, [max(s[1], 0.8) for s in rows], color="tab:orange", lw=0.8, label="in flight")
        if r["adaptive"]:
            ax1.plot(ts, [s[2] for s in rows], color="tab:blue", lw=1.4, label="limit")
        ax1.set_yscale("log")
        ax1.set_title(name + (" (numworkers 1000)" if r["adaptive"] else ""), fontsize=11)
        n = len(r["counts"]["ok"]) // rebin
        tb = [(i + 0.5) * width for i in range(n)]

        def binned(values: list, n: int = n) -> list[float]:
            return [sum(values[i * rebin : (i + 1) * rebin]) for i in range(n)]

        lat_s, lat_n = binned(r["lat_sum"]), binned(r["lat_n"])
        latency = [1000 * s / c if c else float("nan") for s, c in zip(lat_s, lat_n, strict=True)]
        ax2.plot(tb, latency, color="tab:purple", lw=1.2, label="mean latency (200s and 503s)")
        ax2.axhline(ms, color="black", lw=0.8, ls=":", label=f"service time {ms:g} ms")
        ax2.set_yscale("log")
        ok = binned(r["counts"]["ok"])
        kinds = ("busy", "other", "timeout", "error")
        bad = [sum(v) for v in zip(*(binned(r["counts"][kind]) for kind in kinds), strict=True)]
        ax3.plot(tb, [v / width for v in ok], color="tab:green", lw=1.2, label="200/s (goodput)")
        ax3.plot(tb, [v / width for v in bad], color="tab:red", lw=1.0, label="503 + errors /s")
        ideal = [kk * 1000 / ms for kk in step_k]
        ax3.step(step_t, ideal, where="post", color="black", lw=1, ls=":", label="ideal K*1000/ms")
        ax3.set_yscale("symlog", linthresh=100)
        ax3.set_xlabel("time (s)")
        for ax in (ax1, ax2, ax3):
            ax.grid(visible=True, alpha=0.3)
            for t, _ in plan[1:]:
                ax.axvline(t, color="grey", lw=0.8, alpha=0.6)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ticks = [m * 10**e for e in range(5) for m in (1, 2, 5)]
    for row, label in enumerate(
        ("concurrency (log)", "mean latency, ms (log)", "responses per second (symlog)")
    ):
        ax = axes[row][0]
        ax.set_ylabel(label)
        ax.yaxis.set_major_locator(FixedLocator([0, 50, *ticks[6:]] if row == 2 else ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(plain)
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    axes[0][0].set_ylim(0.8, 1500)
    fig.suptitle(
        f"Scenario B: hidden capacity K = {plan[0][1]} -> {plan[1][1]} -> {plan[2][1]} "
        f"(changes at {phase:g} s and {2 * phase:g} s), {ms:g} ms per request, timeout {TIMEOUT:g} s"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the file small (line plots use few colours).
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    from PIL import Image  # noqa: PLC0415 - a dependency of matplotlib

    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)
    print(f"plot: {path} ({path.stat().st_size / 1024:.0f} KB)")


def start_server(k: int, ms: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "parallelize.testing", "--capacity", str(k), "--ms", str(ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    base = server.stdout.readline().strip()
    if not base.startswith("http"):
        server.kill()
        server.wait()
        raise RuntimeError(f"the server did not start: {base!r}")
    return server, base


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure_all(args: argparse.Namespace) -> dict:
    k, ms = args.k, args.ms
    steady = 4.5 if args.quick else 15.0
    sweep_seconds = 2.4 if args.quick else 8.0
    phase = 3.0 if args.quick else 10.0
    sweep = QUICK_SWEEP if args.quick else SWEEP
    import aiohttp  # noqa: PLC0415

    data: dict = {
        "args": {
            "k": k,
            "ms": ms,
            "quick": args.quick,
            "steady": steady,
            "sweep_seconds": sweep_seconds,
            "phase": phase,
            "probe_interval": args.probe_interval,
            "probe_seconds": args.probe_seconds,
            "items": args.items,
        },
    }
    server, base = start_server(k, ms)
    try:
        data["setup"] = {
            "commit": f"{commit()}, src/parallelize sha256 {source_digest()}",
            "python": f"{platform.python_version()} ({sys.executable})",
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "loop": "asyncio (default) in client and server, each its own process",
            "aiohttp": aiohttp.__version__,
            "server": f"python -m parallelize.testing --capacity {k} --ms {ms:g} ({base})",
            "capacity": f"K={k} at once, {ms:g} ms each, 503 beyond 2K={2 * k}; "
            f"ideal {k * 1000 / ms:,.0f} 200/s",
            "client": f"aiohttp TCPConnector(limit=0), one session per run; "
            f"parallelize(..., timeout={TIMEOUT:g}, on_error='yield')",
            "sampling": f"every {BUCKET * 1000:.0f} ms; before each run wait up to "
            f"{args.idle_wait:g} s for the machine to be idle",
            "A": f"{steady:g} s per contender, sweep {list(sweep)} at {sweep_seconds:g} s each",
            "B": f"K={k} / {max(1, k // 4)} / {k}, {phase:g} s each",
            "C": f"K={k}, {args.probe_seconds:g} s each: fixed {3 * k // 2}, "
            f"AdaptiveLimit(probe_interval={args.probe_interval:g})"
            + (f", and the same from {args.baseline_src}" if args.baseline_src else ""),
        }
        print("\n".join(f"{key:>10}: {value}" for key, value in data["setup"].items()), flush=True)
        if "A" in args.scenarios:
            print("\nA. steady", flush=True)
            runs = []
            contenders = [("fixed-1000", 1000, False, steady), ("fixed-10", 10, False, steady)]
            contenders += [(f"sweep-{n}", n, False, sweep_seconds) for n in sweep]
            if args.adaptive:
                contenders.append(("adaptive", 1000, "default", steady))
            for name, workers, adaptive, duration in contenders:
                spec = {"workers": workers, "adaptive": adaptive, "duration": duration}
                runs.append(run_one(base, server.pid, k, name, spec, args.idle_wait))
            data["A"] = runs
        if "B" in args.scenarios:
            print("\nB. step", flush=True)
            plan = step_plan(k, phase)
            steps = [[t, kk] for t, kk in plan[1:]]
            runs = []
            contenders = [(1000, False), (10, False), (k, False), (3 * k // 8, False)]
            if args.adaptive:
                contenders += [(1000, "default")]
            for workers, adaptive in contenders:
                name = f"fixed-{workers}" if not adaptive else "adaptive"
                spec = {
                    "workers": workers,
                    "adaptive": adaptive,
                    "duration": 3 * phase,
                    "steps": steps,
                }
                runs.append(run_one(base, server.pid, k, name, spec, args.idle_wait))
            data["B"] = runs
        if "C" in args.scenarios:
            print("\nC. the cost of probes", flush=True)
            probing = {"probe_interval": args.probe_interval}
            contenders = [(f"fixed-{3 * k // 2}", 3 * k // 2, False, None)]
            if args.baseline_src:
                contenders.append(("probing-baseline", 1000, "probing", args.baseline_src))
            contenders.append(("probing", 1000, "probing", None))
            runs = []
            for name, workers, adaptive, src_dir in contenders:
                spec = {
                    "workers": workers,
                    "adaptive": adaptive,
                    "adaptive_options": probing if adaptive else {},
                    "duration": args.probe_seconds,
                    "src_dir": src_dir,
                }
                runs.append(run_one(base, server.pid, k, name, spec, args.idle_wait))
            data["C"] = runs
        if "D" in args.scenarios:
            print("\nD. latency that varies by item, no capacity (/slow/{ms})", flush=True)
            runs = []
            for shape in ("rising", "random"):
                contenders = [(f"fixed-{w}", w, False, None) for w in D_FIXED]
                for w in D_ADAPTIVE:
                    if args.baseline_src:
                        contenders.append(
                            (f"adaptive-{w}-baseline", w, "default", args.baseline_src)
                        )
                    contenders.append((f"adaptive-{w}", w, "default", None))
                for name, workers, adaptive, src_dir in contenders:
                    spec = {
                        "workers": workers,
                        "adaptive": adaptive,
                        "duration": D_CAP,
                        "shape": shape,
                        "items": args.items,
                        "src_dir": src_dir,
                    }
                    r = run_one(base, server.pid, k, f"{shape} {name}", spec, args.idle_wait)
                    runs.append(r)
            data["D"] = runs
    finally:
        stop_server(server)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases: a ~1.5 min smoke run")
    parser.add_argument("--k", type=int, default=64, help="the hidden capacity (default 64)")
    parser.add_argument("--ms", type=float, default=40.0, help="ms per request (default 40)")
    parser.add_argument(
        "--plot", default=str(ROOT / "docs" / "adaptive.png"), help="PNG path ('' for none)"
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=3.0,
        help="before each run, wait up to this many seconds for the machine to be idle",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "adaptive.md")
    parser.add_argument(
        "--scenarios", default="A,B", help="any of A, B, C, D, comma-separated (default A,B)"
    )
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=5.0,
        help="scenario C: AdaptiveLimit(probe_interval=...) in seconds (default 5)",
    )
    parser.add_argument(
        "--probe-seconds", type=float, default=16.0, help="scenario C: seconds per run (default 16)"
    )
    parser.add_argument(
        "--baseline-src",
        help="scenario C: also run the adaptive contender against the library in this "
        "directory (holding parallelize/), e.g. an older commit's src",
    )
    parser.add_argument(
        "--items", type=int, default=5000, help="scenario D: items per run (default 5000)"
    )
    parser.add_argument(
        "--no-adaptive", dest="adaptive", action="store_false", help="fixed contenders only"
    )
    parser.add_argument("--tables-from", type=Path, help="measure nothing: report an earlier JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    # terminate -> SystemExit, so that the finally blocks stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    raw = args.out.with_suffix(".json")
    if args.tables_from:
        data = json.loads(args.tables_from.read_text())
    else:
        started = time.monotonic()
        data = measure_all(args)
        data["setup"]["wall"] = f"{time.monotonic() - started:.0f} s"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(data))
    text = report(data)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"markdown: {args.out}, raw samples: {args.tables_from or raw}")
    if args.plot and data.get("B"):
        plot(data, Path(args.plot))


if __name__ == "__main__":
    main()
