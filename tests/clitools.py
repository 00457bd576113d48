"""Helpers for the command line's tests: run it, read its JSON lines, interrupt it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

FIELDS = {"url", "final_url", "status", "bytes", "elapsed", "attempts", "error"}


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
