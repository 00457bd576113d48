"""Workloads: what is measured, and the actions and inputs each measurement uses.

The harness (run.py) reads the `Workload` registry to plan measurements; the
measuring child (measure.py) only uses `make_action` and `lazy_items`. This
module imports nothing beyond the standard library at import time, so the
Python 3.12 venv (pyarallel's) can import it too.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["noop", "sleep", "http"]
LoopName = Literal["asyncio", "uvloop"]
Metric = Literal["throughput", "efficiency", "rss", "http"]
Action = Callable[[Any], Awaitable[Any]]

HTTP_STATUS_OK = 200


@dataclass(frozen=True)
class Workload:
    """One table of the report: an action, an input size and a pool size."""

    key: str
    title: str
    kind: Kind
    metric: Metric
    sizes: tuple[int, ...]  # input sizes; W3 measures two, every other workload one
    workers: int
    loop: LoopName = "asyncio"
    delay: float = 0.0  # seconds each `sleep` action waits
    # Contenders that are not measured here, with the reason shown in the table.
    skip: dict[str, str] = field(default_factory=dict)
    # W3: contenders that materialize input or output are capped at sizes[0].
    cap_materializing: bool = False

    @property
    def n(self) -> int:
        return self.sizes[0]

    def ideal_seconds(self) -> float:
        """The best possible elapsed time of a `sleep` workload: full waves of sleeps."""
        return math.ceil(self.n / self.workers) * self.delay

    def expected_checksum(self, n: int) -> int:
        """What the sum of all n results must be, so a lost or doubled item shows."""
        if self.kind == "http":
            return HTTP_STATUS_OK * n
        return n * (n - 1) // 2


NOT_CONCURRENT = "n/a: one action at a time takes minutes"


def workloads(quick: bool) -> list[Workload]:
    """The registry; `quick` shrinks every input so the whole run takes ~3 minutes."""
    w1 = 50_000 if quick else 200_000
    w2 = 2_000 if quick else 10_000
    w2b = 250 if quick else 1_000
    w3 = (100_000, 1_000_000) if quick else (1_000_000, 10_000_000)
    w4 = 3_000 if quick else 20_000
    no_sequential = {"sequential": NOT_CONCURRENT}
    return [
        Workload("W1", f"{w1:,} no-op actions", "noop", "throughput", (w1,), 100),
        Workload(
            "W2",
            f"{w2:,} x asyncio.sleep(0.01)",
            "sleep",
            "efficiency",
            (w2,),
            100,
            delay=0.01,
            skip=no_sequential,
        ),
        Workload(
            "W2b",
            f"{w2b:,} x asyncio.sleep(0.1), the article's case",
            "sleep",
            "efficiency",
            (w2b,),
            50,
            delay=0.1,
            skip=no_sequential,
        ),
        Workload(
            "W3",
            "peak RSS growth over a lazy generator of no-op actions",
            "noop",
            "rss",
            w3,
            100,
            cap_materializing=True,
        ),
        Workload(
            "W4",
            f"{w4:,} GETs to a local aiohttp server",
            "http",
            "http",
            (w4,),
            100,
            skip=no_sequential,
        ),
        Workload(
            "W5-W1",
            f"W1 on uvloop: {w1:,} no-op actions",
            "noop",
            "throughput",
            (w1,),
            100,
            loop="uvloop",
        ),
        Workload(
            "W5-W4",
            f"W4 on uvloop: {w4:,} GETs",
            "http",
            "http",
            (w4,),
            100,
            loop="uvloop",
            skip=no_sequential,
        ),
    ]


# --------------------------------------------------------------------------- #
# Used by the measuring child
# --------------------------------------------------------------------------- #


def lazy_items(n: int) -> Iterator[int]:
    """The input of every workload: an unsized, lazy generator of 0..n-1."""
    yield from range(n)


@dataclass
class Probe:
    """Counts actions in flight (so a contender that breaks its bound shows) and bad replies."""

    peak: int = 0
    not_ok: int = 0  # http: responses whose status was not 200


@asynccontextmanager
async def action_for(
    kind: Kind, *, workers: int, delay: float, url: str | None, probe: Probe
) -> AsyncIterator[Action]:
    """Yield the workload's action, with any resource it needs (an HTTP session) open."""
    if kind == "noop":
        yield noop
    elif kind == "sleep":
        yield sleeping_action(delay, probe)
    else:
        if url is None:
            raise ValueError("the http workload needs --url")
        import aiohttp  # noqa: PLC0415 - only the http workloads need it

        connector = aiohttp.TCPConnector(limit=workers)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield http_action(session, url, probe)


async def noop(x: Any) -> Any:
    return x


def sleeping_action(delay: float, probe: Probe) -> Action:
    inflight = 0

    async def action(x: Any) -> Any:
        nonlocal inflight
        inflight += 1
        if inflight > probe.peak:
            probe.peak = inflight
        await asyncio.sleep(delay)
        inflight -= 1
        return x

    return action


def http_action(session: Any, url: str, probe: Probe) -> Action:
    inflight = 0

    async def action(x: Any) -> int:
        nonlocal inflight
        inflight += 1
        if inflight > probe.peak:
            probe.peak = inflight
        try:
            async with session.get(url) as response:
                await response.read()
                if response.status != HTTP_STATUS_OK:
                    probe.not_ok += 1
                return response.status
        finally:
            inflight -= 1

    return action
