"""The seed article's `parallelize`, copied verbatim as the benchmark baseline.

Only two things differ from the article's text: the imports below were added,
and `parallelize[T]` became `parallelize` with a module-level TypeVar, because
the `def f[T]` syntax needs Python 3.12 and the project supports 3.11.

Known flaws, kept on purpose (this is the baseline, not a fixed version):
- it calls `action(*args)`, so every item must be an iterable of arguments:
  the harness feeds it 1-tuples `(x,)`;
- it hangs on empty input: the loader task is not done yet when the consumer
  loop is first checked, so the consumer waits on an output queue that never
  gets an item;
- it reads the private `asyncio.Queue._unfinished_tasks` counter (the HACK
  lines) to decide when to stop;
- its output queue is unbounded, so a slow consumer lets results pile up
  without limit;
- an exception in `action` kills its worker silently (the task is never
  awaited until the end) and the consumer then waits forever.
"""

# ruff: noqa: SLF001
# fmt: off
import asyncio
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def parallelize(
    action: Callable[..., Coroutine[None, None, T]],
    argslist: Iterable[Iterable[Any]] | AsyncIterable[Iterable[Any]],
    numworkers: int,
) -> AsyncIterable[T]:

    inqueue = asyncio.Queue(maxsize=numworkers)
    outqueue = asyncio.Queue()

    tasks = []
    for worker_id in range(numworkers):
        task = asyncio.create_task(worker(worker_id, inqueue, outqueue, action))
        tasks.append(task)

    loader_task = asyncio.create_task(queue_loader(inqueue, argslist))

    while (
        (not loader_task.done())
        or (inqueue._unfinished_tasks > 0)  # HACK
        or (outqueue._unfinished_tasks > 0)  # HACK
    ):
        result = await outqueue.get()
        yield result
        outqueue.task_done()

    for task in tasks:
        task.cancel()

    await asyncio.gather(*tasks, return_exceptions=True)


async def worker(
    worker_id: int,
    inqueue: asyncio.Queue,
    outqueue: asyncio.Queue,
    action: Callable[..., Coroutine],
):
    while True:
        args = await inqueue.get()
        result = await action(*args)
        outqueue.put_nowait(result)
        inqueue.task_done()


async def queue_loader(queue: asyncio.Queue, items: AsyncIterable | Iterable):
    if not isinstance(items, AsyncIterable):
        items = make_aiter(items)
    async for item in items:
        await queue.put(item)  # this blocks when the queue is full


async def make_aiter(items: Iterable) -> AsyncIterable:
    for item in items:
        yield item
