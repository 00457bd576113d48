"""SIGINT and SIGTERM during a run: stop taking items, finish, flush, then say so.

Used by ``parallelize(..., handle_signals=True)``. The handlers live on the event
loop only while the run does; the ones that were there before (asyncio.run's own
SIGINT handler, say) come back when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from typing import Any, final

__all__ = ("SignalHandlers",)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@final
class SignalHandlers:
    """Route SIGINT and SIGTERM to ``callback(signum)`` until :meth:`restore`."""

    __slots__ = ("_callback", "_loop", "_previous")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[int], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._previous: dict[int, Any] = {}

    def install(self) -> bool:
        """Install the handlers; return False where signals cannot be handled.

        That is outside the main thread, or on a loop without signal support
        (Windows' proactor loop).
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            try:
                self._loop.add_signal_handler(signum, self._callback, signum)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                self.restore()
                return False
            self._previous[signum] = previous
        return True

    def restore(self) -> None:
        """Give the signals back to whoever handled them before."""
        for signum, previous in self._previous.items():
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(signum)
            with contextlib.suppress(Exception):
                signal.signal(signum, previous)
        self._previous = {}
