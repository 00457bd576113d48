"""``handle_signals``: SIGINT/SIGTERM stop a run gracefully, then cancel it.

The first signal stops the run taking new items (the flow's ``stopping``) and leaves
the items in flight a grace period to finish; the second, or the end of the grace,
cancels them. The run raises ``Interrupted`` once it has ended (see ``Run``).
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from parallelize._signals import SignalHandlers

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from ._flow import Flow

__all__ = ("Grace",)

logger = logging.getLogger("parallelize")


class Grace:
    """A run's signal handlers and its grace period (``handle_signals=``)."""

    __slots__ = ("cancel", "flow", "handlers", "interrupted", "loop", "seconds", "timer")

    def __init__(
        self,
        seconds: float,
        flow: Flow,
        loop: asyncio.AbstractEventLoop,
        cancel: Callable[[], None],
    ) -> None:
        self.seconds = seconds
        self.flow = flow
        self.loop = loop
        self.cancel = cancel  # cancels the items in flight (Run._cancel)
        self.interrupted: int | None = None  # the signal that stopped the run
        self.timer: asyncio.TimerHandle | None = None
        self.handlers = SignalHandlers(loop, self.on_signal)
        self.handlers.install()

    def on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: first stop taking items (grace), then cancel at once."""
        name = signal.Signals(signum).name
        if self.interrupted is not None:
            logger.warning("%s again: cancelling the items in flight now", name)
            self.cancel()
            return
        self.interrupted = signum
        self.flow.stopping = True
        logger.warning(
            "%s: stopping: no new items; those in flight may finish for %g s "
            "(%s again to cancel them now)",
            name,
            self.seconds,
            name,
            extra={"signal": name},
        )
        self.flow.wake_all_workers()  # sleeping workers see the stop and end
        self.timer = self.loop.call_later(self.seconds, self.cancel)

    def restore(self) -> None:
        """Cancel the grace's timer and restore the handlers: the run has ended."""
        if self.timer is not None:
            self.timer.cancel()
        self.handlers.restore()
