"""One run over many machines: ``--run NAME`` on fetch and run, and ``parallelize queue``.

``parallelize fetch URLS --run crawl`` adds URLS to the run ``crawl`` in Redis and
fetches; the same command without URLS, on other machines, fetches too. Redis is
``--redis URL``, else ``$PARALLELIZE_REDIS`` (which keeps a password out of ``ps``),
else redis://127.0.0.1:6379/0. ``parallelize queue status|results|dead|delete
--run crawl`` reads the run from any machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from parallelize import JournalError, MissingDependencyError

from ._common import ENCODE, EXIT_OK, EXIT_USAGE, UsageError, open_output, run_loop

if TYPE_CHECKING:
    from parallelize.redis import QueueProgress, RedisQueue

    from ._common import Job

__all__ = (
    "QUEUE_DESCRIPTION",
    "QUEUE_EPILOG",
    "add_queue_options",
    "add_queue_parser",
    "check_queue_options",
    "make_queue",
    "queue_command",
)

DEFAULT_URL = "redis://127.0.0.1:6379/0"

QUEUE_DESCRIPTION = """\
Read a run shared through Redis (parallelize fetch/run --run NAME), from any machine:

  status    how far it is: added, done, failed, dead letters, to go, per worker
  results   every outcome stored, one JSON line each (the lines the workers wrote)
  dead      the items taken out because they kept killing their workers
  delete    remove the run from Redis (refused while workers are on it: --force)"""

QUEUE_EPILOG = """\
examples:
  export PARALLELIZE_REDIS=redis://:password@queue.internal:6379/0
  parallelize fetch urls.txt --run crawl -o part-a.jsonl      # machine A: adds, fetches
  parallelize fetch --run crawl -o part-b.jsonl               # machines B, C...: fetch
  parallelize queue status --run crawl
  parallelize queue results --run crawl -o crawl.jsonl --follow"""


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


def add_queue_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add ``parallelize queue`` and its four commands."""
    queue = commands.add_parser(
        "queue",
        help="read a run shared through Redis: status, results, dead letters",
        description=QUEUE_DESCRIPTION,
        epilog=QUEUE_EPILOG,
        formatter_class=formatter,
    )
    queue.set_defaults(verbose=False, uvloop=True)
    actions = queue.add_subparsers(dest="queue_action", metavar="ACTION")
    for name, text in (
        ("status", "how far the run is, per worker"),
        ("results", "every outcome stored, one JSON line each"),
        ("dead", "the dead letters, one JSON line each"),
        ("delete", "remove the run from Redis"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--run", dest="run_name", required=True, metavar="NAME")
        action.add_argument(
            "--redis", metavar="URL", help=f"default: $PARALLELIZE_REDIS, else {DEFAULT_URL}"
        )
        if name in {"status", "results", "dead"}:
            action.add_argument(
                "-o", "--output", metavar="FILE", help="write to FILE instead of stdout"
            )
        if name == "status":
            action.add_argument("--json", action="store_true", help="one JSON object")
        if name == "delete":
            action.add_argument(
                "--force",
                action="store_true",
                help="delete it even while workers are on it: their later writes are "
                "refused, and they stop with an error",
            )
        if name == "results":
            action.add_argument(
                "--follow",
                action="store_true",
                help="go on writing outcomes as they are stored, until the run is over",
            )
        action.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
        action.add_argument(
            "--no-uvloop", dest="uvloop", action="store_false", help=argparse.SUPPRESS
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


# -- parallelize queue ----------------------------------------------------------------


def queue_command(options: argparse.Namespace) -> int:
    """Run ``parallelize queue ACTION``; return the exit code."""
    if options.queue_action is None:
        raise UsageError("choose an action: status, results, dead or delete", prog="queue")
    queue = make_queue(options)
    from parallelize.redis import QueueInUseError  # noqa: PLC0415 - make_queue checked the extra

    queue.reconnect_timeout = 5.0
    try:
        return run_loop(_queue_action(queue, options), options.uvloop)
    except QueueInUseError as exc:
        count = "1 worker" if len(exc.workers) == 1 else f"{len(exc.workers)} workers"
        names = ", ".join(exc.workers[:5]) + (
            f" and {len(exc.workers) - 5} more" if len(exc.workers) > 5 else ""
        )
        sys.stderr.write(
            f"parallelize queue: the run {exc.run} has {count} alive ({names}), so it was "
            f"not deleted: stop them (or wait until they have been silent for their "
            f"--idle-timeout), or pass --force: their later writes are then refused, and "
            f"they stop with an error\n"
        )
        return EXIT_USAGE
    except JournalError as exc:
        sys.stderr.write(f"parallelize queue: {exc}\n")
        return EXIT_USAGE


async def _queue_action(queue: RedisQueue, options: argparse.Namespace) -> int:
    async with queue:
        action = options.queue_action
        if action == "delete":
            await queue.delete(force=options.force)
            sys.stderr.write(f"parallelize: deleted the run {queue.run}\n")
            return EXIT_OK
        # A Sink: write() takes a line without its newline; closing leaves stdout open.
        with open_output(options.output) as out:
            if action == "status":
                progress = await queue.progress()
                text = ENCODE(progress.as_dict()) if options.json else _status_text(progress)
                out.write(text)
            elif action == "results":
                async for outcome in queue.results(follow=options.follow):
                    result = outcome.result
                    if isinstance(result, str) and result.startswith("{"):
                        line = result  # the line a worker of fetch or run wrote
                    else:
                        line = ENCODE(
                            {
                                "key": outcome.key,
                                "ok": outcome.ok,
                                "result": result,
                                "error": None
                                if outcome.ok
                                else {"type": outcome.error_type, "message": outcome.error_message},
                            }
                        )
                    out.write(line)
                    if options.follow:
                        out.flush()
            else:
                for letter in await queue.dead_letters():
                    record = {
                        "key": letter.key,
                        "item": letter.item,
                        "deliveries": letter.deliveries,
                        "reason": letter.reason,
                        "worker": letter.worker,
                    }
                    out.write(ENCODE(record))
    return EXIT_OK


def _status_text(progress: QueueProgress) -> str:
    p = progress
    state = "finished" if p.finished else ("input complete" if p.input_done else "input coming")
    head = (
        f"run {p.run}: {state}; {p.produced:,} added, {p.done:,} done ({p.ok:,} ok, "
        f"{p.failed:,} failed), {p.dead:,} dead letters, {p.remaining:,} to go "
        f"({p.in_flight:,} in flight)"
    )
    lines = [head]
    now = time.time()
    for w in p.workers:
        seen = dt.timedelta(seconds=int(max(0.0, now - w.seen)))
        lines.append(
            f"  {w.name:<28} {w.state:<9} {w.ok:>10,} ok {w.failed:>8,} failed "
            f"{w.in_flight:>6,} held  seen {seen} ago"
        )
    return "\n".join(lines)
