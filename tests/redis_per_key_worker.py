"""A worker process whose limits per key are the fleet's, for test_redis_per_key.py.

    python redis_per_key_worker.py URL RUN LOG MODE CONCURRENCY RATE BURST LEASE SLEEP

Items are strings ``key:n``; their key is what comes before the colon. The limits
are ``queue.per_key(PerKey(key, concurrency=CONCURRENCY, rate=RATE, burst=BURST),
lease=LEASE)`` (``-`` for no concurrency or no rate), with ``set_aside=4``. MODE is
``work`` (work on the run's items with 8 workers: each call appends ``+ key pid
time`` to LOG, sleeps SLEEP seconds, then appends ``- key pid time``; at the end it
prints ``done N``) or ``hold`` (one call of the item ``a:0``, which appends its
``+`` line and never ends: for the test to kill the process). Times are
``time.monotonic()``: one clock for every process of the machine. Each line is one
unbuffered write, kept when the process is killed.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import time

from parallelize import PerKey, parallelize
from parallelize.redis import RedisQueue

faulthandler.register(signal.SIGUSR1, all_threads=True)


def key_of(item: str) -> str:
    return item.split(":", 1)[0]


async def main(url: str, run: str, log: str, mode: str, *limits: str) -> None:
    concurrency, rate, burst, lease, sleep = limits
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(sign: str, item: str) -> None:
        os.write(fd, f"{sign} {key_of(item)} {os.getpid()} {time.monotonic():.6f}\n".encode())

    async def call(item: str) -> str:
        note("+", item)
        await asyncio.sleep(float(sleep))
        note("-", item)
        return item

    async def hang(item: str) -> str:
        note("+", item)
        await asyncio.Event().wait()
        return item

    async with RedisQueue(url, run=run, reconnect_timeout=30) as queue:
        polite = queue.per_key(
            PerKey(
                key_of,
                concurrency=None if concurrency == "-" else int(concurrency),
                rate=None if rate == "-" else float(rate),
                burst=int(burst),
                # Few items set aside: a worker whose keys are held does not read
                # the whole run ahead (the other worker gets its share).
                set_aside=4,
            ),
            lease=float(lease),
        )
        if mode == "hold":
            async for _ in parallelize(hang, ["a:0"], 1, per_key=polite):
                pass
            return
        done = 0
        async for _ in queue.work(call, 8, per_key=polite):
            done += 1
    sys.stdout.write(f"done {done}\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
