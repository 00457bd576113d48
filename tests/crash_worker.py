"""A journaled run in its own process, for the crash test (run by test_journal.py).

    python crash_worker.py JOURNAL CALLS_LOG ITEMS WORKERS SEED

Every call of the action appends the item's number to CALLS_LOG with one unbuffered
write (atomic, and kept by the kernel when this process is killed), then sleeps a
few milliseconds and returns ``2 * item``.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

from parallelize import SQLiteJournal, parallelize


async def main(journal: str, calls_log: str, items: int, workers: int, seed: int) -> None:
    draws = random.Random(seed)
    fd = os.open(calls_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def action(item: int) -> int:
        os.write(fd, f"{item}\n".encode())
        await asyncio.sleep(draws.uniform(0, 0.01))
        return 2 * item

    done = 0
    run = parallelize(
        action, range(items), workers, journal=SQLiteJournal(journal, flush_interval=0.05)
    )
    async with run:
        async for _ in run:
            done += 1
    sys.stdout.write(f"done {done}\n")


if __name__ == "__main__":
    journal, calls_log, items, workers, seed = sys.argv[1:6]
    asyncio.run(main(journal, calls_log, int(items), int(workers), int(seed)))
