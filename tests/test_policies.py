"""Timeouts, retries with backoff, Retry-After and deadlines: the math and the runs."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import re
import time
from typing import Any

import pytest

from parallelize import (
    Backoff,
    DeadlineExceeded,
    Failure,
    RateLimit,
    RetriesExhausted,
    Retry,
    RetryWaitTooLong,
    parallelize,
    parse_retry_after,
    retry_after_of,
)
from spies import settle


class Flaky(Exception):
    """An expected failure, with an optional delay asked by the 'service'."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class Bug(Exception):
    """An unexpected failure."""


async def collect(results: Any) -> list[Any]:
    return [r async for r in results]


# -- pure math -------------------------------------------------------------------------


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    """Without jitter the delays are initial * multiplier**(n-1), capped at maximum."""
    backoff = Backoff(initial=0.1, multiplier=2, maximum=1.0, jitter=0)
    delays = [backoff.delay(n, draw=0.99) for n in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.delay(10**6, draw=0.5) == 1.0  # no overflow on huge retry numbers


def test_backoff_jitter_takes_at_most_its_fraction() -> None:
    """jitter=0.5 draws the delay from [base/2, base]; jitter=1 from [0, base]."""
    assert Backoff(initial=2, jitter=0.5).delay(1, draw=0.0) == 2.0
    assert Backoff(initial=2, jitter=0.5).delay(1, draw=0.999) == pytest.approx(1.001)
    assert Backoff(initial=2, jitter=1).delay(1, draw=0.75) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"initial": -1}, ValueError, "Backoff.initial must be >= 0 seconds, got -1"),
        ({"multiplier": 0.5}, ValueError, "Backoff.multiplier must be >= 1, got 0.5"),
        ({"jitter": 2}, ValueError, "Backoff.jitter must be in [0, 1], got 2"),
        ({"maximum": "1"}, TypeError, "Backoff.maximum must be a number of seconds, got '1'"),
    ],
)
def test_bad_backoff(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """A Backoff with impossible settings is refused when it is built."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Backoff(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"on": Flaky, "attempts": 0}, ValueError, "Retry.attempts must be >= 1, got 0"),
        ({"on": asyncio.CancelledError}, ValueError, "CancelledError is a BaseException"),
        ({"on": "Flaky"}, TypeError, "Retry.on must be an exception type or a tuple"),
        ({"on": Flaky, "if_result": 3}, TypeError, "Retry.if_result must be a function"),
    ],
)
def test_bad_retry(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """A Retry that cannot work is refused when it is built; cancellation never retries."""
    with pytest.raises(error, match=re.escape(message)):
        Retry(**kwargs)


def test_parse_retry_after_seconds_and_http_dates() -> None:
    """Retry-After is delay-seconds or an HTTP-date; anything else is ignored."""
    assert parse_retry_after(" 120 ") == 120.0
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(date, now=1_000_000.0) == pytest.approx(30.0)
    assert parse_retry_after(date, now=1_000_100.0) == 0.0  # already past
    assert parse_retry_after("soon") is None


def test_retry_after_of_reads_attributes_and_headers() -> None:
    """The delay comes from .retry_after, .headers, or .response.headers."""

    class Response:
        headers = {"Retry-After": "7"}  # noqa: RUF012 - a stand-in for a client's response

    class HTTPStatusError(Exception):
        response = Response()

    assert retry_after_of(Flaky(2.5)) == 2.5
    assert retry_after_of(Response()) == 7.0
    assert retry_after_of(HTTPStatusError()) == 7.0
    assert retry_after_of(Bug()) is None


def test_rate_limit_math_is_smooth() -> None:
    """GCRA: a burst goes at once, then one call per interval; never a second burst."""
    limit = RateLimit(10, burst=3)
    waits = []
    for _ in range(6):
        waits.append(limit.delay(100.0))
        limit.grant(100.0 + waits[-1])
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])
    # After a quiet second the burst is available again, but only the burst.
    waits = []
    for _ in range(4):
        waits.append(limit.delay(102.0))
        limit.grant(102.0 + waits[-1])
    assert waits == pytest.approx([0, 0, 0, 0.1])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0,), {}, ValueError, "per_second must be > 0 and finite, got 0"),
        ((-5,), {}, ValueError, "per_second must be > 0 and finite, got -5"),
        ((10,), {"burst": 0}, ValueError, "burst must be >= 1, got 0"),
        (("10",), {}, TypeError, "per_second must be a number > 0, got '10'"),
    ],
)
def test_bad_rate_limit(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A rate <= 0 or a burst < 1 is refused when the limit is built."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        RateLimit(*args, **kwargs)


async def noop(x: Any) -> Any:
    return x


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"timeout": -1}, ValueError, "timeout must be > 0 seconds, got -1"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds, got 0"),
        ({"deadline": float("inf")}, ValueError, "deadline must be > 0 seconds, got inf"),
        ({"retry": 3}, TypeError, "retry must be a Retry(...) or None, got 3"),
        ({"rate_limit": 5}, TypeError, "rate_limit must be a RateLimit(...) or None, got 5"),
    ],
)
def test_bad_policy_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    """parallelize() refuses bad policies at call time, before any work."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        parallelize(noop, [1], 2, **kwargs)


# -- runs ----------------------------------------------------------------------------------


def test_timeout_cancels_the_attempt_and_the_worker_moves_on(run: Any) -> None:
    """A hung action is cancelled at its timeout; the same worker serves the next item."""
    cancelled = []

    async def action(i: int) -> int:
        if i == 0:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
        return i

    outcomes = run(collect(parallelize(action, range(5), 1, timeout=0.05, on_error="yield")))
    failure = outcomes[0]
    assert isinstance(failure, Failure)
    assert isinstance(failure.exception, TimeoutError)
    assert (failure.attempts, failure.expected) == (1, True)
    assert failure.elapsed is not None
    assert 0.04 < failure.elapsed < 1
    assert outcomes[1:] == [1, 2, 3, 4]
    assert cancelled == [0]


def test_expected_failures_are_retried_until_success(run: Any) -> None:
    """An item failing twice with an expected error succeeds on its third attempt."""
    calls: dict[int, int] = {}

    async def action(i: int) -> int:
        calls[i] = calls.get(i, 0) + 1
        if calls[i] < 3:
            raise Flaky
        return i

    retry = Retry(on=Flaky, attempts=3, backoff=Backoff(initial=0.001))
    assert sorted(run(collect(parallelize(action, range(20), 4, retry=retry)))) == list(range(20))
    assert set(calls.values()) == {3}


def test_last_failure_propagates_unchanged_or_is_yielded(run: Any) -> None:
    """After the last attempt the item's own exception ends it: raised, or as a Failure."""
    error = Flaky()

    async def action(_i: int) -> int:
        raise error

    retry = Retry(on=Flaky, attempts=2, backoff=Backoff(initial=0.001))
    with pytest.raises(Flaky) as info:
        run(collect(parallelize(action, [1], 1, retry=retry)))
    assert info.value is error
    [failure] = run(collect(parallelize(action, [1], 1, retry=retry, on_error="yield")))
    assert isinstance(failure, Failure)
    assert (failure.exception, failure.attempts, failure.expected) == (error, 2, True)


def test_retry_on_result_without_raising(run: Any) -> None:
    """if_result retries a value (an HTTP 503, say); exhausted, it is RetriesExhausted."""
    answers = {0: [503, 503, 200], 1: [503, 503, 503]}

    async def action(i: int) -> int:
        return answers[i].pop(0)

    retry: Retry[int] = Retry(
        on=(), attempts=3, if_result=lambda s: s == 503, backoff=Backoff(initial=0)
    )
    outcomes = run(collect(parallelize(action, [0, 1], 2, retry=retry, on_error="yield")))
    assert 200 in outcomes
    [failure] = [o for o in outcomes if isinstance(o, Failure)]
    assert isinstance(failure.exception, RetriesExhausted)
    assert (failure.exception.last_result, failure.attempts) == (503, 3)
    assert str(failure.exception) == "item 1: still retryable after 3 attempts, last result 503"


def test_unexpected_errors_are_not_retried_and_are_told_apart(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure not named by Retry ends the item at once, logged as an ERROR."""
    calls = []

    async def action(i: int) -> int:
        calls.append(i)
        raise Flaky if i == 0 else Bug

    retry = Retry(on=Flaky, attempts=2, backoff=Backoff(initial=0))
    with caplog.at_level(logging.DEBUG, logger="parallelize"):
        outcomes = run(collect(parallelize(action, [0, 1], 1, retry=retry, on_error="yield")))
    by_item = {o.item: o for o in outcomes}
    assert (by_item[0].attempts, by_item[0].expected) == (2, True)
    assert (by_item[1].attempts, by_item[1].expected) == (1, False)
    assert calls.count(1) == 1
    levels = {(r.levelname, getattr(r, "item", None)) for r in caplog.records}
    assert ("DEBUG", 0) in levels  # the retry
    assert ("WARNING", 0) in levels  # the expected final failure
    assert ("ERROR", 1) in levels  # the unexpected one, with its traceback
    assert any(r.exc_info for r in caplog.records if r.levelname == "ERROR")


def test_retry_after_wins_over_backoff(run: Any) -> None:
    """A failure carrying Retry-After is retried after that delay, not the backoff's."""
    started: list[float] = []

    async def action(i: int) -> int:
        started.append(time.monotonic())
        if len(started) == 1:
            raise Flaky(retry_after=0.2)
        return i

    retry = Retry(on=Flaky, backoff=Backoff(initial=30))
    assert run(collect(parallelize(action, [1], 1, retry=retry))) == [1]
    assert 0.19 < started[1] - started[0] < 5


def test_a_waiting_retry_does_not_hold_its_worker(run: Any) -> None:
    """While item 0 waits 0.3 s for its retry, the only worker runs all the others."""
    done: dict[int, float] = {}

    async def action(i: int) -> int:
        if i == 0 and 0 not in done:
            done[0] = -1.0
            raise Flaky
        done[i] = time.monotonic()
        return i

    retry = Retry(on=Flaky, backoff=Backoff(initial=0.3, jitter=0))
    results = run(collect(parallelize(action, range(50), 1, retry=retry)))
    assert sorted(results) == list(range(50))
    assert results[-1] == 0  # the retried item came last
    assert max(done[i] for i in range(1, 50)) < done[0]


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_a_due_retry_does_not_wait_for_an_idle_async_input(run: Any, workers: int) -> None:
    """An async input that waits (a pipe, a queue) does not hold a due retry back.

    The input gives 3 items, then waits until item 0 has succeeded: item 0's retry
    must run while a worker waits for the input (it once waited for the input's
    next item, here forever).
    """
    succeeded = asyncio.Event()
    failed_once: set[int] = set()

    async def items() -> Any:
        for i in range(3):
            yield i
        await succeeded.wait()
        yield 3

    async def action(i: int) -> int:
        if i == 0:
            if i not in failed_once:
                failed_once.add(i)
                raise Flaky
            succeeded.set()
        return i

    async def main() -> list[int]:
        retry = Retry(on=Flaky, backoff=Backoff(initial=0.01, jitter=0))
        async with asyncio.timeout(5):
            return await collect(parallelize(action, items(), workers, retry=retry))

    assert sorted(run(main())) == [0, 1, 2, 3]


def test_deadline_stops_retries(run: Any) -> None:
    """No retry is scheduled past the item's deadline: it fails at once with
    DeadlineExceeded (a TimeoutError), its last error as ``last`` and the cause."""
    calls = []

    async def action(i: int) -> int:
        calls.append(i)
        raise Flaky

    retry = Retry(on=Flaky, attempts=10, backoff=Backoff(initial=0.2, jitter=0))
    [failure] = run(
        collect(parallelize(action, [1], 1, retry=retry, deadline=0.5, on_error="yield"))
    )
    assert isinstance(failure, Failure)
    assert isinstance(failure.exception, DeadlineExceeded)
    assert isinstance(failure.exception, TimeoutError)
    assert isinstance(failure.exception.last, Flaky)
    assert failure.exception.__cause__ is failure.exception.last
    assert failure.attempts == len(calls) == 2  # at 0 s and 0.2 s; 0.6 s would be late
    assert failure.elapsed is not None
    assert failure.elapsed < 0.5


def test_cancellation_during_backoff_ends_the_run_at_once(run: Any) -> None:
    """Cancelling the consumer while items wait for retries ends everything promptly."""

    async def action(_i: int) -> int:
        raise Flaky

    async def main() -> float:
        retry = Retry(on=Flaky, attempts=5, backoff=Backoff(initial=60))
        task = asyncio.ensure_future(collect(parallelize(action, range(10), 5, retry=retry)))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return time.monotonic() - started

    assert run(main()) < 1


def test_rate_limit_is_shared_by_workers_and_counts_retries(run: Any) -> None:
    """Every attempt, retries included, takes a slot of the shared limit."""
    attempts: list[float] = []

    async def action(i: int) -> int:
        attempts.append(time.monotonic())
        if len(attempts) % 4 == 0:
            raise Flaky
        return i

    limit = RateLimit(100, burst=1)
    retry = Retry(on=Flaky, attempts=5, backoff=Backoff(initial=0))
    results = run(collect(parallelize(action, range(30), 10, retry=retry, rate_limit=limit)))
    assert sorted(results) == list(range(30))
    assert limit.statistics().calls == len(attempts)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # One call per 10 ms: the span of n calls is (n - 1) intervals. Each time is
    # taken in the action, after its task resumed: a loaded machine delays one
    # resumption by a few ms and shortens that gap (7.96 ms seen, with 10 ms between
    # the limiter's grants), so a single gap is checked only for two calls at once.
    assert attempts[-1] - attempts[0] >= 0.01 * (len(attempts) - 1) - 0.005
    assert min(gaps) > 0.005, gaps  # never two at once


@pytest.mark.timeout(40)
def test_rate_limit_over_ten_seconds(run: Any) -> None:
    """Measured over 10 s: within 2% of the rate, never more than burst above it."""
    rate, burst, seconds = 200, 10, 10.0
    stamps: list[float] = []

    async def action(_i: int) -> None:
        stamps.append(time.monotonic())

    async def main() -> None:
        limit = RateLimit(rate, burst=burst)
        started = time.monotonic()
        async with parallelize(action, range(10**9), 50, rate_limit=limit) as results:
            async for _ in results:
                if time.monotonic() - started >= seconds:
                    break

    run(main())
    start = stamps[0]
    inside = [t - start for t in stamps if t - start < seconds]
    measured = (len(inside) - burst) / seconds
    assert abs(measured - rate) / rate < 0.02, f"measured {measured:.1f}/s for {rate}/s"
    # Any window [t, t + w) starting at a call holds at most burst + rate * w calls.
    for width in (0.05, 0.5, 1.0, 3.0):
        ahead = 0
        for first, t in enumerate(inside):
            while ahead < len(inside) and inside[ahead] < t + width:
                ahead += 1
            count = ahead - first
            assert count <= burst + rate * width + 1e-9, f"{count} calls in {width} s at {t}"


# -- a cap on one retry's wait ---------------------------------------------------------


class Busy(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy for {retry_after} s")
        self.retry_after = retry_after


@pytest.mark.timeout(5)
def test_a_retry_after_longer_than_max_wait_fails_the_item_at_once(run: Any) -> None:
    """A Retry-After of an hour is not waited: the item fails at once with
    RetryWaitTooLong, the service's error as its last failure."""
    calls: list[int] = []

    async def action(i: int) -> int:
        calls.append(i)
        raise Busy(3600)

    async def main() -> list[Any]:
        retry = Retry(on=Busy, attempts=5, max_wait=10)
        return await collect(parallelize(action, [1], 1, retry=retry, on_error="yield"))

    [failure] = run(main())
    assert calls == [1]
    error = failure.exception
    assert isinstance(error, RetryWaitTooLong)
    assert (error.wait, error.max_wait, error.attempts) == (3600, 10, 1)
    assert isinstance(error.last, Busy)
    assert error.__cause__ is error.last


def test_the_default_max_wait_is_300_s_and_none_lifts_it() -> None:
    """Retry's default cap is 300 s; None waits whatever the service asks."""
    assert Retry(on=Busy).max_wait == 300
    assert Retry(on=Busy, max_wait=None).max_wait is None
    with pytest.raises(ValueError, match=r"^Retry.max_wait must be >= 0 seconds, got -1$"):
        Retry(on=Busy, max_wait=-1)


def test_a_wait_within_max_wait_is_waited(run: Any) -> None:
    """A Retry-After under the cap is obeyed as before."""
    calls: list[int] = []

    async def action(i: int) -> int:
        calls.append(i)
        if len(calls) == 1:
            raise Busy(0.05)
        return i

    retry = Retry(on=Busy, attempts=3, max_wait=1)
    assert run(collect(parallelize(action, [7], 1, retry=retry))) == [7]
    assert len(calls) == 2


@pytest.mark.timeout(5)
def test_an_attempt_cut_by_the_deadline_fails_with_deadline_exceeded(run: Any) -> None:
    """The deadline (not the per-attempt timeout) ends a long attempt: its own error."""

    async def action(i: int) -> int:
        await asyncio.sleep(10)
        return i

    async def main() -> list[Any]:
        return await collect(
            parallelize(action, [1], 1, timeout=5, deadline=0.05, on_error="yield")
        )

    [failure] = run(main())
    assert isinstance(failure.exception, DeadlineExceeded)
    assert failure.exception.attempts == 1


@pytest.mark.parametrize(
    ("options", "logged"),
    [
        ({}, False),
        ({"timeout": 5.0}, False),
        ({"deadline": 5.0}, False),
        ({"retry": Retry(on=Flaky)}, True),
    ],
    ids=["no options", "timeout", "deadline", "retry"],
)
def test_failures_are_logged_by_one_rule(
    run: Any, caplog: pytest.LogCaptureFixture, options: dict[str, Any], logged: bool
) -> None:
    """One rule: a final failure is logged (ERROR with its traceback when unexpected)
    only under retry=; otherwise it is yielded (or raised) and nothing is logged."""

    async def action(i: int) -> int:
        raise Bug(i)

    with caplog.at_level(logging.DEBUG, logger="parallelize"):
        run(collect(parallelize(action, [1], 1, on_error="yield", **options)))
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert bool(errors) == logged
    assert all(r.exc_info for r in errors)
