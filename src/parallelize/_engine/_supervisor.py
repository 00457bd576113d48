"""The supervisor's work: the workers in one task group, then what they held open.

``Run`` starts one supervisor task per run; it runs the workers (and the reader of
an async input with retries) here, and once they have all ended closes the input,
the processes and the earlier stages of a pipeline, recording any error in the flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    from parallelize._multi import ProcessShards
    from parallelize._processes import ProcessPool

    from ._flow import Flow
    from ._sources import ItemSource

__all__ = ("release", "run_workers")


async def run_workers(
    worker: Callable[[], Coroutine[Any, Any, None]],
    numworkers: int,
    flow: Flow,
    items: ItemSource | None,
    tasks: list[asyncio.Task[None]],
) -> None:
    """Run ``numworkers`` workers (and the reader, if any) in a task group.

    The worker tasks are added to ``tasks`` as they start: the run cancels them
    there (see ``Run._cancel``).
    """
    reads_ahead = items is not None and items.reads_ahead()
    if items is not None and reads_ahead:
        items.start_reader()  # workers ask the reader from the start
    async with asyncio.TaskGroup() as group:
        tasks.extend(group.create_task(worker()) for _ in range(numworkers))
        reader = None
        if items is not None and reads_ahead:
            reader = group.create_task(items.read_ahead())
        try:
            if tasks:
                await asyncio.wait(tasks)
        except asyncio.CancelledError:
            # Cancelled from anywhere (aclose(), a worker's error through the
            # group, the loop's shutdown): halt, so that a worker whose action
            # swallows its own cancellation ends instead of waiting for a credit.
            flow.halt()
            raise
        if reader is not None:
            reader.cancel()  # the workers are done: so is the input


async def release(
    flow: Flow,
    source: AsyncIterator[Any] | None,
    processes: ProcessPool | ProcessShards | None,
    close_upstream: Callable[[], Awaitable[None]] | None,
) -> None:
    """Close what a run holds open: the input, the processes, earlier stages."""
    if isinstance(source, AsyncGenerator):
        # Our own iterator over the user's async input: close it here, inside the
        # run's lifetime, rather than leave it to the garbage collector.
        try:
            await source.aclose()
        except Exception as exc:
            flow.record_error(exc)
    if processes is not None:
        await processes.aclose()
    if close_upstream is not None:
        # An earlier stage ends with this one: its tasks are awaited here, so
        # nothing of the pipeline outlives the last stage (and an error in a
        # later stage stops the earlier ones).
        try:
            await close_upstream()
        except Exception as exc:
            flow.record_error(exc)
