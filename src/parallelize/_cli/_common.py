"""What both commands share: input lines, the output sink, options, the run's ending.

The commands build a job (an action, its items and the options for
:func:`~parallelize.parallelize`); :func:`execute` runs it, writes one JSON line per
outcome, prints the summary and turns the way it ended into an exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import shlex
import shutil
import signal
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self, TextIO, TypeVar

from parallelize import (
    AdaptiveLimit,
    Failure,
    Interrupted,
    JournalError,
    MissingDependencyError,
    Progress,
    RateLimit,
    Retry,
    Run,
    SQLiteJournal,
    parallelize,
)
from parallelize._redis import NO_INPUT

__all__ = (
    "ENCODE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_USAGE",
    "Job",
    "NotUTF8",
    "OutputError",
    "Sink",
    "UsageError",
    "check_distinct_files",
    "check_journal",
    "command_line",
    "count_items",
    "error_text",
    "execute",
    "open_input",
    "open_output",
    "read_items",
    "run_loop",
    "setup_logging",
    "wants_progress",
)

if TYPE_CHECKING:
    import argparse

    from parallelize.prometheus import PrometheusExporter

T = TypeVar("T")

EXIT_OK = 0  # every item succeeded
EXIT_FAILED = 1  # some items failed (their records say why)
EXIT_USAGE = 2  # a bad option, input, output, function or journal: nothing useful was done
EXIT_INTERRUPTED = 130  # stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it)
EXIT_OUTPUT = 74  # the output could not be written (a full disk): sysexits' EX_IOERR

# One encoder, made once (json.dumps with options builds one per call). ASCII only:
# the output is valid in any locale's encoding, and bytes-for-bytes stable.
ENCODE = json.JSONEncoder(allow_nan=False).encode

# Lines wait in memory at most this long (or this many) before they are written.
_FLUSH_SECONDS = 0.2
_FLUSH_LINES = 1024
# A pipe on stdin is read by a thread, this many bytes at a time, at most this many
# chunks ahead of the run.
_CHUNK = 1 << 16
_CHUNKS_AHEAD = 4


class UsageError(Exception):
    """A mistake in how the command was called: exit 2 with this one-line message.

    Attributes:
        prog: The command to name before the message (default: the one running).
    """

    def __init__(self, message: str, *, prog: str | None = None) -> None:
        """Say what is wrong and what to do, in one line."""
        super().__init__(message)
        self.prog = prog


class OutputError(Exception):
    """The output could not be written: exit 74 with this one-line message.

    Raised instead of the stream's ``OSError`` (a full disk, a device that refuses
    writes). A closed pipe stays a ``BrokenPipeError``: it ends the command as
    SIGPIPE would.
    """


def error_text(exc: BaseException) -> str:
    """Return ``TypeName: message`` for an exception, as an error record's message."""
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name


# -- input --------------------------------------------------------------------------

Parse = Callable[[int, str], T | None]


@contextlib.contextmanager
def open_input(path: str | None, what: str) -> Iterator[IO[bytes] | None]:
    """Open the input for reading (``-``: stdin, left open), or raise :class:`UsageError`.

    None when there is no input: a worker of a run shared through Redis.
    """
    if path is None:
        yield None
        return
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = Path(path).open("rb")  # noqa: SIM115 - the with below closes it
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc
    with stream:
        yield stream


def is_regular_file(stream: IO[bytes]) -> bool:
    """Tell whether ``stream`` is a file on disk (not a pipe or a terminal)."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def read_items(stream: IO[bytes] | None, parse: Parse[T]) -> Iterable[T] | AsyncIterator[T]:
    """Return the items of ``stream``: ``parse(number, text)`` of each line but None.

    A file on disk is read as a plain iterator (it never blocks for long). A pipe or
    a terminal is read by a thread, so that a slow writer cannot freeze the event
    loop and every request in flight with it. No stream: no input of this process's
    own (a worker of a run shared through Redis).
    """
    if stream is None:
        return NO_INPUT
    if is_regular_file(stream):
        return _file_items(stream, parse)
    return _pipe_items(stream, parse)


def count_items(stream: IO[bytes] | None, parse: Parse[Any]) -> int | None:
    """How many items a file on disk holds (for the progress bar's ETA), or None."""
    if stream is None or not is_regular_file(stream):
        return None
    position = stream.tell()
    try:
        return sum(1 for _ in _file_items(stream, parse))
    finally:
        stream.seek(position)


class NotUTF8(str):
    """An input line that is not UTF-8, decoded with U+FFFD for each bad byte.

    The commands make it a failure record (it is no URL, no JSON) instead of
    passing the replacement characters on as if they had been read.

    Attributes:
        reason: Where the first bad byte is, for the record's message.
    """

    __slots__ = ("reason",)
    reason: str


def decode_line(raw: bytes) -> str:
    """Return a line's text; a :class:`NotUTF8` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = NotUTF8(raw.decode("utf-8", "replace").strip())
        text.reason = f"the line is not UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}"
        return text


def _file_items(stream: IO[bytes], parse: Parse[T]) -> Iterator[T]:
    for number, raw in enumerate(stream, 1):
        item = parse(number, decode_line(raw))
        if item is not None:
            yield item


async def _pipe_items(stream: IO[bytes], parse: Parse[T]) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    room = threading.Semaphore(_CHUNKS_AHEAD)  # backpressure: the reader stays ahead by 4
    # A daemon thread, never joined: a read from a terminal cannot be interrupted, and
    # waiting for it would hang the exit after Ctrl-C. It holds nothing but the fd.
    threading.Thread(
        target=_read_chunks,
        args=(stream.fileno(), loop, chunks, room),
        name="parallelize-stdin",
        daemon=True,
    ).start()
    number = 0
    rest = b""
    while True:
        data = await chunks.get()
        room.release()
        if not data:
            break
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        for raw in lines:
            number += 1
            item = parse(number, decode_line(raw))
            if item is not None:
                yield item
    if rest:
        item = parse(number + 1, decode_line(rest))
        if item is not None:
            yield item


def _read_chunks(
    fd: int,
    loop: asyncio.AbstractEventLoop,
    chunks: asyncio.Queue[bytes],
    room: threading.Semaphore,
) -> None:
    """Read ``fd`` to its end in a thread, handing each chunk to the loop (b"": the end)."""
    while True:
        room.acquire()
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            data = b""
        try:
            loop.call_soon_threadsafe(chunks.put_nowait, data)
        except RuntimeError:  # the loop is closed: nobody reads any more
            return
        if not data:
            return


def check_journal(path: str | None) -> None:
    """Refuse a ``--journal`` path whose directory does not exist (before any work)."""
    if path is None:
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(
            f"cannot create the journal {path!r}: no directory {str(folder)!r}; "
            f"make it, or give another path"
        )


def check_distinct_files(
    stream: IO[bytes] | None,
    input_name: str,
    *,
    output: str | None,
    journal: str | None,
    save_dir: str | None = None,
) -> None:
    """Refuse an output, journal or ``--save-dir`` that is the input or one another.

    Compared by device and inode, not by name (``./urls.txt``, a hard link or a
    symbolic link name the same file), before anything is opened for writing:
    ``-o urls.txt`` on the input would truncate it to nothing. Stdout counts as the
    output when it is a file (``> urls.txt`` is the shell's own doing, but
    ``>> urls.txt`` would feed the run its own lines).
    """
    files = _identities(stream, input_name, output=output, journal=journal, save_dir=save_dir)
    for i, (what, identity) in enumerate(files):
        for other, other_identity in files[:i]:
            if identity == other_identity:
                raise UsageError(
                    f"{what} is the same file as {other}: the command would overwrite "
                    f"what it reads or writes; give each its own file"
                )


def _identities(
    stream: IO[bytes] | None,
    input_name: str,
    *,
    output: str | None,
    journal: str | None,
    save_dir: str | None,
) -> list[tuple[str, tuple[int, int]]]:
    """Name and (device, inode) of each of the command's files that exists."""
    files: list[tuple[str, tuple[int, int]]] = []
    if stream is not None:
        identity = _identity_of_stream(stream)
        if identity is not None:
            files.append((input_name, identity))
    named = [("the output (-o)", output), ("the --journal", journal), ("the --save-dir", save_dir)]
    if output is None or output == "-":
        identity = _identity_of_stream(sys.stdout)
        if identity is not None:
            files.append(("the output (stdout)", identity))
        named = named[1:]
    for what, path in named:
        if path is None:
            continue
        try:
            info = Path(path).stat()
        except OSError:
            continue  # not there yet: it cannot be any other file
        files.append((f"{what} {path!r}", (info.st_dev, info.st_ino)))
    return files


def _identity_of_stream(stream: IO[Any]) -> tuple[int, int] | None:
    """Return the (device, inode) of the regular file behind ``stream``, else None."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's StringIO)
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


# -- output -------------------------------------------------------------------------


def open_output(path: str | None) -> Sink:
    """Open the output file (None or ``-``: stdout) as a :class:`Sink`.

    Raises:
        UsageError: The file cannot be opened for writing.
    """
    if path is None or path == "-":
        return Sink(sys.stdout)
    try:
        stream = Path(path).open("w", encoding="utf-8", newline="\n")  # noqa: SIM115 - the Sink closes it
    except OSError as exc:
        raise UsageError(f"cannot write the output file {path!r}: {exc.strerror or exc}") from exc
    return Sink(stream, repr(path))


class Sink:
    """Lines to a text stream, written in batches: every 1024 lines or 0.2 s.

    One ``write`` and one ``flush`` per batch instead of per line: at thousands of
    lines a second a flush per line would cost more than the rest of the CLI. A loop
    timer flushes what a slow tail leaves in the batch, so the output never lags by
    more than 0.2 s. An error of the stream (a closed pipe) met by the timer is
    raised by the next :meth:`write` or :meth:`close`.
    """

    def __init__(self, stream: TextIO, name: str = "stdout") -> None:
        """Write to ``stream``, called ``name`` in messages.

        Call :meth:`start` on the event loop to flush by time.
        """
        self.stream = stream
        self.name = name
        self.written = 0  # lines written so far
        # Where the last whole batch ended in a regular file: a failed write is cut
        # back to it, so that every line of the file is a whole JSON line.
        self._good: int | None = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = stream.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self._good = os.lseek(fd, 0, os.SEEK_CUR)
        # Lines for stdout go to whatever sys.stdout is when written: the progress
        # bar, while shown on the same terminal, puts its own stream there, which
        # prints them above the bar instead of into it.
        self._stdout = stream is sys.stdout
        self.lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._error: Exception | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Flush at least every 0.2 s from now on (until :meth:`close`)."""
        self._timer = asyncio.get_running_loop().call_later(_FLUSH_SECONDS, self._tick)

    def write(self, line: str) -> None:
        """Add one line (without its newline)."""
        if self._error is not None:
            raise self._error
        lines = self.lines
        lines.append(line)
        if len(lines) >= _FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write the waiting lines now.

        Raises:
            OutputError: The stream refused the lines (a full disk); a regular file
                is cut back to its last whole line first.
            BrokenPipeError: The reader of a pipe went away.
        """
        if self._error is not None:
            raise self._error
        stream = sys.stdout if self._stdout else self.stream
        lines = self.lines
        try:
            if lines:
                stream.write("\n".join(lines) + "\n")
            stream.flush()
        except BrokenPipeError as exc:
            self._error = exc
            raise
        except OSError as exc:
            self._error = self._failed(exc)
            raise self._error from exc
        self.written += len(lines)
        lines.clear()
        if self._good is not None:
            self._good = os.lseek(stream.fileno(), 0, os.SEEK_CUR)

    def _failed(self, exc: OSError) -> OutputError:
        """Cut a regular file back to its last whole line; say what failed."""
        if self._good is not None:
            with contextlib.suppress(OSError, ValueError):
                os.ftruncate(self.stream.fileno(), self._good)
        reason = exc.strerror or str(exc)
        return OutputError(
            f"cannot write the output {self.name}: {reason} (after {self.written:,} whole lines)"
        )

    def _tick(self) -> None:
        try:
            self.flush()
        except (OSError, OutputError):
            return  # kept in _error: raised by the next write() or close()
        self.start()

    def close(self) -> None:
        """Write what waits, stop the timer; close the stream unless it is stdout."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            if self._error is None:
                self.flush()
        finally:
            if not self._stdout:
                try:
                    self.stream.close()
                except OSError:  # what the buffer held: refused again
                    if self._error is None:
                        raise


# -- running ------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Job:
    """One command's work, ready for :func:`execute`.

    Attributes:
        action: What runs per item; returns the item's JSON line (so that a journal
            stores, and replays, exactly what was written).
        items: The items, from :func:`read_items`.
        failure_line: Turns a :class:`~parallelize.Failure` into its JSON line.
        noun: What the items are, plural, for messages ("URLs").
        retry: The retry policy, or None.
        key: With a journal, the function naming an item across runs, or None for
            its position in the input.
        reads_stdin: Whether the items come from stdin (said in the resume hint).
        total: How many items there are, for the progress bar, or None.
        summary_note: Said at the end of the summary line ("client aiohttp").
        timeout_in_action: The action enforces --timeout itself (the run does not).
        settings: What shapes an outcome besides the item (the request's method and
            headers, the function): a journal stores them and refuses a rerun
            whose settings differ (``--reuse-journal`` adopts them instead).
    """

    action: Callable[..., Any]
    items: Iterable[Any] | AsyncIterator[Any]
    failure_line: Callable[[Failure], str]
    noun: str
    reads_stdin: bool = False
    retry: Retry[Any] | None = None
    key: Callable[[Any], int | str] | None = None
    total: int | None = None
    summary_note: str | None = None
    timeout_in_action: bool = False
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


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
    from ._queue import add_only, make_queue  # noqa: PLC0415 - it imports this module

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
            # A rerun writes every item again: the successes replayed from the
            # journal, the failures and the rest run now (so -o FILE is whole).
            journal=queue
            if queue is not None
            else None
            if journal is None
            else SQLiteJournal(
                journal,
                replay=True,
                retry_failed=True,
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
    try:
        if queue is None:
            return await _consume(run, job, options, sink, argv)
        async with queue:
            code = await _consume(run, job, options, sink, argv)
            if not options.quiet:
                progress_now = await queue.progress()
                sys.stderr.write(f"parallelize: {_run_line(progress_now)}\n")
            return code
    except JournalError as exc:  # Redis refused us, or did not answer for long
        raise UsageError(str(exc)) from exc
    finally:
        if exporter is not None:
            exporter.close()


def _run_line(progress: Any) -> str:
    p = progress
    state = "finished" if p.finished else f"{p.remaining:,} to go"
    dead = f", {p.dead:,} dead letters" if p.dead else ""
    return (
        f"run {p.run}: {p.done:,} of {p.produced:,} done by all workers "
        f"({p.failed:,} failed{dead}); {state}"
    )


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
    failure_line = job.failure_line
    # -v logs each failure; the library does when it retries (retry=), else we do.
    log_failures = options.verbose and job.retry is None
    sink.start()
    try:
        async with run:
            async for outcome in run:
                if isinstance(outcome, str):  # a result: its line, made by the action
                    write(outcome)
                else:
                    write(failure_line(outcome))
                    if log_failures:
                        _log_failure(outcome)
    except Interrupted as stop:
        sink.flush()
        report(run, options.quiet, job.summary_note)
        sys.stderr.write(_interrupted_line(run, stop, job, argv) + "\n")
        return EXIT_INTERRUPTED
    except JournalError as exc:
        raise UsageError(str(exc)) from exc  # it names the journal and the way out
    sink.flush()
    report(run, options.quiet, job.summary_note)
    return EXIT_FAILED if run.statistics().failed else EXIT_OK


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


def report(run: Run[Any], quiet: bool, note: str | None = None) -> None:
    """Write the run's summary (counts, elapsed, rate, latency, ``note``) to stderr."""
    if not quiet:
        summary = run.statistics().summary()
        if note:
            summary = f"{summary}; {note}"
        sys.stderr.write(summary + "\n")
        sys.stderr.flush()


def _interrupted_line(run: Run[Any], stop: Interrupted, job: Job, argv: list[str]) -> str:
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


# -- logging ------------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler[TextIO]):
    """The CLI's own handler, told apart from any other on the logger.

    It writes to whatever ``sys.stderr`` is at the time, so that the progress bar,
    which puts its own stream there while it is shown, keeps log lines above it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` to the current ``sys.stderr``."""
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: bool) -> None:
    """Show parallelize's warnings on stderr (a signal received, a journal's advice).

    The per-item failure messages are left out unless ``verbose``: each failure is
    in the output already, as its record.
    """
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("parallelize: %(message)s"))
    if not verbose:
        handler.addFilter(lambda record: not hasattr(record, "item"))
    logger = logging.getLogger("parallelize")
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)  # main() called again in one process
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def run_loop(main: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run ``main`` in a new event loop: uvloop's when installed and wanted."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop  # noqa: PLC0415 - optional, imported where used
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
