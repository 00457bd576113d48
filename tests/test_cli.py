"""The ``parallelize`` command line, run for real in subprocesses.

Each test runs ``python -m parallelize ...`` as a user would, against the local
fault-injection server (``python -m parallelize.testing``, one per module), and
checks what the user sees: the JSON lines, the stderr line, the exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clitools import by_url, cli, records, write_lines

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
        (["run", "tasks:add"], "--input is missing: give the input, or --run NAME"),
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


@pytest.mark.parametrize(
    ("missing", "args", "message"),
    [
        (
            ["aiohttp", "pyreqwest"],
            [],
            (
                "this command needs the 'aiohttp' package: "
                'pip install "parallelize[http]" (or "parallelize[fast]" for pyreqwest)'
            ),
        ),
        (
            ["aiohttp"],
            ["--client", "aiohttp"],
            "--client aiohttp needs the 'aiohttp' package: pip install \"parallelize[http]\"",
        ),
        (
            ["pyreqwest"],
            ["--client", "pyreqwest"],
            "--client pyreqwest needs the 'pyreqwest' package: pip install \"parallelize[fast]\"",
        ),
    ],
)
def test_fetch_without_its_client_says_which_extra_to_install(
    missing: list[str], args: list[str], message: str
) -> None:
    """No HTTP client (or not the one asked for): exit 2 and the pip command, in one line."""
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({missing!r})); "
        "import importlib.util; find = importlib.util.find_spec; "
        "importlib.util.find_spec = lambda name, *a: None if name in sys.modules and "
        "sys.modules[name] is None else find(name, *a); "
        f"from parallelize._cli import main; sys.exit(main(['fetch', '-', *{args!r}]))"
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
    assert result.stderr.splitlines() == [f"parallelize fetch: {message}"]


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
