"""Async actions for ``processes=`` tests: top-level, so child processes import them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

# Set in each child by ``opened`` (process_setup): what the action reads.
RESOURCE: dict[str, Any] = {}


async def pid_after(seconds: float) -> int:
    """Wait, then say which process ran it."""
    await asyncio.sleep(seconds)
    return os.getpid()


async def double(x: int) -> int:
    return 2 * x


async def add(a: int, b: int) -> int:
    return a + b


async def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd: {x}")
    return x


async def kill_self_on(x: int, poison: int = 5) -> int:
    """Die (SIGKILL) on the poison item, after the others of its batch are under way."""
    await asyncio.sleep(0.01)
    if x == poison:
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(0.05)
    return x


async def kill_once_on(x: int, marker: str, poison: int = 5) -> int:
    """Die (SIGKILL) on the poison item the first time only (``marker`` says it did)."""
    await asyncio.sleep(0.01)
    if x == poison and not os.path.exists(marker):  # noqa: PTH110, ASYNC240 - a flag file
        with open(marker, "w"):  # noqa: PTH123, ASYNC230 - made at once, empty
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    await asyncio.sleep(0.05)
    return x


async def sleep_forever(x: int) -> int:
    """Never returns: cancelled by a timeout, or by the run closing."""
    try:
        await asyncio.sleep(3600)
    finally:
        RESOURCE.setdefault("cancelled", 0)
    return x


async def busy(x: int, wait: float = 0.01, work: float = 0.0002) -> int:
    """``wait`` seconds of I/O, then ``work`` seconds of Python on the CPU."""
    await asyncio.sleep(wait)
    end = time.process_time() + work
    while time.process_time() < end:
        pass
    return x


async def read_resource(x: int) -> tuple[int, str, int]:
    return x, RESOURCE["name"], os.getpid()


async def returns_unpicklable(x: int) -> Any:
    return lambda: x


async def raises_system_exit(x: int) -> int:
    raise SystemExit(x)


async def pages(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield f"{n}/{i}"


@contextlib.asynccontextmanager
async def opened(log: str | None = None) -> AsyncIterator[None]:
    """A per-process resource, named after the process; its closing is logged to ``log``."""
    RESOURCE["name"] = f"resource-{os.getpid()}"
    try:
        yield
    finally:
        if log:
            with open(log, "a") as f:  # noqa: PTH123, ASYNC230 - a line, appended
                f.write(f"closed {os.getpid()}\n")


@contextlib.asynccontextmanager
async def broken() -> AsyncIterator[None]:
    if os.getpid():  # always: a setup that fails
        raise RuntimeError("no database today")
    yield
