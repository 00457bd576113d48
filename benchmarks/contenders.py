"""The contenders: the project, its peers, hand-written pools and two floors.

Every contender has the same shape: given an async `action`, an iterable of
items and a number of workers, it runs `action` on every item with at most
`workers` actions in flight, consumes every result, and returns a `Tally`
(how many results, and their sum, so a lost or doubled item shows).

Each library is imported inside its function, so this module imports with
the standard library alone (the harness reads the registry without loading
any peer, and the Python 3.12 venv has only pyarallel). measure.py imports a
contender's `modules` before it starts the clock, so no import is timed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

Action = Callable[[Any], Awaitable[Any]]
Tally = tuple[int, int]  # (number of results, sum of results)
Runner = Callable[[Action, Iterable[Any], int], Awaitable[Tally]]


@dataclass(frozen=True)
class Contender:
    name: str
    run: Runner
    modules: tuple[str, ...] = ()  # imported before timing, and by the RSS baseline
    python: Literal["project", "py312"] = "project"  # which interpreter runs it
    holds_all: str = ""  # why it holds O(n) memory; "" when it streams in O(workers)
    order: Literal["completion", "input"] = "completion"  # order of results
    floor: bool = False  # a lower bound no library can beat, not a real pool


async def consume(results: AsyncIterable[Any]) -> Tally:
    """Count and sum an async stream of results, as each streaming contender's caller does."""
    count = checksum = 0
    async for result in results:
        count += 1
        checksum += result
    return count, checksum


def tally(results: list[Any]) -> Tally:
    return len(results), sum(results)


# --------------------------------------------------------------------------- #
# The project and the article's baseline
# --------------------------------------------------------------------------- #


async def run_parallelize(action: Action, items: Iterable[Any], workers: int) -> Tally:
    from parallelize import parallelize  # noqa: PLC0415

    return await consume(parallelize(action, items, workers))


async def run_article(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # The article calls `action(*args)`, so each item is wrapped in a 1-tuple
    # (a generator, so the input stays lazy). See article_impl.py for its flaws.
    import article_impl  # noqa: PLC0415

    return await consume(article_impl.parallelize(action, ((x,) for x in items), workers))


# --------------------------------------------------------------------------- #
# Hand-written pools with the standard library
# --------------------------------------------------------------------------- #


async def run_semaphore_gather(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Materializes: one task per item is created up front; results in input order.
    semaphore = asyncio.Semaphore(workers)

    async def guarded(x: Any) -> Any:
        async with semaphore:
            return await action(x)

    return tally(await asyncio.gather(*(guarded(x) for x in items)))


async def run_taskgroup_semaphore(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Materializes: one task per item is created up front; results read in input order.
    semaphore = asyncio.Semaphore(workers)

    async def guarded(x: Any) -> Any:
        async with semaphore:
            return await action(x)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(guarded(x)) for x in items]
    return tally([task.result() for task in tasks])


async def run_wait_window(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Streams: a window of at most `workers` tasks, refilled as tasks finish.
    iterator = iter(items)
    pending = {asyncio.ensure_future(action(x)) for x in itertools.islice(iterator, workers)}
    count = checksum = 0
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                count += 1
                checksum += task.result()
            for x in itertools.islice(iterator, len(done)):
                pending.add(asyncio.ensure_future(action(x)))
    finally:
        for task in pending:
            task.cancel()
    return count, checksum


_DONE: Any = object()


class _Raised:
    """What a queue worker sends instead of a result when its action raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def run_queue_workers(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Streams: a bounded input queue fed by a producer, `workers` worker tasks,
    # a bounded output queue, and one sentinel per worker to shut down. An
    # action's exception travels to the consumer, which raises it.
    inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=workers)
    outbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=workers)

    async def produce() -> None:
        for x in items:
            await inbox.put(x)
        for _ in range(workers):
            await inbox.put(_DONE)

    async def work() -> None:
        try:
            while (x := await inbox.get()) is not _DONE:
                await outbox.put(await action(x))
        except Exception as error:  # hand it to the consumer, or it would wait forever
            await outbox.put(_Raised(error))
        else:
            await outbox.put(_DONE)

    tasks = [asyncio.create_task(produce())]
    tasks += [asyncio.create_task(work()) for _ in range(workers)]
    count = checksum = finished = 0
    try:
        while finished < workers:
            result = await outbox.get()
            if result is _DONE:
                finished += 1
            elif type(result) is _Raised:
                raise result.error
            else:
                count += 1
                checksum += result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return count, checksum


# --------------------------------------------------------------------------- #
# Peer libraries
# --------------------------------------------------------------------------- #


async def run_aiometer(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Materializes: aiometer.amap takes a Sequence (it calls len(args) to size
    # its result channel, whose buffer is therefore unbounded), so a generator
    # must be turned into a list first. It spawns one task per item, at most
    # `max_at_once` at a time, and yields in completion order.
    import aiometer  # noqa: PLC0415

    async with aiometer.amap(action, list(items), max_at_once=workers) as results:
        return await consume(results)


async def run_aiostream(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Streams. stream.map yields in input order by default (ordered=True);
    # ordered=False gives completion order, the same contract as parallelize.
    from aiostream import stream  # noqa: PLC0415

    mapped = stream.map(stream.iterate(items), action, ordered=False, task_limit=workers)
    async with mapped.stream() as results:
        return await consume(results)


async def run_tasklane(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Holds all results: tasklane.amap returns a list in input order. The input
    # is pulled lazily (a bounded queue feeds `limit` workers), but for an
    # unsized input it keeps every result in an index->result dict, then
    # builds the list. (tasklane.stream would stream, but the brief asks amap.)
    import tasklane  # noqa: PLC0415

    return tally(await tasklane.amap(action, items, limit=workers))


async def run_streamable(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Streams. map(..., concurrency=n) yields in input order by default;
    # as_completed=True gives completion order, the same contract as parallelize.
    # The stream is an async iterable itself (`async for` drives it in the
    # running loop). It keeps up to n+1 tasks created, bounded by a semaphore.
    from streamable import stream  # noqa: PLC0415

    return await consume(stream(items).map(action, concurrency=workers, as_completed=True))


async def run_pyarallel(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # Holds all results: async_parallel_map returns a ParallelResult in input
    # order (plus per-item metadata lists). Input is pulled lazily through a
    # window of 2 x concurrency tasks, with a semaphore bounding concurrency.
    # Needs Python 3.12+, so it runs from the harness's own py312 venv.
    import pyarallel  # noqa: PLC0415

    result = await pyarallel.async_parallel_map(action, items, concurrency=workers)
    return tally(result.values())  # values() raises if any item failed


# --------------------------------------------------------------------------- #
# Floors
# --------------------------------------------------------------------------- #


async def run_sequential(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # The per-item floor: no concurrency at all. It sums instead of appending
    # to a list, like every other contender, so memory stays comparable.
    count = checksum = 0
    for x in items:
        checksum += await action(x)
        count += 1
    return count, checksum


async def run_bare_tasks(action: Action, items: Iterable[Any], workers: int) -> Tally:
    # The event loop's own cost of n-way concurrency: n bare tasks share one
    # iterator, nothing else. With a no-op action the first task never yields,
    # so it drains the whole input alone.
    iterator = iter(items)

    async def work() -> Tally:
        count = checksum = 0
        for x in iterator:
            checksum += await action(x)
            count += 1
        return count, checksum

    tallies = await asyncio.gather(*(asyncio.create_task(work()) for _ in range(workers)))
    return sum(c for c, _ in tallies), sum(s for _, s in tallies)


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

_INPUT_LIST = "holds all inputs"
_RESULT_LIST = "holds all results"

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in [
        Contender("parallelize", run_parallelize, ("parallelize",)),
        Contender("article", run_article, ("article_impl",)),
        Contender("semaphore_gather", run_semaphore_gather, holds_all=_INPUT_LIST, order="input"),
        Contender(
            "taskgroup_semaphore", run_taskgroup_semaphore, holds_all=_INPUT_LIST, order="input"
        ),
        Contender("wait_window", run_wait_window),
        Contender("queue_workers", run_queue_workers),
        Contender("aiometer", run_aiometer, ("aiometer",), holds_all=_INPUT_LIST),
        Contender("aiostream", run_aiostream, ("aiostream",)),
        Contender("tasklane", run_tasklane, ("tasklane",), holds_all=_RESULT_LIST, order="input"),
        Contender("streamable", run_streamable, ("streamable",)),
        Contender(
            "pyarallel",
            run_pyarallel,
            ("pyarallel",),
            python="py312",
            holds_all=_RESULT_LIST,
            order="input",
        ),
        # The project again, on pyarallel's interpreter: compare pyarallel with this row.
        Contender("parallelize_py312", run_parallelize, ("parallelize",), python="py312"),
        Contender("sequential", run_sequential, floor=True, order="input"),
        Contender("bare_tasks", run_bare_tasks, floor=True),
    ]
}
