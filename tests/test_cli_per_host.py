"""Limits per host on ``parallelize fetch`` (and per key on ``run``), run for real.

The command line runs in a subprocess against servers in the test's own event loop
(two servers: two hosts), which count what they see: requests in flight, when each
arrived, how often robots.txt was asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from clitools import cli, records, write_lines
from nettools import serve_app
from parallelize.testing import ServerStats, local_server

T = TypeVar("T")


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run the servers and the command line's subprocess in one fresh loop."""
    with asyncio.Runner(debug=True) as runner:
        return runner.run(coro)


async def fetch(*args: str, cwd: Path) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``parallelize fetch ARGS`` to its end; return its code, records and stderr."""
    return await _command("fetch", *args, cwd=cwd)


async def _command(*args: str, cwd: Path) -> tuple[int, list[dict[str, Any]], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parallelize",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 25)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, records(out.decode()), err.decode()


class Site:
    """A small site: its robots.txt as given, any other path a page; it logs arrivals."""

    def __init__(self, robots: tuple[int, str] | None = None) -> None:
        self.robots = robots  # (status, body); None: 404
        self.arrivals: list[tuple[str, float]] = []  # (path, monotonic time)

    def times(self, prefix: str) -> list[float]:
        return [at for path, at in self.arrivals if path.startswith(prefix)]

    def asked(self, path: str) -> int:
        return sum(seen == path for seen, _ in self.arrivals)

    def app(self) -> web.Application:
        async def robots_txt(request: web.Request) -> web.Response:
            self.arrivals.append((request.path, time.monotonic()))
            status, body = self.robots if self.robots is not None else (404, "no robots\n")
            return web.Response(status=status, text=body)

        async def page(request: web.Request) -> web.Response:
            self.arrivals.append((request.path, time.monotonic()))
            return web.Response(text="page\n")

        app = web.Application()
        app.router.add_get("/robots.txt", robots_txt)
        app.router.add_get("/{tail:.*}", page)
        return app


def serve(site: Site) -> contextlib.AbstractAsyncContextManager[str]:
    """Serve ``site`` on 127.0.0.1 and a free port; yield its base URL."""
    return serve_app(site.app())


def gaps(times: list[float]) -> list[float]:
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered)]


# -- --per-host, the summary, bad lines ----------------------------------------------------


@pytest.mark.timeout(60)
def test_per_host_caps_each_host_and_the_summary_says_keys(tmp_path: Path) -> None:
    """--per-host 2: neither server sees more than 2 at once; bad lines keep their kind."""
    one, two = ServerStats(), ServerStats()

    async def main() -> tuple[int, list[dict[str, Any]], str]:
        async with local_server(one) as a, local_server(two) as b:
            urls = [f"{base}/slow/60" for _ in range(12) for base in (a, b)]
            write_lines(tmp_path / "urls.txt", [*urls, "not a url", "example.com/x"])
            return await fetch("urls.txt", "-w", "20", "--per-host", "2", cwd=tmp_path)

    code, lines, stderr = drive(main())
    assert code == 4, stderr  # the two bad lines: final failures
    kinds = sorted(str(r["error"] and r["error"]["kind"]) for r in lines)
    assert kinds == ["None"] * 24 + ["invalid_url", "invalid_url"]
    assert one.peak_in_flight == 2
    assert two.peak_in_flight == 2
    assert one.requests == two.requests == 12
    assert "keys: " in stderr


@pytest.mark.timeout(60)
def test_per_host_rate_spaces_each_host_apart(tmp_path: Path) -> None:
    """--per-host-rate 5: each server sees a request every 0.2 s at most."""
    first, second = Site(), Site()

    async def main() -> tuple[int, list[dict[str, Any]], str]:
        async with serve(first) as a, serve(second) as b:
            urls = [f"{base}/p/{i}" for i in range(5) for base in (a, b)]
            write_lines(tmp_path / "urls.txt", urls)
            return await fetch("urls.txt", "-w", "10", "--per-host-rate", "5", cwd=tmp_path)

    code, lines, stderr = drive(main())
    assert code == 0, stderr
    assert len(lines) == 10
    for site in (first, second):
        spacing = gaps(site.times("/p/"))
        assert len(spacing) == 4
        # Arrival times, server side: a network jitter of some ms allowed.
        assert min(spacing) >= 0.16, spacing


# -- the breaker -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_hanging_host_ends_as_host_down_while_another_succeeds(tmp_path: Path) -> None:
    """--host-failures 3: after a few timeouts, a hanging host's URLs fail at once."""
    hanging, healthy = ServerStats(), ServerStats()

    async def main() -> tuple[int, list[dict[str, Any]], str]:
        async with local_server(hanging) as a, local_server(healthy) as b:
            urls = [f"{a}/hang" for _ in range(60)] + [f"{b}/page/{i}" for i in range(60)]
            write_lines(tmp_path / "urls.txt", urls)
            return await fetch(
                "urls.txt", "-w", "4", "--host-failures", "3", "--timeout", "0.3", cwd=tmp_path
            )

    code, lines, stderr = drive(main())
    assert code == 1, stderr
    hung = [r for r in lines if r["url"].endswith("/hang")]
    fine = [r for r in lines if "/page/" in r["url"]]
    assert len(hung) == len(fine) == 60
    assert all(r["status"] == 200 and r["error"] is None for r in fine)
    kinds = [r["error"]["kind"] for r in hung]
    assert set(kinds) == {"timeout", "host_down"}
    # Only those in flight when the breaker opened were tried: the rest, no request.
    assert kinds.count("timeout") <= 3 + 4
    assert hanging.requests == kinds.count("timeout")
    down = next(r for r in hung if r["error"]["kind"] == "host_down")
    assert down["error"]["message"].startswith("'127.0.0.1:")
    assert "' is down: 3 attempts in a row failed" in down["error"]["message"]
    assert "items failed as their key was down" in stderr


@pytest.mark.timeout(60)
def test_the_breaker_is_on_by_default_and_host_failures_0_turns_it_off(tmp_path: Path) -> None:
    """A plain fetch has the breaker (K = 10, no limit per host): a hanging host's
    URLs past the 10th timeout (and those in flight then) fail at once as host_down;
    a healthy host beside it is untouched. ``--host-failures 0``: every URL is tried."""
    stats = ServerStats()

    async def main(*flags: str) -> tuple[int, list[dict[str, Any]], str]:
        async with local_server(stats) as a, local_server(ServerStats()) as b:
            urls = [f"{a}/hang" for _ in range(40)] + [f"{b}/page/{i}" for i in range(5)]
            write_lines(tmp_path / "urls.txt", urls)
            return await fetch(
                "urls.txt", "-w", "4", "--timeout", "0.2", "-v", *flags, cwd=tmp_path
            )

    code, lines, stderr = drive(main())
    assert code == 1
    hung = [r for r in lines if r["url"].endswith("/hang")]
    kinds = [r["error"]["kind"] for r in hung]
    assert 10 <= kinds.count("timeout") <= 10 + 3  # K, and the others in flight then
    assert kinds.count("host_down") == 40 - kinds.count("timeout")
    assert stats.requests == kinds.count("timeout")  # no request for a host_down (/hang counted)
    assert [r["status"] for r in lines if "/page/" in r["url"]] == [200] * 5
    assert "keys: 1 with failures, 1 down (breaker open)" in stderr, stderr

    stats.requests = 0
    code, lines, stderr = drive(main("--host-failures", "0"))
    assert [r["error"]["kind"] for r in lines if r["url"].endswith("/hang")] == ["timeout"] * 40
    assert stats.requests == 40
    assert "keys: " not in stderr


# -- --robots ------------------------------------------------------------------------------

ROBOTS = "User-agent: *\nDisallow: /private\nCrawl-delay: 1\n"


@pytest.mark.timeout(60)
def test_robots_skips_disallowed_urls_and_applies_the_crawl_delay(tmp_path: Path) -> None:
    """--robots: robots.txt asked once per site; disallowed URLs are records, not requests."""
    polite, gone, none = Site((200, ROBOTS)), Site((503, "down\n")), Site((404, ""))

    async def main() -> tuple[int, list[dict[str, Any]], str]:
        async with serve(polite) as a, serve(gone) as b, serve(none) as c:
            urls = [f"{a}/public/{i}" for i in range(3)]
            urls += [f"{a}/private/{i}" for i in range(2)]
            urls += [f"{b}/any/{i}" for i in range(3)]
            urls += [f"{c}/open/{i}" for i in range(3)]
            write_lines(tmp_path / "urls.txt", urls)
            return await fetch("urls.txt", "-w", "20", "--robots", "--retries", "2", cwd=tmp_path)

    code, lines, stderr = drive(main())
    assert code == 4, stderr  # robots and 404s: final
    by_path = {r["url"].split("/", 3)[3]: r for r in lines}
    assert len(lines) == 11
    for name in ("public/0", "public/1", "public/2", "open/0", "open/1", "open/2"):
        assert by_path[name]["status"] == 200, by_path[name]
    for name in ("private/0", "private/1", "any/0", "any/1", "any/2"):
        record = by_path[name]
        assert record["error"]["kind"] == "robots", record
        assert record["attempts"] == 1  # never retried
        assert record["status"] is None
    assert (
        "disallows this URL for user agent 'parallelize'"
        in by_path["private/0"]["error"]["message"]
    )
    assert (
        "could not be read (status 503): RFC 9309 disallows" in by_path["any/0"]["error"]["message"]
    )
    # One robots.txt per site, however many workers; none of the refused URLs asked.
    assert [site.asked("/robots.txt") for site in (polite, gone, none)] == [1, 1, 1]
    assert polite.times("/private") == []
    assert gone.times("/any") == []
    # Crawl-delay: 1 is the site's rate, from its first URL on (jitter allowed).
    spacing = gaps(polite.times("/public/"))
    assert len(spacing) == 2
    assert min(spacing) >= 0.8, spacing
    robots_at = polite.times("/robots.txt")[0]
    assert min(polite.times("/public/")) >= robots_at


@pytest.mark.timeout(60)
def test_robots_that_cannot_be_read_follow_rfc_9309(tmp_path: Path) -> None:
    """429 or no answer: the site disallowed; past 512 KiB: the start is read."""
    busy = Site((429, "slow down\n"))
    big = Site((200, "User-agent: *\nDisallow: /private\n" + "# filler\n" * 80_000))

    async def main() -> tuple[int, list[dict[str, Any]], str]:
        async with serve(busy) as a, serve(big) as b:
            urls = [f"{a}/x", f"{b}/private/1", f"{b}/open", "http://127.0.0.1:9/nobody"]
            write_lines(tmp_path / "urls.txt", urls)
            return await fetch("urls.txt", "--robots", "--timeout", "5", cwd=tmp_path)

    code, lines, stderr = drive(main())
    assert code == 4, stderr  # robots: final
    by_path = {r["url"].split("/", 3)[3]: r for r in lines}
    assert by_path["open"]["status"] == 200
    assert by_path["private/1"]["error"]["kind"] == "robots"
    assert "disallows this URL" in by_path["private/1"]["error"]["message"]
    assert by_path["x"]["error"]["kind"] == "robots"
    assert "(status 429)" in by_path["x"]["error"]["message"]
    assert by_path["nobody"]["error"]["kind"] == "robots"
    assert "(connection: " in by_path["nobody"]["error"]["message"]
    assert busy.times("/x") == []


@pytest.mark.timeout(60)
def test_robots_matches_the_user_agent_of_the_header(tmp_path: Path) -> None:
    """-H 'User-Agent: SpecialBot/2.0': its group in robots.txt applies, not '*'."""
    site = Site((200, "User-agent: specialbot\nDisallow: /\n\nUser-agent: *\nAllow: /\n"))

    async def main() -> tuple[int, list[dict[str, Any]], str]:
        async with serve(site) as a:
            write_lines(tmp_path / "urls.txt", [f"{a}/x/{i}" for i in range(3)])
            return await fetch(
                "urls.txt", "--robots", "-H", "User-Agent: SpecialBot/2.0 (+x)", cwd=tmp_path
            )

    code, lines, _ = drive(main())
    assert code == 4  # robots: final
    assert [r["error"]["kind"] for r in lines] == ["robots"] * 3
    assert "for user agent 'SpecialBot'" in lines[0]["error"]["message"]
    assert site.times("/x/") == []


# -- parallelize run --per-key-field ---------------------------------------------------------

TASKS = """
import asyncio
import collections

now = collections.Counter()
peak = collections.Counter()


async def work(tenant=None, i=0):
    now[tenant] += 1
    peak[tenant] = max(peak[tenant], now[tenant])
    try:
        await asyncio.sleep(0.03)
    finally:
        now[tenant] -= 1
    return peak[tenant]


async def flaky(tenant=None, i=0):
    if tenant == "down":
        raise ConnectionError("no route")
    return i
"""


@pytest.mark.timeout(60)
def test_run_per_key_field_caps_each_key(tmp_path: Path) -> None:
    """run --per-key-field tenant --per-key 2: at most 2 calls at once per tenant."""
    (tmp_path / "tenants.py").write_text(TASKS)
    lines = [json.dumps({"tenant": t, "i": i}) for i in range(10) for t in ("a", "b")]
    lines += [json.dumps({"i": i}) for i in range(6)]  # no tenant: the key null
    lines.append("{not json")
    write_lines(tmp_path / "jobs.jsonl", lines)
    result = cli(
        "run",
        "tenants:work",
        "--input",
        "jobs.jsonl",
        "-w",
        "20",
        "--per-key-field",
        "tenant",
        "--per-key",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr  # final failures only
    out = records(result.stdout)
    assert [r["error"]["kind"] for r in out if not r["ok"]] == ["invalid_json"]
    peaks: dict[Any, int] = {}
    for record in out:
        if record["ok"]:
            tenant = record["args"].get("tenant")
            peaks[tenant] = max(peaks.get(tenant, 0), record["result"])
    assert peaks == {"a": 2, "b": 2, None: 2}
    assert "keys: " in result.stderr


@pytest.mark.timeout(60)
def test_run_key_failures_fail_a_down_key_at_once(tmp_path: Path) -> None:
    """run --key-failures 2: a key whose calls raise ConnectionError ends as key_down."""
    (tmp_path / "tenants.py").write_text(TASKS)
    lines = [json.dumps({"tenant": "down", "i": i}) for i in range(8)]
    lines += [json.dumps({"tenant": "up", "i": i}) for i in range(8)]
    write_lines(tmp_path / "jobs.jsonl", lines)
    result = cli(
        "run",
        "tenants:flaky",
        "--input",
        "jobs.jsonl",
        "-w",
        "1",
        "--per-key-field",
        "tenant",
        "--key-failures",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    out = records(result.stdout)
    kinds = [r["error"]["kind"] for r in out if not r["ok"]]
    assert kinds == ["exception", "exception"] + ["key_down"] * 6
    assert sum(r["ok"] for r in out) == 8


# -- bad options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--per-host", "0"], "argument --per-host: must be >= 1, got 0"),
        (["--per-host", "-3"], "argument --per-host: must be >= 1, got -3"),
        (["--per-host", "two"], "argument --per-host: expected a whole number, got 'two'"),
        (["--per-host-rate", "0"], "argument --per-host-rate: must be > 0 per second, got '0'"),
        (["--per-host-rate", "-1"], "argument --per-host-rate: must be > 0 per second"),
        (["--per-host-rate", "fast"], "argument --per-host-rate: expected calls per second"),
        (["--per-host-rate", "inf"], "argument --per-host-rate: must be > 0 per second"),
        (["--per-host-rate", "1", "--per-host-burst", "0"], "--per-host-burst: must be >= 1"),
        (["--per-host-burst", "3"], "--per-host-burst goes with --per-host-rate R"),
        (["--host-failures", "-1"], "argument --host-failures: must be >= 0, got -1"),
        (["--host-failures", "x"], "argument --host-failures: expected a whole number"),
        (["--host-cooldown", "-2"], "argument --host-cooldown: must be >= 0 seconds"),
        (
            ["--host-failures", "0", "--host-cooldown", "5"],
            "--host-cooldown goes with the breaker: give --host-failures K",
        ),
        (["--robots", "--run", "crawl"], "--robots does not go with --run"),
    ],
)
@pytest.mark.timeout(30)
def test_bad_per_host_options_exit_2_before_any_output(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A bad value: exit 2, one line naming the option, no output file made."""
    write_lines(tmp_path / "urls.txt", ["http://127.0.0.1:9/"])
    result = cli("fetch", "urls.txt", "-o", "out.jsonl", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--per-key", "2"], "--per-key goes with --per-key-field NAME"),
        (["--key-failures", "3"], "--key-failures goes with --per-key-field NAME"),
        (["--per-key-field", "tenant"], "--per-key-field limits nothing alone"),
        (["--per-key-field", ""], "--per-key-field needs a NAME"),
        (["--per-key-field", "t", "--per-key", "0"], "argument --per-key: must be >= 1, got 0"),
        (["--per-key-field", "t", "--per-key-rate", "-1"], "--per-key-rate: must be > 0"),
        (["--per-key-field", "t", "--key-cooldown", "5"], "--key-cooldown goes with the breaker"),
    ],
)
@pytest.mark.timeout(30)
def test_bad_per_key_options_exit_2_before_any_output(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """run: a per-key option without its field, or a bad value: exit 2, no output file."""
    (tmp_path / "tenants.py").write_text(TASKS)
    write_lines(tmp_path / "jobs.jsonl", ['{"tenant": "a"}'])
    result = cli(
        "run", "tenants:work", "--input", "jobs.jsonl", "-o", "out.jsonl", *args, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out.jsonl").exists()
