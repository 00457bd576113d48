"""Statistics, observers (hooks) and the progress display."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallelize import (
    Backoff,
    Failure,
    Observer,
    PerKey,
    Progress,
    Retry,
    Statistics,
    parallelize,
)
from parallelize._stats import LatencyHistogram
from spies import KeyStates, key_of


class Flaky(Exception):
    pass


async def action(x: int) -> int:
    """Fail every item divisible by 7; take a little time on every 10th."""
    if x % 10 == 0:
        await asyncio.sleep(0.001)
    else:
        await asyncio.sleep(0)
    if x % 7 == 0:
        raise ValueError(x)
    return x


def generator(n: int) -> Iterator[int]:
    yield from range(n)


async def agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


N = 500
FAILED = len(range(0, N, 7))

# Every worker variant that counts: the lean one over a list and over a generator,
# the policy worker (ordered, an async input, a timeout), and the journal's.
CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "list": (lambda: list(range(N)), {}),
    "range": (lambda: range(N), {}),
    "generator": (lambda: generator(N), {"total": N}),
    "ordered": (lambda: range(N), {"ordered": True}),
    "async input": (lambda: agen(N), {"total": N}),
    "timeout": (lambda: range(N), {"timeout": 5}),
    "journal": (lambda: range(N), {"journal": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_final_statistics_count_every_outcome(run: Any, case: str, tmp_path: Path) -> None:
    make_input, options = CASES[case]
    if options.pop("journal", False):
        options["journal"] = tmp_path / "j.db"

    async def main() -> Statistics:
        results = parallelize(action, make_input(), 20, stats=True, on_error="yield", **options)
        outcomes = [outcome async for outcome in results]
        assert len(outcomes) == N
        return results.statistics()

    stats = run(main())
    assert stats.finished
    assert stats.total == N
    assert (stats.done, stats.succeeded, stats.failed) == (N, N - FAILED, FAILED)
    assert stats.in_flight == stats.waiting_retry == stats.retries == 0
    assert stats.attempts == N
    assert stats.eta == 0
    assert stats.rate > 0
    assert stats.limit == 20
    assert stats.latency is not None
    assert 0 < stats.latency.count <= N
    assert stats.latency.p50 <= stats.latency.p90 <= stats.latency.p99 <= stats.latency.max
    assert "succeeded" in stats.summary()


def test_snapshots_during_a_run_are_consistent(run: Any) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.002 if x % 3 else 0.004)
        return x

    async def main() -> list[Statistics]:
        snapshots = []
        results = parallelize(slow, generator(300), 10, stats=True)
        async for _ in results:
            snapshots.append(results.statistics())  # noqa: PERF401 - a snapshot per step
        snapshots.append(results.statistics())
        return snapshots

    snapshots = run(main())
    done = [s.done for s in snapshots]
    assert done == sorted(done), "done never goes back"
    assert all(s.in_flight <= 10 for s in snapshots)
    assert all(s.total is None and s.eta is None for s in snapshots)
    assert any(s.in_flight > 0 for s in snapshots)
    assert snapshots[-1].done == 300
    assert snapshots[-1].latency is not None
    assert snapshots[-1].latency.count == 300, "actions over 50 us are all timed"


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 200),
    numworkers=st.integers(1, 12),
    fail_every=st.integers(1, 9),
    source=st.sampled_from(["list", "generator", "async"]),
)
def test_counts_are_exact_for_any_run(
    n: int, numworkers: int, fail_every: int, source: str
) -> None:
    async def act(x: int) -> int:
        await asyncio.sleep(0)
        if x % fail_every == 0:
            raise Flaky(x)
        return x

    async def main() -> tuple[Statistics, int]:
        items: Any = {"list": list(range(n)), "generator": generator(n), "async": agen(n)}[source]
        results = parallelize(act, items, numworkers, stats=True, on_error="yield")
        failures = sum([isinstance(o, Failure) async for o in results])
        return results.statistics(), failures

    stats, failures = asyncio.run(main())
    assert stats.done == n
    assert stats.failed == failures
    assert stats.succeeded == n - failures
    assert stats.in_flight == 0


def test_retries_and_attempts_are_counted(run: Any) -> None:
    tries: dict[int, int] = {}

    async def flaky(x: int) -> int:
        tries[x] = tries.get(x, 0) + 1
        if tries[x] <= x % 3:  # 0, 1 or 2 failures before success
            raise Flaky(x)
        return x

    async def main() -> Statistics:
        retry = Retry(on=Flaky, attempts=3, backoff=Backoff(initial=0.001, jitter=0))
        results = parallelize(flaky, range(30), 5, retry=retry, stats=True)
        assert sorted([r async for r in results]) == list(range(30))
        return results.statistics()

    stats = run(main())
    assert stats.retries == 10 * (0 + 1 + 2)
    assert stats.attempts == 30 + stats.retries
    assert stats.succeeded == 30
    assert stats.latency is not None
    assert stats.latency.count == stats.attempts
    assert "retries" in stats.summary()


def test_a_cancelled_run_counts_only_what_ended(run: Any) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0 if x < 20 else 10)
        return x

    async def main() -> Statistics:
        results = parallelize(slow, range(1000), 10, stats=True)
        async with results:
            async for x in results:
                if x == 19:
                    break
        return results.statistics()

    stats = run(main())
    assert stats.finished
    assert stats.done == 20
    assert stats.in_flight == 0


def test_replayed_items_are_counted_apart(run: Any, tmp_path: Path) -> None:
    async def main(n: int) -> Statistics:
        results = parallelize(
            action, range(n), 5, journal=tmp_path / "j.db", stats=True, on_error="yield"
        )
        async for _ in results:
            pass
        return results.statistics()

    run(main(30))
    stats = run(main(50))
    assert (stats.skipped, stats.replayed, stats.done) == (30, 0, 50)
    assert stats.succeeded + stats.failed == 20
    assert "30 skipped" in stats.summary()


def test_statistics_need_stats(run: Any) -> None:
    async def main() -> None:
        results = parallelize(action, range(3), 2)
        with pytest.raises(RuntimeError, match="stats=True"):
            results.statistics()
        await results.aclose()

    run(main())


def test_a_summary_is_logged_when_the_run_ends(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async for _ in parallelize(action, range(1, 7), 2, stats=True):
            pass

    with caplog.at_level(logging.INFO, logger="parallelize"):
        run(main())
    assert any(
        r.levelno == logging.INFO and "6 of 6 items" in r.getMessage() for r in caplog.records
    )


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def run_started(self, run: Any) -> None:
        self.events.append(("run_started",))

    def item_started(self, item: Any, attempt: int) -> None:
        self.events.append(("started", item, attempt))

    def item_retrying(self, item: Any, attempt: int, error: object, delay: float) -> None:
        self.events.append(("retrying", item, attempt, type(error).__name__))

    def item_succeeded(self, item: Any, result: Any, attempts: int, elapsed: float) -> None:
        assert elapsed >= 0
        self.events.append(("succeeded", item, result, attempts))

    def item_failed(self, failure: Failure) -> None:
        self.events.append(("failed", failure.item, failure.attempts))

    def run_finished(self, run: Any, error: BaseException | None) -> None:
        self.events.append(("run_finished", error))


def test_hooks_see_every_attempt_in_order(run: Any) -> None:
    tries: dict[int, int] = {}

    async def flaky(x: int) -> int:
        tries[x] = tries.get(x, 0) + 1
        if x == 1 and tries[x] == 1:
            raise Flaky(x)
        if x == 2:
            raise ValueError(x)
        return x * 10

    recorder = Recorder()

    async def main() -> None:
        retry = Retry(on=Flaky, backoff=Backoff(initial=0.001, jitter=0))
        results = parallelize(
            flaky, [0, 1, 2], 1, retry=retry, observers=[recorder], on_error="yield"
        )
        async for _ in results:
            pass

    run(main())
    events = recorder.events
    assert events[0] == ("run_started",)
    assert events[-1] == ("run_finished", None)
    by_item: dict[Any, list[tuple[Any, ...]]] = {}
    for event in events[1:-1]:
        by_item.setdefault(event[1], []).append(event)
    assert by_item[0] == [("started", 0, 1), ("succeeded", 0, 0, 1)]
    assert by_item[1] == [
        ("started", 1, 1),
        ("retrying", 1, 1, "Flaky"),
        ("started", 1, 2),
        ("succeeded", 1, 10, 2),
    ]
    assert by_item[2] == [("started", 2, 1), ("failed", 2, 1)]


def test_only_overridden_hooks_are_called_and_run_hooks_keep_the_lean_worker(run: Any) -> None:
    class Ends(Observer):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def run_started(self, run: Any) -> None:
            self.calls.append("started")

        def run_finished(self, run: Any, error: BaseException | None) -> None:
            self.calls.append(f"finished {run.statistics().done}")

    ends = Ends()

    async def main() -> str:
        results = parallelize(action, range(1, 7), 3, observers=[ends])
        async for _ in results:
            pass
        assert results._stats is not None
        return "lean" if results._stats.derived else "policy"

    assert run(main()) == "lean"
    assert ends.calls == ["started", "finished 6"]


def test_a_hook_that_raises_ends_the_run_with_its_error(run: Any) -> None:
    class Broken(Observer):
        def item_succeeded(self, item: Any, result: Any, attempts: int, elapsed: float) -> None:
            if item == 3:
                raise KeyError("hook")

    async def main() -> None:
        async for _ in parallelize(action, range(1, 7), 2, observers=[Broken()]):
            pass

    with pytest.raises(KeyError, match="hook"):
        run(main())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"observers": Recorder()}, "observers=\\[...\\]"),
        ({"observers": [object()]}, "subclass parallelize.Observer"),
        ({"progress": "yes"}, "progress must be"),
        ({"stats": 1}, "stats"),
        ({"total": -1}, "total"),
    ],
)
def test_bad_observation_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        parallelize(action, range(3), 2, **kwargs)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_rate_eta_and_counts_on_a_terminal(run: Any) -> None:
    screen = FakeTerminal()

    async def slow(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    async def main() -> None:
        progress = Progress(description="crawl", file=screen, refresh_per_second=50)
        async for _ in parallelize(slow, range(200), 20, progress=progress):
            pass

    run(main())
    text = screen.getvalue()
    assert "crawl" in text
    assert "/s" in text
    assert "ETA" in text
    assert "200/200" in text
    assert "in flight" in text


def screen_text(screen: io.StringIO) -> str:
    """What a terminal shows: the text drawn, without its escape codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())


@pytest.mark.timeout(30)
def test_progress_shows_the_keys_of_limits_per_key(run: Any, monkeypatch: Any) -> None:
    """With limits per key the line says how many keys are active, paused and down,
    and how many items are set aside, and that reading is held at the bound."""
    monkeypatch.setenv("COLUMNS", "240")  # the whole line, uncut
    expected = "keys 1 active, 1 paused · 1 down · set aside 3 (reading held)"
    act = KeyStates()

    class Screen(FakeTerminal):
        """Opens the gate once a frame has shown the expected line."""

        def write(self, text: str) -> int:
            written = super().write(text)
            if expected in screen_text(self):
                act.gate.set()
            return written

    screen = Screen()

    async def main() -> list[Any]:
        items = ["dead:0", "slow:0", *(f"busy:{i}" for i in range(10))]
        keyed = PerKey(key_of, concurrency=1, failures=1, set_aside=3)
        progress = Progress(description="crawl", file=screen, refresh_per_second=50)
        results = parallelize(
            act, iter(items), 8, per_key=keyed, progress=progress, on_error="yield"
        )
        return [outcome async for outcome in results]

    outcomes = run(main())
    assert sum(isinstance(outcome, Failure) for outcome in outcomes) == 2
    text = screen_text(screen)
    assert expected in text
    # The last line: nothing set aside, and no key active, once the run has ended.
    last = text.rsplit("crawl", maxsplit=1)[1]
    assert "keys 0 active, 1 paused · 1 down · elapsed" in last


def test_progress_stays_silent_off_a_terminal(run: Any) -> None:
    stream = io.StringIO()

    async def main() -> None:
        async for _ in parallelize(action, range(1, 7), 5, progress=Progress(file=stream)):
            pass

    run(main())
    assert stream.getvalue() == ""


def test_bad_progress_settings() -> None:
    with pytest.raises(ValueError, match="refresh_per_second"):
        Progress(refresh_per_second=0)
    with pytest.raises(TypeError, match="description"):
        Progress(description=3)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-7, 1e3), min_size=1, max_size=500), st.floats(0.01, 1.0))
def test_histogram_quantiles_are_within_3_percent(values: list[float], q: float) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(values)))
    exact = ordered[rank - 1]
    assert histogram.quantile(q) == pytest.approx(exact, rel=1 / 16)
    assert histogram.maximum == max(values)
    assert histogram.count == len(values)


def test_in_flight_counts_running_actions_and_waiting_for_a_limit_apart(run: Any) -> None:
    """adaptive at limit 4 with 50 workers: in_flight is what runs (4, as a spy sees),
    the items waiting for a place are waiting_limit, and the summary says so."""
    import asyncio  # noqa: PLC0415

    from parallelize import AdaptiveLimit  # noqa: PLC0415

    running = 0
    gate = asyncio.Event()

    async def action(i: int) -> int:
        nonlocal running
        running += 1
        try:
            await gate.wait()
        finally:
            running -= 1
        return i

    async def main() -> None:
        limit = AdaptiveLimit(initial=4, min_limit=4, max_limit=50)
        results = parallelize(action, range(200), 50, adaptive=limit, stats=True)
        async with results:
            iterator = aiter(results)
            first = asyncio.ensure_future(anext(iterator))
            for _ in range(50):
                await asyncio.sleep(0)
            stats = results.statistics()
            assert stats.in_flight == running == 4
            assert stats.waiting_limit == 46
            assert "46 waiting for a limit" in stats.summary()
            gate.set()
            await first

    run(main())
