"""A terminal recording check: the progress bar as a user sees it in a real terminal.

``parallelize fetch`` runs under :mod:`pexpect` in a pseudo-terminal (the console
script, as a user types it) against the local test server, long enough (about a
second of ``/slow/50`` requests) for several redraws. The bar must show a rate and an
ETA on the terminal, and nothing of it may reach the JSON output: not with ``-o FILE``,
not with stdout redirected to a file, and not at all when stderr is not a terminal.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")

# 400 requests of 50 ms with 20 workers: about 1 s of run, ten redraws a second.
COUNT = 400
WORKERS = "20"
# A live frame: a non-zero rate, then an ETA that is a clock (not "--:--" nor "done").
LIVE_FRAME = re.compile(r"[1-9][\d,]*/s\W+ETA \d+:\d\d")
SUMMARY = f"{COUNT:,} succeeded, 0 failed"
TIMEOUT = 10  # seconds for any one expectation: the whole run takes about 2
SCRIPT = Path(sys.executable).parent / "parallelize"


@pytest.fixture
def urls(server: str, tmp_path: Path) -> Path:
    """A file of distinct slow URLs, one a line."""
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{server}/slow/50?n={n}\n" for n in range(COUNT)))
    return path


@pytest.fixture(scope="module")
def script() -> Path:
    """The ``parallelize`` console script next to this interpreter."""
    if not SCRIPT.exists():
        pytest.skip(f"no console script at {SCRIPT}: install the project (pip install -e .)")
    return SCRIPT


def terminal_env() -> dict[str, str]:
    """The environment of a real terminal: rich animates only on a capable TERM."""
    env = dict(os.environ)
    env["TERM"] = "xterm-256color"
    for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        env.pop(name, None)  # rich would take these over the terminal's own settings
    return env


def spawn(command: str, args: list[str], cwd: Path, rows: int = 30) -> tuple[Any, io.StringIO]:
    """Start ``command ARGS`` in a ROWSx160 pseudo-terminal; return it and its transcript."""
    child = pexpect.spawn(
        command,
        args,
        cwd=str(cwd),
        env=terminal_env(),
        dimensions=(rows, 160),
        encoding="utf-8",
        codec_errors="replace",
        timeout=TIMEOUT,
    )
    transcript = io.StringIO()
    child.logfile_read = transcript  # everything the terminal received
    return child, transcript


def finish(child: Any) -> int:
    """Wait for the end of ``child``; return its exit code."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None, f"killed by signal {child.signalstatus}"
    exitstatus: int = child.exitstatus
    return exitstatus


def watch(child: Any) -> int:
    """See a live frame and the summary on ``child``'s terminal; return its exit code."""
    try:
        child.expect(LIVE_FRAME)
        child.expect_exact(SUMMARY)
        return finish(child)
    finally:
        child.close(force=True)


def check_jsonl(path: Path, urls: Path) -> None:
    """``path`` holds one JSON record per URL of ``urls`` and nothing else."""
    text = path.read_text(encoding="utf-8")
    assert "\x1b" not in text
    assert "ETA" not in text
    assert "\r" not in text
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == COUNT
    assert sorted(r["url"] for r in records) == sorted(urls.read_text().split())
    assert {r["status"] for r in records} == {200}
    assert all(r["error"] is None for r in records)


def test_progress_shows_rate_and_eta_on_a_terminal(script: Path, urls: Path) -> None:
    """On a terminal the bar is redrawn with a rate and an ETA; -o FILE holds only JSON."""
    out = urls.parent / "out.jsonl"
    child, screen = spawn(
        str(script), ["fetch", str(urls), "-o", str(out), "-w", WORKERS], urls.parent
    )
    code = watch(child)
    transcript = screen.getvalue()
    assert code == 0, transcript
    assert f"{COUNT}/{COUNT}" in transcript  # the last frame: the final counts
    assert "ETA done" in transcript
    assert '"url"' not in transcript  # the records went to the file
    check_jsonl(out, urls)


def test_stdout_to_a_file_holds_no_progress(script: Path, urls: Path) -> None:
    """stdout redirected to a file, stderr on the terminal: the bar shows, the file is JSON."""
    out = urls.parent / "out.jsonl"
    command = shlex.join([str(script), "fetch", str(urls), "-w", WORKERS])
    child, screen = spawn(
        "/bin/sh", ["-c", f"exec {command} > {shlex.quote(str(out))}"], urls.parent
    )
    code = watch(child)
    transcript = screen.getvalue()
    assert code == 0, transcript
    assert '"url"' not in transcript
    check_jsonl(out, urls)


@pytest.mark.parametrize("option", [[], ["--progress"]], ids=["default", "--progress"])
def test_no_terminal_no_progress(urls: Path, option: list[str]) -> None:
    """Neither stream a terminal: no trace of the bar, even with --progress."""
    out = urls.parent / "out.jsonl"
    with out.open("w") as stdout:
        done = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "parallelize", "fetch", str(urls), "-w", WORKERS, *option],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=terminal_env(),  # a capable TERM: only the streams say "no terminal"
            timeout=TIMEOUT,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert SUMMARY in done.stderr  # the summary is for people: still on stderr
    assert "ETA" not in done.stderr
    assert "\x1b[" not in done.stderr
    assert "━" not in done.stderr
    check_jsonl(out, urls)


@pytest.mark.parametrize(
    ("option", "summary"),
    [("--no-progress", True), ("--quiet", False)],
    ids=["no-progress", "quiet"],
)
def test_no_progress_on_a_terminal(script: Path, urls: Path, option: str, summary: bool) -> None:
    """--no-progress (or --quiet) on a terminal: no bar, no escape codes."""
    out = urls.parent / "out.jsonl"
    child, screen = spawn(
        str(script), ["fetch", str(urls), "-o", str(out), "-w", WORKERS, option], urls.parent
    )
    try:
        code = finish(child)
    finally:
        child.close(force=True)
    transcript = screen.getvalue()
    assert code == 0, transcript
    assert "ETA" not in transcript
    assert "\x1b[" not in transcript
    assert (SUMMARY in transcript) is summary, transcript
    check_jsonl(out, urls)


def test_records_on_the_same_terminal_print_above_the_bar(script: Path, urls: Path) -> None:
    """Without -o, each JSON line reaches the terminal whole, never glued into a frame."""
    child, screen = spawn(str(script), ["fetch", str(urls), "-w", WORKERS], urls.parent)
    code = watch(child)
    transcript = screen.getvalue()
    assert code == 0, transcript
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", transcript)  # the escape codes out
    pieces = [piece.strip() for piece in re.split(r"[\r\n]+", plain)]
    records = [json.loads(piece) for piece in pieces if piece.startswith('{"url"')]
    assert len(records) == COUNT
    assert not [p for p in pieces if '{"url"' in p and not p.startswith('{"url"')]


PIPELINE_SCRIPT = """
import asyncio
from parallelize import Progress, parallelize

async def fetch(n):
    await asyncio.sleep(0.01)
    return n

async def parse(n):
    await asyncio.sleep(0.02)
    return n

def store(n):
    return n

async def main():
    pipeline = (
        parallelize(fetch, range(300), 20, progress=True)
        .then(parse, 10, progress=Progress(description="parse pages"))
        .then(store, 1, progress=True)
    )
    count = 0
    async for _ in pipeline:
        count += 1
    print(f"stored {count}")

asyncio.run(main())
"""


def test_a_pipeline_shows_one_line_per_stage_in_one_display(tmp_path: Path) -> None:
    """Each stage's bar is a line of one live display: none overwrites another."""
    script = tmp_path / "pipeline.py"
    script.write_text(PIPELINE_SCRIPT)
    child, screen = spawn(sys.executable, [str(script)], tmp_path)
    try:
        child.expect(LIVE_FRAME)
        child.expect_exact("stored 300")
        code = finish(child)
    finally:
        child.close(force=True)
    transcript = screen.getvalue()
    assert code == 0, transcript
    # The last frame: every stage's final line, each with all 300 items.
    final = transcript[transcript.rindex("fetch ") :]
    for name in ("fetch ", "parse pages ", "store "):
        assert name in final, final
    assert final.count("300/300") == 3, final


LOGGING_SCRIPT = """
import asyncio
import logging
import sys
import time
from parallelize import parallelize

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
terminal = logging.root.handlers[0]  # basicConfig's: holds the sys.stderr of now
in_file = logging.FileHandler(sys.argv[1])  # a file's: never touched
logging.root.addHandler(in_file)
log = logging.getLogger("app")
streams = (terminal.stream, in_file.stream)

async def fetch(n):
    await asyncio.sleep(0.03)  # a few redraws between two lines
    log.info("fetched page %d of the run", n)
    return n

def parse(n):  # in a worker thread
    time.sleep(0.03)
    log.warning("parsed page %d in a thread", n)
    return n

async def crash(n):
    await asyncio.sleep(0.03)
    log.info("crashing on page %d", n)
    raise LookupError(n)

async def hang(n):
    log.info("waiting on page %d", n)
    await asyncio.Event().wait()

async def main():
    async for _ in parallelize(fetch, range(6), 1, progress=True):
        pass
    async for _ in parallelize(parse, range(6), 1, progress=True):
        pass
    try:
        async for _ in parallelize(crash, range(6), 1, progress=True):
            pass
    except LookupError:
        pass
    try:
        async with asyncio.timeout(0.3):  # cancelled from outside
            async for _ in parallelize(hang, range(6), 1, progress=True):
                pass
    except TimeoutError:
        pass
    restored = (
        terminal.stream is streams[0] is sys.stderr is sys.__stderr__
        and in_file.stream is streams[1]
    )
    print("handlers restored" if restored else "handlers NOT restored")

asyncio.run(main())
"""
# The lines the script logs, each whole on a row of its own.
LOG_LINE = re.compile(
    r"^(INFO app: fetched page \d of the run|WARNING app: parsed page \d in a thread"
    r"|INFO app: crashing on page 0|INFO app: waiting on page 0"
    r"|INFO parallelize: finished: .*|(ERROR|WARNING) parallelize: .*)$"
)


def test_log_lines_of_handlers_made_before_the_bar_print_above_it(tmp_path: Path) -> None:
    """basicConfig's handler: each log line whole above the bar, no stale frame left behind."""
    pyte = pytest.importorskip("pyte")
    script = tmp_path / "logs.py"
    script.write_text(LOGGING_SCRIPT)
    log_file = tmp_path / "run.log"
    child, transcript = spawn(sys.executable, [str(script), str(log_file)], tmp_path, rows=60)
    try:
        child.expect_exact("handlers restored")
        code = finish(child)
    finally:
        child.close(force=True)
    assert code == 0, transcript.getvalue()
    screen = pyte.Screen(160, 60)
    pyte.Stream(screen).feed(transcript.getvalue())
    rows = [row.rstrip() for row in screen.display if row.strip()]
    shown = "\n".join(rows)
    logged = [row for row in rows if " app: " in row or " parallelize: " in row]
    assert all(LOG_LINE.match(row) for row in logged), shown
    assert len([row for row in logged if " page " in row]) == 14, shown
    # One frame per run stays on the screen, its last: no stale copy of an earlier one.
    frames = [row for row in rows if "ETA " in row]
    assert [frame.split()[0] for frame in frames] == ["fetch", "parse", "crash", "hang"], shown
    assert "6/6" in frames[0], shown
    assert "6/6" in frames[1], shown
    # The file handler got every line, plain.
    text = log_file.read_text()
    assert text.count("fetched page") == 6, text
    assert "\\x1b" not in text
