"""Static checks of a pipeline's stage types and of Retry[T] (run by mypy, never by pytest).

A ``# type: ignore[code]`` line is a call mypy must reject: with ``warn_unused_ignores``
(``--strict``), an ignore that stops being needed is itself an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Never, assert_type

from parallelize import Failure, Retry, Run, parallelize


class Response:
    def __init__(self, status: int) -> None:
        self.status = status


async def fetch(url: str) -> Response:
    return Response(len(url))


async def parse(response: Response) -> dict[str, int]:
    return {"status": response.status}


def store(row: dict[str, int]) -> int:
    return len(row)


async def links(row: dict[str, int]) -> AsyncIterator[str]:
    yield str(row)


def sync_links(row: dict[str, int]) -> Iterator[str]:
    yield str(row)


async def describe(anything: object) -> str:
    return repr(anything)


async def by_page(page: int) -> Response:
    return Response(page)


def is_busy(response: Response) -> bool:
    return response.status == 503


def is_empty(values: list[str]) -> bool:
    return not values


def is_negative(value: int) -> bool:
    return value < 0


def check_stage_input_types() -> None:
    run = parallelize(fetch, ["u"], 10)
    assert_type(run.then(parse, 2), Run[dict[str, int]])
    assert_type(run.then(describe, 2), Run[str])
    # The action must take the previous stage's result type.
    run.then(by_page, 2)  # type: ignore[arg-type]
    run.then(parse, 2).then(parse, 2)  # type: ignore[arg-type]
    run.then(store, 2)  # type: ignore[arg-type]
    run.then(parse, 2).then(sync_links, 2, on_error="yield").then(
        parse,  # type: ignore[arg-type]
        2,
    )


def check_failures_pass_through_later_stages() -> None:
    run = parallelize(fetch, ["u"], 10, on_error="yield")
    assert_type(run, Run[Response | Failure])
    # The later stages' actions take Response, never the Failure...
    parsed = run.then(parse, 2)
    # ...which still comes out of them, whatever their own on_error.
    assert_type(parsed, Run[dict[str, int] | Failure])
    assert_type(run.then(parse, 2, on_error="raise"), Run[dict[str, int] | Failure])
    assert_type(run.then(parse, 2, on_error="yield"), Run[dict[str, int] | Failure])
    assert_type(parsed.then(store, 2), Run[int | Failure])
    assert_type(parsed.then(links, 2), Run[str | Failure])
    assert_type(parsed.then(sync_links, 2, executor="process"), Run[str | Failure])
    # A later stage's own failures join them.
    raising = parallelize(fetch, ["u"], 10).then(parse, 2, on_error="yield")
    assert_type(raising, Run[dict[str, int] | Failure])
    assert_type(raising.then(store, 2), Run[int | Failure])
    # An action for the wrong type is still rejected after a yielding stage.
    run.then(store, 2)  # type: ignore[arg-type]
    parsed.then(parse, 2)  # type: ignore[arg-type]


def check_retry_is_generic() -> None:
    plain = Retry(on=OSError)  # no if_result: no annotation needed
    assert_type(plain, Retry[Never])
    assert_type(parallelize(fetch, ["u"], 10, retry=plain), Run[Response])
    assert_type(parallelize(by_page, [1], 10, retry=plain), Run[Response])
    assert_type(parallelize(fetch, ["u"], 10, retry=Retry(on=OSError)), Run[Response])
    typed = Retry(on=OSError, if_result=is_busy)
    assert_type(typed, Retry[Response])
    assert_type(parallelize(fetch, ["u"], 10, retry=typed), Run[Response])
    annotated: Retry[Response] = Retry(on=OSError, if_result=lambda r: r.status == 503)
    assert_type(parallelize(fetch, ["u"], 10, retry=annotated), Run[Response])
    inline = parallelize(
        fetch, ["u"], 10, retry=Retry(on=OSError, if_result=lambda r: r.status == 503)
    )
    assert_type(inline, Run[Response])
    # if_result reads the action's result type.
    parallelize(
        fetch,
        ["u"],
        10,
        retry=Retry(on=OSError, if_result=lambda r: r.statuz == 503),  # type: ignore[attr-defined]
    )
    parallelize(fetch, ["u"], 10, retry=Retry(on=OSError, if_result=is_negative))  # type: ignore[arg-type]
    wrong: Retry[Response] = Retry(on=OSError, if_result=lambda r: r.statuz == 503)  # type: ignore[attr-defined]
    # A generator action's if_result reads the list of its values.
    fan_out = Retry(on=OSError, if_result=is_empty)
    assert_type(parallelize(links, [{"a": 1}], 2, retry=fan_out), Run[str])
    assert_type(parallelize(sync_links, [{"a": 1}], 2, retry=fan_out), Run[str])
    # A stage's retry reads that stage's results.
    run = parallelize(fetch, ["u"], 10)
    assert_type(run.then(parse, 2, retry=Retry(on=OSError)), Run[dict[str, int]])
    run.then(store, 2, retry=typed)  # type: ignore[arg-type]
    run.then(parse, 2, retry=typed)  # type: ignore[arg-type]
    del wrong
