"""``parallelize run MODULE:FUNCTION``: call a function once per JSON line of arguments.

Each line of ``--input`` is one call: a JSON array is the positional arguments, a
JSON object the keyword arguments, any other JSON value the one argument. An
``async def`` function runs on the event loop; a plain function in ``--workers``
threads. The action returns the finished JSON line of a success, so that a journal
stores, and a rerun replays, exactly what was written.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from parallelize import Failure, Retry

from ._common import (
    ENCODE,
    Job,
    Sink,
    UsageError,
    check_distinct_files,
    check_journal,
    count_items,
    error_text,
    execute,
    open_input,
    open_output,
    read_items,
    run_loop,
    wants_progress,
)
from ._queue import check_queue_options

if TYPE_CHECKING:
    import argparse

__all__ = ("load_function", "run_command")


class InvalidLineError(ValueError):
    """An input line that is not one JSON value."""


def _reject_constant(name: str) -> Any:
    raise InvalidLineError(f"{name} is not JSON (strict JSON has no NaN or Infinity)")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def arguments(text: str) -> Any:
    """Return the JSON value of one input line; raise :class:`InvalidLineError` if none."""
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


def _parse_line(number: int, text: str) -> tuple[int, str] | None:
    text = text.strip()
    return (number, text) if text else None


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION`` (``FUNCTION`` may be dotted: ``Class.method``).

    The current directory is searched first, as ``python -m`` does.

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
        raise UsageError(f"importing {module_name!r} failed: {error_text(exc)}") from exc
    except Exception as exc:
        raise UsageError(f"importing {module_name!r} failed: {error_text(exc)}") from exc
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


def _is_async(function: Callable[..., Any]) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - an object with async __call__
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


def _make_call(function: Callable[..., Any]) -> Callable[[int, str], Awaitable[str] | str]:
    """Return the action: decode the line, call ``function``, return the line to write."""
    if _is_async(function):

        async def call_async(line: int, text: str) -> str:
            args = arguments(text)
            kind = type(args)
            if kind is list:
                result = await function(*args)
            elif kind is dict:
                result = await function(**args)
            else:
                result = await function(args)
            return _success_line(line, args, result)

        return call_async

    name = getattr(function, "__qualname__", repr(function))

    def call(line: int, text: str) -> str:
        args = arguments(text)
        kind = type(args)
        if kind is list:
            result = function(*args)
        elif kind is dict:
            result = function(**args)
        else:
            result = function(args)
        if inspect.isawaitable(result):
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


def _retryable(error: Exception) -> bool:
    """``--retries``: any exception of the function (or timeout), not a bad line."""
    return not isinstance(error, InvalidLineError)


def _make_failure_line(timeout: float | None) -> Callable[[Failure], str]:
    def failure_line(failure: Failure) -> str:
        line, text = failure.item
        error = failure.exception
        if isinstance(error, InvalidLineError):
            return ENCODE(
                {
                    "line": line,
                    "ok": False,
                    "error": {"kind": "invalid_json", "message": str(error)},
                }
            )
        if isinstance(error, TimeoutError):
            kind = "timeout"
            if str(error) or not timeout:
                message = error_text(error)  # the function's own TimeoutError
            else:
                message = f"no result within --timeout {timeout:g} s"
        else:
            kind = "exception"
            message = error_text(error)
        record = {
            "line": line,
            "args": arguments(text),
            "ok": False,
            "error": {"kind": kind, "message": message},
        }
        return ENCODE(record)

    return failure_line


def run_command(options: argparse.Namespace, argv: list[str]) -> int:
    """Run ``parallelize run`` with its parsed ``options``; return the exit code.

    Raises:
        UsageError: The function cannot be imported, or the input or the output
            cannot be used (checked before any call).
    """
    check_journal(options.journal)
    check_queue_options(options, options.input, "--input")
    function = load_function(options.function)
    with open_input(options.input, "the --input file") as stream:
        check_distinct_files(
            stream, "the --input file", output=options.output, journal=options.journal
        )
        total = None
        if wants_progress(options.progress, options.quiet):
            total = count_items(stream, _parse_line)
        with open_output(options.output) as sink:
            main = _run(options, function, stream=stream, sink=sink, argv=argv, total=total)
            return run_loop(main, options.uvloop)


async def _run(
    options: argparse.Namespace,
    function: Callable[..., Any],
    *,
    stream: IO[bytes] | None,
    sink: Sink,
    argv: list[str],
    total: int | None,
) -> int:
    job = Job(
        action=_make_call(function),
        items=read_items(stream, _parse_line),
        failure_line=_make_failure_line(options.timeout),
        noun="calls",
        reads_stdin=options.input == "-",
        retry=None
        if not options.retries
        else Retry(on=(), attempts=options.retries + 1, if_exception=_retryable),
        total=total,
    )
    return await execute(job, options, sink, argv)
