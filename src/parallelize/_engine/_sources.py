"""Where the general worker's next item comes from: a due retry, or the input.

:class:`ItemSource` hands each general worker its next item: a new item from the
input, taken under a credit (a sync iterator, an async one under the pull lock, or
what the reader task pulled: an async input with retries), as ``(index, item,
tag)``, synchronously when one is at hand (``next_nowait``); in a run with a policy,
an ``ItemState`` for it or for a retry that has fallen due (:class:`Retries`). A journal's entry is
replayed or a pipeline's passing failure delivered on the spot, by the outcome part,
without reaching the worker. The journal or a work source plugs in as a wrapper of
the input (``JournalSession.wrap``), so it is an input like any other here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from parallelize._aio import PullLock
from parallelize._outcomes import Failure
from parallelize._policies import ItemPolicy, ItemState

from ._retries import Retries

if TYPE_CHECKING:
    from parallelize._journal import Entry

    from ._flow import Flow
    from ._sinks import Outcomes

__all__ = ("DELIVERED", "ItemSource", "Taken")


# A new item: (index in the input, the item, its journal entry or None).
Taken = tuple[int, Any, Any]
DELIVERED: Any = object()  # ItemSource.admit(): the item needs no action


def _check_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and goes on anyway.

    A task whose awaited code swallowed its cancellation no longer gets a
    ``CancelledError`` from its next ``await``: the reader checks here before it
    waits, where a lost cancellation would otherwise hang the run.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ItemSource:
    """The next item of a general worker: a due retry, or a new item of the input."""

    __slots__ = (
        "admit",
        "async_source",
        "at_hand",
        "exhausted",
        "flow",
        "journaled",
        "keyed",
        "lock",
        "outcomes",
        "passthrough",
        "policy",
        "read_ended",
        "read_items",
        "read_wanted",
        "reader",
        "retries",
    )

    def __init__(  # noqa: PLR0917 - one part's whole wiring
        self,
        flow: Flow,
        sync_source: Iterator[Any] | None,
        async_source: AsyncIterator[Any] | None,
        lock: PullLock | None,
        policy: ItemPolicy | None,
        outcomes: Outcomes,
        *,
        journaled: bool,
        passthrough: bool,
    ) -> None:
        self.flow = flow
        self.async_source = async_source
        self.lock = lock
        self.policy = policy
        self.outcomes = outcomes
        self.journaled = journaled
        self.passthrough = passthrough  # an earlier stage's failures pass through
        # admit(index, got): the item to run for what the input gave, or DELIVERED
        # (a journal's entry replayed, an earlier stage's failure passed on); None
        # when every item goes to the action as it comes.
        self.admit: Callable[[int, Any], Any] | None = (
            self._admit_entry if journaled else self._admit_failure if passthrough else None
        )
        self.at_hand = sync_source  # None once a sync input is exhausted
        self.retries = Retries(flow) if policy is not None and policy.retry else None
        # Limits per key: an attempt whose key cannot go now is set aside there
        # (_next_keyed), and the worker takes another.
        self.keyed = None if policy is None else policy.keyed
        if self.keyed is not None:
            self.keyed.bind(flow)
        self.exhausted = False  # the input has no more items
        # With retries over an async input, one reader task pulls the input for the
        # workers (see read_ahead): a due retry never waits for an idle input.
        self.reader: asyncio.Future[None] | None = None  # wakes the reader
        self.read_items: deque[Any] = deque()
        self.read_wanted = False
        self.read_ended = False

    @property
    def waiting(self) -> int:
        """Items waiting for a retry."""
        return 0 if self.retries is None else len(self.retries.heap)

    @property
    def set_aside(self) -> int:
        """Items set aside by their key's limits."""
        return 0 if self.keyed is None else self.keyed.set_aside

    @property
    def holding(self) -> int:
        """Items that hold a credit without being in flight, buffered or ended.

        Those waiting for a retry, and in an ordered run those set aside (which keep
        theirs: an ordered run's results wait for them, and given back, their credits
        could all end up in the reorder buffer, with none left to run them).
        """
        held = self.waiting
        if self.keyed is not None and self.flow.ordered:
            held += self.keyed.set_aside
        return held

    def reads_ahead(self) -> bool:
        """Whether a reader task pulls the input: an async input, with retries.

        Then a retry may fall due while the input has nothing to give (a pipe that
        is idle, a queue that ends only once every item is done, the retried one
        too): a worker waiting in the input could not run it, and with one worker
        the run would never end. The reader waits in the input instead.
        """
        return self.async_source is not None and (
            self.retries is not None or self.keyed is not None
        )

    def next_nowait(self) -> Taken | None:
        """Take a new item of a sync input under a free credit, without waiting.

        The fast path of every run without a policy, once per item: returns
        ``(index, item, tag)`` (``tag``: the item's journal entry, or None), or None
        when no item is at hand (no credit free, the run stopping, an async input, the
        input exhausted): then :meth:`take` (or :meth:`next`) waits for one. A
        journal's replayed entry or a passing failure is delivered on the way.
        """
        flow = self.flow
        source = self.at_hand
        while source is not None and flow.credits and not flow.stopping:
            flow.credits -= 1
            try:
                item = next(source)
            except StopIteration:
                flow.credits += 1
                self.exhaust()
                return None
            except Exception as exc:
                flow.worker_failed(exc)
                raise
            taken = self._taken(item)
            if taken is not None:
                return taken
        return None

    def exhaust(self) -> None:
        """Note that the sync input has no more items."""
        self.at_hand = None
        self.exhausted = True

    async def take(self, *, waited: bool = False) -> Taken | None:  # noqa: C901 - each way to wait
        """Return a new item as :meth:`next_nowait` does, waiting for it if need be.

        For a run without retries (no heap, no reader): waits for a credit, pulls an
        async input under its lock; returns None once there is no item left, or the
        run stops. ``waited``: the caller waited already (pass the baton on).
        """
        flow = self.flow
        while True:
            if flow.stopping or self.exhausted:
                flow.wake_all_workers()  # so that the idle ones end too
                return None
            if not flow.credits:
                await self._wait_for_work()
                waited = True
                continue
            if waited and flow.credits > 1 and flow.credit_waiters:
                flow.wake_worker()  # pass the baton: more credits are free
            if self.at_hand is not None:
                taken = self.next_nowait()
                if taken is not None:
                    return taken
                continue
            # An async generator cannot be advanced by two tasks at once. PullLock,
            # its fast path inlined (no coroutine when it is free).
            lock = self.lock
            assert self.async_source is not None
            assert lock is not None
            flow.credits -= 1
            try:
                if not lock.acquire_nowait():
                    await lock.acquire()
                try:
                    item = await anext(self.async_source)
                finally:
                    lock.release()
            except StopAsyncIteration:
                flow.credits += 1
                self.exhausted = True
                continue
            except Exception as exc:
                flow.worker_failed(exc)
                raise
            taken = self._taken(item)
            if taken is not None:
                return taken

    async def next(self) -> ItemState | None:  # noqa: C901, PLR0912 - each way to find work
        """Return the next item of a run with a policy: a due retry, or a new item.

        Sleeps while there is nothing to do; returns None once there never will be.
        """
        if self.keyed is not None:
            return await self._next_keyed()
        flow = self.flow
        retries = self.retries
        loop = flow.loop
        assert loop is not None
        waited = False  # pass the baton only after a wait, as Flow.take_credit does
        while True:
            if flow.stopping:
                # Items waiting for a retry are dropped: not recorded, they run again
                # on resume.
                flow.wake_all_workers()
                return None
            if retries is not None:
                state = retries.due(loop.time())
                if state is not None:
                    return state
            if self.exhausted:
                if retries is None or not retries.heap:
                    flow.wake_all_workers()  # so that the idle ones end too
                    return None
                await self._wait_for_work()
                continue
            if not flow.credits:
                await self._wait_for_work()
                waited = True
                continue
            if self.reader is not None or self.read_items or self.read_ended:
                state = await self._next_read()
                if state is not None:
                    return state
                continue
            if self.at_hand is not None:
                if waited and flow.credits > 1 and flow.credit_waiters:
                    flow.wake_worker()  # pass the baton: more credits are free
                taken = self.next_nowait()
            else:
                # No heap here (an async input with retries has a reader): take()
                # has nothing else to wait for.
                taken = await self.take(waited=waited)
            if taken is not None:
                return self._state(taken)

    async def _next_keyed(self) -> ItemState | None:  # noqa: C901, PLR0912, PLR0915 - each way
        """:meth:`next` with limits per key: each attempt's key admits it, or it waits aside.

        In order: a set-aside item whose key may go now (the ring, round-robin), a
        due retry, a new item of the input. A retry or a new item that its key
        cannot take now is set aside and the worker looks again; in a run in
        completion order it gives its credit back meanwhile (taking one again to
        go), so the items set aside, bounded apart (``PerKey.set_aside``), never
        stop the input's other keys. At the bound the input is not read further.
        """
        flow = self.flow
        retries = self.retries
        keyed = self.keyed
        loop = flow.loop
        assert keyed is not None
        assert loop is not None
        give_back = not flow.ordered
        shared = keyed.shared is not None  # the fleet's limits too (SharedKeys)
        while True:
            if flow.stopping:
                # Items set aside are dropped as retries are: they run again on resume.
                flow.wake_all_workers()
                return None
            now = loop.time()
            if flow.credits or not give_back:
                state = keyed.ready(now)
                if state is not None:
                    if give_back:
                        flow.credits -= 1
                    if flow.credit_waiters and (
                        (keyed.has_ready() and flow.credits) or (keyed.holding and not keyed.full)
                    ):
                        # Pass the baton: more keys may go, or the input may be read
                        # again (a worker asleep at the set-aside bound).
                        flow.wake_worker()
                    if not shared or await keyed.admit_shared(state):
                        return state
                    if give_back:
                        flow.credits += 1
                    continue
            if retries is not None:
                state = retries.due(now)
                if state is not None:
                    if keyed.route(state, now) and (not shared or await keyed.admit_shared(state)):
                        return state
                    if give_back:
                        flow.credits += 1
                    continue
            if self.exhausted:
                if not keyed.set_aside and (retries is None or not retries.heap):
                    flow.wake_all_workers()  # so that the idle ones end too
                    return None
                await self._wait_for_work()
                continue
            if keyed.full:
                if not keyed.holding:
                    keyed.holding = True
                    keyed.held += 1
                await self._wait_for_work()
                continue
            keyed.holding = False
            if not flow.credits:
                await self._wait_for_work()
                continue
            if self.reader is not None or self.read_items or self.read_ended:
                state = await self._next_read()
            else:
                taken = self.next_nowait()
                state = None if taken is None else self._state(taken)
            if state is None:
                continue
            if keyed.route(state, loop.time()) and (not shared or await keyed.admit_shared(state)):
                return state
            if give_back:
                flow.credits += 1

    def _admit_failure(self, index: int, got: Any) -> Any:
        """``admit`` of a later stage: an earlier stage's failure is passed on."""
        if type(got) is Failure:
            self.outcomes.pass_on(index, got)
            return DELIVERED
        return got

    def _admit_entry(self, index: int, got: Any) -> Any:
        """``admit`` of a journaled run: its input gives entries, some replayed."""
        entry: Entry = got
        if entry.stored is not None:
            self.outcomes.replay(index, entry)
            return DELIVERED
        if self.passthrough and type(entry.item) is Failure:
            self.outcomes.pass_on(index, (entry, entry.item, 0, None))
            return DELIVERED
        return entry.item

    def _taken(self, got: Any) -> Taken | None:
        """Return what the input gave, numbered and admitted; None if delivered already."""
        flow = self.flow
        index = flow.pulled
        flow.pulled = index + 1
        if self.admit is None:
            return index, got, None
        item = self.admit(index, got)
        return None if item is DELIVERED else (index, item, got if self.journaled else None)

    def _state(self, taken: Taken) -> ItemState:
        """Start the attempts of a new item (a run with a policy)."""
        index, item, tag = taken
        assert self.policy is not None
        assert self.flow.loop is not None
        state = self.policy.new_state(index, item, self.flow.loop.time())
        state.tag = tag
        return state

    async def _wait_for_work(self) -> None:
        """Sleep until a credit is returned, a retry falls due, or the input ends.

        A worker never sleeps past the earliest waiting retry, nor past the time a
        set-aside item's key may go again: it sets its own timer for it. (Loop
        timers may fire a little early, uvloop's by up to a millisecond; a woken
        worker that finds nothing due simply sleeps again, with a new timer.)
        """
        loop = self.flow.loop
        assert loop is not None
        waiter = loop.create_future()
        self.flow.credit_waiters.append(waiter)
        timer = None
        when = None
        if self.retries is not None and self.retries.heap:
            when = self.retries.heap[0][0]
        if self.keyed is not None:
            key_at = self.keyed.wake_at()  # a key's rate, pause or cool-down
            if key_at is not None and (when is None or key_at < when):
                when = key_at
        if when is not None:
            timer = loop.call_at(when, _wake, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    async def _next_read(self) -> ItemState | None:
        """Take an item the reader pulled; or ask for one and wait (then None)."""
        flow = self.flow
        if not self.read_items:
            if self.read_ended:
                self.exhausted = True
            else:
                self._want_item()
                await self._wait_for_work()
            return None
        flow.credits -= 1
        if flow.credits and flow.credit_waiters:
            flow.wake_worker()  # pass the baton: the next asks the reader
        taken = self._taken(self.read_items.popleft())
        return None if taken is None else self._state(taken)

    def _want_item(self) -> None:
        """Ask the reader for one more input item."""
        self.read_wanted = True
        reader = self.reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def start_reader(self) -> None:
        """Have the workers ask the reader from the start (before it runs)."""
        assert self.flow.loop is not None
        self.reader = self.flow.loop.create_future()

    async def read_ahead(self) -> None:
        """Pull the async input an item at a time, when a worker asks for one."""
        source = self.async_source
        flow = self.flow
        loop = flow.loop
        assert source is not None
        assert loop is not None
        try:
            while True:
                while not self.read_wanted:
                    _check_cancelled()  # the input's own code may swallow a cancel
                    self.reader = waiter = loop.create_future()
                    await waiter
                self.read_wanted = False
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    self.read_ended = True
                    flow.wake_all_workers()
                    return
                except Exception as exc:
                    flow.worker_failed(exc)
                    raise
                self.read_items.append(item)
                flow.wake_worker()
        finally:
            self.reader = None
