"""The command line against a demanding user: files that are one another, bad
lines, bad options, outputs that fail, options a journal must remember."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clitools import cli, records, write_lines
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
