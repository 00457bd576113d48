"""The engine: what a consumer sees of results, order, bounds, errors and early exit."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import threading
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from parallelize import ActionError, Failure, parallelize
from spies import CountingIterable, InFlightSpy, settle


async def noop(x: Any) -> Any:
    return x


async def collect(results: Any) -> list[Any]:
    return [r async for r in results]


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


# -- inputs and results --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "range", "generator", "async generator"])
def test_every_item_once(run: Any, kind: str) -> None:
    """Every item of any kind of input is processed exactly once."""
    n = 1000

    def source() -> Any:
        if kind == "list":
            return list(range(n))
        if kind == "range":
            return range(n)
        if kind == "generator":
            return (i for i in range(n))
        return agen(n)

    results = run(collect(parallelize(noop, source(), 7)))
    assert sorted(results) == list(range(n))


@pytest.mark.parametrize("kind", ["list", "generator", "async generator"])
def test_empty_input_completes(run: Any, kind: str) -> None:
    """Empty input ends the iteration at once (the article's code hangs here)."""
    source: Any = {"list": [], "generator": iter(()), "async generator": agen(0)}[kind]

    async def main() -> None:
        async with asyncio.timeout(5):
            assert await collect(parallelize(noop, source, 10)) == []
        assert not other_tasks()

    run(main())


def test_article_usage_with_url_strings(run: Any) -> None:
    """Strings (and other non-sequences) are passed whole, as in the article's example."""
    urls = [f"http://example.com/{i}" for i in range(50)]
    assert sorted(run(collect(parallelize(noop, urls, numworkers=100)))) == sorted(urls)


@pytest.mark.parametrize("ordered", [False, True])
def test_tuples_and_lists_are_unpacked(run: Any, ordered: bool) -> None:
    """A tuple, list or namedtuple item becomes positional arguments; a dict does not."""
    point = namedtuple("point", "x y")  # noqa: PYI024 - plain on purpose

    async def action(*args: Any) -> tuple[Any, ...]:
        return args

    items: list[Any] = [(1, 2), [3, 4], point(5, 6), {"k": 1}, ((7, 8),), 9, "ab", (10,)]
    expected = [(1, 2), (3, 4), (5, 6), ({"k": 1},), ((7, 8),), (9,), ("ab",), (10,)]
    # One worker sees every item in turn: the per-type decision must follow each change.
    results = run(collect(parallelize(action, items, 1, ordered=ordered)))
    assert results == expected


def test_completion_order_by_default(run: Any) -> None:
    """Results come as they finish: a slow first item comes last."""

    async def main() -> list[int]:
        release = asyncio.Event()

        async def action(i: int) -> int:
            if i == 0:
                await release.wait()
            return i

        out = []
        async for r in parallelize(action, range(5), 5):
            out.append(r)
            if len(out) == 4:
                release.set()
        return out

    assert run(main()) == [1, 2, 3, 4, 0]


def test_ordered_yields_input_order(run: Any) -> None:
    """ordered=True gives input order whatever the completion order."""

    async def action(i: int) -> int:
        for _ in range(random.randrange(5)):
            await asyncio.sleep(0)
        return i

    assert run(collect(parallelize(action, range(300), 13, ordered=True))) == list(range(300))


def test_ordered_keeps_workers_busy_behind_a_slow_head(run: Any) -> None:
    """A slow first item does not stop the pool until the reorder buffer is full."""

    async def main() -> None:
        spy = InFlightSpy()
        release = asyncio.Event()

        async def action(i: int) -> int:
            if i == 0:
                await release.wait()
            return await spy(i)

        numworkers, buffered = 4, 6
        results = parallelize(action, range(100), numworkers, ordered=True, max_buffered=buffered)
        it = aiter(results)
        first = asyncio.ensure_future(anext(it))
        await settle(20)
        # Item 0 holds one worker; the others finished items 1.. until the window filled.
        assert len(spy.calls) == numworkers + buffered - 1
        assert not first.done()
        release.set()
        assert await first == 0
        assert [r async for r in it] == list(range(1, 100))

    run(main())


# -- bounds ----------------------------------------------------------------------------


@pytest.mark.parametrize("numworkers", [1, 3, 50])
def test_peak_concurrency_is_exactly_numworkers(run: Any, numworkers: int) -> None:
    """With enough items, exactly numworkers actions run at the peak, never more."""

    async def main() -> None:
        spy = InFlightSpy(gated=True)
        results = parallelize(spy, range(numworkers * 3), numworkers)
        consumer = asyncio.ensure_future(collect(results))
        await spy.wait_for_calls(numworkers)
        await settle()
        assert spy.in_flight == numworkers
        spy.gate.set()
        assert len(await consumer) == numworkers * 3
        assert spy.peak == numworkers

    run(main())


def test_input_is_pulled_lazily(run: Any) -> None:
    """A huge generator is read only as far as the workers and the buffer need."""

    async def main() -> None:
        source = CountingIterable(10**9)
        results = parallelize(noop, source, 10, max_buffered=5)
        seen = 0
        async with results:
            async for _ in results:
                seen += 1
                assert source.pulled <= seen + 10 + 5
                if seen == 1000:
                    break
        assert source.pulled <= 1000 + 15

    run(main())


def test_slow_consumer_stops_the_workers(run: Any) -> None:
    """Backpressure: finished results never pile up beyond numworkers + max_buffered."""

    async def main() -> None:
        spy = InFlightSpy()
        results = parallelize(spy, range(10_000), 8, max_buffered=4)
        async with results:
            it = aiter(results)
            await anext(it)
            await settle(50)
            # One taken, at most 8 + 4 more started; nothing else ran.
            assert len(spy.calls) <= 1 + 8 + 4
            for _ in range(100):
                await anext(it)
            await settle(50)
            assert len(spy.calls) <= 101 + 8 + 4

    run(main())


# -- errors ------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_first_error_propagates_unchanged_after_cancelling_the_rest(run: Any) -> None:
    """The action's own exception object comes out, once everything else is cancelled."""
    boom = Boom("item 4")

    async def main() -> None:
        spy = InFlightSpy(gated=True)

        async def action(i: int) -> int:
            if i == 4:
                await spy.wait_for_calls(4)
                raise boom
            return await spy(i)

        with pytest.raises(Boom) as info:
            await collect(parallelize(action, range(100), 5))
        assert info.value is boom
        assert sorted(spy.cancelled) == [0, 1, 2, 3]
        assert spy.in_flight == 0
        assert not other_tasks()

    run(main())


def test_error_from_the_input_propagates(run: Any) -> None:
    """An exception raised while iterating argslist propagates unchanged."""

    def source() -> Iterator[int]:
        yield 1
        raise Boom("bad input")

    async def asource() -> AsyncIterator[int]:
        yield 1
        raise Boom("bad async input")

    async def main() -> None:
        with pytest.raises(Boom, match=r"^bad input$"):
            await collect(parallelize(noop, source(), 3))
        with pytest.raises(Boom, match=r"^bad async input$"):
            await collect(parallelize(noop, asource(), 3))
        assert not other_tasks()

    run(main())


def test_failures_as_values(run: Any) -> None:
    """on_error='yield' turns each failing item into a Failure; the rest go on."""

    async def action(i: int) -> int:
        if i % 10 == 3:
            raise Boom(i)
        return i

    outcomes = run(collect(parallelize(action, range(100), 7, on_error="yield")))
    failures = [o for o in outcomes if isinstance(o, Failure)]
    values = sorted(o for o in outcomes if not isinstance(o, Failure))
    assert sorted(f.item for f in failures) == list(range(3, 100, 10))
    assert all(isinstance(f.exception, Boom) and f.attempts == 1 for f in failures)
    assert values == [i for i in range(100) if i % 10 != 3]
    assert "Failure(item=3, exception=Boom(3), attempts=1, expected=False, stage='action')" in {
        repr(f) for f in failures
    }


def test_failures_as_values_ordered(run: Any) -> None:
    """Failures keep their place in ordered mode."""

    async def action(i: int) -> int:
        if i == 2:
            raise Boom(i)
        return i

    outcomes = run(collect(parallelize(action, range(5), 2, ordered=True, on_error="yield")))
    assert [o.item if isinstance(o, Failure) else o for o in outcomes] == [0, 1, 2, 3, 4]
    assert isinstance(outcomes[2], Failure)


def test_error_stops_a_run_with_an_async_input(run: Any) -> None:
    """An action error also ends runs over async inputs, closing the input generator."""
    closed = []

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.append(True)

    async def action(i: int) -> int:
        if i == 50:
            raise Boom(i)
        await asyncio.sleep(0)
        return i

    async def main() -> None:
        with pytest.raises(Boom):
            await collect(parallelize(action, source(), 4))
        assert closed == [True]
        assert not other_tasks()

    run(main())


# -- early exit and cancellation --------------------------------------------------------


def _early_exit_cases() -> list[str]:
    return ["break+aclose", "aclosing", "async with", "break only"]


@pytest.mark.parametrize("how", _early_exit_cases())
def test_early_exit_leaves_nothing_behind(run: Any, how: str) -> None:
    """Leaving early cancels in-flight actions and leaves no task behind."""

    async def main() -> None:
        spy = InFlightSpy(gated=True)

        async def action(i: int) -> int:
            if i == 0:
                return i
            return await spy(i)

        results = parallelize(action, range(10**6), 10)
        if how == "break+aclose":
            async for _ in results:
                break
            await results.aclose()
        elif how == "aclosing":
            async with contextlib.aclosing(results):
                async for _ in results:
                    break
        elif how == "async with":
            async with results:
                async for _ in results:
                    break
        else:
            async for _ in results:
                break
            await settle(10)  # the loop's async-generator hook closes the run
        assert spy.in_flight == 0
        assert len(spy.cancelled) == len(spy.calls) > 0
        assert not other_tasks()

    run(main())


def test_dropping_a_live_iterator_in_a_returning_frame(run: Any) -> None:
    """An iterator dropped un-exhausted as its frame returns ends the run, no crash.

    uvloop's debug mode crashed here while the loop's async-generator finalizer hook
    scheduled the iterator's closing (uvloop issue 730); the run keeps its results
    iterator away from those hooks.
    """

    async def main() -> None:
        spy = InFlightSpy(gated=True)

        async def action(i: int) -> int:
            return i if i == 0 else await spy(i)

        async def take_one() -> int:
            it = aiter(parallelize(action, range(1000), 10))
            return await anext(it)

        assert await take_one() == 0
        await settle(10)
        assert spy.in_flight == 0
        assert not other_tasks()

    run(main())


def test_cancelling_the_consumer_cancels_everything(run: Any) -> None:
    """A cancelled consumer gets CancelledError; every action is cancelled and awaited."""

    async def main() -> None:
        spy = InFlightSpy(gated=True)

        async def consume() -> None:
            async for _ in parallelize(spy, range(100), 10):
                pass

        task = asyncio.ensure_future(consume())
        await spy.wait_for_calls(10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert spy.in_flight == 0
        assert len(spy.cancelled) == 10
        assert not other_tasks()

    run(main())


def test_a_run_is_iterated_once(run: Any) -> None:
    """Iterating a run a second time is a RuntimeError that says what to do."""

    async def main() -> None:
        results = parallelize(noop, [1], 1)
        await collect(results)
        with pytest.raises(RuntimeError, match=r"a run can be iterated once"):
            aiter(results)

    run(main())


# -- plain functions in threads ----------------------------------------------------------


def test_sync_action_runs_in_threads_without_blocking_the_loop(run: Any) -> None:
    """A plain function runs in up to numworkers threads; the loop keeps ticking."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def blocking(i: int) -> int:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.01)
        with lock:
            state["now"] -= 1
        return i * 2

    async def main() -> tuple[list[int], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.ensure_future(ticker())
        results = await collect(parallelize(blocking, range(40), 4))
        stop.set()
        await tick_task
        return results, ticks

    results, ticks = run(main())
    assert sorted(results) == [i * 2 for i in range(40)]
    assert state["peak"] == 4
    assert ticks > 10  # ~100 ms of sleeping threads; the loop was never blocked


def test_sync_action_returning_a_coroutine_is_explained(run: Any) -> None:
    """A lambda returning a coroutine fails with an ActionError that shows the fix."""
    with pytest.raises(ActionError, match=r"define the action with `async def`"):
        run(collect(parallelize(lambda x: noop(x), [1], 1)))  # noqa: PLW0108


def test_async_callable_object_and_partial_are_awaited(run: Any) -> None:
    """Objects with an async __call__ and partials of async functions run on the loop."""

    class Doubler:
        async def __call__(self, x: int) -> int:
            return 2 * x

    async def add(a: int, b: int) -> int:
        return a + b

    assert sorted(run(collect(parallelize(Doubler(), [1, 2], 2)))) == [2, 4]
    assert sorted(run(collect(parallelize(functools.partial(add, 10), [1, 2], 2)))) == [11, 12]


@pytest.mark.parametrize(
    "options",
    [{}, {"ordered": True}, {"timeout": 5.0}, {"adaptive": True}],
    ids=["plain", "ordered", "policy", "adaptive"],
)
def test_no_action_starts_after_the_consumer_breaks(run: Any, options: dict[str, Any]) -> None:
    """After a break, no worker starts another action (not even one woken meanwhile)."""
    started_after: list[int] = []
    closed = False

    async def action(i: int) -> int:
        if closed:
            started_after.append(i)
        for _ in range(i % 3):
            await asyncio.sleep(0)
        return i

    async def main() -> None:
        nonlocal closed
        for _ in range(20):
            async for _ in parallelize(action, range(1000), 8, **options):
                break
            closed = True  # the caller goes on, closing its HTTP client, say
            await settle(10)
            closed = False

    run(main())
    assert started_after == []


@pytest.mark.parametrize(
    "options",
    [{}, {"stats": True}, {"ordered": True}, {"timeout": 5}],
    ids=["plain", "stats", "ordered", "policy"],
)
def test_a_signal_stops_every_worker_from_taking_new_items(
    run: Any, options: dict[str, Any]
) -> None:
    """handle_signals on each kind of worker: once the signal is handled no item
    starts, those in flight finish, and Interrupted ends the loop."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from parallelize import Interrupted  # noqa: PLC0415

    started: list[int] = []
    after_stop: list[int] = []
    results: list[int] = []
    runs: list[Any] = []

    async def action(item: int) -> int:
        started.append(item)
        if runs[0]._stopping:
            after_stop.append(item)
        await asyncio.sleep(0.01)
        return item

    async def consume() -> None:
        run_ = parallelize(action, range(10_000), 8, handle_signals=1.0, **options)
        runs.append(run_)
        async for value in run_:
            results.append(value)
            if len(results) == 20:
                os.kill(os.getpid(), signal.SIGINT)

    async def main() -> None:
        with pytest.raises(Interrupted):
            await consume()

    run(main())
    assert not after_stop
    assert sorted(results) == sorted(started)  # every item in flight finished
    assert len(started) < 100


@pytest.mark.parametrize(
    "options", [{}, {"stats": True}, {"ordered": True}, {"timeout": 5.0}], ids=str
)
@pytest.mark.parametrize("on_error", ["raise", "yield"])
def test_a_spread_list_item_that_does_not_fit_says_why_and_how(
    run: Any, options: dict[str, Any], on_error: str
) -> None:
    """process_batch([1, 2, 3]) is called as process_batch(1, 2, 3) (the article's
    rule); the TypeError says so, and how to pass the list whole."""

    async def process_batch(batch: list[int]) -> int:
        return sum(batch)

    async def main() -> Any:
        return [
            r
            async for r in parallelize(
                process_batch,
                [[1, 2, 3]],
                1,
                on_error="yield" if on_error == "yield" else "raise",
                **options,
            )
        ]

    pattern = r"spreads a list or tuple item as the action's arguments.*\(item,\)"
    if on_error == "raise":
        with pytest.raises(TypeError, match=pattern) as caught:
            run(main())
        error = caught.value
    else:
        [failure] = run(main())
        error = failure.exception
    assert "takes 1 positional argument but 3 were given" in str(error)
    assert isinstance(error.__cause__, TypeError)
    # Wrapped as a 1-tuple, the list goes whole.
    assert run(collect(parallelize(process_batch, [([1, 2, 3],)], 1))) == [6]
