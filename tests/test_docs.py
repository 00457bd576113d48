"""Every ```python block of README.md and docs/*.md, run as a program: the docs run.

A block is one of three kinds, told by the HTML comment on the line before it:

* no comment: a complete program (imports, ``async def main()``, ``asyncio.run``);
* ``<!-- fragment: NAME -->``: lines that belong inside ``main()``; they run in the
  program ``SETUPS[NAME]`` below, in place of its ``# the fragment`` line;
* ``<!-- skip: REASON -->``: not run (it is still compiled); the reason is in the id.

Each runs in its own process, in a temporary directory, against the local test server:
``https://example.com`` is replaced by the server's base URL, and a Redis URL at
``queue.internal`` by a fresh local redis-server's (with the same password). A failure
names the file and line of the block, and the traceback's lines are the document's.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from redistools import running

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 20.0  # seconds a block may take; each takes one to three
LANGUAGES = {"python", "sh", "json", ""}  # only python runs; a `py` block would be missed
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!-- (fragment|skip): (.+?) -->$")
PLACEHOLDER = "# the fragment"
REDIS_URL = re.compile(r"redis://:(?P<password>[^@]+)@queue\.internal:6379/0")
# What a run must never print, even when it exits with 0.
SYMPTOMS = ("Task was destroyed", "was never awaited", "Unclosed client session", "Traceback")
# The programs a fragment runs in. Each defines what its fragments use, with the
# same URLs (https://example.com is replaced as in the blocks).
SETUPS = {
    # The README's first lines: the quickstart's action and URLs.
    "quickstart": """
import asyncio

import aiohttp

from parallelize import parallelize


async def main() -> None:
    urls = [f"https://example.com/page/{i}" for i in range(100)]
    async with aiohttp.ClientSession() as session:

        async def action(url):
            async with session.get(url) as resp:
                await resp.read()
                return resp

        # the fragment


asyncio.run(main())
""",
    # The README's one-line examples ("More:"): every name they use.
    "more": """
import asyncio
import hashlib
from pathlib import Path

import aiohttp

from parallelize import parallelize


async def query(sql, params):
    await asyncio.sleep(0.001)
    return sql, params


def hash_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def parse_document(document):
    return len(document.split())


def parse(page):
    status, text = page
    return status, text.strip()


async def main() -> None:
    urls = [f"https://example.com/page/{i}" for i in range(50)]
    Path("urls.txt").write_text("".join(url + "\\n" for url in urls))
    sql = "SELECT * FROM pages WHERE id = ?"
    batches = [(i,) for i in range(50)]
    paths = []
    for i in range(10):
        Path(f"file{i}").write_bytes(b"x" * i)
        paths.append(f"file{i}")
    documents = [f"document {i} " * i for i in range(10)]
    async with aiohttp.ClientSession() as session:

        async def fetch(url):
            async with session.get(url) as resp:
                return resp.status, await resp.text()

        check = fetch

        def found(page):
            return page == (200, "page 7\\n")

        # the fragment


if __name__ == "__main__":
    asyncio.run(main())
""",
    # The README's journal example without its loop: the Redis and progress blocks
    # take the loop's place.
    "journal": """
import asyncio

import aiohttp

from parallelize import parallelize


async def main(urls: list[str]) -> None:
    async with aiohttp.ClientSession() as session:

        async def fetch(url):
            async with session.get(url) as resp:
                return resp.status, await resp.text()

        # the fragment


asyncio.run(main([f"https://example.com/page/{i}" for i in range(1000)]))
""",
}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    document: Path
    line: int  # of the opening fence, counted from 1
    language: str
    code: str
    kind: str  # "program", "fragment" or "skip"
    detail: str = ""  # the setup's name, or the reason to skip

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    @property
    def id(self) -> str:
        if self.kind == "program":
            return self.where
        return f"{self.where} {self.kind}: {self.detail}"


def read_blocks(document: Path) -> Iterator[Block]:
    """Every fenced block of ``document``, with the marker on the line before it."""
    lines = document.read_text(encoding="utf-8").splitlines()
    start: int | None = None
    language = ""
    for number, text in enumerate(lines, 1):
        fence = FENCE.match(text)
        if fence is None:
            continue
        if start is None:
            start, language = number, fence[1]
            continue
        if fence[1]:
            pytest.fail(f"{document.name}:{number}: a fence opens inside the block of line {start}")
        previous = lines[start - 2] if start >= 2 else ""
        marker = MARKER.match(previous.strip())
        kind, detail = ("program", "") if marker is None else (marker[1], marker[2])
        yield Block(document, start, language, "\n".join(lines[start : number - 1]), kind, detail)
        start = None
    if start is not None:
        pytest.fail(f"{document.name}:{start}: this block is never closed")


ALL_BLOCKS = [block for document in DOCUMENTS for block in read_blocks(document)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]


def build(block: Block) -> tuple[str, list[str]]:
    """The program to run, and where each of its lines comes from (for tracebacks)."""
    code_lines = block.code.splitlines()
    doc_origins = [
        f'"{block.document.relative_to(ROOT)}", line {block.line + 1 + i}'
        for i in range(len(code_lines))
    ]
    if block.kind == "program":
        return block.code + "\n", doc_origins
    setup = SETUPS[block.detail].lstrip("\n").splitlines()
    lines: list[str] = []
    origins: list[str] = []
    for number, text in enumerate(setup, 1):
        if text.strip() == PLACEHOLDER:
            indent = text[: len(text) - len(text.lstrip())]
            lines += [indent + line if line else "" for line in code_lines]
            origins += doc_origins
        else:
            lines.append(text)
            origins.append(f'"tests/test_docs.py", SETUPS["{block.detail}"] line {number}')
    return "\n".join(lines) + "\n", origins


def located(stderr: str, script: Path, origins: list[str]) -> str:
    """``stderr`` with the script's line numbers turned into the document's."""

    def origin(match: re.Match[str]) -> str:
        number = int(match[1])
        return origins[number - 1] if 0 < number <= len(origins) else match[0]

    return re.sub(rf'"{re.escape(str(script))}", line (\d+)', origin, stderr)


def run_program(block: Block, source: str, origins: list[str], directory: Path) -> None:
    """Run ``source`` in ``directory``; fail naming the block if it breaks."""
    script = directory / "block.py"
    script.write_text(source, encoding="utf-8")
    try:
        result = subprocess.run(  # noqa: S603 - the docs' own code
            [sys.executable, str(script)],
            cwd=directory,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: the block did not end within {TIMEOUT} s")
    stderr = located(result.stderr, script, origins)
    if result.returncode != 0:
        pytest.fail(f"{block.where}: the block exited with {result.returncode}\n{stderr}")
    symptoms = [symptom for symptom in SYMPTOMS if symptom in stderr]
    if symptoms:
        pytest.fail(f"{block.where}: {', '.join(symptoms)} in its stderr\n{stderr}")


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[block.id for block in PYTHON_BLOCKS])
def test_block_runs(block: Block, server: str, tmp_path: Path) -> None:
    """The block, as a program or inside its setup, exits with 0 and no asyncio complaint."""
    source, origins = build(block)
    # Syntax first, also of a skipped block; a fragment may await at its top level.
    compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if block.kind == "skip":
        pytest.skip(block.detail)
    source = source.replace("https://example.com", server)
    redis = REDIS_URL.search(source)
    if redis is None:
        run_program(block, source, origins, tmp_path)
        return
    # A fresh redis-server with the block's password: the run it names is its alone.
    with running(tmp_path / "redis", password=redis["password"]) as local:
        run_program(block, source.replace(redis[0], local.url), origins, tmp_path)


def test_every_block_is_known() -> None:
    """Each block's language is one we know, and each marker is a python block's."""
    for block in ALL_BLOCKS:
        assert block.language in LANGUAGES, f"{block.where}: unknown language {block.language!r}"
        if block.kind != "program":
            assert block.language == "python", f"{block.where}: a marker on a non-python block"
        if block.kind == "fragment":
            assert block.detail in SETUPS, f"{block.where}: no setup named {block.detail!r}"
        assert block.kind in {"program", "fragment", "skip"}, block.where
    assert PYTHON_BLOCKS, "no python block found: did the fence syntax change?"


def test_setups_are_used() -> None:
    """Every setup runs at least one fragment: none is left behind when a block changes."""
    used = {block.detail for block in PYTHON_BLOCKS if block.kind == "fragment"}
    assert used == set(SETUPS)


def test_markers_precede_blocks() -> None:
    """A marker comment is followed by a fence: a stray one would mark nothing."""
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        for number, text in enumerate(lines, 1):
            if MARKER.match(text.strip()):
                following = lines[number] if number < len(lines) else ""
                assert following.startswith("```python"), f"{document.name}:{number}: {text}"
