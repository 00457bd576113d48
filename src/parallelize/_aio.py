"""Asyncio plumbing that the standard library does not offer as such."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any, final

__all__ = ("Deadlines", "start_without_hooks")


def start_without_hooks(generator: AsyncGenerator[Any, None]) -> None:
    """Advance ``generator`` to its first ``yield`` with no async-generator hooks set.

    The event loop's hooks (``sys.set_asyncgen_hooks``) are bound to an async
    generator on its first step. Without them, a generator the consumer drops before
    the end is closed at once by the garbage collector, instead of by a task that the
    loop's finalizer hook schedules for later. That task would outlive ``aclose()``,
    and scheduling it from a finalizer crashes uvloop in debug mode (uvloop issue
    730). Our generators need no async clean-up: the run's own ``aclose()`` does it.
    """
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
    try:
        # The first step only reaches the generator's opening ``yield``.
        generator.asend(None).send(None)
    except StopIteration:
        pass
    finally:
        sys.set_asyncgen_hooks(*hooks)


@final
class Deadlines:
    """``asyncio.timeout(seconds)`` for many tasks at once, with one loop timer.

    Every task's limit is the same, so their deadlines come in the order they
    entered: a queue, its head the next to fall due, and one timer set for the
    head. ``asyncio.timeout`` costs a timer handle per call; at thousands of
    requests a second that cost shows (aiohttp's own ``ClientTimeout`` costs more:
    about 10% of a small request's CPU). Entries that left are dropped from the
    head as they leave; one stuck head keeps at most ``seconds`` of entries behind it.

    Usage, within one task::

        entry = deadlines.enter()
        try:
            ...
        except asyncio.CancelledError:
            if deadlines.expired(entry):
                raise TimeoutError from None
            raise
        finally:
            deadlines.leave(entry)
    """

    __slots__ = ("_handle", "_loop", "_queue", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[list[Any]] = deque()
        self._handle: asyncio.TimerHandle | None = None

    def enter(self) -> list[Any]:
        """Start the current task's time; return its entry."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        # [deadline, task (None once left), its cancelling() count, expired]
        deadline = loop.time() + self.seconds
        entry = [deadline, task, task.cancelling(), False]
        self._queue.append(entry)
        if self._handle is None:
            self._handle = loop.call_at(deadline, self._expire)
        return entry

    def leave(self, entry: list[Any]) -> None:
        """End the entry's time (on every way out of the guarded block)."""
        entry[1] = None
        queue = self._queue
        while queue and queue[0][1] is None:
            queue.popleft()
        if not queue and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @staticmethod
    def expired(entry: list[Any]) -> bool:
        """Tell whether a CancelledError in the entry's task is its timeout's.

        Call it once, in ``except CancelledError``: it takes back the cancellation
        when it was ours, as ``asyncio.timeout`` does.
        """
        if not entry[3]:
            return False
        task: asyncio.Task[Any] = entry[1]
        cancelling: int = entry[2]
        return task.uncancel() <= cancelling

    def _expire(self) -> None:
        loop = self._loop
        assert loop is not None
        self._handle = None
        queue = self._queue
        now = loop.time()
        # Timers may fire up to a millisecond early (uvloop): within it counts as due.
        while queue and (queue[0][1] is None or queue[0][0] <= now + 0.001):
            entry = queue.popleft()
            task = entry[1]
            if task is not None:
                entry[3] = True
                task.cancel()
        if queue:
            self._handle = loop.call_at(queue[0][0], self._expire)
