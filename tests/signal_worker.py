"""A journaled run with handle_signals in its own process (run by test_journal.py).

    python signal_worker.py JOURNAL CALLS_LOG ITEMS WORKERS SLEEP GRACE

Prints "progress" when the action is first called; on Interrupted, writes its
message to stderr and exits 130, as a command line tool would.
"""

from __future__ import annotations

import asyncio
import os
import sys

from parallelize import Interrupted, parallelize


async def main(argv: list[str]) -> int:
    journal, calls_log = argv[0], argv[1]
    items, workers, sleep, grace = int(argv[2]), int(argv[3]), float(argv[4]), float(argv[5])
    fd = os.open(calls_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    calls = 0

    async def action(item: int) -> int:
        nonlocal calls
        os.write(fd, f"{item}\n".encode())
        calls += 1
        if calls == 1:
            sys.stdout.write("progress\n")
            sys.stdout.flush()
        await asyncio.sleep(sleep)
        return item

    done = 0
    run = parallelize(action, range(items), workers, journal=journal, handle_signals=grace)
    try:
        async with run:
            async for _ in run:
                done += 1
    except Interrupted as exc:
        sys.stderr.write(f"{exc}\n")
        return 130
    sys.stdout.write(f"done {done}\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:7])))
