"""Policies against the real fault-injection server: 503s, 429 + Retry-After, resets, hangs."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import aiohttp
import pytest

from parallelize import Backoff, Failure, RateLimit, RetriesExhausted, Retry, parallelize
from parallelize.testing import ServerStats, local_server

RETRYABLE = (aiohttp.ClientError, TimeoutError)


def is_overloaded(resp: Any) -> bool:
    status: int = resp.status
    return status == 429 or status >= 500


async def fetch_all(paths: list[str], stats: ServerStats, **options: Any) -> list[Any]:
    """Fetch ``paths`` from a fresh local server with the article's action."""
    async with local_server(stats) as base, aiohttp.ClientSession() as session:

        async def action(path: str) -> Reply:
            async with session.get(base + path) as resp:
                return Reply(path, resp.status, await resp.text(), resp.headers)

        return [r async for r in parallelize(action, paths, 10, on_error="yield", **options)]


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the action keeps of a response (headers too, for Retry-After)."""

    path: str
    status: int
    text: str
    headers: Any


def test_503s_are_retried_on_the_response_until_the_service_recovers(run: Any) -> None:
    """Each /flaky path fails twice with 503, then answers: every item ends in a 200."""
    stats = ServerStats()
    paths = [f"/flaky/k{i}?fail=2" for i in range(30)]
    retry = Retry(on=RETRYABLE, attempts=3, if_result=is_overloaded, backoff=Backoff(0.01))
    replies = run(fetch_all(paths, stats, retry=retry))
    assert sorted(r.path for r in replies) == sorted(paths)
    assert {r.status for r in replies} == {200}
    assert stats.requests == 90
    assert set(stats.by_key.values()) == {3}


def test_retries_exhausted_on_a_status_that_never_clears(run: Any) -> None:
    """A path that always answers 500 ends as RetriesExhausted holding the last reply."""
    stats = ServerStats()
    retry = Retry(on=RETRYABLE, attempts=3, if_result=is_overloaded, backoff=Backoff(0.001))
    [failure] = run(fetch_all(["/status/500"], stats, retry=retry))
    assert isinstance(failure, Failure)
    assert isinstance(failure.exception, RetriesExhausted)
    assert failure.exception.last_result.status == 500
    assert (failure.attempts, stats.requests) == (3, 3)


def test_429_retry_after_is_honoured_over_the_backoff(run: Any) -> None:
    """A 429 with Retry-After: 1 is retried after ~1 s although the backoff says 60 s."""
    stats = ServerStats()
    retry = Retry(on=RETRYABLE, if_result=is_overloaded, backoff=Backoff(initial=60))
    started = time.monotonic()
    [reply] = run(fetch_all(["/flaky/x?fail=1&status=429&retry_after=1"], stats, retry=retry))
    elapsed = time.monotonic() - started
    assert reply.status == 200
    assert 0.95 < elapsed < 10


def test_retry_after_pauses_the_shared_rate_limit(run: Any) -> None:
    """One 429 with Retry-After holds back every worker sharing the limit."""
    stats = ServerStats()
    limit = RateLimit(1000, burst=1)
    retry = Retry(on=RETRYABLE, if_result=is_overloaded, backoff=Backoff(initial=0))
    paths = ["/flaky/first?fail=1&status=429&retry_after=1"] + [f"/page/{i}" for i in range(20)]
    started = time.monotonic()
    replies = run(fetch_all(paths, stats, retry=retry, rate_limit=limit))
    assert {r.status for r in replies} == {200}
    assert limit.statistics().paused_until > 0
    # The pages queued behind the pause could not all go before it ended.
    assert time.monotonic() - started > 0.95


def test_connection_resets_are_expected_failures(run: Any) -> None:
    """A reset connection is an aiohttp.ClientError: retried, then a Failure."""
    stats = ServerStats()
    retry = Retry(on=RETRYABLE, attempts=2, backoff=Backoff(initial=0.001))
    [failure] = run(fetch_all(["/reset"], stats, retry=retry))
    assert isinstance(failure, Failure)
    assert isinstance(failure.exception, aiohttp.ClientError)
    assert (failure.attempts, failure.expected) == (2, True)


def test_a_hanging_server_is_cut_by_the_timeout(run: Any) -> None:
    """/hang never answers: each attempt is cancelled at the timeout, the rest go on."""
    stats = ServerStats()
    retry = Retry(on=RETRYABLE, attempts=2, backoff=Backoff(initial=0.001))
    replies = run(fetch_all(["/hang", "/page/1"], stats, retry=retry, timeout=0.2))
    by_path = {r.item if isinstance(r, Failure) else r.path: r for r in replies}
    failure = by_path["/hang"]
    assert isinstance(failure, Failure)
    assert isinstance(failure.exception, TimeoutError)
    assert failure.attempts == 2
    assert by_path["/page/1"].status == 200


@pytest.mark.parametrize("percent", [10, 50])
def test_random_500s_end_in_exactly_one_outcome_each(run: Any, percent: int) -> None:
    """With random 500s, every path ends once: a 200 or an exhausted Failure."""
    stats = ServerStats()
    paths = [f"/random/{percent}?seed={i}&n={i}" for i in range(200)]
    retry = Retry(on=RETRYABLE, attempts=3, if_result=is_overloaded, backoff=Backoff(0.001))
    replies = run(fetch_all(paths, stats, retry=retry))
    ends = [r.item if isinstance(r, Failure) else r.path for r in replies]
    assert sorted(ends) == sorted(paths)
    for reply in replies:
        if isinstance(reply, Failure):
            assert isinstance(reply.exception, RetriesExhausted)
            assert reply.attempts == 3
        else:
            assert reply.status == 200
