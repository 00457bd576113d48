"""What a command says on stderr when its run ends: the summary, or how to resume.

The summary line is the library's statistics; after SIGINT or SIGTERM the command
says what was done and gives the command line that resumes it from its journal.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from parallelize import Interrupted, Run
    from parallelize.redis import QueueProgress

    from ._job import Job

__all__ = ("command_line", "interrupted_line", "report", "run_line")


def report(run: Run[Any], quiet: bool, note: str | Callable[[], str] | None = None) -> None:
    """Write the run's summary (counts, elapsed, rate, latency, ``note``) to stderr."""
    if not quiet:
        if callable(note):
            note = note()
        summary = run.statistics().summary()
        if note:
            summary = f"{summary}; {note}"
        sys.stderr.write(summary + "\n")
        sys.stderr.flush()


def interrupted_line(run: Run[Any], stop: Interrupted, job: Job, argv: list[str]) -> str:
    """Return what a command stopped by a signal says: what it did, and how to resume."""
    stats = run.statistics()
    name = signal.Signals(stop.signal).name
    failed = f" ({stats.failed:,} failed)" if stats.failed else ""
    done = f"stopped by {name} after {stats.done:,} {job.noun}{failed}"
    if stats.undone:
        again = "no record" if stop.journal is None else "they run again on resume"
        done += f", {stats.undone:,} left undone ({again})"
    if stop.journal is None:
        return (
            f"parallelize: {done}; nothing was recorded: with --journal FILE a rerun "
            f"of the same command skips what is done"
        )
    stdin = " (with the same input on stdin)" if job.reads_stdin else ""
    return f"parallelize: {done}; to resume, run the same command{stdin}: {command_line(argv)}"


def command_line(argv: list[str]) -> str:
    """Return the command line that ran this process, ready to paste into a shell."""
    program = sys.argv[0] if sys.argv else "parallelize"
    if Path(program).name == "__main__.py":  # python -m parallelize
        head = [_on_path(sys.executable), "-m", "parallelize"]
    else:
        head = [_on_path(program)]
    return shlex.join(head + argv)


def _on_path(program: str) -> str:
    """``program``'s bare name if the shell finds this same file by it, else its path."""
    name = Path(program).name
    found = shutil.which(name)
    with contextlib.suppress(OSError):
        if found is not None and Path(found).samefile(program):
            return name
    return program


def run_line(progress: QueueProgress) -> str:
    """Return how far the shared run is, for the line after the summary."""
    p = progress
    state = "finished" if p.finished else f"{p.remaining:,} to go"
    dead = f", {p.dead:,} dead letters" if p.dead else ""
    return (
        f"run {p.run}: {p.done:,} of {p.produced:,} done by all workers "
        f"({p.failed:,} failed{dead}); {state}"
    )
