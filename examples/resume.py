"""Resume a crashed crawl: a journal records every page, a rerun fetches only the rest.

Against a local server that the script starts itself (there is no internet here)::

    python examples/resume.py --journal crawl.db      # press Ctrl-C (or kill -9 it) midway
    python examples/resume.py --journal crawl.db      # fetches only what is missing

Each page takes ``--ms`` milliseconds to answer, so there is time to interrupt. The
local server gets a new port every run, so pages are identified by their path
(``key=``), not by their full URL. Ctrl-C stops gracefully (the pages in flight
finish and are recorded); a second Ctrl-C, or ``kill -9``, stops at once, and the
rerun fetches again only what was in flight or not yet flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from parallelize import Failure, Interrupted, SQLiteJournal, parallelize


def start_server() -> tuple[subprocess.Popen[str], str]:
    # Its own session: the Ctrl-C meant for the crawl must not kill the server too,
    # or the pages in flight could not finish.
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelize.testing"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def page_key(url: str) -> str:
    """/slow/20?page=17: the same page whatever port the server has today."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def crawl(urls: list[str], workers: int, journal: Path) -> tuple[int, int]:
    fetched = failed = 0
    async with aiohttp.ClientSession() as session:

        async def fetch(url: str) -> dict[str, int]:
            async with session.get(url) as resp:
                body = await resp.read()
                return {"status": resp.status, "bytes": len(body)}  # plain data: JSON

        run = parallelize(
            fetch,
            urls,
            workers,
            journal=SQLiteJournal(journal, retry_failed=True),  # a rerun retries failures
            key=page_key,
            handle_signals=True,
            on_error="yield",
            timeout=10,
        )
        async with run:
            async for outcome in run:
                if isinstance(outcome, Failure):
                    failed += 1
                else:
                    fetched += 1
    return fetched, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--journal", type=Path, default=Path("crawl.db"), help="(crawl.db)")
    parser.add_argument("--urls", type=int, default=20_000, help="pages (20000)")
    parser.add_argument("--workers", type=int, default=100, help="numworkers (100)")
    parser.add_argument("--ms", type=int, default=50, help="milliseconds per page (50)")
    args = parser.parse_args()

    before = SQLiteJournal(args.journal).counts() if args.journal.exists() else None
    proc, base = start_server()
    started = time.perf_counter()
    try:
        urls = [f"{base}/slow/{args.ms}?page={n}" for n in range(args.urls)]
        fetched, failed = asyncio.run(crawl(urls, args.workers, args.journal))
    except Interrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        sys.exit(130)
    finally:
        proc.terminate()
        proc.wait()
    elapsed = time.perf_counter() - started
    done_before = 0 if before is None else before["ok"] + before["failed"]
    print(
        f"{done_before} pages were already in {args.journal}; fetched {fetched} now "
        f"({failed} failed) in {elapsed:.1f} s; {SQLiteJournal(args.journal).counts()}"
    )


if __name__ == "__main__":
    main()
