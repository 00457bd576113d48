"""The main job: ``parallelize fetch`` against curl, wget2 and hand-written aiohttp (issue 11).

    .venv/bin/python benchmarks/fetch.py                # 10,000 files + 100 missing, 3 rounds
    .venv/bin/python benchmarks/fetch.py --quick        # 2,000 files + 100 missing, 1 round
    .venv/bin/python benchmarks/fetch.py --urls 20000 --concurrency 200 --rounds 5
    .venv/bin/python benchmarks/fetch.py --no-install   # never run apt-get

Setup, done here: if ``nginx`` is missing, ``apt-get install -y nginx-light``
(through ``sudo`` when not root; ``--no-install`` skips it and the run stops
without nginx); the same for ``wget2`` if apt knows the package (if not, its row
says "not available" and the run goes on). nginx is then started by this script,
as its child (``daemon off``, ``worker_processes 1``), on 127.0.0.1 and a free
port, from its own config in a temp dir (pid file, error log and temp paths in
there, no access log), and stopped at the end, on Ctrl-C or on an error too. It
serves ``--urls`` files of seeded sizes (100 B to 64 KiB, log-uniform, about 1
in 500 between 256 KiB and 1 MiB) and ``--missing`` paths that answer 404: a URL
file shuffled with a seed.

Contenders, each run as a fresh process, rounds interleaved with the order
rotated each round: ``curl -Z --parallel-max C``, ``xargs -P C curl`` (20 URLs per
curl), ``wget2 --max-threads=C``, a plain aiohttp script (C workers over one
queue, one JSON line per URL; on asyncio's loop and on uvloop), the same script
with pyreqwest and with httpx (asyncio's loop), the seed article's
``parallelize`` (benchmarks/article_impl.py) driving aiohttp, and
``parallelize fetch URLS -w C -o OUT --no-progress`` with ``--client pyreqwest``
and ``--client aiohttp`` on uvloop (its default), and aiohttp with ``--no-uvloop``.

Per contender: requests per second (the URLs over the process's wall time, start
to exit), CPU µs per request of its process tree (``wait4``'s rusage: the process
and every child it waited for), nginx's CPU µs per request over the same span
(master and worker, from /proc), the peak RSS (``ru_maxrss``: the largest process
of the tree), and exactness: every URL's status (200 or 404) and size against the
files on disk, in every round. Ratios within the run, verdict lines for the
targets measurable now; the tables are printed and written to
benchmarks/out/fetch.md, with every raw sample in benchmarks/out/fetch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from _harness import (
    HERE,
    child_cmd,
    child_env,
    errors_into,
    filesystem_of,
    fmt,
    good,
    load_average,
    machine,
    markdown,
    median_of,
    paired_ratio,
    process_cpu,
    rotated,
    spread,
    src_state,
    version_of,
    warn_if_src_changed,
    write_report,
)
from _harness import check as harness_check

OUT_DIR = HERE / "out"
SEED = 11  # the number: file sizes and the URL order
XARGS_BATCH = 20  # URLs per curl under xargs
PARALLELIZE = Path(sys.executable).parent / "parallelize"  # the venv's console script

# Issue 11's targets, as ratios of requests per second within one run.
TARGET_FAST_VS_CURL = 0.5  # the fast backend (pyreqwest)
TARGET_VS_SEED = 1.5  # the fast backend (pyreqwest)
TARGET_AIOHTTP_VS_PLAIN = 1.05  # the aiohttp backend, uvloop installed

# (key, label); the command of each is built by ``command()``.
CONTENDERS = [
    ("curl", "curl -Z --parallel-max {c}"),
    ("xargs", f"xargs -P {{c}} curl ({XARGS_BATCH} URLs per curl)"),
    ("wget2", "wget2 --max-threads={c}"),
    ("plain", "plain aiohttp script (asyncio loop)"),
    ("plain-uvloop", "plain aiohttp script (uvloop)"),
    ("plain-pyreqwest", "plain pyreqwest script (asyncio loop)"),
    ("httpx", "plain httpx script (asyncio loop)"),
    ("seed", "seed article's parallelize + aiohttp (asyncio loop)"),
    ("pfetch-fast", "parallelize fetch --client pyreqwest (uvloop)"),
    ("pfetch-fast-nobreaker", "parallelize fetch --client pyreqwest --host-failures 0"),
    ("pfetch-fast-ph100", "parallelize fetch --client pyreqwest --per-host 100"),
    ("pfetch-fast-p2", "parallelize fetch --client pyreqwest --processes 2"),
    ("pfetch-fast-pauto", "parallelize fetch --client pyreqwest --processes auto"),
    ("pfetch", "parallelize fetch --client aiohttp (uvloop)"),
    ("pfetch-no-uvloop", "parallelize fetch --client aiohttp --no-uvloop"),
]
LABELS = dict(CONTENDERS)
OURS = (
    "pfetch-fast",
    "pfetch-fast-nobreaker",
    "pfetch-fast-ph100",
    "pfetch-fast-p2",
    "pfetch-fast-pauto",
    "pfetch",
    "pfetch-no-uvloop",
)
# The fetch options of each of ours beyond -w and -o (pyreqwest: the fast backend).
OUR_FLAGS = {
    "pfetch-fast": ["--client", "pyreqwest"],
    "pfetch-fast-nobreaker": ["--client", "pyreqwest", "--host-failures", "0"],
    "pfetch-fast-ph100": ["--client", "pyreqwest", "--per-host", "100"],
    "pfetch-fast-p2": ["--client", "pyreqwest", "--processes", "2"],
    "pfetch-fast-pauto": ["--client", "pyreqwest", "--processes", "auto"],
    "pfetch": ["--client", "aiohttp"],
    "pfetch-no-uvloop": ["--client", "aiohttp", "--no-uvloop"],
}
EXIT_OK = {key: {0, 1} for key in OURS} | {"wget2": {0, 8}}  # 404s: 1 and 8


# --------------------------------------------------------------------------- #
# The Python contenders (this script re-invoked with --child): one JSON line per URL
# --------------------------------------------------------------------------- #


async def queue_workers(urls: list[str], concurrency: int, get: Any, out: TextIO) -> None:
    """The plain script's shape: C workers over one shared queue, a JSON line per URL.

    ``get(url)`` returns ``(status, size)``, the body read whole, as such scripts do.
    """
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)

    async def worker() -> None:
        while True:
            try:
                url = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                status, size = await get(url)
                line = {"url": url, "status": status, "bytes": size}
            except Exception as exc:
                line = {"url": url, "status": None, "bytes": None, "error": repr(exc)}
            out.write(json.dumps(line) + "\n")  # buffered: a write(2) per 8 KiB

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def plain_aiohttp(spec: dict[str, Any], urls: list[str], out: TextIO) -> None:
    """One aiohttp ClientSession, its defaults but the pool's size."""
    import aiohttp  # noqa: PLC0415

    connector = aiohttp.TCPConnector(limit=spec["concurrency"])
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(url: str) -> tuple[int, int]:
            async with session.get(url) as resp:
                body = await resp.read()
            return resp.status, len(body)

        await queue_workers(urls, spec["concurrency"], get, out)


async def plain_pyreqwest(spec: dict[str, Any], urls: list[str], out: TextIO) -> None:
    """One pyreqwest Client, its defaults but the connections."""
    from pyreqwest.client import ClientBuilder  # noqa: PLC0415

    async with ClientBuilder().max_connections(spec["concurrency"]).build() as client:

        async def get(url: str) -> tuple[int, int]:
            async with client.get(url).build_streamed() as resp:
                body = await resp.bytes()
            return resp.status, len(body)

        await queue_workers(urls, spec["concurrency"], get, out)


async def plain_httpx(spec: dict[str, Any], urls: list[str], out: TextIO) -> None:
    """One httpx.AsyncClient, its pool as large as C."""
    import httpx  # noqa: PLC0415

    c = spec["concurrency"]
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits) as client:

        async def get(url: str) -> tuple[int, int]:
            resp = await client.get(url)
            return resp.status_code, len(resp.content)

        await queue_workers(urls, c, get, out)


PLAIN = {
    "plain": plain_aiohttp,
    "plain-pyreqwest": plain_pyreqwest,
    "httpx": plain_httpx,
}


async def seed_code(spec: dict[str, Any], urls: list[str], out: TextIO) -> None:
    """The seed article's ``parallelize`` over 1-tuples ``(url,)``, as it needs them.

    An exception kills its worker silently and the run then hangs: the parent's
    timeout is what ends such a run (none is expected against a local nginx).
    """
    import aiohttp  # noqa: PLC0415

    from article_impl import parallelize as seed_parallelize  # noqa: PLC0415

    connector = aiohttp.TCPConnector(limit=spec["concurrency"])
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> tuple[str, int, int]:
            async with session.get(url) as resp:
                body = await resp.read()
            return url, resp.status, len(body)

        items = ((url,) for url in urls)
        async for url, status, size in seed_parallelize(fetch, items, spec["concurrency"]):
            out.write(json.dumps({"url": url, "status": status, "bytes": size}) + "\n")


def child(spec: dict[str, Any]) -> None:
    """Run one Python contender; its records go to spec["out"]."""
    report: dict[str, Any] = {}
    main = seed_code if spec["kind"] == "seed" else PLAIN[spec["kind"]]
    urls = Path(spec["urls"]).read_text().split()
    with errors_into(report), open(spec["out"], "w") as out:
        if spec["uvloop"]:
            import uvloop  # noqa: PLC0415

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main(spec, urls, out))
        else:
            asyncio.run(main(spec, urls, out))
    print(json.dumps(report), flush=True)
    if "error" in report:
        sys.exit(1)


# --------------------------------------------------------------------------- #
# Setup: packages, files, nginx
# --------------------------------------------------------------------------- #


def find_tool(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin and /sbin (not on every user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def apt_has(package: str) -> bool:
    done = subprocess.run(
        ["apt-cache", "show", package], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "Package:" in done.stdout


def ensure_tool(tool: str, package: str, allow_install: bool, notes: list[str]) -> str | None:
    """The path of ``tool``; if missing, ``apt-get install -y package`` first (via sudo
    when not root), unless ``allow_install`` is false. None if it is still missing."""
    found = find_tool(tool)
    if found:
        return found
    if not allow_install:
        notes.append(f"{tool}: missing, not installed (--no-install)")
        return None
    if shutil.which("apt-get") is None:
        notes.append(f"{tool}: missing, and no apt-get to install {package}")
        return None
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    if not apt_has(package):
        print(f"setup: apt-cache does not know {package}; running apt-get update", flush=True)
        subprocess.run([*prefix, "apt-get", "update"], check=False)
        if not apt_has(package):
            notes.append(f"{tool}: missing, and apt has no package {package}")
            return None
    command = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", package]
    print(f"setup: {tool} is missing; running: {' '.join(command)}", flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(command, env=env, check=False)
    found = find_tool(tool)
    if done.returncode != 0 or not found:
        notes.append(f"{tool}: `{' '.join(command)}` failed (exit {done.returncode})")
        return None
    notes.append(f"{tool}: installed now by `{' '.join(command)}`")
    return found


def stop_system_nginx(notes: list[str]) -> None:
    """Stop a system nginx the package's install script may have started (port 80)."""
    pid_file = Path("/run/nginx.pid")
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError):
        return
    notes.append(f"nginx-light's install started the system nginx (pid {pid}); stopped it")


def make_files(root: Path, count: int, missing: int) -> tuple[list[str], dict[str, int]]:
    """``count`` files of seeded sizes under ``root``/d, and ``missing`` paths under
    /missing/ that do not exist: the paths (shuffled) and each file's size."""
    rng = random.Random(SEED)
    blob = rng.randbytes(1 << 20)
    (root / "d").mkdir(parents=True)
    sizes: dict[str, int] = {}
    for i in range(count):
        if rng.random() < 0.002:  # a few larger ones
            size = rng.randint(256 << 10, 1 << 20)
        else:
            size = int(100 * (65536 / 100) ** rng.random())  # log-uniform, 100 B .. 64 KiB
        start = rng.randrange(0, len(blob) - size + 1)
        path = f"/d/{i:05d}.bin"
        (root / path[1:]).write_bytes(blob[start : start + size])
        sizes[path] = size
    paths = [*sizes, *(f"/missing/{i:05d}.bin" for i in range(missing))]
    rng.shuffle(paths)
    return paths, sizes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_config(nginx: str, tmp: Path, port: int) -> str:
    """A config for one worker, everything it writes kept in ``tmp``."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    temp_paths = [f"client_body_temp_path {tmp}/client_body;"]
    for module in ("proxy", "fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in built:
            temp_paths.append(f"{module}_temp_path {tmp}/{module};")
    return "\n".join(
        [
            "worker_processes 1;",
            "daemon off;",
            f"pid {tmp}/nginx.pid;",
            f"error_log {tmp}/error.log warn;",
            "events { worker_connections 4096; }",
            "http {",
            "    access_log off;",
            "    log_not_found off;",  # a 404 is expected: no error-log line for each
            "    sendfile on;",
            "    tcp_nopush on;",
            "    keepalive_requests 1000000;",  # no reconnects in the middle of a run
            "    default_type application/octet-stream;",
            *(f"    {line}" for line in temp_paths),
            "    server {",
            f"        listen 127.0.0.1:{port};",
            f"        root {tmp}/www;",
            "    }",
            "}",
            "",
        ]
    )


def nginx_pids(master: int) -> list[int]:
    """The master and its children (the worker)."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        children = []
    return [master, *(int(pid) for pid in children)]


@contextmanager
def nginx_server(nginx: str, tmp: Path) -> Iterator[tuple[str, int, str]]:
    """nginx on 127.0.0.1 as this process's child: its base URL, its master's pid and
    the config's first lines; stopped (SIGQUIT, then SIGKILL) when the block ends."""
    port = free_port()
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / name).mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(nginx, tmp, port))
    # -e: the error log before the config is read (else /var/log/nginx/error.log).
    command = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    server = subprocess.Popen(command, start_new_session=True)  # no Ctrl-C of its own
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            if server.poll() is not None:
                log = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
                raise RuntimeError(f"nginx exited with {server.returncode}: {log[-300:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen within 10 s") from None
                time.sleep(0.05)
        yield base, server.pid, f"{command[0]} -p TMP -c TMP/nginx.conf"
    finally:
        server.send_signal(signal.SIGQUIT)  # graceful: the master stops its worker
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def size_of_404(base: str) -> int:
    """The size of nginx's own 404 page (what every missing path must answer)."""
    try:
        urllib.request.urlopen(f"{base}/missing/probe")  # noqa: S310 - our own nginx
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return len(exc.read())
        raise
    raise RuntimeError("nginx answered /missing/probe with a 2xx")


# --------------------------------------------------------------------------- #
# Running one contender: a fresh process tree, its rusage, nginx's CPU
# --------------------------------------------------------------------------- #


def command(key: str, args: argparse.Namespace, files: dict[str, Path], out: Path) -> list[str]:
    c = str(args.concurrency)
    curl_w = ["-s", "-w", "%{url} %{http_code} %{size_download}\\n"]
    if key == "curl":
        return ["curl", "-Z", "--parallel-max", c, *curl_w, "-K", str(files["curl_config"])]
    if key == "xargs":
        # Each URL comes as "-o /dev/null URL": curl pairs the n-th -o with the n-th URL.
        per_curl = str(3 * XARGS_BATCH)
        xargs = ["xargs", "-a", str(files["xargs_args"]), "-P", c, "-n", per_curl]
        return [*xargs, "curl", *curl_w]
    if key == "wget2":
        return [
            files["wget2"].as_posix(),
            f"--max-threads={c}",
            "-q",
            "--no-robots",
            "-O",
            "/dev/null",
            f"--stats-site=csv:{out}",
            "-i",
            str(files["urls"]),
        ]
    if key in OURS:
        base = [str(PARALLELIZE), "fetch", str(files["urls"]), "-w", c, "-o", str(out)]
        return [*base, *OUR_FLAGS[key], "--no-progress"]
    spec = {
        "kind": "plain" if key == "plain-uvloop" else key,
        "uvloop": key == "plain-uvloop",
        "urls": str(files["urls"]),
        "out": str(out),
        "concurrency": args.concurrency,
    }
    return child_cmd(__file__, spec)


GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


def run_tree(
    cmd: list[str], timeout: float, stdout: Path, stderr: Path, *, grandchildren: bool = False
) -> dict[str, Any]:
    """Run ``cmd`` as a new session; wall time, exit status and the tree's rusage.

    The peak RSS comes from GNU time, when there is one, and not from our own wait4:
    a process spawned by this one (vfork) keeps this parent's high-water mark across
    exec, so ru_maxrss would never read below this parent's (~30 MB); GNU time is
    small, and its child's mark starts from its own.

    ``grandchildren``: also count the CPU of the session's processes that wait4 never
    sees (``fetch --processes``: its children are the fork server's, which nobody
    reaps), polled from /proc every 10 ms (each one's last 10 ms may be missed).
    """
    rss_file = stderr.with_suffix(".rss")
    rss_file.unlink(missing_ok=True)
    if GNU_TIME:
        cmd = [GNU_TIME, "-q", "-f", "%M", "-o", str(rss_file), *cmd]
    with open(stdout, "ab") as out, open(stderr, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            env=child_env(),
        )  # fmt: skip
        timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        seen: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, CPU s so far)
        stop = threading.Event()
        poller = threading.Thread(target=_poll_session, args=(proc.pid, seen, stop))
        if grandchildren:
            poller.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            timer.cancel()
            stop.set()
            if grandchildren:
                poller.join()
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss = usage.ru_maxrss
    if GNU_TIME:
        try:
            maxrss = int(rss_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            maxrss = None
    # The session's processes but the top one and its children (reaped: in wait4).
    unseen = sum(cpu for pid, (ppid, cpu) in seen.items() if proc.pid not in {pid, ppid})
    return {
        "elapsed": elapsed,
        "exit": proc.returncode,
        "cpu": usage.ru_utime + usage.ru_stime + unseen,  # GNU time's own ~1 ms included
        "maxrss_kb": maxrss,
    }


TICKS = os.sysconf("SC_CLK_TCK")


def _poll_session(sid: int, seen: dict[int, tuple[int, float]], stop: threading.Event) -> None:
    """Record the CPU of each process of session ``sid`` until ``stop`` (from /proc)."""
    while not stop.wait(0.01):
        for entry in Path("/proc").iterdir():
            # The session's processes came after its leader (pids wrap around rarely).
            if not entry.name.isdigit() or int(entry.name) < sid:
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                cpu = (int(fields[11]) + int(fields[12])) / TICKS
                seen[int(entry.name)] = (int(fields[1]), cpu)


def read_records(key: str, out: Path) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """URL -> (status, size) from a contender's output, and problems with its form."""
    records: dict[str, tuple[Any, Any]] = {}
    problems: list[str] = []
    duplicates = bad_lines = 0
    if not out.exists():
        return records, ["no output file"]
    if key == "wget2":
        rows = list(csv.reader(out.read_text().splitlines()))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        try:
            url_i, status_i, size_i = header.index("url"), header.index("status"), None
            size_i = header.index("sizedecompressed" if "sizedecompressed" in header else "size")
        except ValueError:
            return records, [f"wget2 stats: unexpected header {header[:8]}"]
        parsed = [(r[url_i], r[status_i], r[size_i]) for r in rows[1:] if len(r) > size_i]
    elif key in ("curl", "xargs"):
        parsed = []
        for line in out.read_text().splitlines():
            fields = line.split()
            if len(fields) == 3:
                parsed.append((fields[0], fields[1], fields[2]))
            else:
                bad_lines += 1
    else:
        parsed = []
        for line in out.read_text().splitlines():
            try:
                record = json.loads(line)
                parsed.append((record["url"], record["status"], record["bytes"]))
            except (ValueError, KeyError):
                bad_lines += 1
    for url, status, size in parsed:
        if url in records:
            duplicates += 1
        try:
            records[url] = (int(status), int(size))
        except (TypeError, ValueError):
            records[url] = (status, size)
    if duplicates:
        problems.append(f"{duplicates} URLs twice")
    if bad_lines:
        problems.append(f"{bad_lines} unreadable lines")
    return records, problems


def exactness(
    key: str, out: Path, expected: dict[str, tuple[int, int]]
) -> tuple[list[str], dict[str, int]]:
    """Problems (empty: every URL once, its status and size right) and the counts."""
    records, problems = read_records(key, out)
    missing = [url for url in expected if url not in records]
    extra = [url for url in records if url not in expected]
    wrong = [url for url, want in expected.items() if url in records and records[url] != want]
    ok_200 = sum(1 for url, want in expected.items() if want[0] == 200 and records.get(url) == want)
    ok_404 = sum(1 for url, want in expected.items() if want[0] == 404 and records.get(url) == want)
    if missing:
        problems.append(f"{len(missing)} URLs missing (e.g. {missing[0]})")
    if extra:
        problems.append(f"{len(extra)} unknown URLs (e.g. {extra[0]})")
    if wrong:
        url = wrong[0]
        problems.append(f"{len(wrong)} wrong (e.g. {url}: {records[url]} != {expected[url]})")
    return problems, {"ok_200": ok_200, "ok_404": ok_404, "records": len(records)}


def measure(
    key: str,
    args: argparse.Namespace,
    files: dict[str, Path],
    expected: dict[str, tuple[int, int]],
    nginx_master: int,
    tmp: Path,
) -> dict[str, Any]:
    out = tmp / f"out-{key}.txt"
    out.unlink(missing_ok=True)
    # curl and xargs write their -w lines to stdout: that is the output file.
    stdout = out if key in ("curl", "xargs") else tmp / f"stdout-{key}.txt"
    stdout.unlink(missing_ok=True)
    stderr = tmp / f"stderr-{key}.txt"
    pids = nginx_pids(nginx_master)
    before = [process_cpu(pid) for pid in pids]
    sample = run_tree(
        command(key, args, files, out),
        args.timeout,
        stdout,
        stderr,
        grandchildren="--processes" in OUR_FLAGS.get(key, []),
    )
    after = [process_cpu(pid) for pid in pids]
    sample["key"] = key
    sample["nginx_cpu"] = (
        None if None in before or None in after else sum(after) - sum(before)  # type: ignore[operator]
    )
    problems, counts = exactness(key, out, expected)
    sample |= counts
    if sample["exit"] not in EXIT_OK.get(key, {0}):
        tail = (stderr.read_text(errors="replace").strip().splitlines() or ["no stderr"])[-1]
        problems.insert(0, f"exit {sample['exit']}: {tail[:120]}")
    sample["problems"] = problems
    return sample


# --------------------------------------------------------------------------- #
# The run, the tables, the verdicts
# --------------------------------------------------------------------------- #


def prepare_inputs(tmp: Path, base: str, paths: list[str], wget2: str | None) -> dict[str, Path]:
    urls = [base + path for path in paths]
    files = {
        "urls": tmp / "urls.txt",
        "curl_config": tmp / "curl.cfg",
        "xargs_args": tmp / "xargs.txt",
    }
    files["urls"].write_text("\n".join(urls) + "\n")
    files["curl_config"].write_text("".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls))
    files["xargs_args"].write_text("".join(f"-o /dev/null {u}\n" for u in urls))
    if wget2:
        files["wget2"] = Path(wget2)
    return files


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def setup_lines(
    args: argparse.Namespace,
    notes: list[str],
    nginx: str,
    wget2: str | None,
    sizes: dict[str, int],
    size_404: int,
    tmp: Path,
) -> list[str]:
    import parallelize  # noqa: PLC0415

    values = sorted(sizes.values())
    large = sum(1 for v in values if v > 65536)
    return [
        f"project: {src_state()}",
        f"parallelize imported from: {Path(parallelize.__file__).resolve().parent}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        (
            f"parallelize {version_of('parallelize')}, aiohttp {version_of('aiohttp')}, "
            f"uvloop {version_of('uvloop')}"
        ),
        f"curl: {tool_version(['curl', '--version'])}",
        f"wget2: {tool_version([wget2, '--version']) if wget2 else 'not available'}",
        f"xargs: {tool_version(['xargs', '--version'])}",
        f"nginx: {tool_version([nginx, '-v'])} ({nginx})",
        *(f"setup: {note}" for note in notes),
        f"machine: {machine()}",
        f"load average at start: {load_average()}",
        (
            "server: nginx, a child of this script (daemon off), worker_processes 1, "
            "127.0.0.1, keep-alive, sendfile, no access log, its own config in a temp dir "
            f"on {filesystem_of(tmp)}"
        ),
        (
            f"URLs: {len(sizes):,} files ({statistics.median(values):,.0f} B median, "
            f"{values[0]:,} B .. {values[-1]:,} B, {large} over 64 KiB, "
            f"{sum(values) / 1e6:.1f} MB in all) + {args.missing} missing (404, "
            f"{size_404} B each), shuffled (seed {SEED})"
        ),
        (
            f"concurrency {args.concurrency}; rounds: {args.rounds} interleaved (order rotated "
            "each round), medians; one fresh process (tree) per measurement; req/s over "
            "its wall time, start to exit"
        ),
        (
            "peak RSS: GNU time's %M (the largest process of the tree)"
            if GNU_TIME
            else "peak RSS: wait4's ru_maxrss (no /usr/bin/time: never below this parent's)"
        ),
    ]


def run_rounds(
    args: argparse.Namespace,
    keys: list[str],
    files: dict[str, Path],
    expected: dict[str, tuple[int, int]],
    master: int,
    tmp: Path,
) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for round_no in range(args.rounds):
        for key in rotated(keys, round_no):
            sample = measure(key, args, files, expected, master, tmp)
            sample["round"] = round_no
            samples[key].append(sample)
            rate = len(expected) / sample["elapsed"]
            state = "ok" if not sample["problems"] else "; ".join(sample["problems"])[:100]
            print(
                f"round {round_no + 1}/{args.rounds}  {key:<17} {rate:>8,.0f} req/s  "
                f"{sample['elapsed']:6.2f} s  {state}",
                flush=True,
            )
    return samples


def rate_of(samples: list[dict[str, Any]], n: int) -> float | None:
    elapsed = median_of(samples, "elapsed")
    return None if elapsed is None else n / elapsed


def per_request_us(samples: list[dict[str, Any]], field: str, n: int) -> float | None:
    value = median_of(samples, field)
    return None if value is None else value / n * 1e6


def main_table(
    samples: dict[str, list[dict[str, Any]]], n: int, unavailable: dict[str, str]
) -> str:
    header = [
        "contender",
        "req/s",
        "spread",
        "CPU µs/req",
        "nginx CPU µs/req",
        "peak RSS MB",
        "exact rounds",
        "check",
    ]
    rows = []
    for key, label in CONTENDERS:
        if key in unavailable:
            rows.append([label, "-", "-", "-", "-", "-", "-", unavailable[key]])
            continue
        runs = samples.get(key, [])
        rss = median_of(runs, "maxrss_kb")
        exact = sum(1 for s in runs if not s["problems"])
        rows.append(
            [
                label,
                fmt(rate_of(runs, n), ",.0f"),
                spread(runs),
                fmt(per_request_us(runs, "cpu", n), ",.0f"),
                fmt(per_request_us(runs, "nginx_cpu", n), ",.0f"),
                fmt(None if rss is None else rss / 1024, ",.1f"),
                f"{exact}/{len(runs)}",
                harness_check(runs),
            ]
        )
    return (
        f"### {n:,} URLs, one process tree per measurement\n\n"
        "req/s: URLs / median wall time (process start to exit). CPU: the process tree's "
        "user + system time (wait4), nginx's: master + worker over the same span. Peak RSS: "
        "the largest process of the tree. Exact: every URL once, status and size as on "
        "disk.\n\n" + markdown(header, rows)
    )


def ratio(samples: dict[str, list[dict[str, Any]]], a: str, b: str, n: int) -> tuple[Any, Any]:
    """a's speed over b's: the ratio of median req/s, and paired (median per round)."""
    if not good(samples.get(a, [])) or not good(samples.get(b, [])):
        return None, None
    rate_a, rate_b = rate_of(samples[a], n), rate_of(samples[b], n)
    medians = None if rate_a is None or rate_b is None else rate_a / rate_b
    return medians, paired_ratio(samples[b], samples[a])  # elapsed(b) / elapsed(a)


def ratio_table(samples: dict[str, list[dict[str, Any]]], n: int) -> tuple[str, list[str]]:
    pairs = [
        ("pfetch-fast", "curl", f"{TARGET_FAST_VS_CURL}x"),
        ("pfetch-fast", "seed", f"{TARGET_VS_SEED}x"),
        ("pfetch", "plain", f"{TARGET_AIOHTTP_VS_PLAIN}x (aiohttp backend, uvloop)"),
        ("pfetch-fast", "plain-pyreqwest", "- (the engine and the seam, pyreqwest)"),
        ("pfetch", "plain-uvloop", "- (the engine alone: same loop as ours)"),
        ("pfetch-no-uvloop", "plain", "- (the engine alone: same loop, asyncio)"),
        ("pfetch-fast", "pfetch", "- (the fast backend over the default)"),
        ("pfetch-fast", "pfetch-fast-nobreaker", "- (the default breaker per host, 0.97x+)"),
        ("pfetch-fast-ph100", "pfetch-fast-nobreaker", "- (--per-host 100 over none)"),
        ("pfetch-fast-p2", "curl", "0.8x (issue 23: --processes 2)"),
        ("pfetch-fast-pauto", "curl", "0.8x (issue 23: --processes auto)"),
        ("pfetch-fast", "curl", "0.6x (issue 23: one process)"),
        ("pfetch-fast-p2", "pfetch-fast", "- (two processes over one)"),
        ("pfetch-fast", "httpx", "- (what httpx costs at this concurrency)"),
        ("pfetch-fast", "xargs", "-"),
        ("pfetch-fast", "wget2", "-"),
    ]
    rows = []
    for a, b, target in pairs:
        medians, paired = ratio(samples, a, b, n)
        rows.append(
            [
                f"{LABELS[a]} / {LABELS[b]}",
                fmt(medians, ".2f", "x"),
                fmt(paired, ".2f", "x"),
                target,
            ]
        )
    table = "### Ratios (req/s, within this run)\n\n" + markdown(
        ["ratio", "medians", "paired", "issue 11's target"], rows
    )

    verdicts = []
    for a, b, target in (
        ("pfetch-fast", "curl", TARGET_FAST_VS_CURL),
        ("pfetch-fast", "seed", TARGET_VS_SEED),
        ("pfetch", "plain", TARGET_AIOHTTP_VS_PLAIN),
    ):
        medians, paired = ratio(samples, a, b, n)
        claim = f"{LABELS[a]} >= {target}x {LABELS[b]}"
        if medians is None or paired is None:
            verdicts.append(f"not judged: {claim} (no good samples of both)")
            continue
        passed = min(medians, paired) >= target
        verdicts.append(
            f"{'PASS' if passed else 'FAIL'}: {claim}: {medians:.2f}x (medians), "
            f"{paired:.2f}x (paired)"
        )
    ours = [s for key in OURS for s in samples.get(key, [])]
    bad = [s for s in ours if s["problems"]]
    if ours:
        verdicts.append(
            f"{'PASS' if not bad else 'FAIL'}: parallelize fetch exact in every round "
            f"({len(ours) - len(bad)}/{len(ours)} samples)"
        )
    return table, verdicts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="2,000 files, 1 round")
    parser.add_argument("--urls", type=int, default=None, help="files served (10,000; quick 2,000)")
    parser.add_argument("--missing", type=int, default=100, help="paths that answer 404 (100)")
    parser.add_argument("--concurrency", type=int, default=100, help="at once, everywhere (100)")
    parser.add_argument(
        "--only", default=None, help="comma-separated contenders: " + ",".join(LABELS)
    )
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--timeout", type=float, default=300.0, help="per measurement, s (300)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "fetch.md", help="markdown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.urls is None:
        args.urls = 2_000 if args.quick else 10_000
    if args.urls < 1 or args.missing < 0 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--urls, --concurrency and --rounds: at least 1; --missing: at least 0")
    args.keys = list(LABELS)
    if args.only:
        args.keys = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = set(args.keys) - set(LABELS)
        if unknown:
            parser.error(
                f"--only: unknown {', '.join(sorted(unknown))}; choose from {list(LABELS)}"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    for i, (key, label) in enumerate(CONTENDERS):  # the labels name the concurrency
        CONTENDERS[i] = (key, label.format(c=args.concurrency))
        LABELS[key] = CONTENDERS[i][1]
    # SIGTERM ends the run as Ctrl-C does: through the finally blocks that stop nginx.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    notes: list[str] = []
    had_system_nginx = Path("/run/nginx.pid").exists()
    nginx = ensure_tool("nginx", "nginx-light", not args.no_install, notes)
    if nginx and not had_system_nginx:
        stop_system_nginx(notes)
    wget2 = ensure_tool("wget2", "wget2", not args.no_install, notes)
    if nginx is None:
        print("\n".join(notes), file=sys.stderr)
        print("fetch.py: nginx is needed (apt-get install nginx-light)", file=sys.stderr)
        return 2
    unavailable = {"wget2": "not available"} if wget2 is None else {}
    keys = [k for k in args.keys if k not in unavailable]

    tmp = Path(tempfile.mkdtemp(prefix="parallelize-fetch-bench-"))
    tmp.chmod(0o755)  # nginx's worker runs as nobody when we are root: it must read www/
    try:
        print(f"setup: writing {args.urls:,} files to {tmp}/www", flush=True)
        paths, sizes = make_files(tmp / "www", args.urls, args.missing)
        with nginx_server(nginx, tmp) as (base, master, _):
            size_404 = size_of_404(base)
            expected = {base + p: (200, sizes[p]) if p in sizes else (404, size_404) for p in paths}
            files = prepare_inputs(tmp, base, paths, wget2)
            setup = setup_lines(args, notes, nginx, wget2, sizes, size_404, tmp)
            print("\n".join(setup), "", sep="\n", flush=True)
            # Off the clock: nginx's and the page cache's warm-up, and the .pyc files.
            for key in ("curl", "plain"):
                if key in keys:
                    measure(key, args, files, expected, master, tmp)
            started = time.perf_counter()
            samples = run_rounds(args, keys, files, expected, master, tmp)
            minutes = (time.perf_counter() - started) / 60
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    warn_if_src_changed(setup)
    n = len(expected)
    tables = [main_table(samples, n, unavailable)]
    ratios, verdicts = ratio_table(samples, n)
    tables += [ratios, "### Verdicts\n\n" + "\n".join(f"- {v}" for v in verdicts)]
    raw = {"setup": setup, "samples": samples}
    write_report(
        args.out, "The main job: parallelize fetch", "fetch.py", argv, minutes, setup, tables, raw
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
