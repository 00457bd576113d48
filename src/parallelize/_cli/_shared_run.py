"""One run over many machines: ``--run NAME`` on fetch and run, through Redis.

``parallelize fetch URLS --run crawl`` adds URLS to the run ``crawl`` in Redis and
fetches; the same command without URLS, on other machines, fetches too. Redis is
``--redis URL``, else ``$PARALLELIZE_REDIS`` (which keeps a password out of ``ps``),
else redis://127.0.0.1:6379/0. This module holds those options, their checks and
the queue they make; ``parallelize queue`` (:mod:`._queue`) reads the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from parallelize import JournalError, MissingDependencyError

from ._errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from parallelize.redis import RedisQueue

    from ._job import Job

__all__ = (
    "DEFAULT_URL",
    "add_only",
    "add_queue_options",
    "check_queue_options",
    "make_queue",
)

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def add_queue_options(parser: argparse.ArgumentParser, noun: str) -> None:
    """Add ``--run`` and the options of a run in Redis to fetch or run."""
    group = parser.add_argument_group(
        "one run over many machines, through Redis (the redis extra)",
        f"With --run NAME, the {noun} go through a run in Redis that any number of "
        f"processes on any machines work on: each {noun[:-1]}'s outcome is stored "
        f"there once, a worker that dies has its {noun} taken over, and nothing is "
        f"lost if Redis restarts (with appendonly yes). Give the input on one "
        f"machine; the same command without it works on the run. See docs/scaling.md.",
    )
    group.add_argument(
        "--run",
        dest="run_name",
        metavar="NAME",
        help="work on the run NAME in Redis (and add the input to it, if given)",
    )
    group.add_argument(
        "--redis",
        metavar="URL",
        help=f"where Redis is (default: $PARALLELIZE_REDIS, else {DEFAULT_URL}); "
        "rediss:// for TLS, redis://:PASSWORD@host:port/db",
    )
    group.add_argument(
        "--add-only",
        action="store_true",
        help=f"only add the input's {noun} to the run; workers elsewhere run them",
    )
    group.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="take over the items of a worker silent for SECONDS (default 30)",
    )
    group.add_argument(
        "--max-deaths",
        type=int,
        metavar="N",
        help=f"dead-letter a {noun[:-1]} whose worker died N times while it ran alone (default 3)",
    )
    group.add_argument(
        "--max-deliveries",
        type=int,
        metavar="N",
        help=f"dead-letter a {noun[:-1]} whose attempts started N times without an "
        "outcome, their worker dying (default 10, at least 2; the last runs alone)",
    )


def _url(options: argparse.Namespace) -> str:
    return options.redis or os.environ.get("PARALLELIZE_REDIS") or DEFAULT_URL


def check_queue_options(options: argparse.Namespace, given: str | None, what: str) -> None:
    """Refuse the combinations that cannot work, before anything starts.

    Args:
        options: The command's options.
        given: The input's path, or None when it was not given.
        what: How the input is named in messages ("URLS").
    """
    if options.run_name is None:
        if given is None:
            raise UsageError(
                f"{what} is missing: give the input, or --run NAME to work on a run "
                f"shared through Redis"
            )
        for flag, value in (
            ("--add-only", options.add_only),
            ("--redis", options.redis),
            ("--max-deaths", options.max_deaths is not None),
            ("--max-deliveries", options.max_deliveries is not None),
        ):
            if value:
                raise UsageError(f"{flag} goes with --run NAME")
        return
    if options.journal is not None:
        raise UsageError(
            "--journal and --run do not go together: a run in Redis is its own journal"
        )
    if options.add_only and given is None:
        raise UsageError(f"--add-only adds {what} to the run: give {what}")
    if not options.idle_timeout > 0:
        raise UsageError(f"--idle-timeout must be > 0 seconds, got {options.idle_timeout}")
    if options.max_deaths is not None and options.max_deaths < 1:
        raise UsageError(f"--max-deaths must be >= 1, got {options.max_deaths}")
    if options.max_deliveries is not None and options.max_deliveries < 2:
        raise UsageError(
            f"--max-deliveries must be >= 2, got {options.max_deliveries}: an item's "
            f"last attempt runs alone, so that a death is never charged to its "
            f"neighbours, and its first cannot"
        )


def make_queue(options: argparse.Namespace, job: Job | None = None) -> RedisQueue:
    """Return the (unopened) queue of ``--run``, or raise :class:`UsageError`."""
    try:
        from parallelize.redis import RedisQueue  # noqa: PLC0415 - the redis extra
    except MissingDependencyError as exc:
        raise UsageError(str(exc)) from exc
    limits = {
        name: value
        for name in ("max_deaths", "max_deliveries")
        if (value := getattr(options, name, None)) is not None
    }
    try:
        return RedisQueue(
            _url(options),
            run=options.run_name,
            idle_timeout=getattr(options, "idle_timeout", 30.0),
            failure_data=None if job is None else job.failure_line,
            **limits,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


async def add_only(queue: RedisQueue, job: Job) -> int:
    """Add the job's items to the run; say how many the run has; return the exit code.

    Raises:
        UsageError: Redis cannot be reached, or refused us (one line, exit 2).
    """
    try:
        async with queue:
            produced = await queue.produce(job.items, key=job.key)
    except JournalError as exc:
        raise UsageError(str(exc)) from exc
    sys.stderr.write(f"parallelize: run {queue.run} has {produced:,} {job.noun}, all added\n")
    return EXIT_OK
