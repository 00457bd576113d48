"""The live progress display: a ``rich`` line on stderr, redrawn from a timer.

The display never touches the workers: a loop timer reads :meth:`Run.statistics`
ten times a second and redraws one line. So the run pays a handful of integer
increments per item and the display a millisecond per redraw, whatever the rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections import deque
from typing import IO, TYPE_CHECKING, Any, final

from ._errors import MissingDependencyError
from ._observe import Observer
from ._util import check_number

if TYPE_CHECKING:
    from ._engine import Run
    from ._limits import KeyStatistics
    from ._stats import Statistics

__all__ = ("Progress",)

# The rate (and so the ETA) is measured over this many seconds of recent progress.
_RATE_WINDOW = 10.0
_BAR = 20  # characters of the bar


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """How ``parallelize(..., progress=...)`` shows its progress bar.

    ``progress=True`` is ``Progress()``. The bar is drawn with ``rich`` (the
    ``progress`` extra) and only when ``file`` is a terminal: output redirected
    to a file or a pipe never holds it. While it is shown, lines written to
    ``sys.stdout`` and ``sys.stderr`` appear above it: ``print()``, and the
    ``logging`` handlers that write there, even those made before the bar
    started (``logging.basicConfig()``'s).

    Attributes:
        description: A word or two before the bar (default: the run's ``name``,
            which is its action's name unless ``name=`` says otherwise).
        file: The stream to draw on (default: ``sys.stderr`` when the run starts).
        refresh_per_second: Redraws per second (default 10).
    """

    description: str | None = None
    file: IO[str] | None = None
    refresh_per_second: float = 10.0

    def __post_init__(self) -> None:
        if self.description is not None and not isinstance(self.description, str):
            raise TypeError(f"Progress.description must be a str, got {self.description!r}")
        check_number("Progress.refresh_per_second", self.refresh_per_second, above=0, at_most=100)

    def observer(self) -> Observer:
        """Return the display for one run (an :class:`~parallelize.Observer`)."""
        try:
            import rich  # noqa: F401, PLC0415 - an optional extra, imported when used
        except ImportError as exc:
            raise MissingDependencyError("progress=", "progress", "rich") from exc
        return _Display(self)


class _Board:
    """One live display on one stream, one line per run drawing there.

    The stages of a pipeline (or any runs at once) that show progress on the same
    terminal share it: two ``rich`` live displays on one terminal would overwrite
    each other. Redrawn by a loop timer; stopped when its last run ends, every run's
    final line left on the screen.
    """

    def __init__(self, stream: IO[str], key: int, refresh_per_second: float) -> None:
        from rich.console import Console  # noqa: PLC0415 - the extra, when shown
        from rich.live import Live  # noqa: PLC0415

        self._key = key
        self._period = 1 / refresh_per_second
        self._lines: list[_Display] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the runs' loop, once started
        self._routes: list[_Route] = []
        # soft_wrap: lines printed above the bar (JSON records) are never cut in two.
        # force_terminal: checked by the caller; rich would check again, environment
        # and all, dozens of times per redraw.
        console = Console(file=stream, soft_wrap=True, force_terminal=True)
        self._live = Live(
            console=console,
            auto_refresh=False,  # redrawn by our loop timer: no thread
            transient=False,  # the last lines stay: the final counts
            redirect_stdout=_is_terminal(sys.stdout),
            redirect_stderr=True,
        )

    def add(self, display: _Display) -> None:
        """Add a run's line; the first starts the display and its timer.

        Called from the run's ``run_started`` hook, on the run's own loop: the
        timer goes on the loop running now.
        """
        self._lines.append(display)
        if len(self._lines) == 1:
            streams = (sys.stdout, sys.stderr)
            self._loop = asyncio.get_running_loop()
            self._live.start()
            self._routes = _route_handlers(streams, (sys.stdout, sys.stderr))
            self._tick()

    def _tick(self) -> None:
        self._live.update(self._render(), refresh=True)
        assert self._loop is not None
        self._timer = self._loop.call_later(self._period, self._tick)

    def _render(self) -> Any:
        from rich.console import Group  # noqa: PLC0415 - the extra

        lines = [display.line() for display in self._lines]
        return lines[0] if len(lines) == 1 else Group(*lines)

    def finished(self) -> None:
        """Stop once every run on this board has ended (one just did)."""
        if not all(display.ended for display in self._lines):
            return
        if self._timer is not None:
            self._timer.cancel()
        del _BOARDS[self._key]
        try:
            try:
                # The last frame: drawn once, by stop().
                self._live.update(self._render(), refresh=False)
            finally:
                self._live.stop()
        finally:
            # After stop(): a line logged until then still goes above the bar.
            _restore_handlers(self._routes)
            self._routes = []


# The live boards by stream (its id): one per terminal.
_BOARDS: dict[int, _Board] = {}


class _Display(Observer):
    """Draws one run's progress line; inert when its stream is not a terminal."""

    def __init__(self, settings: Progress) -> None:
        self._settings = settings
        self._run: Run[Any] | None = None
        self._board: _Board | None = None
        self._final: Any = None  # the last line, once the run has ended
        self.ended = False
        self._samples: deque[tuple[float, int]] = deque()

    def run_started(self, run: Run[Any]) -> None:
        stream = self._settings.file or sys.stderr
        # While a board is live, rich has replaced sys.stderr by a proxy of it.
        stream = getattr(stream, "rich_proxied_file", stream)
        if not _is_terminal(stream):
            return
        self._run = run
        key = _terminal_key(stream)
        board = _BOARDS.get(key)
        if board is None:
            board = _BOARDS[key] = _Board(stream, key, self._settings.refresh_per_second)
        self._board = board
        board.add(self)

    def line(self) -> Any:
        """Return the run's line now (its last one once it has ended)."""
        if self._final is not None:
            return self._final
        assert self._run is not None
        return self._render(self._run.statistics())

    def run_finished(self, run: Run[Any], error: BaseException | None) -> None:  # noqa: ARG002
        if self._board is None:
            return
        self._final = self._render(run.statistics())
        self.ended = True
        self._board.finished()
        self._board = None

    def _recent_rate(self, stats: Statistics) -> float:
        """Items per second over the last few seconds (the whole run's at the end)."""
        samples = self._samples
        ran = stats.succeeded + stats.failed
        samples.append((stats.elapsed, ran))
        while samples[0][0] < stats.elapsed - _RATE_WINDOW:
            samples.popleft()
        if stats.finished:
            return stats.rate
        then, before = samples[0]
        span = stats.elapsed - then
        return (ran - before) / span if span > 0 else stats.rate

    def _render(self, stats: Statistics) -> Any:
        from rich.text import Text  # noqa: PLC0415 - the extra

        rate = self._recent_rate(stats)
        total = stats.total
        if total is not None:
            count = f"{stats.done:,}/{total:,}"
            left = max(0, total - stats.done)
            eta = _clock(left / rate) if rate > 0 else "--:--"
            if stats.finished:
                eta = "done" if not left else "stopped"
        else:
            count = f"{stats.done:,}"
            eta = "--:--" if not stats.finished else "ended"
        # The most telling first: a narrow terminal cuts the line's end.
        parts: list[str | tuple[str, str]] = [count, f"{rate:,.0f}/s", f"ETA {eta}"]
        if stats.failed:
            parts.append((f"failed {stats.failed:,}", "red"))
        if stats.retries:
            parts.append(f"retries {stats.retries:,}")
        parts.append(f"in flight {stats.in_flight:,}")
        parts.append(f"limit {stats.limit:,}")
        parts.extend(_keys(stats.keys))
        if stats.replayed or stats.skipped:
            parts.append(f"from journal {stats.replayed + stats.skipped:,}")
        parts.append(f"elapsed {_clock(stats.elapsed)}")
        # One Text line (a table costs three times as much to draw): the description,
        # a bar when the total is known, then the figures; cut at the terminal's edge.
        line = Text(no_wrap=True, overflow="ellipsis")
        assert self._run is not None
        line.append((self._settings.description or self._run.name) + " ")
        if total:
            filled = min(_BAR, stats.done * _BAR // total)
            line.append("━" * filled, style="green" if filled == _BAR else "magenta")
            line.append("━" * (_BAR - filled) + " ", style="grey23")
        for number, part in enumerate(parts):
            if number:
                line.append(" · ")
            if isinstance(part, tuple):
                line.append(*part)
            else:
                line.append(part)
        return line


def _keys(keys: KeyStatistics | None) -> list[str | tuple[str, str]]:
    """Say how the keys of limits per key fare, and the items set aside (if any)."""
    if keys is None:
        return []
    if not keys.limited:  # a breaker alone: only the keys down are news
        return [(f"{keys.open:,} keys down", "red")] if keys.open else []
    line = f"keys {keys.active:,} active"
    if keys.paused:
        line += f", {keys.paused:,} paused"
    parts: list[str | tuple[str, str]] = [line]
    if keys.open:
        parts.append((f"{keys.open:,} down", "red"))  # breakers open
    if keys.set_aside:
        aside = f"set aside {keys.set_aside:,}"
        if keys.set_aside >= keys.set_aside_limit:
            aside += " (reading held)"  # the bound: the input is read no further
        parts.append(aside)
    return parts


@dataclasses.dataclass(frozen=True, slots=True)
class _Route:
    """A logging handler drawn through the bar's console while it is shown."""

    handler: logging.StreamHandler[Any]
    original: IO[str]  # its stream before the bar
    proxy: IO[str]  # the stream rich put in sys.stdout or sys.stderr


def _route_handlers(before: tuple[IO[str], ...], after: tuple[IO[str], ...]) -> list[_Route]:
    """Send the log handlers writing to a redirected stream through its proxy.

    ``rich`` shows lines above the bar by putting a proxy in ``sys.stdout`` and
    ``sys.stderr`` (``after``) while it is live, but a ``StreamHandler`` made
    earlier (``logging.basicConfig()``'s) keeps the stream it was given, the one
    in ``before``: its lines would be glued to the bar and leave stale copies of it.
    So, until the bar stops, each such handler writes to the proxy of its stream:
    the same object, or the same file descriptor (``sys.__stderr__``). Handlers of
    files, and of streams rich did not redirect, are left alone.
    """
    proxies: dict[int, IO[str]] = {}
    by_fd: dict[int, IO[str]] = {}
    for old, new in zip(before, after, strict=True):
        if new is old:
            continue  # not redirected (not a terminal, or by an earlier display)
        proxies[id(old)] = new
        fd = _fileno(old)
        if fd is not None:
            by_fd.setdefault(fd, new)
    if not proxies:
        return []
    # Every logger's handlers: an application's own loggers may not propagate to
    # the root. The manager's dict is the only list of loggers there is.
    loggers: list[object] = [logging.root, *logging.root.manager.loggerDict.values()]
    routes: dict[logging.Handler, _Route] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # a PlaceHolder has none
            if handler in routes or not isinstance(handler, logging.StreamHandler):
                continue
            stream = handler.stream
            proxy = proxies.get(id(stream))
            if proxy is None:
                fd = _fileno(stream)
                proxy = by_fd.get(fd) if fd is not None else None
            if proxy is None:
                continue
            # Under the handler's lock: a thread may be logging through it now.
            handler.acquire()
            try:
                handler.stream = proxy
            finally:
                handler.release()
            routes[handler] = _Route(handler, stream, proxy)
    return list(routes.values())


def _restore_handlers(routes: list[_Route]) -> None:
    """Give each routed handler its stream back, unless someone changed it since.

    Never raises: a handler always ends its line and flushes, so the proxy holds
    nothing to write out.
    """
    for route in routes:
        handler = route.handler
        handler.acquire()
        try:
            if handler.stream is route.proxy:
                handler.stream = route.original
        finally:
            handler.release()


def _fileno(stream: object) -> int | None:
    """Return the file descriptor behind ``stream``, if it has one."""
    fileno = getattr(stream, "fileno", None)
    try:
        fd = fileno() if callable(fileno) else None
    except (OSError, ValueError):  # io.UnsupportedOperation is both; or closed
        return None
    return fd if isinstance(fd, int) else None


def _terminal_key(stream: IO[str]) -> int:
    """Tell which terminal a stream writes to: its file descriptor (else itself)."""
    fd = _fileno(stream)
    return id(stream) if fd is None else fd


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _clock(seconds: float) -> str:
    """``H:MM:SS`` (``M:SS`` under an hour)."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
