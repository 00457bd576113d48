"""``parallelize queue status|results|dead|delete --run NAME``: read a shared run.

Any machine reads a run that ``--run NAME`` on fetch or run (:mod:`._shared_run`)
shares through Redis: how far it is, its outcomes, its dead letters; or deletes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import TYPE_CHECKING, Any

from parallelize import JournalError

from ._errors import EXIT_OK, EXIT_USAGE, UsageError
from ._loop import run_loop
from ._output import ENCODE, open_output
from ._shared_run import DEFAULT_URL, make_queue

if TYPE_CHECKING:
    from parallelize.redis import QueueProgress, RedisQueue

__all__ = (
    "QUEUE_DESCRIPTION",
    "QUEUE_EPILOG",
    "add_queue_parser",
    "queue_command",
)

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
