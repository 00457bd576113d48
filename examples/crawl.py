"""The article's crawl example, end to end, against a local server it starts itself.

There is no internet here, so the script starts ``python -m parallelize.testing`` (a
small aiohttp server on 127.0.0.1) in a subprocess, crawls ``--urls`` pages from it with
the article's own usage code, and prints the throughput::

    python examples/crawl.py --urls 20000 --workers 100
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import time

import aiohttp

from parallelize import parallelize
from parallelize.testing import page_urls


def start_server() -> tuple[subprocess.Popen[str], str]:
    """Start the local server in its own process; return it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelize.testing"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def crawl(urls: list[str], numworkers: int, shown: int) -> collections.Counter[int]:
    """Run the article's usage example over ``urls``; count the statuses."""
    statuses: collections.Counter[int] = collections.Counter()
    async with aiohttp.ClientSession() as session:

        async def action(url):  # type: ignore[no-untyped-def]  # the article's code, verbatim
            async with session.get(url) as resp:
                await resp.read()
                return resp

        async for resp in parallelize(action, urls, numworkers=numworkers):
            statuses[resp.status] += 1
            if sum(statuses.values()) <= shown:
                print(f"{resp.status} {resp.url}")
                if resp.ok:
                    print(await resp.text(), end="")
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=20_000, help="pages to fetch (20000)")
    parser.add_argument("--workers", type=int, default=100, help="numworkers (100)")
    parser.add_argument("--show", type=int, default=3, help="results to print in full (3)")
    args = parser.parse_args()

    proc, base = start_server()
    try:
        urls = page_urls(base, args.urls)
        started = time.perf_counter()
        statuses = asyncio.run(crawl(urls, args.workers, args.show))
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()
    print(
        f"crawled {len(urls)} URLs with {args.workers} workers in {elapsed:.2f} s: "
        f"{len(urls) / elapsed:,.0f} requests/s; statuses {dict(statuses)}"
    )
    if statuses != {200: len(urls)}:
        sys.exit(1)


if __name__ == "__main__":
    main()
