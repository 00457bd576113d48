"""Reruns with a journal: final failures are written again as they were, the others run
again (``--retry-failed``: all); the exit code says which kind remains (1 or 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import by_url, cli, records, write_lines

pytestmark = pytest.mark.timeout(60)

TASKS = """\
import os

CALLS = os.environ.get("CALLS_FILE")

def work(n):
    if CALLS:
        with open(CALLS, "a") as f:
            f.write(f"{n}\\n")
    if n == 3:
        raise RuntimeError("three is unlucky")
    return n * 2
"""


def test_a_rerun_keeps_final_failures_and_redoes_the_others(server: str, tmp_path: Path) -> None:
    lines = [f"{server}/page/{n}" for n in range(5)]
    lines += [f"{server}/status/404", f"{server}/status/410", "not a url"]
    lines += [f"{server}/status/503", f"{server}/status/408"]
    urls = write_lines(tmp_path / "urls.txt", lines)
    journal = tmp_path / "j.sqlite"
    first = cli("fetch", str(urls), "--journal", str(journal))
    assert first.returncode == 1, first.stderr  # a 503 and a 408 may yet succeed
    before = by_url(first.stdout)

    second = cli("fetch", str(urls), "--journal", str(journal))
    assert second.returncode == 1, second.stderr
    after = by_url(second.stdout)
    assert sorted(after) == sorted(before)  # every line written again
    for url in (f"{server}/status/404", f"{server}/status/410", "not a url"):
        assert after[url] == before[url]  # replayed as written, elapsed and all
    assert "8 replayed from the journal" in second.stderr  # 5 pages + 3 final failures
    # The 503 and the 408 ran again (their elapsed is new).
    assert after[f"{server}/status/503"]["error"]["kind"] == "http"


def test_retry_failed_runs_every_failure_again(server: str, tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/1", f"{server}/status/404"])
    journal = tmp_path / "j.sqlite"
    first = cli("fetch", str(urls), "--journal", str(journal))
    assert first.returncode == 4, first.stderr  # the only failure is final
    again = cli("fetch", str(urls), "--journal", str(journal))
    assert again.returncode == 4, again.stderr
    assert "2 replayed from the journal" in again.stderr
    redone = cli("fetch", str(urls), "--journal", str(journal), "--retry-failed")
    assert redone.returncode == 4, redone.stderr
    assert "1 replayed from the journal" in redone.stderr  # the page; the 404 ran again
    assert len(records(redone.stdout)) == 2


def test_retry_on_a_status_makes_it_run_again_on_a_rerun(server: str, tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/status/404"])
    journal = tmp_path / "j.sqlite"
    args = ["--journal", str(journal), "--retries", "1", "--retry-on", "default,404"]
    first = cli("fetch", str(urls), *args)
    assert first.returncode == 1, first.stderr  # 404 named by --retry-on: not final
    again = cli("fetch", str(urls), *args)
    assert "replayed" not in again.stderr
    assert records(again.stdout)[0]["attempts"] == 2


def test_run_keeps_invalid_lines_and_calls_again_what_raised(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    write_lines(tmp_path / "args.jsonl", ["1", "2", "3", "{not json"])
    calls = tmp_path / "calls.txt"
    journal = tmp_path / "j.sqlite"
    command = ["run", "tasks:work", "--input", "args.jsonl", "--journal", str(journal)]
    env_prefix = {"CALLS_FILE": str(calls)}
    first = _run(command, tmp_path, env_prefix)
    assert first.returncode == 1, first.stderr  # an exception may not happen again
    calls.write_text("")
    second = _run(command, tmp_path, env_prefix)
    assert second.returncode == 1, second.stderr
    assert calls.read_text().split() == ["3"]  # only the call that raised, again
    got = {record["line"]: record for record in records(second.stdout)}
    assert got[4]["error"]["kind"] == "invalid_json"  # replayed as written
    assert sorted(got) == [1, 2, 3, 4]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "parallelize", *command],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=30,
        check=False,
        env={**os.environ, **env},
    )
