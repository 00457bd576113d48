"""Argument validators shared by the public entry points.

Each check raises before any work starts, names the parameter, shows the value
received and says what to pass instead.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, Literal

__all__ = (
    "ActionKind",
    "action_kind",
    "check_action",
    "check_argslist",
    "check_bool",
    "check_choice",
    "check_int",
    "check_seconds",
    "fits_utf8",
    "is_async_callable",
)


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise naming ``name``."""
    # bool is an int subclass, but numworkers=True is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {_short_repr(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_seconds(name: str, value: object) -> float:
    """Return ``value`` as float seconds if it is a finite number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds > 0, got {_short_repr(value)}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
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
