"""``--halt-after N|P%``: stop when it is hopeless, write what was in flight, exit 3."""

from __future__ import annotations

from pathlib import Path

import pytest

from clitools import cli, records, write_lines

pytestmark = pytest.mark.timeout(60)

TASKS = """\
import asyncio

async def check(n):
    await asyncio.sleep(0.002)
    if n % 2:
        raise ValueError(f"odd {n}")
    return n
"""


def test_halt_after_a_number_of_failures(server: str, tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/status/404?n={n}" for n in range(500)])
    result = cli("fetch", str(urls), "-w", "4", "--halt-after", "5")
    assert result.returncode == 3, result.stderr
    got = records(result.stdout)
    assert 5 <= len(got) < 100  # the items in flight were written, no more started
    assert all(record["error"]["kind"] == "http" for record in got)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("parallelize: halted by --halt-after 5 (")
    assert "nothing was recorded: with --journal FILE a rerun goes on from here" in last


def test_a_share_of_failures_is_judged_from_the_20th_item(server: str, tmp_path: Path) -> None:
    lines = [f"{server}/{'status/500' if n % 2 else 'page/1'}?n={n}" for n in range(400)]
    urls = write_lines(tmp_path / "urls.txt", lines)
    halted = cli("fetch", str(urls), "-w", "4", "--halt-after", "30%")
    assert halted.returncode == 3, halted.stderr
    assert 20 <= len(records(halted.stdout)) < 100
    assert "halted by --halt-after 30% (" in halted.stderr
    # Half fail, under 60%: the whole input runs, and the exit is the usual 1.
    whole = cli("fetch", str(urls), "-w", "4", "--halt-after", "60%")
    assert whole.returncode == 1, whole.stderr
    assert len(records(whole.stdout)) == 400


def test_a_halted_run_goes_on_from_its_journal(server: str, tmp_path: Path) -> None:
    """Halted, then rerun without the option: every URL once in all, none lost."""
    lines = [f"{server}/status/404?n={n}" for n in range(10)]
    lines += [f"{server}/page/{n}" for n in range(300)]
    urls = write_lines(tmp_path / "urls.txt", lines)
    journal = tmp_path / "j.sqlite"
    first = cli("fetch", str(urls), "-w", "4", "--halt-after", "3", "--journal", str(journal))
    assert first.returncode == 3, first.stderr
    assert "to go on (the failures are tried again), run: " in first.stderr
    assert len(records(first.stdout)) < len(lines)
    second = cli("fetch", str(urls), "-w", "4", "--journal", str(journal))
    assert second.returncode == 4, second.stderr  # what failed, failed for good (404s)
    got = records(second.stdout)
    assert sorted(record["url"] for record in got) == sorted(lines)  # whole, once each
    assert sum(record["status"] == 200 for record in got) == 300


def test_run_halts_too(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    write_lines(tmp_path / "args.jsonl", [str(n) for n in range(1000)])
    result = cli(
        "run", "tasks:check", "--input", "args.jsonl", "-w", "2", "--halt-after", "3", cwd=tmp_path
    )
    assert result.returncode == 3, result.stderr
    got = records(result.stdout)
    assert sum(not record["ok"] for record in got) >= 3
    assert len(got) < 100


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be >= 1 failure, got '0'"),
        ("0%", "a share is more than 0% and at most 100%, got '0%'"),
        ("150%", "a share is more than 0% and at most 100%, got '150%'"),
        ("some", "expected a number of failures (10) or a share of them (5%), got 'some'"),
    ],
)
def test_bad_halt_after_is_a_usage_error(tmp_path: Path, value: str, message: str) -> None:
    write_lines(tmp_path / "urls.txt", ["http://127.0.0.1:9/"])
    result = cli("fetch", "urls.txt", "--halt-after", value, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
