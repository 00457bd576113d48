"""Static checks of the public API's types (run by mypy, never by pytest)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

from parallelize import AdaptiveLimit, AdaptiveStatistics, Failure, Run, overload_of, parallelize


async def fetch(url: str) -> bytes:
    return url.encode()


def blocking(url: str) -> int:
    return len(url)


async def check() -> None:
    assert_type(parallelize(fetch, ["u"], 10), Run[bytes])
    assert_type(parallelize(fetch, ["u"], 10, ordered=True), Run[bytes])
    assert_type(parallelize(fetch, ["u"], 10, on_error="raise"), Run[bytes])
    assert_type(parallelize(fetch, ["u"], 10, on_error="yield"), Run[bytes | Failure])
    assert_type(await anext(parallelize(fetch, ["u"], 10)), bytes)
    assert_type(parallelize(blocking, ["u"], 10), Run[int])
    assert_type(parallelize(blocking, ["u"], 10, on_error="yield"), Run[int | Failure])

    async with parallelize(fetch, ["u"], 10) as results:
        async for body in results:
            assert_type(body, bytes)

    async for outcome in parallelize(fetch, ["u"], 10, on_error="yield"):
        if isinstance(outcome, Failure):
            assert_type(outcome.exception, BaseException)
        else:
            assert_type(outcome, bytes)


def check_adaptive() -> None:
    run = parallelize(fetch, ["u"], 10, adaptive=True)
    assert_type(run, Run[bytes])
    assert_type(run.adaptive, AdaptiveLimit | None)
    limit = AdaptiveLimit(min_limit=2, overload=overload_of)
    assert_type(limit.limit, int)
    assert_type(limit.statistics(), AdaptiveStatistics)
    assert_type(
        parallelize(fetch, ["u"], 10, adaptive=limit, on_error="yield"), Run[bytes | Failure]
    )


async def links(page: int) -> AsyncIterator[str]:
    yield str(page)


def sync_links(page: int) -> Iterator[str]:
    yield str(page)


def parse(body: bytes) -> dict[str, int]:
    return {"n": len(body)}


async def keys(row: dict[str, int]) -> AsyncIterator[str]:
    for key in row:
        yield key


async def encode(row: dict[str, int]) -> bytes:
    return repr(row).encode()


def check_pipelines() -> None:
    # Fan-out: a generator action's results are its values.
    assert_type(parallelize(links, range(3), 2), Run[str])
    assert_type(parallelize(sync_links, range(3), 2), Run[str])
    assert_type(parallelize(links, range(3), 2, on_error="yield"), Run[str | Failure])
    # Stages: each then() types its own results.
    pipeline = parallelize(fetch, ["u"], 10).then(parse, 2, executor="process")
    assert_type(pipeline, Run[dict[str, int]])
    assert_type(pipeline.then(keys, 2, name="keys"), Run[str])
    assert_type(pipeline.then(encode, 2, on_error="yield"), Run[bytes | Failure])
    # Each stage's action takes the results of the stage before (see stages.py).
    pipeline.then(links, 2)  # type: ignore[arg-type]
    assert_type(pipeline.stages, tuple[Run[Any], ...])
    assert_type(pipeline.name, str)
