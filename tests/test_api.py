"""Arguments are checked before any work, with messages that say what to pass."""

from __future__ import annotations

import asyncio
import re
import types
from typing import Any

import pytest

import parallelize as pz
from parallelize import parallelize


async def noop(x: Any) -> Any:
    return x


def test_all_is_exactly_the_public_names() -> None:
    """__all__ lists every public name and nothing else; each shows as parallelize.X."""
    public = {
        name
        for name in dir(pz)
        if not name.startswith("_") and not isinstance(getattr(pz, name), types.ModuleType)
    }
    assert set(pz.__all__) == public
    for name in pz.__all__:
        assert getattr(pz, name).__module__ == "parallelize"


@pytest.mark.parametrize(
    ("numworkers", "error", "message"),
    [
        (0, ValueError, "numworkers must be >= 1, got 0"),
        (-3, ValueError, "numworkers must be >= 1, got -3"),
        (1.5, TypeError, "numworkers must be an int >= 1, got 1.5"),
        ("10", TypeError, "numworkers must be an int >= 1, got '10'"),
        (True, TypeError, "numworkers must be an int >= 1, got True"),
        (None, TypeError, "numworkers must be an int >= 1, got None"),
    ],
)
def test_bad_numworkers(numworkers: Any, error: type[Exception], message: str) -> None:
    """A numworkers that is not an int >= 1 is refused, naming the value."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        parallelize(noop, [1], numworkers)


@pytest.mark.parametrize("argslist", [5, None, object()])
def test_non_iterable_argslist(argslist: Any) -> None:
    """An argslist that cannot be iterated is a TypeError naming its type."""
    with pytest.raises(TypeError, match=r"^argslist must be an iterable \(list, range"):
        parallelize(noop, argslist, 2)


def test_str_argslist_is_refused() -> None:
    """A single URL string would be split into characters: refuse it, show the fix."""
    with pytest.raises(TypeError, match=r"Pass a list: \['http://example.com'\]$"):
        parallelize(noop, "http://example.com", 2)


def test_coroutine_argslist_is_refused() -> None:
    """An un-called async generator function's coroutine is refused, without warnings."""

    async def items() -> list[int]:
        return [1]

    with pytest.raises(TypeError, match=r"^argslist must be an iterable or an async"):
        parallelize(noop, items(), 2)  # type: ignore[call-overload]


@pytest.mark.parametrize("action", [None, 42, "noop"])
def test_non_callable_action(action: Any) -> None:
    """A non-callable action is a TypeError naming its type."""
    with pytest.raises(TypeError, match=r"^action must be a callable such as an async"):
        parallelize(action, [1], 2)


def test_coroutine_object_as_action_shows_the_right_call() -> None:
    """Passing fetch(url) instead of fetch names the function and closes the coroutine."""
    with pytest.raises(TypeError, match=r"pass the function itself: parallelize\(noop,"):
        parallelize(noop(1), [1], 2)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_error": "ignore"}, "on_error must be one of 'raise', 'yield', got 'ignore'"),
        ({"max_buffered": -1}, "max_buffered must be >= 0, got -1"),
        ({"max_buffered": 2.0}, "max_buffered must be an int >= 0, got 2.0"),
        ({"ordered": "yes"}, "ordered must be True or False, got 'yes'"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    """Each keyword option is validated at call time."""
    with pytest.raises((TypeError, ValueError), match=f"^{re.escape(message)}$"):
        parallelize(noop, [1], 2, **kwargs)


def test_nothing_runs_before_iteration(run: Any) -> None:
    """Building a run calls nothing; a run never iterated can be closed harmlessly."""
    calls: list[int] = []

    async def action(x: int) -> int:
        calls.append(x)
        return x

    async def main() -> None:
        results = parallelize(action, [1, 2, 3], 2)
        await results.aclose()
        assert "closed" in repr(results)

    run(main())
    assert calls == []


# -- the seed article's async generator: anext() and a clear word for list() ---------


def test_anext_drives_a_run_as_the_articles_generator() -> None:
    """await anext(parallelize(...)) gives results; async for goes on from there."""

    async def double(x: int) -> int:
        return 2 * x

    async def main() -> list[int]:
        run_ = parallelize(double, range(10), 3, ordered=True)
        first = await anext(run_)
        second = await anext(run_)
        rest = [r async for r in run_]
        with pytest.raises(StopAsyncIteration):
            await anext(run_)
        return [first, second, *rest]

    assert asyncio.run(main()) == [2 * i for i in range(10)]


def test_anext_on_a_run_under_async_for_is_refused() -> None:
    """anext() on a run that an async for iterates says so."""

    async def same(x: int) -> int:
        return x

    async def main() -> None:
        async with parallelize(same, range(10), 2) as run_:
            async for _ in run_:
                with pytest.raises(RuntimeError, match=r"is iterated by async for"):
                    await anext(run_)
                break

    asyncio.run(main())


def test_anext_then_aclose_ends_the_run() -> None:
    """A run driven by anext() is ended by aclose(), every task awaited."""

    async def slow(x: int) -> int:
        await asyncio.sleep(0 if x == 0 else 3600)
        return x

    async def main() -> None:
        run_ = parallelize(slow, range(100), 4)
        assert await anext(run_) == 0
        await run_.aclose()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())


def test_list_of_a_run_says_to_use_async_for() -> None:
    """list(parallelize(...)) is a TypeError that shows the right code."""

    async def same(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"^a parallelize\(\) run is an async iterable: use"):
        list(parallelize(same, range(3), 2))  # type: ignore[call-overload]
