"""``parallelize run MODULE:FUNCTION``: call a function once per JSON line of arguments.

Each line of ``--input`` is one call: a JSON array is the positional arguments, a
JSON object the keyword arguments, any other JSON value the one argument. An
``async def`` function runs on the event loop; a plain function in ``--workers``
threads. The action returns the finished JSON line of a success, so that a journal
stores, and a rerun replays, exactly what was written.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Hashable
from typing import IO, TYPE_CHECKING, Any

from parallelize import (
    DeadlineExceeded,
    Failure,
    KeyDownError,
    PerKey,
    RetryWaitTooLong,
)

from ._call import (
    ExitCalled,
    InvalidLineError,
    arguments,
    load_function,
    make_function_call,
)
from ._errors import UsageError, error_text
from ._execution import execute, wants_progress
from ._files import check_distinct_files, check_journal
from ._input import NotUTF8, count_items, open_input, read_items
from ._job import Job, retry_of
from ._loop import run_loop
from ._output import ENCODE, Sink, open_output
from ._per_key import per_key_of, unkeyed
from ._run_remote import call_line, child_function
from ._shared_run import check_queue_options

if TYPE_CHECKING:
    import argparse

__all__ = ("run_command",)


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


def _retryable(error: Exception) -> bool:
    """``--retries``: any exception of the function (or timeout), not a bad line."""
    return not isinstance(error, InvalidLineError)


def _final_failure(line: str) -> bool:
    """Tell whether a failure is final: a line that is not JSON, or not UTF-8."""
    return json.loads(line)["error"]["kind"] in {"invalid_json", "invalid_utf8"}


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
    async with contextlib.AsyncExitStack() as stack:
        action: Callable[[int, str], Awaitable[str] | str]
        if options.processes is None:
            action = make_function_call(function)
        else:
            from parallelize import open_processes  # noqa: PLC0415 - 10 ms, when asked for

            setup = functools.partial(child_function, options.function, options.workers)
            action = await stack.enter_async_context(
                open_processes(call_line, options.processes, setup=setup)
            )
        return await _execute(options, action, stream=stream, sink=sink, argv=argv, total=total)


async def _execute(
    options: argparse.Namespace,
    action: Callable[[int, str], Awaitable[str] | str],
    *,
    stream: IO[bytes] | None,
    sink: Sink,
    argv: list[str],
    total: int | None,
) -> int:
    job = Job(
        action=action,
        items=read_items(stream, _parse_line),
        failure_line=_make_failure_line(options.timeout),
        noun="calls",
        reads_stdin=options.input == "-",
        retry=retry_of(options, _retryable),
        total=total,
        settings={"function": options.function},
        per_key=options.keyed,
        final=_final_failure,
    )
    return await execute(job, options, sink, argv)
