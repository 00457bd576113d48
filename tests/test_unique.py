"""``fetch --unique``: repeated URLs dropped by a scalable Bloom filter."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clitools import cli, records, write_lines
from parallelize._cli import _unique
from parallelize._cli._unique import UniqueKeys

pytestmark = pytest.mark.timeout(120)


@given(st.lists(st.text(max_size=30), max_size=300))
@settings(max_examples=100, deadline=None)
def test_no_key_seen_before_is_ever_missed(keys: list[str]) -> None:
    """No false negative: a key given a second time is always dropped."""
    unique = UniqueKeys()
    for key in keys:
        unique.seen(key)
    assert all(unique.seen(key) for key in keys)


def test_the_false_positive_rate_is_under_its_bound_as_the_filter_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small arrays (so that the filter grows five times): 1 in 100,000 at most."""
    monkeypatch.setattr(_unique, "_FIRST_CAPACITY", 1000)
    unique = UniqueKeys()
    draw = random.Random(7)
    # A list, not a set: the order (which array a key lands in) is the same every run.
    keys = list(
        dict.fromkeys(
            f"https://h{draw.randrange(10**6)}/{draw.getrandbits(64):x}" for _ in range(300_000)
        )
    )
    wrongly = sum(unique.seen(key) for key in keys)  # every key is new
    assert len(unique.filters) >= 5
    # At most 1e-5 expected: about 3 of 300,000; 10 or more would be a Poisson tail
    # of 0.1%, or a filter worse than designed (plain double hashing gave 19).
    assert wrongly < 10, wrongly


def test_fetch_unique_drops_repeated_urls(server: str, tmp_path: Path) -> None:
    urls = [f"{server}/page/{n % 7}" for n in range(50)]
    path = write_lines(tmp_path / "urls.txt", urls)
    result = cli("fetch", str(path), "--unique")
    assert result.returncode == 0, result.stderr
    got = [record["url"] for record in records(result.stdout)]
    assert sorted(got) == sorted(set(urls))
    assert "43 repeated lines dropped (--unique)" in result.stderr


def test_fetch_unique_with_request_lines_uses_their_keys(server: str, tmp_path: Path) -> None:
    echo = f"{server}/echo"
    lines = [json.dumps({"url": echo, "json": n % 3, "key": str(n % 3)}) for n in range(9)]
    path = write_lines(tmp_path / "in.txt", lines)
    result = cli("fetch", str(path), "--unique", "--requests")
    assert result.returncode == 0, result.stderr
    assert sorted(record["key"] for record in records(result.stdout)) == ["0", "1", "2"]
