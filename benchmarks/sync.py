"""``parallelize.sync(run)`` against ``async for``: the cost of a loop entry per outcome.

    .venv/bin/python benchmarks/sync.py [--items 200000] [--rounds 5]

No-op async items (the overhead alone) and 1 ms sleeps with 100 workers (an I/O
job): CPU µs per item (process time) and wall time, medians of the rounds, each
mode in the same process, rounds interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from parallelize import parallelize, sync


async def noop(n: int) -> int:
    return n


async def io(n: int) -> int:
    await asyncio.sleep(0.001)
    return n


def with_async_for(action: object, items: int, workers: int) -> int:
    async def main() -> int:
        count = 0
        async for _ in parallelize(action, range(items), workers):  # type: ignore[call-overload]
            count += 1
        return count

    return asyncio.run(main())


def with_sync(action: object, items: int, workers: int) -> int:
    count = 0
    for _ in sync(parallelize(action, range(items), workers)):  # type: ignore[call-overload]
        count += 1
    return count


def measure(mode: object, action: object, items: int, workers: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    assert mode(action, items, workers) == items  # type: ignore[operator]
    return (time.process_time() - cpu) / items * 1e6, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases = [
        ("no-op", noop, args.items, 100),
        ("1 ms sleep", io, args.items // 10, 100),
    ]
    print("| items | mode | CPU µs/item (median) | wall s (median) |")
    print("| --- | --- | ---: | ---: |")
    for name, action, items, workers in cases:
        samples: dict[str, list[tuple[float, float]]] = {"async for": [], "sync()": []}
        for _ in range(args.rounds):
            for mode, run in (("async for", with_async_for), ("sync()", with_sync)):
                samples[mode].append(measure(run, action, items, workers))
        for mode, got in samples.items():
            cpu = statistics.median(s[0] for s in got)
            wall = statistics.median(s[1] for s in got)
            print(f"| {items:,} {name} | {mode} | {cpu:.2f} | {wall:.2f} |")


if __name__ == "__main__":
    main()
