"""The fleet's rate limit on the one limit seam: a ``Limit`` the run asks itself.

Against a real redis-server, started by the fixture on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parallelize import NO_OUTCOME, Limit, Permit, parallelize
from parallelize.redis import RedisQueue
from redistools import RedisServer, running


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server


def new_run() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def test_the_shared_rate_limit_is_a_limit(run: Any, redis: RedisServer) -> None:
    """admit() takes one slot of the fleet's quota and hands back a permit with nothing to keep."""

    async def main() -> None:
        async with RedisQueue(redis.url, run=new_run()) as queue:
            shared = queue.rate_limit(1000, burst=5)
            assert isinstance(shared, Limit)
            permits: list[Permit] = [await shared.admit(item) for item in range(3)]
            assert shared.calls == 3
            for permit, outcome in zip(permits, ("ok", ValueError("x"), NO_OUTCOME), strict=True):
                permit.start()
                permit.release(outcome)
            assert shared.calls == 3  # a permit given back returns no slot: it was spent
            assert repr(shared) == "SharedRateLimit(per_second=1000, burst=5)"

    run(main())


def test_a_run_asks_the_shared_limit_itself(run: Any, redis: RedisServer) -> None:
    """rate_limit=queue.rate_limit(...): every attempt goes through the limit's own admit()."""
    admitted: list[Any] = []
    starts: list[float] = []

    async def call(item: int) -> int:
        starts.append(time.monotonic())
        await asyncio.sleep(0)
        return item

    async def main() -> list[int]:
        async with RedisQueue(redis.url, run=new_run()) as queue:
            shared = queue.rate_limit(100)
            admit = shared.admit

            async def spy(item: Any) -> Permit:
                admitted.append(item)
                return await admit(item)

            shared.admit = spy  # type: ignore[method-assign]  # a spy on the seam
            results = [r async for r in parallelize(call, range(20), 10, rate_limit=shared)]
            assert shared.calls == 20
            return sorted(results)

    assert run(main()) == list(range(20))
    assert sorted(admitted) == list(range(20))
    # GCRA: 20 calls at 100/s with burst 1 take at least 19/100 s.
    starts.sort()
    assert starts[-1] - starts[0] >= 19 / 100 * 0.95
