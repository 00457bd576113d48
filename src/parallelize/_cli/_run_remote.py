"""``run --processes N``: FUNCTION called in child processes, the run in this one.

Each child imports FUNCTION by its ``MODULE:FUNCTION`` spec (``child_function``, the
run's ``process_setup``) and makes one call per line (``call_line``), the line's
JSON decoded and its record written there. A plain function runs in the child's
own threads (as many as ``--workers``), so its loop stays free for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from ._call import make_call

__all__ = ("call_line", "child_function")

# This child's call of a line, made by child_function() (None in the parent).
_CALL: Callable[[int, str], Awaitable[str]] | None = None


@contextlib.asynccontextmanager
async def child_function(spec: str, workers: int) -> AsyncIterator[None]:
    """Import FUNCTION in this child; a plain one gets ``workers`` threads."""
    global _CALL  # noqa: PLW0603 - one function per process: the point of the module
    call = make_call(spec)
    if asyncio.iscoroutinefunction(call):
        _CALL = cast("Callable[[int, str], Awaitable[str]]", call)
        try:
            yield
        finally:
            _CALL = None
        return
    threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parallelize")
    loop = asyncio.get_running_loop()

    plain = cast("Callable[[int, str], str]", call)

    async def in_thread(line: int, text: str) -> str:
        context = contextvars.copy_context()
        return await loop.run_in_executor(
            threads, functools.partial(context.run, plain, line, text)
        )

    _CALL = in_thread
    try:
        yield
    finally:
        _CALL = None
        threads.shutdown(wait=False, cancel_futures=True)


async def call_line(line: int, text: str) -> str:
    """Call FUNCTION with the arguments of ``text`` in this child; the line's record."""
    assert _CALL is not None, "child_function() imports FUNCTION first"
    return await _CALL(line, text)
