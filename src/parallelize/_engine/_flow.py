"""The flow: credits, the result buffers and the wake-ups between workers and consumer.

The one piece of mutable state that every other part of a run shares: workers take
credits and deliver outcomes here, the consumer takes results and gives credits back,
and the run halts it or records its error here.

* **Credits bound memory.** A run holds ``capacity = numworkers + max_buffered``
  credits. A worker takes one *before* it pulls an item and the consumer gives it
  back when the item's result leaves the run. So at any time
  ``in flight + buffered results (+ reorder buffer when ordered) <= capacity``.
* **Hysteresis on wake-ups.** Returned credits wake a waiting worker only once half
  the capacity is free, or when the consumer is about to sleep; a woken worker wakes
  the next one while credits remain.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, final

__all__ = ("MISSING", "Flow")

MISSING: Any = object()  # no result (yet), or the end of the results


@final
class Flow:
    """Credits, buffers and wake-ups of one run (internal: the parts share it)."""

    __slots__ = (
        "cancelled",
        "capacity",
        "credit_waiters",
        "credits",
        "error",
        "failed_workers",
        "loop",
        "next_index",
        "ordered",
        "out",
        "pending",
        "pulled",
        "stopping",
        "timing",
        "waiter",
        "wake_at",
        "withdrawn",
    )

    def __init__(self, capacity: int, *, ordered: bool) -> None:
        self.capacity = capacity
        self.credits = capacity
        # Credits taken away when the run halts (see halt); still counted as free.
        self.withdrawn = 0
        self.wake_at = max(1, capacity // 2)
        self.credit_waiters: deque[asyncio.Future[None]] = deque()
        self.ordered = ordered
        self.out: deque[Any] = deque()  # completed results, unordered mode
        self.pending: dict[int, Any] = {}  # index -> result, ordered mode
        self.next_index = 0  # ordered mode: index of the next result to yield
        self.pulled = 0  # items taken from the input so far
        self.waiter: asyncio.Future[None] | None = None  # the consumer, asleep
        self.error: BaseException | None = None  # the run's first error
        self.stopping = False  # take no new item
        self.cancelled = False  # the run cancelled its workers
        self.timing = False  # the counting workers time their next action
        self.failed_workers: set[asyncio.Task[Any] | None] = set()  # see worker_failed
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the run starts

    # -- workers' side -------------------------------------------------------------

    async def take_credit(self) -> bool:
        """Wait until a credit is free and take it (the slow path of every worker).

        Returns False, taking none, once the run is stopping (``handle_signals``, or
        halted: see ``halt``): the worker ends instead of pulling another item. A
        worker whose action swallowed its cancellation comes here, and ends.
        """
        assert self.loop is not None
        while self.credits <= 0 and not self.stopping:
            waiter = self.loop.create_future()
            self.credit_waiters.append(waiter)
            await waiter
        if self.stopping:
            return False
        self.credits -= 1
        if self.credits > 0 and self.credit_waiters:
            self.wake_worker()  # pass the baton: more credits are free
        return True

    def deliver(self, index: int, value: Any) -> None:
        """Hand a result (or Failure) to the consumer: in order, or as it comes."""
        if self.ordered:
            self.pending[index] = value
            if index == self.next_index:
                self.wake_consumer()
        else:
            self.out.append(value)
            self.wake_consumer()

    def wake_worker(self) -> None:
        waiters = self.credit_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all_workers(self) -> None:
        waiters = self.credit_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def wake_consumer(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- consumer's side -----------------------------------------------------------

    def give_credit(self) -> None:
        self.credits += 1
        if self.credit_waiters and self.credits == self.wake_at:
            self.wake_worker()

    def in_flight(self, waiting_retry: int) -> int:
        """Items that hold a credit but are neither buffered nor waiting to retry."""
        held = self.capacity - self.credits - self.withdrawn
        return max(0, held - len(self.out) - len(self.pending) - waiting_retry)

    # -- stopping and errors -------------------------------------------------------

    def halt(self) -> None:
        """Let no worker start another item, whatever its action did with a cancel.

        An action may swallow its cancellation and return (pyreqwest sometimes hands
        back a reply its cancelled task finished), and its worker then goes on as if
        never cancelled. Every worker takes a credit before its next item, and no
        worker waits for one once the run stops (``take_credit``): withdrawing the
        free credits sends each such worker there, and it ends. The hot path needs no
        test of its own for this.
        """
        self.stopping = True
        self.withdrawn += self.credits
        self.credits = 0
        self.wake_all_workers()

    def record_error(self, error: BaseException) -> None:
        """Record the run's first error and drop what the consumer has not taken."""
        if self.error is None:
            self.error = error
            # Dropped, never taken: they hold their credits still, but they are not
            # in flight (the statistics count them as what they were: done).
            self.withdrawn += len(self.out) + len(self.pending)
            self.out.clear()
            self.pending.clear()
            self.halt()  # the task group cancels the other workers: see halt()
            self.wake_consumer()

    def fail(self, error: BaseException) -> None:
        """Record a worker's error (an action's, the input's) as the run's error.

        Unless the run had cancelled its workers already (``break``, ``aclose()``,
        the grace after a signal ran out): what a cancelled action raised instead of
        ``CancelledError`` ("the client was closed") is not why the run ends.
        """
        if not self.cancelled:
            self.record_error(error)

    def worker_failed(self, error: BaseException) -> None:
        """Record a worker's error, which the worker then raises to end.

        Raises ``CancelledError`` instead if the worker's task was cancelled (the
        loop's shutdown cancels every task; a cancelled action raised "the client
        was closed"): nothing must report that as a task's unhandled exception.
        """
        self.fail(error)
        task = asyncio.current_task()
        if task not in self.failed_workers:
            # The credit this worker holds (for the item that failed, or for the
            # pull that raised) is no item in flight: the statistics must not count
            # it as one (succeeded = taken - in flight - failed would go negative).
            self.failed_workers.add(task)
            self.withdrawn += 1
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    def take_ready(self) -> Any:
        """Return the next result if one is ready to be yielded, else ``MISSING``."""
        if self.error is not None:
            return MISSING
        if self.ordered:
            value = self.pending.pop(self.next_index, MISSING)
            if value is MISSING:
                return MISSING
            self.next_index += 1
        elif self.out:
            value = self.out.popleft()
        else:
            return MISSING
        self.give_credit()
        return value

    async def sleep(self) -> None:
        """Wait for a worker to deliver, after handing out any free credits."""
        if self.credit_waiters and self.credits > 0:
            self.wake_worker()
        assert self.loop is not None
        waiter = self.loop.create_future()
        self.waiter = waiter
        try:
            await waiter
        finally:
            self.waiter = None  # also when cancelled: never wake a dead waiter
