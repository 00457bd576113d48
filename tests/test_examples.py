"""The article's examples in ``examples/``, run as a user runs them, at small sizes."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL = ["--pokemon", "30", "--workers", "10", "--delay", "0.02"]


def run_example(name: str, *args: str) -> str:
    """Run ``examples/name`` in its own process; return its output once it exits with 0."""
    result = subprocess.run(  # noqa: S603 - our own example
        [sys.executable, str(EXAMPLES / name), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def printed_ids(output: str) -> list[int]:
    """The ids of the pokemon lines (``ID: 1, Name: ...``), sorted."""
    return sorted(
        int(n) for n in re.findall(r"^(?:.* s: )?ID: (\d+), Name: ", output, re.MULTILINE)
    )


def test_parallel_fetch_prints_every_pokemon_once_and_the_speedup() -> None:
    """Each pokemon's line appears once, then both times and the speedup."""
    output = run_example("parallel_fetch.py", *SMALL)
    assert printed_ids(output) == list(range(1, 31))
    assert "ID: 1, Name: bulbasaur, Height: 7, Weight: 69\n" in output
    assert re.search(r"^one request at a time: 30 pokemon in \d+\.\d\d s$", output, re.MULTILINE)
    assert re.search(r"^parallelize, 10 workers: 30 pokemon in \d+\.\d\d s$", output, re.MULTILINE)
    assert re.search(r"^speedup: \d+\.\dx$", output, re.MULTILINE)


def test_pipeline_prints_every_pokemon_once_the_first_before_the_producer_ends() -> None:
    """Each pokemon's line appears once, and the first one before the last URL is out."""
    output = run_example("pipeline.py", *SMALL)
    assert printed_ids(output) == list(range(1, 31))
    assert re.search(r"^ +\d+\.\d{3} s: Get Url for Pokemon bulbasaur$", output, re.MULTILINE)
    times = re.search(
        r"^first result at (\d+\.\d+) s; producer finished at (\d+\.\d+) s$", output, re.MULTILINE
    )
    assert times is not None, output
    assert float(times[1]) < float(times[2])


@pytest.fixture
def pipeline_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``examples/pipeline.py`` imported as a module (it imports its neighbour ``_pokeapi``)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    try:
        yield importlib.import_module("pipeline")
    finally:
        for name in ("pipeline", "_pokeapi"):
            sys.modules.pop(name, None)


def test_pipeline_first_result_arrives_while_the_producer_still_runs(
    run: Any, pipeline_module: ModuleType
) -> None:
    """pipeline() gets a result before its slow async generator is exhausted."""
    timeline = run(pipeline_module.pipeline(30, 10, 0.02))
    assert printed_ids("\n".join(timeline.results)) == list(range(1, 31))
    assert timeline.first_result < timeline.producer_finished <= timeline.finished
