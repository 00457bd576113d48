"""The ``parallelize`` command line, run for real in subprocesses.

Each test runs ``python -m parallelize ...`` as a user would, against the local
fault-injection server (``python -m parallelize.testing``, one per module), and
checks what the user sees: the JSON lines, the stderr line, the exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

FIELDS = {"url", "final_url", "status", "bytes", "elapsed", "attempts", "error"}

TASKS = """
import asyncio


async def add(a, b=0):
    await asyncio.sleep(0.001)
    return a + b


def multiply(a, b=1):
    return a * b


async def nap(seconds):
    await asyncio.sleep(seconds)
    return seconds


def as_set(*values):
    return set(values)
"""


def cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m parallelize ARGS`` to its end."""
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "parallelize", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=20,
        check=False,
    )


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def by_url(text: str) -> dict[str, dict[str, Any]]:
    return {record["url"]: record for record in records(text)}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def key() -> str:
    """A fresh /flaky key: the server counts requests per key."""
    return uuid.uuid4().hex


def test_fetch_writes_one_record_per_url(server: str, tmp_path: Path) -> None:
    """Every URL gets one JSON line on stdout with its status and size; exit 0."""
    urls = [f"{server}/page/{n}" for n in range(40)]
    result = cli("fetch", str(write_lines(tmp_path / "urls.txt", urls)), "-w", "8")
    assert result.returncode == 0, result.stderr
    got = by_url(result.stdout)
    assert sorted(got) == sorted(urls)
    for n, url in enumerate(urls):
        record = got[url]
        assert set(record) == FIELDS
        assert record["final_url"] == url
        assert record["status"] == 200
        assert record["bytes"] == len(f"page {n}\n")
        assert record["attempts"] == 1
        assert record["error"] is None
        assert isinstance(record["elapsed"], float)
        assert record["elapsed"] >= 0
    assert "40" in result.stderr  # the summary is on stderr, not in the output


def test_fetch_reads_stdin_and_skips_blank_and_comment_lines(server: str) -> None:
    """URLS ``-`` reads a pipe; blank lines and # comments are not URLs."""
    urls = [f"{server}/page/{n}" for n in range(5)]
    text = "# a comment\n\n" + "\n".join(urls) + "\n   \n"
    result = cli("fetch", "-", "--no-uvloop", "-q", stdin=text)
    assert result.returncode == 0, result.stderr
    assert sorted(by_url(result.stdout)) == sorted(urls)
    assert result.stderr == ""  # -q: no summary


def test_fetch_writes_to_the_output_file(server: str, tmp_path: Path) -> None:
    """-o FILE gets the lines; stdout stays empty."""
    urls = [f"{server}/page/{n}" for n in range(10)]
    out = tmp_path / "out.jsonl"
    result = cli("fetch", str(write_lines(tmp_path / "urls.txt", urls)), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(by_url(out.read_text())) == sorted(urls)


def test_fetch_saves_bodies_under_the_hash_of_the_url(server: str, tmp_path: Path) -> None:
    """--save-dir DIR holds each body as DIR/<sha256 of the URL>, named in the record."""
    urls = [f"{server}/page/{n}" for n in range(6)] + [f"{server}/status/404"]
    pages = tmp_path / "pages"
    result = cli("fetch", str(write_lines(tmp_path / "urls.txt", urls)), "--save-dir", str(pages))
    assert result.returncode == 1, result.stderr  # the 404
    got = by_url(result.stdout)
    for n, url in enumerate(urls[:-1]):
        file = pages / hashlib.sha256(url.encode()).hexdigest()
        assert got[url]["file"] == str(file)
        assert file.read_text() == f"page {n}\n"
    missing = got[urls[-1]]
    assert Path(missing["file"]).read_text() == "status 404\n"  # every body is kept
    assert sorted(p.name for p in pages.iterdir()) == sorted(
        hashlib.sha256(url.encode()).hexdigest() for url in urls
    )  # and no .part file is left


def test_fetch_failures_are_records_and_exit_1(server: str, tmp_path: Path) -> None:
    """A 404, a reset, a hang and malformed URLs become failure records, not a crash."""
    urls = [
        f"{server}/page/1",
        f"{server}/status/404",
        f"{server}/reset",
        f"{server}/hang",
        "not a url",
        "ftp://example.com/file",
    ]
    result = cli("fetch", str(write_lines(tmp_path / "urls.txt", urls)), "--timeout", "0.5")
    assert result.returncode == 1, result.stderr
    got = by_url(result.stdout)
    assert len(got) == len(urls)
    assert got[urls[0]]["error"] is None
    missing = got[f"{server}/status/404"]
    assert missing["status"] == 404
    assert missing["bytes"] == len("status 404\n")
    assert missing["error"] == {"kind": "http", "message": "404 Not Found"}
    assert got[f"{server}/reset"]["error"]["kind"] == "connection"
    assert got[f"{server}/reset"]["status"] is None
    assert got[f"{server}/hang"]["error"] == {
        "kind": "timeout",
        "message": "no complete answer within --timeout 0.5 s",
    }
    for url in urls[4:]:
        assert got[url]["error"]["kind"] == "invalid_url"
        assert set(got[url]) == FIELDS


def test_fetch_retries_what_may_recover(server: str, tmp_path: Path) -> None:
    """--retries N retries 503s (after Retry-After), not 404s; attempts are counted."""
    recovers, stays, waits = key(), key(), key()
    urls = [
        f"{server}/flaky/{recovers}?fail=2",
        f"{server}/flaky/{stays}?fail=9",
        f"{server}/flaky/{waits}?fail=1&retry_after=1",
        f"{server}/status/404",
    ]
    result = cli("fetch", str(write_lines(tmp_path / "urls.txt", urls)), "--retries", "2")
    assert result.returncode == 1, result.stderr
    got = by_url(result.stdout)
    assert got[urls[0]]["status"] == 200
    assert got[urls[0]]["attempts"] == 3
    assert got[urls[1]]["status"] == 503
    assert got[urls[1]]["attempts"] == 3
    assert got[urls[1]]["error"]["kind"] == "http"
    assert got[urls[2]]["status"] == 200
    assert got[urls[2]]["elapsed"] >= 0.9  # waited for the server's Retry-After: 1
    assert got[urls[3]]["attempts"] == 1


def test_a_rerun_with_the_journal_replays_successes_and_redoes_failures(
    server: str, tmp_path: Path
) -> None:
    """With --journal the same command again writes every URL; only failures refetch."""
    flaky = f"{server}/flaky/{key()}?fail=1"
    urls = [f"{server}/page/{n}" for n in range(20)] + [flaky]
    args = ["fetch", "urls.txt", "--journal", "crawl.db", "-o", "out.jsonl"]
    write_lines(tmp_path / "urls.txt", urls)
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    first_lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert by_url("\n".join(first_lines))[flaky]["status"] == 503

    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    second_lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(by_url("\n".join(second_lines))) == sorted(urls)
    assert len(second_lines) == len(urls)
    assert by_url("\n".join(second_lines))[flaky]["status"] == 200
    # The successes were replayed from the journal byte for byte, not fetched again.
    successes = [line for line in first_lines if json.loads(line)["error"] is None]
    assert set(successes) <= set(second_lines)


def interrupt(proc: subprocess.Popen[str], output: Path, signum: int) -> str:
    """Send ``signum`` once ``output`` has lines; return the CLI's stderr at its end."""
    try:
        wait_for_lines(output, proc)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.communicate()
    return stderr


def wait_for_lines(path: Path, proc: subprocess.Popen[str], deadline: float = 10.0) -> None:
    """Wait until the CLI has written a line to ``path`` (or fail)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists() and path.read_text().count("\n") >= 1:
            return
        assert proc.poll() is None, "the CLI ended before writing anything"
        time.sleep(0.02)
    pytest.fail(f"no line in {path} after {deadline} s")


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "parallelize", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def test_ctrl_c_stops_and_the_printed_command_resumes(server: str, tmp_path: Path) -> None:
    """SIGINT: exit 130 and the command to resume; running it completes the output."""
    urls = [f"{server}/slow/300?n={n}" for n in range(100)]
    write_lines(tmp_path / "urls.txt", urls)
    args = ["fetch", "urls.txt", "--journal", "crawl.db", "-o", "out.jsonl", "-w", "10"]
    proc = start(args, tmp_path)
    stderr = interrupt(proc, tmp_path / "out.jsonl", signal.SIGINT)
    assert proc.returncode == 130, stderr
    last = stderr.splitlines()[-1]
    assert last.startswith("parallelize: stopped by SIGINT after "), last
    hint = "to resume, run the same command: "
    assert hint in last
    command = shlex.split(last.split(hint, 1)[1])
    assert command[-len(args) :] == args
    assert command[-len(args) - 2 : -len(args)] == ["-m", "parallelize"]
    first_lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert 0 < len(first_lines) < len(urls)

    resumed = subprocess.run(  # noqa: S603 - the command our CLI printed
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=20,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["url"] for line in lines) == sorted(urls)  # once each
    assert set(first_lines) <= set(lines)  # replayed as written, not fetched again


def test_sigterm_without_a_journal_says_how_to_make_runs_resumable(
    server: str, tmp_path: Path
) -> None:
    """SIGTERM: exit 130; without --journal the line points to --journal."""
    write_lines(tmp_path / "urls.txt", [f"{server}/slow/300?n={n}" for n in range(100)])
    proc = start(["fetch", "urls.txt", "-o", "out.jsonl", "-w", "10"], tmp_path)
    stderr = interrupt(proc, tmp_path / "out.jsonl", signal.SIGTERM)
    assert proc.returncode == 130, stderr
    last = stderr.splitlines()[-1]
    assert last.startswith("parallelize: stopped by SIGTERM after "), last
    assert "with --journal FILE a rerun of the same command skips what is done" in last


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with a URL file, an arguments file and a module of functions."""
    write_lines(tmp_path / "urls.txt", ["http://127.0.0.1:9/"])
    write_lines(tmp_path / "args.jsonl", ["[1, 2]"])
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fetch", "missing.txt"], "cannot read the URLS file 'missing.txt'"),
        (["fetch", "urls.txt", "-w", "0"], "argument -w/--workers: must be >= 1, got 0"),
        (["fetch", "urls.txt", "--timeout", "soon"], "argument --timeout: expected seconds"),
        (["fetch", "urls.txt", "--bogus"], "unrecognized arguments: --bogus"),
        (["fetch", "urls.txt", "-H", "no colon"], "argument -H/--header: expected 'Name: value'"),
        (["fetch", "urls.txt", "-o", "nowhere/out.jsonl"], "cannot write the output file"),
        (["fetch", "urls.txt", "--journal", "nowhere/j.db"], "cannot create the journal"),
        (["run", "tasks", "--input", "args.jsonl"], "expected MODULE:FUNCTION"),
        (["run", "nosuchmodule:f", "--input", "args.jsonl"], "no module named 'nosuchmodule'"),
        (["run", "tasks:nothing", "--input", "args.jsonl"], "module 'tasks' has no 'nothing'"),
        (["run", "broken:f", "--input", "args.jsonl"], "importing 'broken' failed: RuntimeError"),
        (["run", "tasks:add", "--input", "missing.jsonl"], "cannot read the --input file"),
        (["run", "tasks:add"], "the following arguments are required: -i/--input"),
        ([], "choose a command"),
    ],
)
def test_usage_errors_exit_2_with_one_line(workdir: Path, args: list[str], message: str) -> None:
    """A bad option, file, output or function: exit 2, one line on stderr, no output."""
    result = cli(*args, cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("parallelize")
    assert message in lines[0]


def test_a_usage_error_leaves_the_output_file_alone(workdir: Path) -> None:
    """An unimportable function is found before -o FILE is opened (not emptied)."""
    (workdir / "out.jsonl").write_text("precious\n")
    result = cli("run", "nosuchmodule:f", "--input", "args.jsonl", "-o", "out.jsonl", cwd=workdir)
    assert result.returncode == 2
    assert (workdir / "out.jsonl").read_text() == "precious\n"


def test_fetch_without_aiohttp_says_which_extra_to_install() -> None:
    """No aiohttp: exit 2 and the pip command, in one line."""
    code = (
        "import sys; sys.modules['aiohttp'] = None; "
        "from parallelize._cli import main; sys.exit(main(['fetch', '-']))"
    )
    result = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        (
            "parallelize fetch: this command needs the 'aiohttp' package: "
            'pip install "parallelize[http]"'
        )
    ]


def test_run_calls_an_async_function_once_per_line(workdir: Path) -> None:
    """Arrays are positional, objects keyword, other values the one argument."""
    lines = ["[1, 2]", '{"a": 3, "b": 4}', "5", "", "not json", '"x"', "NaN", "[[1], [2]]"]
    write_lines(workdir / "args.jsonl", lines)
    result = cli("run", "tasks:add", "--input", "args.jsonl", cwd=workdir)
    assert result.returncode == 1, result.stderr
    got = {record["line"]: record for record in records(result.stdout)}
    assert sorted(got) == [1, 2, 3, 5, 6, 7, 8]  # line 4 is blank
    assert got[1] == {"line": 1, "args": [1, 2], "ok": True, "result": 3}
    assert got[2] == {"line": 2, "args": {"a": 3, "b": 4}, "ok": True, "result": 7}
    assert got[3] == {"line": 3, "args": 5, "ok": True, "result": 5}
    assert got[8] == {"line": 8, "args": [[1], [2]], "ok": True, "result": [1, 2]}
    assert got[5]["ok"] is False
    assert "args" not in got[5]
    assert got[5]["error"]["kind"] == "invalid_json"
    assert got[7]["error"]["kind"] == "invalid_json"  # NaN is not JSON
    assert got[6]["args"] == "x"
    assert got[6]["error"]["kind"] == "exception"
    assert got[6]["error"]["message"].startswith("TypeError: ")


def test_run_calls_a_plain_function_from_stdin(workdir: Path) -> None:
    """A plain function runs (in threads) over JSON lines read from stdin."""
    result = cli(
        "run", "tasks:multiply", "--input", "-", "-w", "4", stdin="[2, 3]\n[4, 5]\n", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert sorted(record["result"] for record in records(result.stdout)) == [6, 20]


def test_run_writes_the_repr_of_a_result_json_cannot_hold(workdir: Path) -> None:
    """A set is not JSON: the result is its repr() string."""
    result = cli("run", "tasks:as_set", "--input", "-", stdin="[7]\n", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert records(result.stdout) == [{"line": 1, "args": [7], "ok": True, "result": "{7}"}]


def test_run_timeout_is_a_failure_record(workdir: Path) -> None:
    """--timeout cancels a slow call: kind timeout; the fast one succeeds."""
    result = cli(
        "run", "tasks:nap", "--input", "-", "--timeout", "0.3", stdin="0\n5\n", cwd=workdir
    )
    assert result.returncode == 1, result.stderr
    got = {record["line"]: record for record in records(result.stdout)}
    assert got[1]["ok"] is True
    assert got[2]["error"] == {"kind": "timeout", "message": "no result within --timeout 0.3 s"}


@pytest.mark.parametrize("command", [[], ["fetch"], ["run"]])
def test_help_teaches_examples_and_exit_codes(command: list[str]) -> None:
    """Each --help has examples and the exit codes."""
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "exit codes:" in result.stdout
    assert "130" in result.stdout


SCRIPT = Path(sys.executable).with_name("parallelize")


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is not installed")
def test_the_console_script_runs_the_cli(server: str) -> None:
    """The ``parallelize`` executable next to the interpreter is the same CLI."""
    urls = [f"{server}/page/{n}" for n in range(3)]
    result = subprocess.run(  # noqa: S603 - our own CLI
        [str(SCRIPT), "fetch", "-"],
        input="\n".join(urls),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={**os.environ, "PATH": f"{SCRIPT.parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr
    assert sorted(by_url(result.stdout)) == sorted(urls)


def test_metrics_port_serves_prometheus_metrics_during_the_run(server: str, tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    import socket  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    urls = [f"{server}/slow/40" for _ in range(100)]
    args = [sys.executable, "-m", "parallelize", "fetch", str(write_lines(tmp_path / "u", urls))]
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [*args, "-w", "5", "--metrics-port", str(port), "-o", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = ""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
                if "parallelize_items_in_flight 5.0" in text:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert "parallelize_items_in_flight 5.0" in text
        assert "parallelize_concurrency_limit 5.0" in text
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.parametrize("journal", [[], ["--journal", "j.db"]], ids=["plain", "journal"])
def test_ctrl_c_stops_at_once_while_waiting_for_stdin(
    server: str, tmp_path: Path, journal: list[str]
) -> None:
    """An idle pipe on stdin does not hold the run for the grace period; with a
    journal, the lines read so far run before the pipe says more."""
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "parallelize",
            "fetch",
            "-",
            "-o",
            str(out),
            "--no-progress",
            *journal,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(f"{server}/page/1\n{server}/page/2\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
            not out.exists() or len(out.read_text().splitlines()) < 2
        ):
            time.sleep(0.05)
        assert len(out.read_text().splitlines()) == 2
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=8)
        assert time.monotonic() - started < 3, "waited for the grace period"
        assert proc.returncode == 130, stderr
        assert "stopped by SIGINT after 2 " in stderr
    finally:
        proc.kill()
        proc.wait()
