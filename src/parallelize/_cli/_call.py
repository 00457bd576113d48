"""One call of FUNCTION for ``run``: import it, decode a line, call, write the record.

Shared by the action in this process and the one in a child process
(``--processes``, ``_run_remote.py``), which imports it without the rest of the
command.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import traceback
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ._errors import UsageError, error_text
from ._input import NotUTF8
from ._output import ENCODE

__all__ = (
    "ExitCalled",
    "InvalidLineError",
    "arguments",
    "load_function",
    "make_call",
    "make_function_call",
    "result_json",
)


class InvalidLineError(ValueError):
    """An input line that is not one JSON value (or not UTF-8 at all).

    Attributes:
        kind: The record's error kind: ``"invalid_json"`` or ``"invalid_utf8"``.
    """

    def __init__(self, message: str, kind: str = "invalid_json") -> None:
        """Say what is wrong with the line."""
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle it whole: it comes back from a child process (``--processes``)."""
        return (type(self), (str(self), self.kind))


def _reject_constant(name: str) -> Any:
    raise InvalidLineError(f"{name} is not JSON (strict JSON has no NaN or Infinity)")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def arguments(text: str) -> Any:
    """Return the JSON value of one input line; raise :class:`InvalidLineError` if none."""
    if type(text) is NotUTF8:
        raise InvalidLineError(text.reason, "invalid_utf8")
    try:
        return _decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidLineError(f"not valid JSON: {exc}") from exc


def result_json(result: Any) -> str:
    """Return ``result`` as JSON, or its ``repr()`` as a JSON string if JSON cannot."""
    try:
        return ENCODE(result)
    except (TypeError, ValueError, RecursionError):
        return ENCODE(repr(result))


def load_function(spec: str, *, verbose: bool = False) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted: ``Class.method``).

    The current directory is searched first, as ``python -m`` does. With
    ``verbose``, a module that fails to import has its traceback printed on stderr.

    Raises:
        UsageError: The spec is malformed, the module cannot be imported, or the
            name is missing or not callable.
    """
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise UsageError(f"expected MODULE:FUNCTION, such as mypackage.tasks:handle, got {spec!r}")
    cwd = str(Path.cwd())
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise UsageError(
                f"no module named {missing!r} in {cwd} or on PYTHONPATH: run from the "
                f"directory that holds it, or add that directory to PYTHONPATH"
            ) from exc
        raise _import_failed(module_name, exc, verbose=verbose) from exc
    except Exception as exc:
        raise _import_failed(module_name, exc, verbose=verbose) from exc
    target: Any = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise UsageError(f"module {module_name!r} has no {name!r}") from exc
    if not callable(target):
        raise UsageError(f"{spec} is a {type(target).__name__}, not a function")
    function: Callable[..., Any] = target
    return function


def _import_failed(module_name: str, exc: Exception, *, verbose: bool) -> UsageError:
    """Return the usage error of a module whose own code failed (its traceback: -v)."""
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
        hint = ""
    else:
        hint = " (-v shows the traceback)"
    return UsageError(f"importing {module_name!r} failed: {error_text(exc)}{hint}")


def _is_async(function: Callable[..., Any]) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - an object with async __call__
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


class ExitCalled(Exception):  # noqa: N818 - says what happened, as it reads
    """The function raised ``SystemExit`` (``sys.exit(3)``): a failure of that call.

    A function that exits must not end the command with its code and no record:
    the exit is that line's failure, and the other lines go on.
    """

    def __init__(self, code: object) -> None:
        """Keep the exit code."""
        super().__init__(f"SystemExit: {code}")
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle it whole: it comes back from a child process (``--processes``)."""
        return (type(self), (self.code,))


def _call(function: Callable[..., Any], args: Any) -> Any:
    kind = type(args)
    if kind is list:
        return function(*args)
    if kind is dict:
        return function(**args)
    return function(args)


def make_call(spec: str) -> Callable[[int, str], Awaitable[str] | str]:
    """Import FUNCTION by its spec (in a child process of ``--processes``); its action."""
    return make_function_call(load_function(spec))


def make_function_call(function: Callable[..., Any]) -> Callable[[int, str], Awaitable[str] | str]:
    """Return the action: decode the line, call ``function``, return the line to write.

    A generator function (or one that returns a generator) fans out as the library
    does: its values make one list, the line's one result.
    """
    if _is_async(function) or inspect.isasyncgenfunction(function):
        return _make_async_call(function)
    return _make_sync_call(function)


def _make_async_call(function: Callable[..., Any]) -> Callable[[int, str], Awaitable[str]]:
    is_agen = inspect.isasyncgenfunction(function)

    async def call_async(line: int, text: str) -> str:
        args = arguments(text)
        try:
            if is_agen:
                result: Any = [value async for value in _call(function, args)]
            else:
                result = await _call(function, args)
                if type(result) is types.GeneratorType:
                    result = list(result)
        except SystemExit as exc:
            raise ExitCalled(exc.code) from exc
        return _success_line(line, args, result)

    return call_async


def _make_sync_call(function: Callable[..., Any]) -> Callable[[int, str], str]:
    name = getattr(function, "__qualname__", repr(function))

    def call(line: int, text: str) -> str:
        args = arguments(text)
        try:
            result = _call(function, args)
            if type(result) is types.GeneratorType:
                result = list(result)
        except SystemExit as exc:
            raise ExitCalled(exc.code) from exc
        if inspect.isawaitable(result) or inspect.isasyncgen(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: say so here, not in a RuntimeWarning
            raise TypeError(
                f"{name} returned {type(result).__name__}, which needs awaiting: "
                f"make it an 'async def' function"
            )
        return _success_line(line, args, result)

    return call


def _success_line(line: int, args: Any, result: Any) -> str:
    return (
        f'{{"line": {line}, "args": {ENCODE(args)}, "ok": true, "result": {result_json(result)}}}'
    )
