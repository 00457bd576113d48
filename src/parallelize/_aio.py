"""Asyncio plumbing that the standard library does not offer as such."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any, final

__all__ = ("Deadlines", "PullLock", "start_without_hooks")


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


@final
class PullLock:
    """The lock under which a run's workers take turns pulling one async iterator.

    ``asyncio.Lock`` is fair: once a task waits for it, every ``acquire()`` waits in
    line, free lock or not, and each hand-over costs a future and a pass of the event
    loop (the next owner runs in the loop's next iteration). Workers pulling a
    pipeline's earlier stage fall into a convoy that never ends: a worker that finds
    the earlier stage empty waits holding the lock, the others line up behind it, and
    from then on every item is one hand-over, one item per pass of the loop.

    Here a free lock is taken at once, waiters or not, and a release wakes one
    waiter unless one woken earlier has not run yet. The woken waiter takes the lock
    if it is still free and otherwise waits again, first in line. Workers are
    interchangeable, so taking turns in any order is fine (the engine numbers the
    items under the lock: the input order is kept). So a worker whose pull does not
    suspend pulls item after item without a future, and a wake-up is paid once per
    wait for the input, not once per item.

    Usage, with the fast path inlined::

        if not lock.acquire_nowait():
            await lock.acquire()
        try:
            item = await anext(source)
        finally:
            lock.release()
    """

    __slots__ = ("_locked", "_waiters", "_woken")

    def __init__(self) -> None:
        self._locked = False
        # Tasks waiting for the lock, first in line first; a woken one has left it.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._woken = False  # a waiter was woken and has not run yet

    def locked(self) -> bool:
        """Tell whether a task holds the lock."""
        return self._locked

    def acquire_nowait(self) -> bool:
        """Take the lock if it is free (whoever waits for it); tell whether it was."""
        if self._locked:
            return False
        self._locked = True
        return True

    async def acquire(self) -> None:
        """Take the lock, waiting until it is free."""
        if not self._locked:
            self._locked = True
            return
        waiters = self._waiters
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        while True:
            try:
                await waiter
            except BaseException:
                if waiter.cancelled():
                    waiters.remove(waiter)  # never woken: still in line
                else:
                    # Woken, then cancelled before it ran: pass the turn on.
                    self._woken = False
                    if not self.locked():  # a call: the checker keeps no narrowing across it
                        self._wake()
                raise
            self._woken = False
            if not self.locked():
                self._locked = True
                return
            # Taken meanwhile by a task that found it free: wait again, first in line.
            waiter = waiter.get_loop().create_future()
            waiters.appendleft(waiter)

    def release(self) -> None:
        """Free the lock; wake a waiter, unless one woken earlier has not run yet."""
        self._locked = False
        if self._waiters and not self._woken:
            self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._woken = True
            waiters.popleft().set_result(None)

    async def __aenter__(self) -> None:
        if self._locked:
            await self.acquire()
        else:
            self._locked = True

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
