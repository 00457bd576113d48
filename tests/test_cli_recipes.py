"""The command line's recipes (docs/cli.md, "### Recipes"), run as written with bash.

Against the local test server: ``https://example.com`` is its base URL, the API of
the first recipe its ``/echo``; the files a recipe reads are written first (URLs
of the server's pages and files, a cookie file). A recipe must exit 0 and print
no traceback. ``jq`` lines run where jq is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)

pytestmark = pytest.mark.timeout(120)


def _recipes() -> list[str]:
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("### Recipes", 1)[1].split("\n## ", 1)[0]
    return FENCE.findall(section)


def _inputs(server: str, directory: Path) -> None:
    pages = [f"{server}/page/{n}" for n in range(1, 6)]
    files = [f"{server}/file/{name}?size={size}" for name, size in (("a", 10), ("b", 300_000))]
    (directory / "urls.txt").write_text("".join(f"{url}\n" for url in [*pages, *files]))
    (directory / "isos.txt").write_text(f"{server}/file/iso?size=200000&cut=70000\n")
    (directory / "requests.jsonl").write_text(
        "".join(
            f'{{"url": "{server}/echo", "json": {{"id": {n}}}, "key": "{n}"}}\n' for n in range(3)
        )
    )
    (directory / "cookies.txt").write_text("# Netscape HTTP Cookie File\n")


RECIPES = _recipes()


def test_the_recipes_are_found() -> None:
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("number", range(len(RECIPES)))
def test_recipe_runs_as_written(number: int, server: str, tmp_path: Path) -> None:
    script = RECIPES[number]
    script = script.replace("https://api.example.com/v1/items", f"{server}/echo")
    script = script.replace("https://example.com", server)
    _inputs(server, tmp_path)
    if shutil.which("jq") is None:
        script = "\n".join(line for line in script.splitlines() if not line.startswith("jq "))
    bin_dir = tmp_path / "bin"  # `parallelize` as the venv's, whatever is on PATH
    bin_dir.mkdir()
    (bin_dir / "parallelize").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m parallelize "$@"\n'
    )
    (bin_dir / "parallelize").chmod(0o755)
    result = subprocess.run(  # noqa: S603 - our own recipe
        ["bash", "-euo", "pipefail", "-c", script],  # noqa: S607 - bash from PATH
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TOKEN": "t0ken", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, f"recipe {number}:\n{script}\n{result.stderr}"
    assert "Traceback" not in result.stderr
