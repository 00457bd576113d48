"""Running a job: :func:`execute` calls parallelize(), writes the lines, returns the exit code.

The command's options become the run's (a journal, a shared run in Redis, limits,
the progress bar, metrics); each outcome becomes its JSON line in the sink; the
way the run ended becomes the summary and the exit code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from typing import TYPE_CHECKING, Any

from parallelize import (
    AdaptiveLimit,
    Failure,
    Interrupted,
    JournalError,
    MissingDependencyError,
    Progress,
    RateLimit,
    RecordedError,
    Run,
    SQLiteJournal,
    parallelize,
)

from ._errors import (
    EXIT_FAILED,
    EXIT_FAILED_FINAL,
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
)
from ._halt import Halting
from ._shared_run import add_only, make_queue
from ._summary import command_line, interrupted_line, report, run_line

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from parallelize.prometheus import PrometheusExporter

    from ._job import Job
    from ._output import Sink

__all__ = ("execute", "wants_progress")


def wants_progress(option: bool | None, quiet: bool) -> bool:
    """Tell whether to show the progress bar: as asked, else when stderr is a terminal."""
    if quiet:
        return False
    if option is None:
        return sys.stderr.isatty() and importlib.util.find_spec("rich") is not None
    return option


async def execute(job: Job, options: argparse.Namespace, sink: Sink, argv: list[str]) -> int:
    """Run ``job`` with the command's ``options``; write its lines; return the exit code.

    Raises:
        UsageError: The journal cannot be used, or an extra is missing.
    """
    queue = None if options.run_name is None else make_queue(options, job)
    if queue is not None and options.add_only:
        return await add_only(queue, job)
    progress = wants_progress(options.progress, options.quiet)
    journal = options.journal
    exporter = _exporter(options.metrics_port)
    try:
        run = parallelize(
            job.action,
            job.items,
            options.workers,
            on_error="yield",
            timeout=None if job.timeout_in_action else options.timeout or None,
            deadline=options.deadline or None,
            retry=job.retry,
            rate_limit=None
            if options.rate is None
            # With --run, one quota for the whole run: every worker on every machine.
            else queue.rate_limit(options.rate)
            if queue is not None
            else RateLimit(options.rate),
            adaptive=AdaptiveLimit() if options.adaptive else False,
            per_key=job.per_key,
            # A rerun writes every item again: the successes replayed from the
            # journal, the failures and the rest run now (so -o FILE is whole).
            journal=queue
            if queue is not None
            else None
            if journal is None
            else SQLiteJournal(
                journal,
                replay=True,
                retry_failed=_retry_failed(job, options.retry_failed),
                settings=job.settings,
                adopt_settings=options.reuse_journal,
            ),
            key=None if journal is None and queue is None else job.key,
            handle_signals=True,
            stats=True,
            progress=Progress(description=job.noun) if progress else False,
            total=job.total if progress else None,
            observers=() if exporter is None else [exporter],
        )
    except (MissingDependencyError, JournalError) as exc:  # --progress without rich...
        if exporter is not None:
            exporter.close()
        raise UsageError(str(exc)) from exc
    if job.on_run is not None:
        job.on_run(run)
    try:
        if queue is None:
            return await _consume(run, job, options, sink, argv)
        async with queue:
            code = await _consume(run, job, options, sink, argv)
            if not options.quiet:
                progress_now = await queue.progress()
                sys.stderr.write(f"parallelize: {run_line(progress_now)}\n")
            return code
    except JournalError as exc:  # Redis refused us, or did not answer for long
        raise UsageError(str(exc)) from exc
    finally:
        if exporter is not None:
            exporter.close()


def _retry_failed(job: Job, every: bool) -> bool | Callable[[RecordedError], bool]:
    """Return which stored failures a rerun runs again: all, or those not final."""
    final = job.final
    if every or final is None:
        return True

    def again(error: RecordedError) -> bool:
        line = error.data
        return not (isinstance(line, str) and final(line))  # a journal of before: again

    return again


def _exporter(port: int | None) -> PrometheusExporter | None:
    """Return the Prometheus exporter for ``--metrics-port``, serving; None without."""
    if port is None:
        return None
    try:
        from parallelize.prometheus import PrometheusExporter  # noqa: PLC0415 - the extra

        return PrometheusExporter(port=port)
    except MissingDependencyError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on port {port}: {exc.strerror}") from exc


async def _consume(
    run: Run[Any], job: Job, options: argparse.Namespace, sink: Sink, argv: list[str]
) -> int:
    """Write the run's outcomes; return the exit code."""
    write = sink.write
    halting = None if options.halt_after is None else Halting(options.halt_after, run)
    failures = _Failures(job, options, sink, halting)
    sink.start()
    try:
        async with run:
            async for outcome in run:
                if isinstance(outcome, str):  # a result: its line, made by the action
                    write(outcome)
                else:
                    failures.write(outcome)
    except Interrupted as stop:
        sink.flush()
        report(run, options.quiet, job.summary_note)
        sys.stderr.write(interrupted_line(run, stop, job, argv) + "\n")
        return EXIT_INTERRUPTED
    except JournalError as exc:
        raise UsageError(str(exc)) from exc  # it names the journal and the way out
    sink.flush()
    report(run, options.quiet, job.summary_note)
    if halting is not None and halting.halted:
        journal = options.journal if options.run_name is None else f"run {options.run_name}"
        sys.stderr.write(halting.line(job.noun, journal, command_line(argv)) + "\n")
        return EXIT_HALTED
    if not failures.written:
        return EXIT_OK
    return EXIT_FAILED if failures.again else EXIT_FAILED_FINAL


class _Failures:
    """Writes each failure's line; counts them, and those that may yet succeed."""

    __slots__ = ("again", "final", "halting", "keep", "line", "log", "sink", "written")

    def __init__(
        self, job: Job, options: argparse.Namespace, sink: Sink, halting: Halting | None
    ) -> None:
        self.sink = sink
        self.line = job.failure_line
        self.final = job.final
        self.halting = halting
        # -v logs each failure; the library does when it retries (retry=), else we do.
        self.log = options.verbose and job.retry is None
        self.keep = options.journal is not None  # each line goes into the journal
        self.written = 0
        self.again = 0  # failures written that are not final

    def write(self, outcome: Failure) -> None:
        """Write one failure's line: made now, or as a journal kept it (a final one)."""
        error = outcome.exception
        if type(error) is RecordedError and isinstance(error.data, str):
            text = error.data  # replayed as it was written
        else:
            text = self.line(outcome)
            if self.keep:
                with contextlib.suppress(AttributeError):  # an exception without __dict__
                    error.journal_data = text  # type: ignore[attr-defined]
        self.sink.write(text)
        self.written += 1
        if self.final is None or not self.final(text):
            self.again += 1
        if self.log:
            _log_failure(outcome)
        if self.halting is not None:
            self.halting.failed()


def _log_failure(failure: Failure) -> None:
    """Log one failure as the library does under retry= (shown with -v)."""
    error = failure.exception
    logging.getLogger("parallelize").error(
        "item %r failed: %r",
        failure.item,
        error,
        exc_info=error,
        extra={"item": failure.item, "attempt": failure.attempts, "error": error},
    )
