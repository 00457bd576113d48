"""A worker process of a Redis run, for test_redis.py.

    python redis_worker.py URL RUN ACTION WORKERS IDLE_TIMEOUT CALLS_LOG [MAX_DEATHS
        [MAX_DELIVERIES [BATCH]]]

ACTION is ``square`` (a few ms of sleep, returns ``item * item``), ``slow`` (the
same after 0.3 s) or ``poison`` (as ``square``, but item 13 kills its own process
with SIGKILL, as a segfault in a C extension would). Every call appends the item
to CALLS_LOG first (one unbuffered write, kept when the process is killed).
MAX_DEATHS (default 3), MAX_DELIVERIES (default 10) and BATCH (default: WORKERS)
are the queue's. At the end it prints ``done N``.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import random
import signal
import sys

from parallelize.redis import RedisQueue

POISON = 13


# A test that gives up on this worker asks for its stacks first (redistools.finish).
faulthandler.register(signal.SIGUSR1, all_threads=True)


async def main(
    url: str, run: str, action_name: str, workers: int, *, idle: float, log: str
) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def square(item: int) -> int:
        os.write(fd, f"{item}\n".encode())
        await asyncio.sleep(random.uniform(0.001, 0.005))
        return item * item

    async def poison(item: int) -> int:
        if item == POISON:
            os.write(fd, f"{item}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)
        return await square(item)

    async def slow(item: int) -> int:
        await asyncio.sleep(0.3)
        return await square(item)

    action = {"square": square, "slow": slow, "poison": poison}[action_name]
    max_deaths = int(sys.argv[7]) if len(sys.argv) > 7 else 3
    max_deliveries = int(sys.argv[8]) if len(sys.argv) > 8 else 10
    batch = int(sys.argv[9]) if len(sys.argv) > 9 else None
    done = 0
    async with RedisQueue(
        url,
        run=run,
        idle_timeout=idle,
        max_deaths=max_deaths,
        max_deliveries=max_deliveries,
        batch=batch,
        reconnect_timeout=60,
    ) as queue:
        async for _ in queue.work(action, workers, on_error="yield"):
            done += 1
    sys.stdout.write(f"done {done}\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    url, run, action_name, workers, idle, log = sys.argv[1:7]
    asyncio.run(main(url, run, action_name, int(workers), idle=float(idle), log=log))
