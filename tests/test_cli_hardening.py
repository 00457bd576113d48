"""The command line against a demanding user: files that are one another, bad
lines, bad options, outputs that fail, options a journal must remember."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clitools import cli, records, start, wait_for_lines, write_lines
from nginxtools import nginx

pytestmark = pytest.mark.timeout(60)

# -- the input, the output, the journal and the save dir are distinct files ---------


def _same_file_cases(tmp_path: Path) -> list[tuple[list[str], Path]]:
    urls = tmp_path / "urls.txt"
    link = tmp_path / "link.txt"
    link.symlink_to(urls)
    hard = tmp_path / "hard.txt"
    out = tmp_path / "out.jsonl"
    return [
        (["fetch", str(urls), "-o", str(urls)], urls),
        (["fetch", str(urls), "-o", str(link)], urls),  # another name, the same file
        (["fetch", str(urls), "-o", str(hard)], urls),  # a hard link
        (["fetch", str(urls), "--journal", str(urls)], urls),
        (["fetch", str(urls), "--save-dir", str(urls)], urls),
        (["fetch", str(urls), "-o", str(out), "--journal", str(out)], out),
        (["run", "os.path:basename", "--input", str(urls), "-o", str(link)], urls),
        (["run", "os.path:basename", "--input", str(urls), "--journal", str(urls)], urls),
    ]


@pytest.mark.parametrize("case", range(8))
def test_an_output_that_is_the_input_is_a_usage_error_and_nothing_is_touched(
    tmp_path: Path, server: str, case: int
) -> None:
    """-o, --journal or --save-dir naming the input (or each other) by any name: exit
    2 before anything is opened for writing; every file keeps its bytes."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/{i}" for i in range(5)])
    os.link(urls, tmp_path / "hard.txt")
    out = tmp_path / "out.jsonl"
    out.write_text('{"kept": true}\n')
    args, _ = _same_file_cases(tmp_path)[case]
    before = {p: p.read_bytes() for p in (urls, out)}
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert "is the same file as" in result.stderr
    assert "give each its own file" in result.stderr
    assert {p: p.read_bytes() for p in (urls, out)} == before


def test_stdout_appended_to_the_input_is_refused(tmp_path: Path, server: str) -> None:
    """``>> urls.txt`` would feed the run its own lines: exit 2, the file unchanged."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/{i}" for i in range(3)])
    before = urls.read_bytes()
    with urls.open("a") as stdout:
        result = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "parallelize", "fetch", str(urls)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=20,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert "the output (stdout) is the same file as the URLS file" in result.stderr
    assert urls.read_bytes() == before


def test_distinct_files_still_run(tmp_path: Path, server: str) -> None:
    """The check refuses nothing that differs: input, output, journal, save dir."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/{i}" for i in range(3)])
    out = tmp_path / "out.jsonl"
    result = cli(
        "fetch",
        str(urls),
        "-o",
        str(out),
        "--journal",
        str(tmp_path / "j.db"),
        "--save-dir",
        str(tmp_path / "bodies"),
    )
    assert result.returncode == 0, result.stderr
    assert len(records(out.read_text())) == 3


# -- a closed stdout ends the run at once, on every client ----------------------------


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx serving 1,000 small files: replies in microseconds, as a race needs."""
    root = tmp_path_factory.mktemp("nginx")
    with nginx(root, {f"/f{i}.txt": b"hello %d\n" % i for i in range(1000)}) as base:
        yield base


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", ["pyreqwest", "aiohttp"])
def test_fetch_into_head_exits_141_every_time(
    fast_server: str, tmp_path: Path, client: str
) -> None:
    """``parallelize fetch 100,000 URLs | head -2`` against nginx: exit 141, 20 runs of
    20, each in seconds (it hung with pyreqwest: a reply that came back while its
    task was being cancelled lost the cancellation)."""
    urls = write_lines(
        tmp_path / "urls.txt", [f"{fast_server}/f{i % 1000}.txt" for i in range(100_000)]
    )
    script = (
        '"$0" -m parallelize fetch "$1" --client "$2" --no-progress | head -2 >/dev/null; '
        'echo "${PIPESTATUS[0]}"'
    )
    codes = []
    for _ in range(20):
        shell = subprocess.Popen(  # noqa: S603 - bash with our own CLI
            ["bash", "-c", script, sys.executable, str(urls), client],  # noqa: S607
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # a hang is killed whole, the CLI with its shell
        )
        try:
            out, _ = shell.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.communicate()
            out = "hung"
        codes.append(out.strip())
    assert codes == ["141"] * 20


# -- an output that cannot be written --------------------------------------------------


def _limit_file_size(size: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@pytest.mark.parametrize("command", ["fetch", "run"])
def test_an_output_that_fills_up_is_one_line_exit_74_and_whole_lines(
    tmp_path: Path, server: str, command: str
) -> None:
    """Past the file size limit (a full disk, to the writer): exit 74, one line on
    stderr and no traceback, and the file holds only whole JSON lines."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/{i}" for i in range(3000)])
    out = tmp_path / "out.jsonl"
    if command == "fetch":
        args = ["fetch", str(urls), "-o", str(out), "--no-progress"]
    else:
        args = ["run", "os.path:basename", "--input", str(urls), "-o", str(out)]
    result = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "parallelize", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=_limit_file_size(250_000),
    )
    assert result.returncode == 74, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [x for x in result.stderr.splitlines() if "cannot write" in x]
    assert re.fullmatch(
        rf"parallelize {command}: cannot write the output '.*out\.jsonl': File too large "
        r"\(after [\d,]+ whole lines\)",
        line,
    ), line
    text = out.read_text()
    assert text.endswith("\n")
    assert 0 < len(records(text)) < 3000  # whole lines only (a torn one would not parse)


@pytest.mark.parametrize("how", ["-o", "stdout"])
def test_a_device_that_refuses_writes_is_exit_74(tmp_path: Path, server: str, how: str) -> None:
    """-o /dev/full (or stdout on it): exit 74 at once, one line, no traceback."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/{i}" for i in range(3000)])
    args = [sys.executable, "-m", "parallelize", "fetch", str(urls), "--no-progress"]
    with Path("/dev/full").open("w") as full:
        result = subprocess.run(  # noqa: S603 - our own CLI
            args + (["-o", "/dev/full"] if how == "-o" else []),
            stdin=subprocess.DEVNULL,
            stdout=full if how == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 74, result.stderr
    assert "Traceback" not in result.stderr
    assert "No space left on device" in result.stderr


# -- a Retry-After of an hour, --max-retry-wait and --deadline --------------------------


@pytest.mark.parametrize("command", ["fetch", "run"])
def test_a_retry_after_of_an_hour_fails_at_once_with_its_own_kind(
    tmp_path: Path, server: str, command: str
) -> None:
    """503 with Retry-After: 3600 and --retries 1: the URL's record says retry_wait at
    once (the default --max-retry-wait is 300 s), with the reply's status kept."""
    if command == "run":
        (tmp_path / "busy.py").write_text(
            "class Busy(Exception):\n"
            "    retry_after = 3600\n"
            "async def call(x):\n"
            "    raise Busy('come back in an hour')\n"
        )
        (tmp_path / "args.jsonl").write_text("1\n")
        result = cli("run", "busy:call", "--input", "args.jsonl", "--retries", "1", cwd=tmp_path)
        [record] = records(result.stdout)
        assert record["error"]["kind"] == "retry_wait", record
        assert result.returncode == 1
        return
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/status/503?retry_after=3600"])
    result = cli("fetch", str(urls), "--retries", "1")
    assert result.returncode == 1, result.stderr
    [record] = records(result.stdout)
    assert record["error"]["kind"] == "retry_wait"
    assert "longer than max_wait 300 s" in record["error"]["message"]
    assert record["status"] == 503
    assert record["attempts"] == 1


def test_max_retry_wait_lets_a_shorter_wait_through(tmp_path: Path, server: str) -> None:
    """A Retry-After under --max-retry-wait is obeyed: the URL is tried again."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/status/503?retry_after=1"])
    result = cli("fetch", str(urls), "--retries", "1", "--max-retry-wait", "2")
    [record] = records(result.stdout)
    assert record["attempts"] == 2
    assert record["error"]["kind"] == "http"


def test_deadline_ends_an_item_whose_next_wait_passes_it(tmp_path: Path, server: str) -> None:
    """--deadline 1 with a Retry-After of 2 s: the item fails at once, kind deadline."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/status/503?retry_after=2"])
    result = cli("fetch", str(urls), "--retries", "3", "--deadline", "1")
    assert result.returncode == 1, result.stderr
    [record] = records(result.stdout)
    assert record["error"]["kind"] == "deadline"
    assert record["status"] == 503
    assert record["attempts"] == 1


def test_deadline_cuts_a_hanging_request(tmp_path: Path, server: str) -> None:
    """--deadline ends a request that hangs, before --timeout would."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/hang"])
    result = cli("fetch", str(urls), "--timeout", "20", "--deadline", "0.5")
    [record] = records(result.stdout)
    assert record["error"]["kind"] == "deadline"


@pytest.mark.parametrize("journal", [False, True])
def test_ctrl_c_says_how_many_items_were_left_undone(
    tmp_path: Path, server: str, journal: bool
) -> None:
    """Ctrl-C while a URL waits for its retry: the stop line counts it as left
    undone; with a journal the rerun runs it again and records it."""
    flaky = f"{server}/status/503?retry_after=60"
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/{i}" for i in range(3)] + [flaky])
    out = tmp_path / "out.jsonl"
    args = ["fetch", str(urls), "-o", str(out), "--retries", "2", "--no-progress"]
    if journal:
        args += ["--journal", str(tmp_path / "j.db")]
    proc = start(args, tmp_path)
    try:
        wait_for_lines(out, proc)
        time.sleep(0.5)  # the flaky URL's first attempt has failed: it waits 60 s
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130, stderr
    again = "they run again on resume" if journal else "no record"
    assert f"1 left undone ({again})" in stderr
    assert flaky not in {r["url"] for r in records(out.read_text())}
    if journal:
        rerun = cli(*args, "--max-retry-wait", "1")  # the 60 s wait now fails at once
        assert flaky in {r["url"] for r in records(out.read_text())}, rerun.stderr


# -- bad lines and bad options get a clear answer ---------------------------------------


def test_a_url_line_with_blanks_inside_is_an_invalid_url_record(
    tmp_path: Path, server: str
) -> None:
    """A tab or a space inside a URL line: an invalid_url record, no request sent."""
    lines = [f"{server}/echo\textra", f"{server}/echo two", f"{server}/page/1"]
    urls = write_lines(tmp_path / "urls.txt", lines)
    result = cli("fetch", str(urls))
    assert result.returncode == 4, result.stderr  # invalid_url: final
    got = {r["url"]: r for r in records(result.stdout)}
    for bad in lines[:2]:
        assert got[bad]["error"]["kind"] == "invalid_url", got[bad]
        assert "blank" in got[bad]["error"]["message"]
        assert got[bad]["attempts"] == 1
    assert got[lines[2]]["status"] == 200


@pytest.mark.parametrize("method", ["GE T", "GET\t", "", "P(OST)"])
def test_a_bad_method_is_a_usage_error_before_any_request(
    tmp_path: Path, server: str, method: str
) -> None:
    """-X 'GE T': exit 2 with one line, and no request is made."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/1"])
    result = cli("fetch", str(urls), "-X", method)
    assert result.returncode == 2
    assert "expected a method name such as GET or POST" in result.stderr
    assert result.stdout == ""


def test_a_url_line_that_is_not_utf8_is_an_invalid_url_record(tmp_path: Path, server: str) -> None:
    """Bytes that are not UTF-8 on a URL line: its own invalid_url record."""
    urls = tmp_path / "urls.txt"
    urls.write_bytes(f"{server}/page/\xff1\n{server}/page/2\n".encode("latin-1"))
    result = cli("fetch", str(urls))
    bad, good = sorted(records(result.stdout), key=lambda r: r["status"] or 0)
    assert bad["error"]["kind"] == "invalid_url"
    assert bad["error"]["message"].startswith("the line is not UTF-8: byte 0xff")
    assert good["status"] == 200


RUN_TASKS = """
import sys


def leave(code):
    sys.exit(code)


def squares(n):
    for i in range(n):
        yield i * i


async def async_squares(n):
    for i in range(n):
        yield i * i


def lazy(n):
    return (i * i for i in range(n))


def echo(x):
    return x
"""


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    (tmp_path / "tasks.py").write_text(RUN_TASKS)
    return tmp_path


def test_run_a_line_that_is_not_utf8_is_a_failure_record(tasks_dir: Path) -> None:
    """A line that is not UTF-8 is its own failure (invalid_utf8), not U+FFFD passed on."""
    (tasks_dir / "args.jsonl").write_bytes(b'"caf\xe9"\n"ok"\n')
    result = cli("run", "tasks:echo", "--input", "args.jsonl", cwd=tasks_dir)
    assert result.returncode == 4, result.stderr  # invalid_utf8: final
    first, second = sorted(records(result.stdout), key=lambda r: r["line"])
    assert first["ok"] is False
    assert first["error"]["kind"] == "invalid_utf8"
    assert first["error"]["message"].startswith("the line is not UTF-8: byte 0xe9")
    assert second == {"line": 2, "args": "ok", "ok": True, "result": "ok"}


def test_run_a_function_that_calls_sys_exit_is_a_failure_record(tasks_dir: Path) -> None:
    """sys.exit(3) in the function fails its line; the others run; exit 1, not 3."""
    (tasks_dir / "args.jsonl").write_text("3\n0\n")
    result = cli("run", "tasks:leave", "--input", "args.jsonl", cwd=tasks_dir)
    assert result.returncode == 1, result.stderr
    got = sorted(records(result.stdout), key=lambda r: r["line"])
    assert [r["error"]["message"] for r in got] == ["SystemExit: 3", "SystemExit: 0"]


@pytest.mark.parametrize("function", ["squares", "async_squares", "lazy"])
def test_run_a_generator_function_gives_the_list_of_its_values(
    tasks_dir: Path, function: str
) -> None:
    """A generator's values, as the library fans them out: one record, a list."""
    (tasks_dir / "args.jsonl").write_text("4\n")
    result = cli("run", f"tasks:{function}", "--input", "args.jsonl", cwd=tasks_dir)
    assert result.returncode == 0, result.stderr
    [record] = records(result.stdout)
    assert record["result"] == [0, 1, 4, 9]


def test_run_verbose_shows_the_traceback_of_a_module_that_fails_to_import(
    tmp_path: Path,
) -> None:
    """-v prints the import's traceback; without it the one line says -v would."""
    (tmp_path / "broken.py").write_text("def helper():\n    raise RuntimeError('boom')\nhelper()\n")
    (tmp_path / "args.jsonl").write_text("1\n")
    quiet = cli("run", "broken:f", "--input", "args.jsonl", cwd=tmp_path)
    assert quiet.returncode == 2
    assert "(-v shows the traceback)" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    loud = cli("run", "broken:f", "--input", "args.jsonl", "-v", cwd=tmp_path)
    assert loud.returncode == 2
    assert "Traceback (most recent call last)" in loud.stderr
    assert "in helper" in loud.stderr


# -- a journal remembers what shapes its outcomes -----------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        ["-X", "POST"],
        ["-H", "X-New: 1"],
        ["--save-dir", "SAVE"],
        ["--max-body", "100"],
    ],
    ids=["method", "header", "save-dir", "max-body"],
)
def test_a_journal_refuses_a_rerun_with_other_request_options(
    tmp_path: Path, server: str, changed: list[str]
) -> None:
    """A rerun with another method, header, save dir or body limit is refused (exit
    2, naming what changed) instead of replaying outcomes made another way;
    --reuse-journal reuses it on purpose."""
    changed = [str(tmp_path / "bodies") if arg == "SAVE" else arg for arg in changed]
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/echo"])
    journal = ["--journal", str(tmp_path / "j.db")]
    first = cli("fetch", str(urls), *journal)
    assert first.returncode == 0, first.stderr
    again = cli("fetch", str(urls), *journal)  # the same options: replayed
    assert again.returncode == 0, again.stderr
    refused = cli("fetch", str(urls), *journal, *changed)
    assert refused.returncode == 2, refused.stderr
    assert "holds outcomes made with other settings" in refused.stderr
    assert "--reuse-journal" in refused.stderr
    assert refused.stdout == ""
    reused = cli("fetch", str(urls), *journal, *changed, "--reuse-journal")
    assert reused.returncode == 0, reused.stderr
    assert "1 replayed from the journal" in reused.stderr
    after = cli("fetch", str(urls), *journal, *changed)  # adopted: no refusal now
    assert after.returncode == 0, after.stderr


def test_a_journal_names_the_changed_header_not_its_value(tmp_path: Path, server: str) -> None:
    """The refusal names the header that changed; its secret value stays out of the
    journal and the message."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/echo"])
    journal = ["--journal", str(tmp_path / "j.db")]
    cli("fetch", str(urls), *journal, "-H", "Authorization: Bearer s3cret-one")
    refused = cli("fetch", str(urls), *journal, "-H", "Authorization: Bearer s3cret-two")
    assert refused.returncode == 2
    assert "headers" in refused.stderr
    assert "s3cret" not in refused.stderr
    assert b"s3cret" not in (tmp_path / "j.db").read_bytes()


def test_a_run_journal_refuses_another_function(tmp_path: Path) -> None:
    """parallelize run with the journal of another function is refused."""
    (tmp_path / "tasks.py").write_text("def a(x):\n    return x\n\ndef b(x):\n    return -x\n")
    (tmp_path / "args.jsonl").write_text("1\n2\n")
    journal = ["--input", "args.jsonl", "--journal", "j.db"]
    assert cli("run", "tasks:a", *journal, cwd=tmp_path).returncode == 0
    refused = cli("run", "tasks:b", *journal, cwd=tmp_path)
    assert refused.returncode == 2
    assert "function 'tasks:a' -> 'tasks:b'" in refused.stderr


def test_a_journal_refuses_a_rerun_through_another_proxy(tmp_path: Path, server: str) -> None:
    """--proxy shapes the replies too: a rerun with one is refused, its URL unsaid."""
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/echo"])
    journal = ["--journal", str(tmp_path / "j.db")]
    assert cli("fetch", str(urls), *journal).returncode == 0
    refused = cli("fetch", str(urls), *journal, "--proxy", "http://user:pw@127.0.0.1:9")
    assert refused.returncode == 2, refused.stderr
    assert "proxy None -> 'sha256:" in refused.stderr
    assert "pw@" not in refused.stderr


# -- the library: a break out of a run on the real clients ---------------------------------


@pytest.mark.timeout(120, method="thread")  # a hung loop defeats the signal method
@pytest.mark.parametrize("client", ["pyreqwest", "aiohttp"])
def test_a_break_out_of_a_run_on_open_client_ends_it_every_time(
    run: Any, fast_server: str, client: str
) -> None:
    """An action on parallelize.http.open_client(), 100,000 URLs of nginx, break
    after two results (inside async with, and a plain break): 10 runs of 10 end,
    no task left (it hung with pyreqwest: a reply back from a cancelled request)."""
    from parallelize import parallelize  # noqa: PLC0415
    from parallelize.http import open_client  # noqa: PLC0415

    urls = [f"{fast_server}/f{i % 1000}.txt" for i in range(100_000)]

    async def main(closing: bool) -> None:
        async with open_client(client, connections=100) as http:

            async def get(url: str) -> int:
                return (await http.request("GET", url)).status

            taken = 0
            if closing:
                async with parallelize(get, urls, 100) as results:
                    async for _ in results:
                        taken += 1
                        if taken == 2:
                            break
            else:
                async for _ in parallelize(get, urls, 100):
                    taken += 1
                    if taken == 2:
                        break
        for _ in range(100):  # a plain break: the run's tasks end on their own
            if asyncio.all_tasks() == {asyncio.current_task()}:
                break
            await asyncio.sleep(0.01)
        assert asyncio.all_tasks() == {asyncio.current_task()}

    for i in range(10):
        run(main(closing=i % 2 == 0))
