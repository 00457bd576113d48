"""Retries free their worker: 10,000 requests, 10% fail once, 1 s backoff.

    .venv/bin/python benchmarks/retries.py [--n 10000] [--rounds 3] [--ms 200]

The local fault-injection server (``python -m parallelize.testing``, its own process)
answers every path after ``--ms`` milliseconds; every tenth path first fails once with
an immediate 503. Three modes, each round in a fresh subprocess, rounds interleaved:

- ``no-failures``: every path succeeds at once (the reference);
- ``parallelize``: ``Retry(if_result=503, Backoff(initial=1, jitter=0))``: the failed
  item waits in the retry queue and its worker serves other items;
- ``sleep-in-worker``: the same retry written inside the action, as the second seed
  article sketches it (``await asyncio.sleep(1)`` in the worker): the slot is held.

It prints elapsed time, items/s (every item ended in a 200), requests/s (attempts
included), and items/s as a ratio of the no-failure run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

MODES = ("no-failures", "parallelize", "sleep-in-worker")


def paths(n: int, ms: int, *, failures: bool) -> list[str]:
    # The server counts hits per key for the whole of its life: fresh keys per run.
    run = f"{time.time_ns()}"
    fail = lambda i: 1 if failures and i % 10 == 0 else 0  # noqa: E731
    return [f"/flaky/{run}-{i}?fail={fail(i)}&ms={ms}" for i in range(n)]


async def measure(mode: str, base: str, n: int, ms: int, workers: int) -> dict[str, float]:
    import aiohttp  # noqa: PLC0415

    from parallelize import Backoff, Retry, parallelize  # noqa: PLC0415

    attempts = 0
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(path: str) -> int:
            nonlocal attempts
            attempts += 1
            async with session.get(base + path) as resp:
                await resp.read()
                return resp.status

        async def sleep_in_worker(path: str) -> int:
            status = await get(path)
            if status == 503:
                await asyncio.sleep(1.0)
                status = await get(path)
            return status

        retry = Retry(on=(), if_result=lambda s: s == 503, backoff=Backoff(initial=1, jitter=0))
        items = paths(n, ms, failures=mode != "no-failures")
        if mode == "sleep-in-worker":
            results = parallelize(sleep_in_worker, items, workers)
        elif mode == "parallelize":
            results = parallelize(get, items, workers, retry=retry)
        else:
            results = parallelize(get, items, workers)
        started = time.perf_counter()
        statuses = [status async for status in results]
        elapsed = time.perf_counter() - started
    assert statuses.count(200) == n, f"{mode}: {n - statuses.count(200)} items did not end in 200"
    return {"elapsed": elapsed, "items": n, "attempts": attempts}


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(measure(args.mode, args.base, args.n, args.ms, args.workers))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ms", type=int, default=200, help="latency of a success (200)")
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        child(args)
        return

    server = subprocess.Popen(
        [sys.executable, "-m", "parallelize.testing"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        print(
            f"python {sys.version.split()[0]}, server {base}, n={args.n}, "
            f"workers={args.workers}, success latency {args.ms} ms, 10% fail once, "
            f"1 s backoff, {args.rounds} rounds interleaved"
        )
        samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for round_ in range(1, args.rounds + 1):
            for mode in MODES:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--mode",
                        mode,
                        "--base",
                        base,
                        "--n",
                        str(args.n),
                        "--ms",
                        str(args.ms),
                        "--workers",
                        str(args.workers),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                sample = json.loads(out.stdout)
                samples[mode].append(sample)
                print(f"[round {round_}] {mode:16} {sample['elapsed']:7.2f} s")
    finally:
        server.terminate()
        server.wait()

    reference = statistics.median(args.n / s["elapsed"] for s in samples["no-failures"])
    print("\n| mode | elapsed s | items/s | requests/s | items/s vs no failures |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        elapsed = statistics.median(s["elapsed"] for s in samples[mode])
        items = statistics.median(args.n / s["elapsed"] for s in samples[mode])
        requests = statistics.median(s["attempts"] / s["elapsed"] for s in samples[mode])
        print(
            f"| {mode} | {elapsed:.2f} | {items:,.0f} | {requests:,.0f} | "
            f"{items / reference:.2f}x |"
        )


if __name__ == "__main__":
    main()
