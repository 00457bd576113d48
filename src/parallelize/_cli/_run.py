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
import traceback
import types
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from parallelize import DeadlineExceeded, Failure, KeyDownError, PerKey, RetryWaitTooLong

from ._errors import UsageError, error_text
from ._execution import execute, wants_progress
from ._files import check_distinct_files, check_journal
from ._input import NotUTF8, count_items, open_input, read_items
from ._job import Job, retry_of
from ._loop import run_loop
from ._output import ENCODE, Sink, open_output
from ._per_key import per_key_of, unkeyed
from ._shared_run import check_queue_options

if TYPE_CHECKING:
    import argparse

__all__ = ("load_function", "run_command")


class InvalidLineError(ValueError):
    """An input line that is not one JSON value (or not UTF-8 at all).

    Attributes:
        kind: The record's error kind: ``"invalid_json"`` or ``"invalid_utf8"``.
    """

    def __init__(self, message: str, kind: str = "invalid_json") -> None:
        """Say what is wrong with the line."""
        super().__init__(message)
        self.kind = kind


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


def _parse_line(number: int, text: str) -> tuple[int, str] | None:
    if type(text) is NotUTF8:
        return number, text  # a failure record, from arguments()
    text = text.strip()
    return (number, text) if text else None


def field_key(name: str) -> Callable[[tuple[int, str]], Hashable]:
    """Return the key function of ``--per-key-field NAME``.

    A call's key is the ``NAME`` member of its JSON object line or, when ``NAME``
    is a whole number, that element of its array line; a line without it (or any
    other JSON value) has the key None (``null``: one key for all of them). A key
    that is an array or an object is its JSON text. A line that is not JSON gets a
    key of its own, and fails at once as it would without limits per key.
    """
    index = int(name) if name.isdigit() else None

    def key(item: tuple[int, str]) -> Hashable:
        line, text = item
        try:
            args = arguments(text)
        except InvalidLineError:
            return unkeyed(line)
        kind = type(args)
        if kind is dict:
            value = args.get(name)
        elif kind is list and index is not None and index < len(args):
            value = args[index]
        else:
            return None
        if isinstance(value, list | dict):
            return ENCODE(value)
        key_value: Hashable = value
        return key_value

    return key


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


def _call(function: Callable[..., Any], args: Any) -> Any:
    kind = type(args)
    if kind is list:
        return function(*args)
    if kind is dict:
        return function(**args)
    return function(args)


def _make_call(function: Callable[..., Any]) -> Callable[[int, str], Awaitable[str] | str]:
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
                    "error": {"kind": error.kind, "message": str(error)},
                }
            )
        if isinstance(error, DeadlineExceeded):
            kind, message = "deadline", str(error)
        elif isinstance(error, RetryWaitTooLong):
            kind, message = "retry_wait", str(error)
        elif isinstance(error, TimeoutError):
            kind = "timeout"
            if str(error) or not timeout:
                message = error_text(error)  # the function's own TimeoutError
            else:
                message = f"no result within --timeout {timeout:g} s"
        elif isinstance(error, KeyDownError):
            kind, message = "key_down", str(error)  # the breaker of --key-failures
        elif isinstance(error, ExitCalled):
            kind, message = "exception", str(error)
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
    options.keyed = _per_key(options)
    function = load_function(options.function, verbose=options.verbose)
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


def _per_key(options: argparse.Namespace) -> PerKey | None:
    """Return the limits per key of ``--per-key-field`` and its options, or None."""
    field = options.per_key_field
    given = [
        flag
        for flag, value in (
            ("--per-key", options.per_key),
            ("--per-key-rate", options.per_key_rate),
            ("--per-key-burst", options.per_key_burst),
            ("--per-key-adaptive", options.per_key_adaptive),
            ("--key-failures", options.key_failures),
            ("--key-cooldown", options.key_cooldown),
        )
        if value is not None and value is not False
    ]
    if field is None:
        if given:
            raise UsageError(f"{given[0]} goes with --per-key-field NAME (the key of each line)")
        return None
    if not field:
        raise UsageError("--per-key-field needs a NAME: the member of each line that is its key")
    keyed = per_key_of(options, field_key(field), "key")
    if keyed is None:
        raise UsageError(
            "--per-key-field limits nothing alone: add --per-key N, --per-key-rate R, "
            "--per-key-adaptive or --key-failures K"
        )
    return keyed


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
        retry=retry_of(options, _retryable),
        total=total,
        settings={"function": options.function},
        per_key=options.keyed,
    )
    return await execute(job, options, sink, argv)
