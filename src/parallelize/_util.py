"""Argument validators shared by the public entry points: one per kind of value.

Each check raises before any work starts, names the parameter, shows the value
received and says what to pass instead, in one shape for every kind::

    TypeError:  "<name> must be <the kind and its range>, got <value>"
    ValueError: "<name> must be <the range>, got <value>"

The kinds, and their one rule each:

- :func:`check_int`: an int (never a bool) >= a minimum.
- :func:`check_number`: an int or float (never a bool) within bounds, each
  inclusive or exclusive, and finite if asked: rates, ratios, factors.
- :func:`check_seconds`: a duration: a finite number of seconds > 0 (a timeout,
  an interval); with ``zero=True`` also 0, with ``infinite=True`` also
  ``math.inf`` (a wait, or a cap on one, that may be none).
- :func:`check_bool`: True or False (not 0, 1, "yes").
- :func:`check_choice`: one of a few strings (anything else, a str or not, is
  the ValueError ``<name> must be one of 'a', 'b', got <value>``).
- :func:`check_callable`: a function (any callable), or None if allowed.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, Literal, TypeGuard, TypeVar

__all__ = (
    "ActionKind",
    "action_kind",
    "check_action",
    "check_argslist",
    "check_bool",
    "check_callable",
    "check_choice",
    "check_int",
    "check_number",
    "check_seconds",
    "fits_utf8",
    "is_async_callable",
)

T = TypeVar("T")


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise naming ``name``."""
    # bool is an int subclass, but numworkers=True is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {_short_repr(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_short_repr(value)}")
    return value


def _range(
    above: float | None, at_least: float | None, below: float | None, at_most: float | None
) -> str | None:
    """Say a range as the messages do: "> 1", ">= 0", "in [0, 1]", "in (0, 100]"...

    None if there is no bound.
    """
    low = ("(", ">", above) if above is not None else None
    low = low or (("[", ">=", at_least) if at_least is not None else None)
    high = (")", "<", below) if below is not None else None
    high = high or (("]", "<=", at_most) if at_most is not None else None)
    if low is not None and high is not None:
        if low[0] == "(" and high[0] == ")":
            return f"between {low[2]:g} and {high[2]:g} (exclusive)"
        return f"in {low[0]}{low[2]:g}, {high[2]:g}{high[0]}"
    one = low or high
    return None if one is None else f"{one[1]} {one[2]:g}"


def _is_number(value: object) -> TypeGuard[float]:
    # bool is an int subclass, but timeout=True is always a mistake.
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    finite: bool = False,
) -> float:
    """Return ``value`` as a float if it is a number within the bounds given, else raise.

    Each bound is optional: ``above``/``below`` exclude it, ``at_least``/``at_most``
    include it. NaN is never within a bound; ``finite=True`` refuses infinities too.

    Example: ``check_number("per_second", rate, above=0, finite=True)`` raises
    ``TypeError("per_second must be a number > 0, got '10'")`` and
    ``ValueError("per_second must be > 0 and finite, got 0")``.
    """
    rule = _range(above, at_least, below, at_most)
    if not _is_number(value):
        kind = "a number" if rule is None else f"a number {rule}"
        raise TypeError(f"{name} must be {kind}, got {_short_repr(value)}")
    if not (
        (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (below is None or value < below)
        and (at_most is None or value <= at_most)
        and (not finite or math.isfinite(value))
    ):
        rules = [r for r in (rule, "finite" if finite else None) if r is not None]
        raise ValueError(f"{name} must be {' and '.join(rules)}, got {_short_repr(value)}")
    return float(value)


def check_seconds(name: str, value: object, *, zero: bool = False, infinite: bool = False) -> float:
    """Return ``value`` as float seconds if it is a finite number > 0, else raise.

    ``zero=True`` accepts 0 too (a wait that may be none), ``infinite=True``
    accepts ``math.inf`` (a cap that never applies). The TypeError names the
    bound unless it is the one every duration has (>= 0): ``"timeout must be a
    number of seconds > 0, got '5'"``; the ValueError always does: ``"timeout
    must be > 0 seconds, got -1"``.
    """
    bound = ">= 0" if zero else "> 0"
    if not _is_number(value):
        kind = "a number of seconds" if zero else f"a number of seconds {bound}"
        raise TypeError(f"{name} must be {kind}, got {_short_repr(value)}")
    if not ((value >= 0 if zero else value > 0) and (infinite or math.isfinite(value))):
        raise ValueError(f"{name} must be {bound} seconds, got {_short_repr(value)}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, got {_short_repr(value)}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_short_repr(value)}")
    return value


def check_callable(name: str, value: T, what: str = "a function", *, none: bool = False) -> T:
    """Return ``value`` if it is callable (or None, with ``none=True``), else raise.

    ``what`` says which function: ``check_callable("overload", f, "a function of an
    outcome")`` raises ``TypeError("overload must be a function of an outcome, got
    503")``; with ``none=True`` the message adds ``or None``.
    """
    if (value is None and none) or callable(value):
        return value
    alternatives = f"{what} or None" if none else what
    raise TypeError(f"{name} must be {alternatives}, got {_short_repr(value)}")


ActionKind = Literal["async", "sync", "asyncgen", "gen"]


def _is(action: object, test: Callable[[object], bool]) -> bool:
    """Apply an ``inspect`` test to an action, seeing through partials and __call__."""
    while isinstance(action, functools.partial):
        action = action.func
    if test(action):
        return True
    call = getattr(type(action), "__call__", None)  # noqa: B004 - we inspect, not call
    return not inspect.isfunction(action) and test(call)


def is_async_callable(action: object) -> bool:
    """Tell whether calling ``action`` returns a coroutine, without calling it.

    Sees through ``functools.partial`` and bound methods, and accepts objects whose
    ``__call__`` is an ``async def``.
    """
    return _is(action, inspect.iscoroutinefunction)


def action_kind(action: object) -> ActionKind:
    """Tell how an action runs and what it returns, without calling it."""
    if _is(action, inspect.iscoroutinefunction):
        return "async"
    if _is(action, inspect.isasyncgenfunction):
        return "asyncgen"
    if _is(action, inspect.isgeneratorfunction):
        return "gen"
    return "sync"


def check_action(action: object) -> ActionKind:
    """Check that ``action`` can be called per item; tell how it must be run.

    Returns:
        ``"async"`` for a coroutine function (awaited on the event loop), ``"sync"``
        for any other callable (run in a worker thread so it cannot block the loop),
        ``"asyncgen"`` and ``"gen"`` for generator functions (each value they yield
        is one result: fan-out).
    """
    if inspect.iscoroutine(action) or inspect.isawaitable(action):
        name = getattr(action, "__qualname__", None) or type(action).__name__
        if inspect.iscoroutine(action):
            # It will never run: close it so Python does not warn "never awaited".
            action.close()
        raise TypeError(
            f"action must be a callable such as an async function, got the awaitable "
            f"{name}(...); pass the function itself: parallelize({name}, argslist, "
            f"numworkers), not parallelize({name}(...), ...)"
        )
    if not callable(action):
        raise TypeError(
            f"action must be a callable such as an async function, "
            f"got {_short_repr(action)} of type {type(action).__name__}"
        )
    return action_kind(action)


def check_argslist(argslist: object) -> Iterable[Any] | AsyncIterable[Any]:
    """Check that ``argslist`` is an iterable or an async iterable of items."""
    if isinstance(argslist, str | bytes | bytearray):
        raise TypeError(
            f"argslist must be an iterable of items, got the {type(argslist).__name__} "
            f"{_short_repr(argslist)}; parallelize would call the action on each "
            f"character. Pass a list: [{_short_repr(argslist, 40)}]"
        )
    if isinstance(argslist, AsyncIterable | Iterable):
        return argslist
    if inspect.iscoroutine(argslist):
        argslist.close()
        raise TypeError(
            "argslist must be an iterable or an async iterable, got a coroutine; "
            "did you mean to pass an async generator (a function with `yield`)?"
        )
    raise TypeError(
        f"argslist must be an iterable (list, range, generator) or an async iterable "
        f"(async generator), got {_short_repr(argslist)} of type {type(argslist).__name__}"
    )


def fits_utf8(text: str) -> bool:
    """Tell whether UTF-8 can hold ``text``: not a lone surrogate (web data has them)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
