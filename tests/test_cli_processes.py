"""``parallelize fetch --processes N``: the requests in child processes, one output.

Run for real in subprocesses against the local fault-injection server. The records
must be what one process writes (every field but ``elapsed``), whole lines, with
retries counted across the children, the journal resumed, the breaker per host
kept in the parent, and no child left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clitools import FIELDS, by_url, cli, key, wait_for_lines, write_lines
from parallelize.http import backends

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=backends())
def client(request: pytest.FixtureRequest) -> str:
    """The name of an installed HTTP client; each test runs once per client."""
    name: str = request.param
    return name


def _same_but_elapsed(out: str) -> dict[str, dict[str, object]]:
    return {url: {k: v for k, v in r.items() if k != "elapsed"} for url, r in by_url(out).items()}


def test_the_records_are_those_of_one_process(client: str, server: str, tmp_path: Path) -> None:
    """Successes, a 404, a reset, a hang, a bad line: the same records either way."""
    urls = [f"{server}/page/{n}" for n in range(300)]
    urls += [f"{server}/status/404", f"{server}/reset", f"{server}/hang", "not a url"]
    path = str(write_lines(tmp_path / "urls.txt", urls))
    common = ("fetch", "--client", client, path, "-w", "30", "--timeout", "0.5")
    one = cli(*common)
    two = cli(*common, "--processes", "2")
    assert two.returncode == one.returncode == 1, two.stderr
    assert _same_but_elapsed(two.stdout) == _same_but_elapsed(one.stdout)
    lines = two.stdout.splitlines()
    assert len(lines) == len(urls)
    assert all(set(json.loads(line)) >= FIELDS for line in lines)  # whole lines
    assert "2 processes" in two.stderr


def test_retries_are_counted_across_the_children(client: str, server: str, tmp_path: Path) -> None:
    """--retries: each attempt may go to another child; attempts and elapsed span them."""
    recovers, waits = key(), key()
    urls = [f"{server}/flaky/{recovers}?fail=2", f"{server}/flaky/{waits}?fail=1&retry_after=1"]
    result = cli(
        "fetch",
        "--client",
        client,
        str(write_lines(tmp_path / "urls.txt", urls)),
        "--retries",
        "2",
        "--processes",
        "2",
    )
    assert result.returncode == 0, result.stderr
    got = by_url(result.stdout)
    assert (got[urls[0]]["status"], got[urls[0]]["attempts"]) == (200, 3)
    assert (got[urls[1]]["status"], got[urls[1]]["attempts"]) == (200, 2)
    assert got[urls[1]]["elapsed"] >= 0.9  # from the first attempt, in another process


def test_a_journaled_rerun_with_processes_replays_and_redoes_failures(
    client: str, server: str, tmp_path: Path
) -> None:
    flaky = f"{server}/flaky/{key()}?fail=1"
    urls = [f"{server}/page/{n}" for n in range(50)] + [flaky]
    write_lines(tmp_path / "urls.txt", urls)
    args = ["fetch", "--client", client, "urls.txt", "--journal", "j.db", "-o", "out.jsonl"]
    first = cli(*args, "--processes", "2", cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    second = cli(*args, "--processes", "auto", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    got = by_url((tmp_path / "out.jsonl").read_text())
    assert sorted(got) == sorted(urls)
    assert got[flaky]["status"] == 200


def test_the_breaker_per_host_stays_one_for_the_run(server: str, tmp_path: Path) -> None:
    """A hanging host: K timeouts open its breaker for every child at once."""
    urls = [f"{server}/hang" for _ in range(40)]
    result = cli(
        "fetch",
        str(write_lines(tmp_path / "urls.txt", urls)),
        "-w",
        "4",
        "--timeout",
        "0.2",
        "--processes",
        "2",
    )
    assert result.returncode == 1
    kinds = [json.loads(line)["error"]["kind"] for line in result.stdout.splitlines()]
    assert len(kinds) == 40
    assert 10 <= kinds.count("timeout") <= 13  # K, and those in flight as it opened
    assert kinds.count("host_down") == 40 - kinds.count("timeout")


def test_bad_processes_values_are_usage_errors(tmp_path: Path) -> None:
    path = str(write_lines(tmp_path / "urls.txt", ["http://127.0.0.1:9/"]))
    for bad in ("0", "two", "-1"):
        result = cli("fetch", path, "--processes", bad)
        assert result.returncode == 2
        assert "--processes" in result.stderr


def _session_members(sid: int) -> list[int]:
    """The live processes of session ``sid`` (a zombie does not count)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_every_process_and_the_rerun_completes(
    server: str, tmp_path: Path, presses: int
) -> None:
    """Ctrl-C reaches the whole process group: the children ignore it, the parent
    stops (gracefully; at once on a second press), every child exits, and the
    journaled rerun completes the output with each URL once."""
    urls = [f"{server}/slow/300?n={n}" for n in range(100)]
    write_lines(tmp_path / "urls.txt", urls)
    args = ["fetch", "urls.txt", "--journal", "j.db", "-o", "out.jsonl", "-w", "10"]
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "parallelize", *args, "--processes", "2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,  # its own group, as a terminal's job
    )
    try:
        wait_for_lines(tmp_path / "out.jsonl", proc)
        for _ in range(presses):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "stopped by SIGINT" in stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while _session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_members(proc.pid) == []  # no child, no fork server left
    again = cli(*args, "--processes", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["url"] for line in lines) == sorted(urls)


# -- run --processes ----------------------------------------------------------------------

TASKS = """
import asyncio, os, sys, time


async def add(a, b=0):
    await asyncio.sleep(0.001)
    return a + b


def multiply(a, b=1):
    time.sleep(0.001)
    return a * b


def pid(_):
    time.sleep(0.01)
    return os.getpid()


def leave(code):
    sys.exit(code)


async def nap(seconds):
    await asyncio.sleep(seconds)
    return seconds
"""


def _records(out: str) -> dict[int, dict[str, object]]:
    return {record["line"]: record for record in map(json.loads, out.splitlines())}


@pytest.mark.parametrize("function", ["add", "multiply", "leave"])
def test_run_records_are_those_of_one_process(tmp_path: Path, function: str) -> None:
    """Async or plain FUNCTION, bad lines, sys.exit(): the same records either way."""
    (tmp_path / "tasks.py").write_text(TASKS)
    lines = [f"[{i}, {i + 1}]" for i in range(200)] + ["not json", '{"a": 1}', "[1, 2, 3, 4]"]
    write_lines(tmp_path / "args.jsonl", lines)
    args = ("run", f"tasks:{function}", "--input", "args.jsonl", "-w", "20")
    one = cli(*args, cwd=tmp_path)
    two = cli(*args, "--processes", "2", cwd=tmp_path)
    assert two.returncode == one.returncode, two.stderr
    assert _records(two.stdout) == _records(one.stdout)
    assert len(_records(two.stdout)) == len(lines)


def test_run_spreads_a_plain_function_over_the_children(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    write_lines(tmp_path / "args.jsonl", [str(i) for i in range(200)])
    result = cli(
        "run", "tasks:pid", "--input", "args.jsonl", "-w", "40", "--processes", "2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    pids = {record["result"] for record in _records(result.stdout).values()}
    assert len(pids) == 2


def test_run_timeout_cancels_the_call_in_its_child(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    result = cli(
        "run",
        "tasks:nap",
        "--input",
        "-",
        "--timeout",
        "0.3",
        "--processes",
        "2",
        stdin="0\n5\n",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    got = _records(result.stdout)
    assert got[1]["ok"] is True
    assert got[2]["error"] == {"kind": "timeout", "message": "no result within --timeout 0.3 s"}
