"""Polite at scale: one slow, hanging or throttling host among fast ones (issue 22).

    .venv/bin/python benchmarks/hosts.py            # 2,000 fast + 200 slow + 200 hang + 200 throttled, 3 rounds
    .venv/bin/python benchmarks/hosts.py --quick    # 500 + 50 + 50 + 50, 1 round
    .venv/bin/python benchmarks/hosts.py --fast 5000 --slow 500 --hang 0 --rounds 5
    .venv/bin/python benchmarks/hosts.py --contender 'ph8:mixed:--per-host 8 --host-failures 5'

The hosts, all on 127.0.0.1, one port each (a host is a host:port, as the issue's
key function will see it):

- **fast**: nginx, started by this script as its child (``daemon off``, one worker,
  its own config in a temp dir, a free port; stopped at the end, on Ctrl-C, SIGTERM
  or an error), serving ``--fast`` small files (200 B to 4 KiB, seeded). Its access
  log (``$msec $request_time``) gives each request's end and start (ms resolution).
- **slow**: answers 200 after ``--slow-ms`` (500) ms.
- **hang**: never answers; the client's ``--timeout`` (3 s) ends each request.
- **throttle**: answers 429 with ``Retry-After: --retry-after`` (2) to its first
  ``--throttle-first`` requests (default: half of its URLs), then 200.

The last three are one small aiohttp process (this script re-invoked with
``--serve``; uvloop when installed), one port per host and a fourth port for
control (``/stats``, ``/reset``, never counted). Each host records the start and
end of every request (``time.time()``) and its peak of requests in flight.

Contenders, each a fresh ``parallelize fetch URLS -o OUT --no-progress -w 100
--timeout 3`` process (the venv's console script; ``-w``/``--timeout`` are options
here), rounds interleaved with the order rotated each round; before each, the
servers' counters are reset (the throttle's 429 count too):

- ``alone``: the fast host's URLs alone;
- ``mixed``: the same URLs mixed with the other hosts' URLs, shuffled with a seed.
- more from ``CONTENDERS`` below, or ``--contender NAME:URLSET:FLAGS``: the place
  where the per-host options (``--per-host N``, ``--per-host-rate R``,
  ``--per-host-adaptive``, ``--host-failures K``) get their rows once they exist.

Measured per run: the wall time (spawn to exit), URLs/s; **when the fast host's
URLs had all finished**, timed from the server side (the last fast request's end
in nginx's access log, ms resolution, on the same clock as the parent), from the
run's first request (Python's start-up left out: per-host limits cannot change
it; the column from spawn is beside it). Why not from the output: a record has
its ``elapsed`` but no timestamp, and the CLI writes its lines in batches (every
1024 lines or 0.2 s), so lines read as they are written are up to 0.2 s late; the
script reads them so anyway (a thread tails the output file every 10 ms) and
reports that client-side time as a check. Per host: requests, server-side peak of
requests in flight (the aiohttp hosts count exactly; nginx's is sampled from its
``stub_status`` every ~5 ms, Reading + Writing, with its peak of open connections
beside it: a lower bound, as a small file is served in well under 1 ms, so
nginx's peak of connections is the better sign of the client's concurrency
there), the most requests started in any 1 s window
(sliding), and per-second counts (in the JSON). For the hang host: its URLs ending
as ``timeout`` and as ``host_down``. For the throttle host: the 429s, and the
requests that started within ``Retry-After`` of a 429's answer (0 when the host is
paused as asked). Peak RSS of ``parallelize fetch`` (GNU ``time -f %M``), and that
every URL of the file has exactly one record.

Issue 22's targets, as verdict lines (in one run, the ratios within it):

- the fast host's URLs all finish within 1.2x the time they take alone, with the
  other hosts' URLs mixed in (the issue measured about 50x);
- each host's server-side peak concurrency never above ``--per-host``, and its
  requests in any 1 s window never above ``--per-host-rate`` plus the burst;
- the 429 host paused for its ``Retry-After`` (no request into the pause) while the
  others keep their rate;
- with the breaker on (``--host-failures K``), the hanging host's URLs end as
  ``host_down`` within K timeouts plus the cool-down, not one timeout each;
- (not here) the single-host main job within 3% of before: benchmarks/fetch.py;
  the overhead of ``--per-host 100`` on one host: an ``alone`` contender with it;
- (not here) memory flat for 10^6 URLs over 10^4 hosts.

Today (no per-host options) most say NOT MET: that is the baseline. Output: the
tables, printed and written to benchmarks/out/hosts.md, every raw sample in
benchmarks/out/hosts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _harness import (
    HERE,
    fmt,
    load_average,
    machine,
    markdown,
    rotated,
    src_state,
    version_of,
    warn_if_src_changed,
    write_report,
)
from fetch import PARALLELIZE, find_tool, free_port, nginx_config, run_tree

OUT_DIR = HERE / "out"
SEED = 22  # the issue's number: file sizes and the mixed order
HOSTS = ("fast", "slow", "hang", "throttle")

# Issue 22's targets.
TARGET_FAST_MIXED_VS_ALONE = 1.2

# --------------------------------------------------------------------------- #
# The contenders: name -> (URL set, extra flags of `parallelize fetch`, label).
# URL set "fast": the fast host's URLs alone; "mixed": every host's, shuffled.
# The common flags (-w, --timeout, -o, --no-progress) are added by command().
#
# The per-host contenders come in pairs: `alone-X` and `mixed-X` with the same flags,
# and the fast host's time in `mixed-X` is judged against `alone-X` (the fast host
# under the same per-host limits, with nobody else); `alone-ph100` against `alone`
# is the cost of a per-host limit that never binds.
# (Or, without editing: --contender 'NAME:URLSET:FLAGS' on the command line.)
# The verdicts read --per-host, --per-host-rate and --host-failures from the flags.
# --------------------------------------------------------------------------- #
_PH = ["--per-host", "16", "--host-failures", "5"]
_RATE = ["--per-host", "16", "--per-host-rate", "500", "--host-failures", "5"]
_ADAPTIVE = ["--per-host", "32", "--per-host-adaptive", "--host-failures", "5"]
CONTENDERS: dict[str, tuple[str, list[str], str]] = {
    "alone": ("fast", [], "fast host's URLs alone"),
    "mixed": ("mixed", [], "mixed: fast + slow + hang + throttle (fetch's default breaker)"),
    "mixed-off": ("mixed", ["--host-failures", "0"], "mixed, --host-failures 0 (nothing per host)"),
    "alone-ph100": ("fast", ["--per-host", "100"], "fast alone, --per-host 100 (never binds)"),
    "alone-ph": ("fast", _PH, "fast alone, --per-host 16 --host-failures 5"),
    "mixed-ph": ("mixed", _PH, "mixed, --per-host 16 --host-failures 5"),
    "alone-rate": ("fast", _RATE, "fast alone, + --per-host-rate 500"),
    "mixed-rate": ("mixed", _RATE, "mixed, + --per-host-rate 500"),
    "alone-adaptive": ("fast", _ADAPTIVE, "fast alone, --per-host 32 --per-host-adaptive"),
    "mixed-adaptive": ("mixed", _ADAPTIVE, "mixed, --per-host 32 --per-host-adaptive"),
}
ALONE = "alone"  # the reference of the "fast URLs finish within 1.2x alone" ratio


# --------------------------------------------------------------------------- #
# The aiohttp hosts: slow, hang, throttle (this script re-invoked with --serve)
# --------------------------------------------------------------------------- #


class HostStats:
    """One host's requests: [start, end, status] each (end None while in flight)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.events: list[list[Any]] = []
        self.in_flight = 0
        self.peak = 0

    def begin(self) -> list[Any]:
        event = [time.time(), None, None]
        self.events.append(event)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return event

    def end(self, event: list[Any], status: int | None) -> None:
        event[1] = time.time()
        event[2] = status
        self.in_flight -= 1


async def serve(spec: dict[str, Any]) -> None:
    """Serve the three hosts and the control port until stdin closes."""
    from aiohttp import web  # noqa: PLC0415 - only the server child needs it

    stats = {name: HostStats() for name in ("slow", "hang", "throttle")}
    throttled = {"seen": 0}

    def host_app(name: str, answer: Any) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            event = stats[name].begin()
            status = None
            try:
                response = await answer(request)
                status = response.status
                return response
            finally:
                stats[name].end(event, status)

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        return app

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(spec["slow_ms"] / 1000)
        return web.Response(text="slow\n")

    async def hang(_: web.Request) -> web.Response:
        # Cancelled when the client closes the connection (handler_cancellation).
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    async def throttle(_: web.Request) -> web.Response:
        throttled["seen"] += 1
        if throttled["seen"] <= spec["throttle_first"]:
            headers = {"Retry-After": str(spec["retry_after"])}
            return web.Response(status=429, text="slow down\n", headers=headers)
        return web.Response(text="ok\n")

    async def stats_view(_: web.Request) -> web.Response:
        body = {name: {"peak": s.peak, "events": s.events} for name, s in stats.items()}
        return web.json_response(body)

    async def reset_view(_: web.Request) -> web.Response:
        for s in stats.values():
            s.reset()
        throttled["seen"] = 0
        return web.Response(text="reset\n")

    control = web.Application()
    control.router.add_get("/stats", stats_view)
    control.router.add_get("/reset", reset_view)
    apps = {
        "slow": host_app("slow", slow),
        "hang": host_app("hang", hang),
        "throttle": host_app("throttle", throttle),
        "control": control,
    }
    runners, ports = [], {}
    for name, app in apps.items():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        ports[name] = sock.getsockname()[1]
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        runners.append(runner)
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()

    def wait_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stdin_closed.set_result, None)

    threading.Thread(target=wait_stdin, daemon=True).start()
    try:
        await stdin_closed
    finally:
        for runner in runners:
            await runner.cleanup()


def serve_main(spec: dict[str, Any]) -> None:
    try:
        import uvloop  # noqa: PLC0415

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(spec))
    except ImportError:
        asyncio.run(serve(spec))


@contextmanager
def aiohttp_hosts(spec: dict[str, Any]) -> Iterator[dict[str, int]]:
    """The --serve child: its ports; stopped (stdin closed, then SIGKILL) at the end."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C reaches the parent only, which stops it
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise RuntimeError(f"the hosts' server exited with {server.wait()}")
        yield json.loads(line)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def control(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:  # noqa: S310
        body = resp.read()
    return json.loads(body) if path == "/stats" else body


# --------------------------------------------------------------------------- #
# The fast host: nginx with an access log of times
# --------------------------------------------------------------------------- #


def make_files(root: Path, count: int) -> list[str]:
    """``count`` small files (200 B .. 4 KiB, log-uniform, seeded): their paths."""
    rng = random.Random(SEED)
    blob = rng.randbytes(8192)
    (root / "f").mkdir(parents=True)
    paths = []
    for i in range(count):
        size = int(200 * (4096 / 200) ** rng.random())
        path = f"/f/{i:05d}.bin"
        (root / path[1:]).write_bytes(blob[:size])
        paths.append(path)
    return paths


@contextmanager
def nginx_logged(nginx: str, tmp: Path) -> Iterator[tuple[str, Path]]:
    """fetch.py's nginx (its config) with an access log of ``$msec $request_time
    $status``: its base URL and the log's path; stopped (SIGQUIT, then SIGKILL)."""
    port = free_port()
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / name).mkdir(exist_ok=True)
    log = tmp / "access.log"
    log_lines = f"    log_format times '$msec $request_time $status';\n    access_log {log} times;"
    conf_text = nginx_config(nginx, tmp, port).replace("    access_log off;", log_lines)
    status = "        location = /_status { stub_status; access_log off; }\n"
    conf_text = conf_text.replace(
        f"        root {tmp}/www;\n", f"        root {tmp}/www;\n{status}"
    )
    assert str(log) in conf_text, "fetch.nginx_config changed: no 'access_log off;' to replace"
    assert "stub_status" in conf_text, "fetch.nginx_config changed: no 'root' line"
    conf = tmp / "nginx.conf"
    conf.write_text(conf_text)
    command = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    server = subprocess.Popen(command, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"nginx exited with {server.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen within 10 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.send_signal(signal.SIGQUIT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def nginx_events(log: Path, offset: int) -> list[list[Any]]:
    """[start, end, status] per request logged after ``offset``."""
    events = []
    if not log.exists():
        return events
    with open(log, "rb") as f:
        f.seek(offset)
        for line in f.read().decode().splitlines():
            parts = line.split()
            if len(parts) == 3:
                end = float(parts[0])
                events.append([end - float(parts[1]), end, int(parts[2])])
    return events


# --------------------------------------------------------------------------- #
# One contender
# --------------------------------------------------------------------------- #


class Tail(threading.Thread):
    """Reads the output file as the CLI writes it: (time.time(), line) per line."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self.done = threading.Event()

    def run(self) -> None:
        handle = None
        partial = ""
        try:
            while True:
                finished = self.done.is_set()  # read once more after the process ended
                if handle is None and self.path.exists():
                    handle = open(self.path, encoding="utf-8")  # noqa: SIM115
                if handle is not None:
                    chunk = handle.read()
                    if chunk:
                        now = time.time()
                        *whole, partial = (partial + chunk).split("\n")
                        self.lines += [(now, line) for line in whole if line]
                if finished:
                    return
                time.sleep(0.01)
        finally:
            if handle is not None:
                handle.close()


class StubStatus(threading.Thread):
    """Polls nginx's stub_status every 5 ms: the peaks of its open connections and of
    its requests being read or written (the poll's own connection taken off)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.url = base + "/_status"
        self.peak_connections = self.peak_requests = self.polls = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:  # noqa: S310
                    text = resp.read().decode()
            except OSError:
                time.sleep(0.005)
                continue
            fields = text.split()
            # "Active connections: A ... Reading: R Writing: W Waiting: I"
            active = int(fields[2]) - 1
            reading, writing = int(fields[-5]), int(fields[-3]) - 1
            self.peak_connections = max(self.peak_connections, active)
            self.peak_requests = max(self.peak_requests, reading + writing)
            self.polls += 1
            time.sleep(0.005)


def command(flags: list[str], urls: Path, out: Path, args: argparse.Namespace) -> list[str]:
    common = ["-w", str(args.workers), "--timeout", str(args.timeout), "--no-progress"]
    return [str(PARALLELIZE), "fetch", str(urls), "-o", str(out), *common, *flags]


def flag_value(flags: list[str], name: str) -> float | None:
    """The value of ``name VALUE`` (or ``name=VALUE``) in ``flags``, if present."""
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            return float(flags[i + 1])
        if flag.startswith(name + "="):
            return float(flag.split("=", 1)[1])
    return None


def max_in_window(starts: list[float], window: float = 1.0) -> int:
    """The most starts in any ``window`` seconds (sliding)."""
    starts = sorted(starts)
    best = lo = 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def peak_of(events: list[list[Any]]) -> int:
    """The most intervals [start, end) open at once."""
    points = []
    for start, end, _ in events:
        points += [(start, 1), (end if end is not None else float("inf"), -1)]
    points.sort(key=lambda p: (p[0], p[1]))  # an end before a start at the same time
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def per_second(starts: list[float], t0: float) -> list[int]:
    counts = Counter(int(t - t0) for t in starts)
    return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]


# A request that reaches the server this soon after a 429's answer was sent
# before the client could have read that answer (the client had several in
# flight at once): not one sent into the pause.
IN_FLIGHT_MARGIN = 0.05


def into_pause(events: list[list[Any]], pause: float) -> int:
    """Requests started within ``pause`` s after a 429's answer, sent after it was read.

    A start less than ``IN_FLIGHT_MARGIN`` after the answer was on its way before
    the client read the answer (requests of one wave, in flight side by side), so
    it is not counted; a client that ignored the pause sends its next requests
    within a millisecond or two of reading the 429, well past the margin.
    """
    ends = sorted(e[1] for e in events if e[2] == 429 and e[1] is not None)
    count = 0
    for start, _, _ in events:
        i = bisect.bisect_left(ends, start - IN_FLIGHT_MARGIN) - 1  # read before it was sent
        if i >= 0 and start - ends[i] < pause:
            count += 1
    return count


def measure(
    name: str,
    args: argparse.Namespace,
    ports: dict[str, int],
    host_of: dict[str, str],
    url_files: dict[str, Path],
    expected: dict[str, list[str]],
    base: str,
    log: Path,
    tmp: Path,
) -> dict[str, Any]:
    urlset, flags, _ = CONTENDERS[name]
    control(ports["control"], "/reset")
    offset = log.stat().st_size if log.exists() else 0
    out = tmp / f"out-{name}.jsonl"
    out.unlink(missing_ok=True)
    tail = Tail(out)
    tail.start()
    stub = StubStatus(base)
    stub.start()
    cmd = command(flags, url_files[urlset], out, args)
    t0 = time.time()
    result = run_tree(cmd, args.max_seconds, tmp / "stdout.txt", tmp / f"stderr-{name}.txt")
    tail.done.set()
    stub.done.set()
    tail.join()
    stub.join()
    stats = control(ports["control"], "/stats")
    events = {"fast": nginx_events(log, offset)}
    for host in ("slow", "hang", "throttle"):
        events[host] = stats[host]["events"]
    problems = []
    if result["exit"] not in (0, 1):
        stderr = (tmp / f"stderr-{name}.txt").read_text().strip().splitlines()
        problems.append(f"exit {result['exit']}: {(stderr or [''])[-1][:150]}")

    # The records: one per URL, by host.
    seen: Counter[str] = Counter()
    by_host: dict[str, Counter[str]] = {h: Counter() for h in HOSTS}
    client_done: dict[str, float] = {}
    for when, line in tail.lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"unreadable line: {line[:60]}")
            continue
        url = record.get("url", "")
        seen[url] += 1
        host = host_of.get(urlsplit(url).netloc, "?")
        error = record.get("error")
        if error:
            kind = error.get("kind", "?")
            by_host.setdefault(host, Counter())[
                f"{kind} {record.get('status')}" if kind == "http" else kind
            ] += 1
        else:
            by_host.setdefault(host, Counter())[str(record.get("status"))] += 1
        client_done[host] = max(client_done.get(host, 0.0), when - t0)
    wanted = expected[urlset]
    missing = sum(1 for u in wanted if seen[u] == 0)
    twice = sum(1 for u in wanted if seen[u] > 1)
    extra = len(set(seen) - set(wanted))
    if missing or twice or extra:
        problems.append(f"records: {missing} missing, {twice} twice, {extra} unknown")

    starts = [e[0] for evs in events.values() for e in evs]
    first = min(starts, default=t0)
    hosts: dict[str, Any] = {}
    for host in HOSTS:
        evs = events[host]
        if not evs and not any(host_of[n] == host for n in {urlsplit(u).netloc for u in wanted}):
            continue
        host_starts = [e[0] for e in evs]
        ends = [e[1] for e in evs if e[1] is not None]
        hosts[host] = {
            "requests": len(evs),
            "peak": stats[host]["peak"] if host != "fast" else stub.peak_requests,
            "peak_from_log": peak_of(evs) if host == "fast" else None,
            "peak_connections": stub.peak_connections if host == "fast" else None,
            "status_polls": stub.polls if host == "fast" else None,
            "max_1s": max_in_window(host_starts),
            "per_second": per_second(host_starts, t0),
            "last_end_from_spawn": (max(ends) - t0) if ends else None,
            "last_end_from_first": (max(ends) - first) if ends else None,
            "client_done_from_spawn": client_done.get(host),
            "records": dict(by_host.get(host, {})),
        }
    throttle = events["throttle"]
    return {
        "contender": name,
        "urls": len(wanted),
        "flags": flags,
        "elapsed": result["elapsed"],
        "exit": result["exit"],
        "cpu": result["cpu"],
        "maxrss_kb": result["maxrss_kb"],
        "first_request_from_spawn": first - t0,
        "hosts": hosts,
        "throttle_429": sum(1 for e in throttle if e[2] == 429),
        "throttle_into_pause": into_pause(throttle, args.retry_after),
        "problems": problems,
    }


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def med(samples: list[dict[str, Any]], get: Any) -> float | None:
    values = [v for v in (get(s) for s in samples) if v is not None]
    return statistics.median(values) if values else None


def host_value(host: str, field: str) -> Any:
    return lambda s: s["hosts"].get(host, {}).get(field)


def main_table(samples: dict[str, list[dict[str, Any]]]) -> str:
    header = [
        "contender",
        "URLs",
        "wall s",
        "URLs/s",
        "fast done s (from 1st request)",
        "fast done s (from spawn)",
        "fast done s (client, output)",
        "hang: timeout / host_down",
        "429s / requests into a pause",
        "peak RSS MB",
        "check",
    ]
    rows = []
    for name, runs in samples.items():
        good = [s for s in runs if not s["problems"]] or runs
        wall = med(good, lambda s: s["elapsed"])
        n = good[0]["urls"]
        hang = good[0]["hosts"].get("hang", {}).get("records", {})
        rows.append(
            [
                f"`{name}`: {CONTENDERS[name][2]}",
                str(n),
                fmt(wall, ".2f"),
                fmt(n / wall if wall else None, ",.0f"),
                fmt(med(good, host_value("fast", "last_end_from_first")), ".2f"),
                fmt(med(good, host_value("fast", "last_end_from_spawn")), ".2f"),
                fmt(med(good, host_value("fast", "client_done_from_spawn")), ".2f"),
                f"{hang.get('timeout', 0)} / {hang.get('host_down', 0)}" if hang else "-",
                (
                    f"{fmt(med(good, lambda s: s['throttle_429']), '.0f')} / "
                    f"{fmt(med(good, lambda s: s['throttle_into_pause']), '.0f')}"
                    if "throttle" in good[0]["hosts"]
                    else "-"
                ),
                fmt(med(good, lambda s: s["maxrss_kb"] and s["maxrss_kb"] / 1024), ".0f"),
                f"{len(runs) - sum(bool(s['problems']) for s in runs)}/{len(runs)} exact"
                + "".join(f"; {p}" for s in runs for p in s["problems"][:1]),
            ]
        )
    return "### Runs (medians over rounds)\n\n" + markdown(header, rows)


def host_table(samples: dict[str, list[dict[str, Any]]]) -> str:
    header = [
        "contender",
        "host",
        "requests",
        "peak in flight",
        "peak connections",
        "max in 1 s",
        "last end s (from 1st request)",
        "records",
    ]
    rows = []
    for name, runs in samples.items():
        good = [s for s in runs if not s["problems"]] or runs
        for host in HOSTS:
            if host not in good[0]["hosts"]:
                continue
            records = good[0]["hosts"][host]["records"]
            rows.append(
                [
                    f"`{name}`",
                    host + (" (nginx, sampled)" if host == "fast" else ""),
                    fmt(med(good, host_value(host, "requests")), ".0f"),
                    fmt(med(good, host_value(host, "peak")), ".0f"),
                    fmt(med(good, host_value(host, "peak_connections")), ".0f"),
                    fmt(med(good, host_value(host, "max_1s")), ".0f"),
                    fmt(med(good, host_value(host, "last_end_from_first")), ".2f"),
                    ", ".join(f"{k}: {v}" for k, v in sorted(records.items())),
                ]
            )
    return "### Per host, server side (medians; records of the first round)\n\n" + markdown(
        header, rows, right_from=2
    )


def verdicts(samples: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[str]:
    lines = []

    def good(name: str) -> list[dict[str, Any]]:
        runs = samples.get(name, [])
        return [s for s in runs if not s["problems"]] or runs

    alone = med(good(ALONE), host_value("fast", "last_end_from_first"))
    for name, runs in samples.items():
        urlset, flags, _ = CONTENDERS[name]
        if urlset != "mixed" or not runs:
            continue
        runs = good(name)  # noqa: PLW2901 - the good ones, else all
        fast = med(runs, host_value("fast", "last_end_from_first"))
        # Judged against the fast host alone under the same flags, when measured.
        twin = "alone" + name.removeprefix("mixed") if name.startswith("mixed-") else ALONE
        reference = med(good(twin), host_value("fast", "last_end_from_first")) or alone
        twin = twin if samples.get(twin) else ALONE
        if reference and fast:
            ratio = fast / reference
            ok = "MET" if ratio <= TARGET_FAST_MIXED_VS_ALONE else "NOT MET"
            lines.append(
                f"`{name}`: the fast host's URLs all done {fast:.2f} s after the first request, "
                f"{ratio:.2f}x `{twin}` ({reference:.2f} s); target <= "
                f"{TARGET_FAST_MIXED_VS_ALONE}x: {ok}"
            )
        per_host = flag_value(flags, "--per-host")
        peaks = {h: med(runs, host_value(h, "peak")) for h in HOSTS if h in runs[0]["hosts"]}
        shown = ", ".join(f"{h} {fmt(p, '.0f')}" for h, p in peaks.items())
        if "fast" in peaks:
            conns = med(runs, host_value("fast", "peak_connections"))
            shown += f" (fast: {fmt(conns, '.0f')} connections open at once)"
        if per_host is None:
            lines.append(
                f"`{name}`: server-side peak in flight: {shown}; no --per-host given "
                "(not an option yet): NOT MET"
            )
        else:
            ok = all(p is not None and p <= per_host for h, p in peaks.items() if h != "fast")
            lines.append(
                f"`{name}`: server-side peak in flight: {shown}; --per-host {per_host:g}: "
                + ("MET" if ok else "NOT MET")
                + " (nginx's peak is sampled, a lower bound: not judged)"
            )
        rate = flag_value(flags, "--per-host-rate")
        windows = {h: med(runs, host_value(h, "max_1s")) for h in HOSTS if h in runs[0]["hosts"]}
        shown = ", ".join(f"{h} {fmt(w, '.0f')}" for h, w in windows.items())
        if rate is None:
            lines.append(
                f"`{name}`: most requests in any 1 s: {shown}; no --per-host-rate given: NOT MET"
            )
        else:
            lines.append(
                f"`{name}`: most requests in any 1 s: {shown}; --per-host-rate {rate:g} "
                "(plus its burst: judge against the burst the option documents)"
            )
        if "throttle" in runs[0]["hosts"]:
            into = med(runs, lambda s: s["throttle_into_pause"])
            n429 = med(runs, lambda s: s["throttle_429"])
            ok = "MET" if into == 0 else "NOT MET"
            lines.append(
                f"`{name}`: the 429 host got {fmt(n429, '.0f')} 429s (Retry-After: "
                f"{args.retry_after}) and {fmt(into, '.0f')} requests inside a pause "
                f"it asked for; target 0: {ok}"
            )
        if "hang" in runs[0]["hosts"]:
            records = runs[0]["hosts"]["hang"]["records"]
            timeouts, down = records.get("timeout", 0), records.get("host_down", 0)
            k = flag_value(flags, "--host-failures")
            if k is None:
                lines.append(
                    f"`{name}`: the hanging host's URLs: {timeouts} timeouts, {down} host_down; "
                    "no --host-failures given (not an option yet): NOT MET"
                )
            else:
                # The attempts in flight when the K-th times out time out too: the
                # K - 1 before it may each have freed a place that another took,
                # so at most --per-host + K - 1, then a probe per cool-down (10 s,
                # doubling: two at most in these runs).
                most = (per_host if per_host is not None else args.workers) + k - 1 + 2
                ok = "MET" if timeouts <= most and down > 0 else "NOT MET"
                lines.append(
                    f"`{name}`: the hanging host's URLs: {timeouts} timeouts, {down} host_down; "
                    f"--host-failures {k:g}: at most --per-host + K - 1 + 2 probes = "
                    f"{most:g} timeouts: {ok}"
                )
    lines.append(
        "single-host main job within 3% of before with per-host limits off: "
        "benchmarks/fetch.py; --per-host 100 on one host: add an `alone` contender with it"
    )
    lines.append("memory flat for 10^6 URLs over 10^4 hosts: not measured by this script")
    return lines


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def parse_contender(text: str) -> tuple[str, tuple[str, list[str], str]]:
    try:
        name, urlset, flags = text.split(":", 2)
    except ValueError:
        raise argparse.ArgumentTypeError("NAME:URLSET:FLAGS, URLSET fast or mixed") from None
    if urlset not in ("fast", "mixed"):
        raise argparse.ArgumentTypeError(f"URLSET must be fast or mixed, not {urlset!r}")
    return name, (urlset, shlex.split(flags), f"{urlset}, {flags}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="500 + 50 x 3 URLs, 1 round")
    parser.add_argument("--fast", type=int, help="the fast host's URLs (default 2000)")
    parser.add_argument("--slow", type=int, help="the slow host's URLs (default 200)")
    parser.add_argument("--hang", type=int, help="the hanging host's URLs (default 200)")
    parser.add_argument("--throttled", type=int, help="the 429 host's URLs (default 200)")
    parser.add_argument("--slow-ms", type=int, default=500, help="the slow host's delay")
    parser.add_argument("--retry-after", type=int, default=2, help="the 429s' Retry-After")
    parser.add_argument(
        "--throttle-first", type=int, help="429 for this many first requests (default: half)"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3; --quick 1)")
    parser.add_argument("-w", "--workers", type=int, default=100, help="fetch's -w")
    parser.add_argument("--timeout", type=float, default=3, help="fetch's --timeout")
    parser.add_argument(
        "--only", help="comma-separated contenders (default: all of CONTENDERS and --contender)"
    )
    parser.add_argument(
        "--contender",
        action="append",
        type=parse_contender,
        default=[],
        help="one more: NAME:URLSET:FLAGS (URLSET fast or mixed; FLAGS for parallelize fetch)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=300, help="kill a contender after this long"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR / "hosts.md")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (
        ("fast", 2000, 500),
        ("slow", 200, 50),
        ("hang", 200, 50),
        ("throttled", 200, 50),
        ("rounds", 3, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.throttle_first is None:
        args.throttle_first = args.throttled // 2
    for name, spec in args.contender:
        CONTENDERS[name] = spec
    args.keys = args.only.split(",") if args.only else list(CONTENDERS)
    unknown = [k for k in args.keys if k not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; known: {list(CONTENDERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve_main(json.loads(args.serve))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    nginx = find_tool("nginx")
    if nginx is None:
        print("hosts.py: nginx is needed (apt-get install nginx-light)", file=sys.stderr)
        return 2
    spec = {
        "slow_ms": args.slow_ms,
        "retry_after": args.retry_after,
        "throttle_first": args.throttle_first,
    }
    tmp = Path(tempfile.mkdtemp(prefix="parallelize-hosts-bench-"))
    tmp.chmod(0o755)  # nginx's worker runs as nobody when we are root
    try:
        paths = make_files(tmp / "www", args.fast)
        with nginx_logged(nginx, tmp) as (base, log), aiohttp_hosts(spec) as ports:
            host_of = {urlsplit(base).netloc: "fast"}
            host_of |= {f"127.0.0.1:{ports[h]}": h for h in ("slow", "hang", "throttle")}
            fast = [base + p for p in paths]
            others = [f"http://127.0.0.1:{ports['slow']}/s/{i}" for i in range(args.slow)]
            others += [f"http://127.0.0.1:{ports['hang']}/h/{i}" for i in range(args.hang)]
            others += [f"http://127.0.0.1:{ports['throttle']}/t/{i}" for i in range(args.throttled)]
            mixed = fast + others
            random.Random(SEED).shuffle(mixed)
            expected = {"fast": fast, "mixed": mixed}
            url_files = {}
            for name, urls in expected.items():
                url_files[name] = tmp / f"urls-{name}.txt"
                url_files[name].write_text("\n".join(urls) + "\n")
            setup = [
                f"project: {src_state()}",
                f"machine: {machine()}; load average before: {load_average()}",
                (
                    f"parallelize {version_of('parallelize')}; {PARALLELIZE}; "
                    f"aiohttp {version_of('aiohttp')} (the hosts' server)"
                ),
                (
                    f"hosts on 127.0.0.1: fast = nginx ({nginx}, 1 worker, {args.fast} files "
                    f"of 200 B-4 KiB); slow = {args.slow_ms} ms; hang = never answers; "
                    f"throttle = 429 + Retry-After: {args.retry_after} for its first "
                    f"{args.throttle_first} requests, then 200"
                ),
                (
                    f"URLs: fast {args.fast}, slow {args.slow}, hang {args.hang}, throttled "
                    f"{args.throttled}; mixed = all {len(mixed)}, shuffled (seed {SEED})"
                ),
                (
                    "every contender: parallelize fetch URLS -o OUT --no-progress "
                    f"-w {args.workers} --timeout {args.timeout:g} [FLAGS]; "
                    f"{args.rounds} round(s), order rotated"
                ),
            ]
            print("\n".join(setup), "", sep="\n", flush=True)
            # Off the clock: nginx's and the page cache's warm-up, the .pyc files.
            measure("alone", args, ports, host_of, url_files, expected, base, log, tmp)
            samples: dict[str, list[dict[str, Any]]] = {k: [] for k in args.keys}
            started = time.perf_counter()
            for round_no in range(args.rounds):
                for name in rotated(args.keys, round_no):
                    sample = measure(
                        name, args, ports, host_of, url_files, expected, base, log, tmp
                    )
                    samples[name].append(sample)
                    fast_done = sample["hosts"].get("fast", {}).get("last_end_from_first")
                    print(
                        f"round {round_no + 1} {name}: {sample['elapsed']:.2f} s, fast done "
                        f"{fmt(fast_done, '.2f')} s, exit {sample['exit']}"
                        + "".join(f"; {p}" for p in sample["problems"]),
                        flush=True,
                    )
            minutes = (time.perf_counter() - started) / 60
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    warn_if_src_changed(setup)
    tables = [
        main_table(samples),
        host_table(samples),
        "### Verdicts (issue 22's targets)\n\n"
        + "\n".join(f"- {v}" for v in verdicts(samples, args)),
    ]
    raw = {"setup": setup, "contenders": CONTENDERS, "samples": samples}
    write_report(args.out, "Polite at scale: hosts", "hosts.py", argv, minutes, setup, tables, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
