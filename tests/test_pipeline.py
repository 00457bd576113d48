"""Pipelines: runs chained with ``then()``, each stage with its own workers and policies.

What crosses stages: every item exactly once (in order when every stage is ordered),
the memory bound of each stage's buffer, errors (the first one ends every stage),
cancellation (closing the last stage closes them all), and failures as values
(passed on unchanged, naming the stage that failed).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallelize import Backoff, Failure, Retry, Run, parallelize

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class Boom(Exception):
    pass


def stage_tasks(run: Run[Any]) -> list[asyncio.Task[Any] | None]:
    return [stage._supervisor for stage in run.stages]


async def only_current_task() -> None:
    """Let cancelled tasks finish, then check that none but the test's own is left."""
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def add(x: int, y: int = 1) -> int:
    await asyncio.sleep(0)
    return x + y


def test_then_chains_stages_each_with_its_own_options(run: Any) -> None:
    async def main() -> None:
        async def double(x: int) -> int:
            await asyncio.sleep(0)
            return 2 * x

        pipeline = parallelize(double, range(100), 8).then(add, 3, name="add").then(str, 2)
        assert [stage.name for stage in pipeline.stages] == ["double", "add", "str"]
        assert [stage._numworkers for stage in pipeline.stages] == [8, 3, 2]
        results = [r async for r in pipeline]
        assert sorted(results, key=int) == [str(2 * x + 1) for x in range(100)]
        await only_current_task()

    run(main())


def test_a_run_feeds_one_stage_and_only_before_it_starts(run: Any) -> None:
    async def main() -> None:
        first = parallelize(add, range(3), 2)
        first.then(add, 2)
        with pytest.raises(RuntimeError, match="already feeds the stage 'add'"):
            first.then(add, 2)
        started = parallelize(add, range(3), 2)
        async with started:
            async for _ in started:
                break
        with pytest.raises(RuntimeError, match="has started"):
            started.then(add, 2)

    run(main())


@SETTINGS
@given(
    n=st.integers(0, 150),
    workers=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    yields=st.lists(st.integers(0, 3), min_size=150, max_size=150),
    ordered=st.booleans(),
)
def test_every_item_passes_every_stage_exactly_once(
    run: Any, n: int, workers: list[int], yields: list[int], ordered: bool
) -> None:
    """Each item is seen once by each stage; every stage ordered keeps the input order."""
    seen: list[list[int]] = [[] for _ in workers]

    def make_stage(number: int) -> Any:
        async def stage(item: int) -> int:
            seen[number].append(item)
            for _ in range(yields[item]):
                await asyncio.sleep(0)
            return item

        return stage

    async def main() -> list[int]:
        pipeline: Run[int] = parallelize(make_stage(0), range(n), workers[0], ordered=ordered)
        for number, count in enumerate(workers[1:], 1):
            pipeline = pipeline.then(make_stage(number), count, ordered=ordered)
        return [r async for r in pipeline]

    results = run(main())
    assert sorted(results) == list(range(n))
    if ordered:
        assert results == list(range(n))
    for stage_seen in seen:
        assert sorted(stage_seen) == list(range(n))


@SETTINGS
@given(
    n=st.integers(0, 300),
    stages=st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6)), min_size=2, max_size=4),
    stop_after=st.integers(1, 400),
)
def test_each_stage_holds_no_more_than_its_buffer(
    run: Any, n: int, stages: list[tuple[int, int]], stop_after: int
) -> None:
    """A slow consumer holds back every stage: the input is read no further ahead than
    the sum of the stages' bounds (numworkers + max_buffered each), and no stage has
    more than its numworkers actions in flight."""
    pulled = 0
    in_flight = [0] * len(stages)
    peak = [0] * len(stages)

    async def source() -> Any:
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    def make_stage(number: int) -> Any:
        async def stage(item: int) -> int:
            in_flight[number] += 1
            peak[number] = max(peak[number], in_flight[number])
            try:
                await asyncio.sleep(0)
                return item
            finally:
                in_flight[number] -= 1

        return stage

    bound = sum(numworkers + max_buffered for numworkers, max_buffered in stages)

    async def main() -> int:
        (numworkers, max_buffered), *rest = stages
        pipeline = parallelize(make_stage(0), source(), numworkers, max_buffered=max_buffered)
        for number, (numworkers, max_buffered) in enumerate(rest, 1):
            pipeline = pipeline.then(make_stage(number), numworkers, max_buffered=max_buffered)
        consumed = 0
        async with pipeline:
            async for _ in pipeline:
                consumed += 1
                assert pulled <= consumed + bound
                await asyncio.sleep(0)  # a slow consumer: the stages fill up
                if consumed == stop_after:
                    break
        return consumed

    consumed = run(main())
    assert consumed == min(n, stop_after)
    assert pulled <= consumed + bound
    for (numworkers, _), stage_peak in zip(stages, peak, strict=True):
        assert stage_peak <= numworkers


def test_first_results_leave_before_the_input_ends(run: Any) -> None:
    """Stages overlap: the last stage yields while the first is still reading."""

    async def main() -> None:
        produced = 0

        async def slow_producer() -> Any:
            nonlocal produced
            for i in range(50):
                await asyncio.sleep(0.002)
                produced += 1
                yield i

        pipeline = parallelize(add, slow_producer(), 4).then(add, 4)
        async with pipeline:
            async for first in pipeline:
                assert first in range(2, 52)
                assert produced < 10
                break
        await only_current_task()

    run(main())


def test_an_error_in_the_last_stage_ends_every_stage(run: Any) -> None:
    """Items in flight in earlier stages are cancelled, an endless input stops."""

    async def main() -> None:
        blocked = asyncio.Event()
        cancelled: list[int] = []

        async def endless() -> Any:
            i = 0
            while True:
                yield i
                i += 1

        async def slow(item: int) -> int:
            if item > 2:
                blocked.set()
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancelled.append(item)
                    raise
            return item

        async def boom(item: int) -> int:
            await blocked.wait()
            raise Boom(item)

        pipeline = parallelize(add, endless(), 4).then(slow, 3).then(add, 2).then(boom, 1)
        with pytest.raises(Boom):
            async for _ in pipeline:
                pass
        assert cancelled
        assert all(task is not None and task.done() for task in stage_tasks(pipeline))
        await only_current_task()

    run(main())


def test_an_error_in_the_first_stage_reaches_the_consumer_unchanged(run: Any) -> None:
    async def main() -> None:
        async def fails_on_7(item: int) -> int:
            if item == 7:
                raise Boom(item)
            await asyncio.sleep(0)
            return item

        pipeline = parallelize(fails_on_7, range(100), 4).then(add, 4).then(add, 2)
        with pytest.raises(Boom) as caught:
            async for _ in pipeline:
                pass
        assert caught.value.args == (7,)
        assert all(task is not None and task.done() for task in stage_tasks(pipeline))
        await only_current_task()

    run(main())


@pytest.mark.parametrize("how", ["break", "aclose", "cancel"])
def test_leaving_the_last_stage_ends_every_stage(run: Any, how: str) -> None:
    async def main() -> None:
        calls = 0
        cancelled = 0
        busy = asyncio.Event()

        async def slow(item: int) -> int:
            nonlocal calls, cancelled
            calls += 1
            if calls == 8:
                busy.set()
            try:
                await asyncio.sleep(0 if item < 5 else 10)
            except asyncio.CancelledError:
                cancelled += 1
                raise
            return item

        pipeline = parallelize(add, range(1000), 4).then(slow, 4).then(add, 2)
        if how == "cancel":

            async def consume() -> None:
                async for _ in pipeline:
                    pass

            task = asyncio.create_task(consume())
            await busy.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            async with pipeline:
                async for item in pipeline:
                    if item >= 5 and how == "break":
                        break
                    if how == "aclose":
                        await pipeline.aclose()
            gc.collect()
        # The break leaves the iterator to the garbage collector; aclose awaits all.
        await pipeline.aclose()
        assert all(task is not None and task.done() for task in stage_tasks(pipeline))
        assert calls < 20
        await only_current_task()

    run(main())


def test_results_pass_to_the_next_stage_whole(run: Any) -> None:
    """A tuple or list result is one value for the next stage, not its arguments."""

    async def main() -> None:
        async def links(page: int) -> list[str]:
            return [f"{page}a", f"{page}b"]

        async def pair(page: int) -> tuple[int, str]:
            return page, str(page)

        def count(links: list[str]) -> int:
            return len(links)

        async def first(pair: tuple[int, str]) -> int:
            return pair[0]

        assert [n async for n in parallelize(links, [1, 2], 2).then(count, 1)] == [2, 2]
        got = [n async for n in parallelize(pair, [1, 2], 2, ordered=True).then(first, 1)]
        assert got == [1, 2]
        # ... in every worker: ordered, with policies, with a journal-less retry.
        got = [
            n
            async for n in parallelize(pair, [1, 2], 2).then(
                first, 1, ordered=True, retry=Retry(on=OSError)
            )
        ]
        assert sorted(got) == [1, 2]

    run(main())


def test_failures_pass_through_later_stages_naming_where_they_happened(run: Any) -> None:
    async def main() -> None:
        seen_by_last: list[Any] = []

        async def fetch(item: int) -> int:
            await asyncio.sleep(0)
            if item % 10 == 3:
                raise Boom(item)
            return item

        async def parse(item: int) -> int:
            if item % 10 == 5:
                raise ValueError(item)
            return item * 100

        async def store(item: int) -> int:
            seen_by_last.append(item)
            return item

        pipeline = (
            parallelize(fetch, range(50), 4, on_error="yield")
            .then(parse, 2, on_error="yield", retry=Retry(on=OSError, attempts=2))
            .then(store, 1)  # on_error="raise": an earlier stage's failure is no error here
        )
        # Typed as store's results; the earlier stages' failures come out too.
        outcomes: list[Any] = [o async for o in pipeline]
        failures = [o for o in outcomes if isinstance(o, Failure)]
        assert sorted((f.stage, f.item) for f in failures) == sorted(
            [("fetch", i) for i in range(3, 50, 10)] + [("parse", i) for i in range(5, 50, 10)]
        )
        assert all(not isinstance(item, Failure) for item in seen_by_last)
        assert sorted(o for o in outcomes if not isinstance(o, Failure)) == [
            i * 100 for i in range(50) if i % 10 not in {3, 5}
        ]
        assert "stage='fetch'" in repr(failures[0]) or "stage='parse'" in repr(failures[0])

    run(main())


def test_each_stage_counts_its_own_items(run: Any) -> None:
    async def main() -> None:
        async def fetch(item: int) -> int:
            await asyncio.sleep(0)
            if item % 10 == 3:
                raise Boom(item)
            return item

        pipeline = parallelize(fetch, range(50), 4, on_error="yield", stats=True).then(
            add, 2, stats=True
        )
        outcomes = [o async for o in pipeline]
        assert len(outcomes) == 50
        first, second = (stage.statistics() for stage in pipeline.stages)
        assert (first.succeeded, first.failed, first.finished) == (45, 5, True)
        # The later stage ran its action on the 45 results; the 5 failures passed on.
        assert (second.succeeded, second.failed, second.finished) == (45, 0, True)
        assert (second.passed_on, second.done, second.total) == (5, 50, 50)
        assert "5 failed earlier, passed on" in second.summary()
        # A fan-out stage's results have no known count.
        links = parallelize(page_links, range(8), 2, stats=True).then(add_link, 2, stats=True)
        assert [link async for link in links]
        assert links.statistics().total is None

    run(main())


# -- fan-out: generator actions yield zero or more results per item --------------------


async def page_links(page: int) -> Any:
    """A listing page: yields its links (page % 4 of them: some pages have none)."""
    for link in range(page % 4):
        await asyncio.sleep(0)
        yield f"{page}/{link}"


async def add_link(link: str) -> str:
    return link


def expected_links(pages: range) -> list[str]:
    return [f"{page}/{link}" for page in pages for link in range(page % 4)]


def test_an_async_generator_action_fans_out(run: Any) -> None:
    async def main() -> list[str]:
        return [link async for link in parallelize(page_links, range(40), 5)]

    assert sorted(run(main())) == sorted(expected_links(range(40)))


def test_a_generator_function_fans_out_in_threads(run: Any) -> None:
    def sync_links(page: int) -> Any:
        yield from (f"{page}/{link}" for link in range(page % 4))

    async def main() -> list[str]:
        return [link async for link in parallelize(sync_links, range(40), 5)]

    assert sorted(run(main())) == sorted(expected_links(range(40)))


@SETTINGS
@given(
    fans=st.lists(st.integers(0, 4), max_size=60),
    workers=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    ordered=st.booleans(),
    retry_first=st.booleans(),
)
def test_fan_out_then_a_stage_sees_every_value_exactly_once(
    run: Any, fans: list[int], workers: tuple[int, int], ordered: bool, retry_first: bool
) -> None:
    """Item i yields fans[i] values, each retried item yields them once; the next
    stage sees each value once, and in order when both stages are ordered."""
    failed_once: set[int] = set()

    async def expand(item: int) -> Any:
        for value in range(fans[item]):
            await asyncio.sleep(0)
            if retry_first and value == 1 and item not in failed_once:
                failed_once.add(item)
                raise OSError(item)  # after one value: the retry must not repeat it
            yield (item, value)

    seen: list[tuple[int, int]] = []

    async def record(pair: tuple[int, int]) -> tuple[int, int]:
        seen.append(pair)
        await asyncio.sleep(0)
        return pair

    async def main() -> list[tuple[int, int]]:
        pipeline = parallelize(
            expand,
            range(len(fans)),
            workers[0],
            ordered=ordered,
            retry=Retry(on=OSError, attempts=2, backoff=Backoff(initial=0)),
        ).then(record, workers[1], ordered=ordered)
        return [pair async for pair in pipeline]

    results = run(main())
    expected = [(item, value) for item, count in enumerate(fans) for value in range(count)]
    assert sorted(results) == expected
    assert sorted(seen) == expected
    if ordered:
        assert results == expected


def test_ordered_fan_out_keeps_item_order_then_value_order(run: Any) -> None:
    async def main() -> list[str]:
        return [link async for link in parallelize(page_links, range(40), 5, ordered=True)]

    assert run(main()) == expected_links(range(40))


def test_a_fan_out_item_that_fails_midway_yields_none_of_its_values(run: Any) -> None:
    attempts: dict[int, int] = {}

    async def flaky_links(page: int) -> Any:
        attempts[page] = attempts.get(page, 0) + 1
        yield f"{page}/0"
        if page == 5 or (page == 7 and attempts[page] == 1):
            raise OSError(page)  # page 5 always, page 7 on its first attempt
        yield f"{page}/1"

    async def main() -> list[Any]:
        return [
            o
            async for o in parallelize(
                flaky_links, range(10), 3, on_error="yield", retry=Retry(on=OSError, attempts=2)
            )
        ]

    outcomes = run(main())
    failures = [o for o in outcomes if isinstance(o, Failure)]
    assert [(f.item, f.attempts) for f in failures] == [(5, 2)]
    values = sorted(o for o in outcomes if not isinstance(o, Failure))
    # Page 7's first attempt yielded "7/0" before failing: delivered once, not twice.
    assert values == sorted(f"{p}/{i}" for p in range(10) if p != 5 for i in range(2))


def test_fan_out_stages_in_a_pipeline(run: Any) -> None:
    """A listing page yields many URLs; each URL is fetched by the next stage."""

    async def main() -> list[str]:
        async def fetch(url: str) -> str:
            await asyncio.sleep(0)
            return url.upper()

        pipeline = parallelize(page_links, range(30), 3).then(fetch, 10, max_buffered=2)
        return [body async for body in pipeline]

    assert sorted(run(main())) == sorted(link.upper() for link in expected_links(range(30)))


def test_a_fan_out_item_is_recorded_once_all_its_values_were_taken(run: Any, tmp_path: Any) -> None:
    journal = tmp_path / "links.db"
    calls: list[int] = []

    async def counted_links(page: int) -> Any:
        calls.append(page)
        async for link in page_links(page):
            yield link

    async def main(stop_after: int | None) -> list[str]:
        links = []
        pipeline = parallelize(counted_links, range(20), 2, journal=journal, ordered=True)
        async with pipeline:
            async for link in pipeline:
                links.append(link)
                if len(links) == stop_after:
                    break
        return links

    # Pages 1, 2 and 3 give 1, 2 and 3 links: the fifth is page 3's second.
    first = run(main(stop_after=5))
    assert first == expected_links(range(20))[:5]
    calls.clear()
    # Pages 0-2 were taken whole: recorded, skipped on the rerun. Page 3 was taken
    # only in part when the consumer left: it runs again, all its links.
    assert run(main(stop_after=None)) == expected_links(range(3, 20))
    assert sorted(calls) == list(range(3, 20))


def test_a_journal_on_a_later_stage_needs_a_key_and_then_resumes(run: Any, tmp_path: Any) -> None:
    """A later stage's input comes in completion order: positions change between runs.
    Without key= the first run is refused, naming that cause (it used to be accepted,
    then its rerun refused as "the input changed"); with key= it skips what was done."""
    journal = tmp_path / "store.db"
    stored: list[int] = []

    async def fetch(item: int) -> int:
        await asyncio.sleep((item * 7 % 5) / 1000)
        return item

    async def store(item: int) -> int:
        stored.append(item)
        return item

    async def main(key: Any, stop_after: int | None = None) -> list[int]:
        taken = []
        pipeline = parallelize(fetch, range(40), 8).then(store, 2, journal=journal, key=key)
        async with pipeline:
            async for item in pipeline:
                taken.append(item)
                if len(taken) == stop_after:
                    break
        return taken

    with pytest.raises(ValueError, match="a journal on a later stage of a pipeline needs key="):
        run(main(key=None))
    assert not journal.exists()
    first = run(main(key=str, stop_after=10))
    stored.clear()
    rest = run(main(key=str))
    # The item taken last before the break was not recorded (the consumer had not
    # asked for the next one: it may not have finished with it): it runs again.
    assert sorted(set(first + rest)) == list(range(40))
    assert len(first) + len(rest) == 41
    assert set(stored) & set(first) == {first[-1]}


SIGNAL_SCRIPT = """
import asyncio, multiprocessing, sys
import process_actions
from parallelize import Interrupted, parallelize

async def fetch(item):
    await asyncio.sleep(0.005)
    return 0.2  # seconds for the process stage to sleep

async def main():
    pipeline = (
        parallelize(fetch, range(10_000), 10)
        .then(process_actions.sleep_then, 2, executor="process")
        .then(str, 1, handle_signals=10.0)
    )
    done = 0
    try:
        async for _ in pipeline:
            done += 1
            if done == 2:
                print("progress", flush=True)
    except Interrupted as exc:
        print(f"interrupted after {done}: {exc}", flush=True)
    print(f"children left {len(multiprocessing.active_children())}", flush=True)
    return 130

if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
"""


@pytest.mark.timeout(60)
def test_ctrl_c_on_a_pipeline_with_a_process_stage(tmp_path: Any) -> None:
    """Ctrl-C reaches the whole process group: the child processes ignore it, the last
    stage stops gracefully (the items in flight finish), every stage and child ends."""
    script = tmp_path / "job.py"
    script.write_text(SIGNAL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    job = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    try:
        assert job.stdout is not None
        assert job.stdout.readline() == "progress\n"
        os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
        out, err = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 130, err
    assert "interrupted after" in out
    assert "stopped by SIGINT" in out
    assert "children left 0" in out
    assert "ProcessCrashed" not in out + err  # no child died of the SIGINT
    assert "Traceback" not in err


def test_a_journal_on_a_later_stage_without_key_is_refused_at_once(tmp_path: Path) -> None:
    """Positions of a later stage's items change from run to run (completion order):
    refused on the first run, naming the cause, not on the resume as "input changed"."""

    async def same(x: int) -> int:
        return x

    with pytest.raises(ValueError, match=r"^a journal on a later stage of a pipeline needs key="):
        parallelize(same, range(10), 2).then(same, 2, journal=tmp_path / "j.db")
    # With key=, or after an ordered stage, it is accepted.
    parallelize(same, range(10), 2).then(same, 2, journal=tmp_path / "a.db", key=str)
    parallelize(same, range(10), 2, ordered=True).then(same, 2, journal=tmp_path / "b.db")
