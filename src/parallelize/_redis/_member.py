"""A process as a member of a run: the entries it holds, its outcomes, its reports.

A :class:`Member` keeps the entries handed to this process and not stored yet, and
runs the queue's two background tasks while it is open: the storer (the outcomes
handed over, a batch per round trip, each stored, acked and deleted in one script)
and the heartbeat (every third of ``idle_timeout``, the entries held are kept fresh
and this process's status is written, so that a live worker's entries are never
taken over, however long its items take).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any, final

from redis import exceptions as rx

from parallelize._errors import JournalError

from ._connection import TRANSIENT, Connection, is_fenced
from ._records import GROUP, QueueSettings, encode
from ._shared import SharedBudget

__all__ = ("Member",)

logger = logging.getLogger("parallelize.redis")

_STORE_BATCH = 1000  # outcomes per store script
_STORE_GATHER = 0.005  # seconds a small batch of outcomes waits for more


@final
class Member:
    """The part of this process in a run: what it holds, stores and reports.

    Its ``state`` is ``"idle"`` (no part yet), ``"working"`` (a session is on),
    ``"finished"`` or ``"stopped"`` (its session ended, with the run over or early).

    Args:
        queue: The queue's settings (the queue itself).
        connection: The queue's connection.
        budget: The run's concurrency budget, resized at every report.
    """

    def __init__(self, queue: QueueSettings, connection: Connection, budget: SharedBudget) -> None:
        self._queue = queue
        self._connection = connection
        self._budget = budget
        # Entries handed to this process and not stored yet (kept fresh by heartbeats).
        self._owned: dict[str, None] = {}
        self._to_store: list[tuple[str, Any, str, str]] = []  # id, key, record, ok
        self._sending: list[tuple[str, Any, str, str]] = []  # the batch being stored
        self._store_wake = asyncio.Event()
        # Set when a part of this process ends: the heartbeat tells it at once, so
        # that a finished worker no longer counts as alive (delete() waits on that).
        self._report_soon = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.state = "idle"
        self.in_session = False  # whether a run's session uses the queue now
        self.counts = [0, 0]  # results and failures this process stored
        self.alive = 0  # workers of the run alive at the last report

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the storer and the heartbeat (the queue was just opened)."""
        self._closing = False
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._storer(), name="parallelize-redis-store"),
            loop.create_task(self._heartbeats(), name="parallelize-redis-heartbeat"),
        ]

    async def stop(self) -> BaseException | None:
        """Store the outcomes still buffered, say goodbye; return the storer's error.

        The entries held without an outcome are given back, and a last status is
        written, if this process took part in a run.
        """
        self._closing = True
        self._store_wake.set()
        storer, heartbeat = self._tasks
        try:
            await asyncio.wait((storer,))
        finally:
            heartbeat.cancel()
            await asyncio.wait((heartbeat,))
            if not heartbeat.cancelled() and heartbeat.exception() is not None:
                logger.warning("reports to Redis had stopped: %s", heartbeat.exception())
            try:
                if self.state != "idle":
                    with contextlib.suppress(*TRANSIENT, rx.RedisError):
                        async with asyncio.timeout(2.0):
                            await self._release()
                            await self._report()
            finally:
                self._tasks = []
        return None if storer.cancelled() else storer.exception()

    def check(self) -> None:
        """Raise the error of the storer or the heartbeat, if one failed."""
        for helper in self._tasks:
            if helper.done():
                helper.result()  # Redis did not answer for reconnect_timeout, say

    # -- a session's part -------------------------------------------------------------

    async def begin(self) -> None:
        """Note that this process works on the run, and report it at once."""
        self.state = "working"
        await self._connection.call("reporting", self._report)

    def end(self, *, finished: bool) -> None:
        """Note how this process's part ended (the heartbeat tells it at once)."""
        self.state = "finished" if finished else "stopped"
        self.in_session = False
        self._report_soon.set()

    def forget(self) -> None:
        """Forget a part of this process that ended: the run was deleted, nothing to report."""
        if not self.in_session:
            self.state = "idle"
            self._owned.clear()

    def hold(self, entry_id: str) -> None:
        """Note that the entry ``entry_id`` was handed to this process."""
        self._owned[entry_id] = None

    def holds(self, entry_id: str) -> bool:
        """Whether ``entry_id`` is held here: handed to this process, not stored yet."""
        return entry_id in self._owned

    def store(self, entry_id: str, key: Any, record: str, ok: str) -> None:
        """Hand an outcome (its entry, key, record, "1" for a result) to the storer."""
        self._to_store.append((entry_id, key, record, ok))
        # The storer sends at once when idle; while a round trip is out, outcomes
        # gather for the next one (a batch as large as the wait made it).
        self._store_wake.set()

    def wake_storer(self) -> None:
        """Have the storer send what it was handed, now."""
        self._store_wake.set()

    # -- the background tasks ---------------------------------------------------------

    async def _storer(self) -> None:
        """Store the outcomes handed over, a batch per round trip, until closed."""
        connection = self._connection
        run = connection.keys
        keys = [
            run.items,
            run.outcomes,
            run.results,
            run.meta,
            run.workers,
            run.solo,
            run.deaths,
            run.started,
            run.tries,
        ]
        head = [GROUP, self._queue.consumer, "1" if self._queue.results_stream else "0"]
        while True:
            if not self._to_store:
                if self._closing:
                    return
                self._store_wake.clear()
                await self._store_wake.wait()
                continue
            if len(self._to_store) < _STORE_BATCH // 10 and not self._closing:
                # A few outcomes: let more gather for a moment (one round trip for
                # many; nothing waits on it but the entries' acks).
                await asyncio.sleep(_STORE_GATHER)
            batch = self._to_store[:_STORE_BATCH]
            del self._to_store[:_STORE_BATCH]
            self._sending = batch  # the heartbeat tells them from entries taken
            args = [*head, "\n".join(["\n".join(record) for record in batch])]
            counts = await connection.call(
                "storing outcomes",
                lambda: connection.fenced("STORE", keys, args),  # noqa: B023 - called now
            )
            self.counts[0] += int(counts[0])
            self.counts[1] += int(counts[1])
            owned = self._owned
            for record in batch:
                owned.pop(record[0], None)
            self._sending = []

    async def _release(self) -> None:
        """Give back the entries held without a stored outcome (this process stops).

        They are marked idle for ``idle_timeout``, so that the other workers take
        them over at their next look instead of waiting that long.
        """
        ids = list(self._owned)
        if ids:
            queue, keys = self._queue, self._connection.keys
            released = await self._connection.fenced(
                "RELEASE",
                [keys.items, keys.started, keys.solo],
                [GROUP, queue.consumer, int(queue.idle_timeout * 1000), *ids],
            )
            logger.info("gave back %d entries without an outcome to the run", released)
            self._owned.clear()

    def _status(self) -> str:
        return encode(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "state": self.state,
                "in_flight": len(self._owned),
                "seen": time.time(),
            }
        )

    async def _report(self) -> int:
        """Refresh the entries this process holds, and write its status.

        Returns how many of them others took over. Also resizes this process's
        share of the run's concurrency budget, if it has one.
        """
        queue, keys = self._queue, self._connection.keys
        ids = list(self._owned)
        working = self.state == "working"
        taken, alive, gone = await self._connection.fenced(
            "HEARTBEAT",
            [keys.items, keys.workers, keys.alive],
            [
                GROUP,
                queue.consumer,
                self._status(),
                "1" if working else "0",
                int(queue.idle_timeout * 1000),
                *ids,
            ],
        )
        self.alive = int(alive)
        self._budget.resize(self.alive)
        # An entry pending for nobody was taken over and finished by another worker,
        # unless it is one of ours whose outcome was stored while the heartbeat was
        # on its way (the storer forgets it only once the store's answer is back,
        # which after a restart of Redis may be long).
        lost = int(taken)
        if gone:
            storing = {record[0] for record in self._sending}
            owned = self._owned
            lost += sum(1 for i in gone if i in owned and i not in storing)
        return lost

    async def _heartbeats(self) -> None:
        every = self._queue.idle_timeout / 3
        reported = "idle"
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._report_soon.wait()
            self._report_soon.clear()
            state = self.state
            if state == "idle" or (state != "working" and state == reported and not self._owned):
                # A part that ended is told once: then nothing of the run is this
                # process's to report (and a deleted run is left deleted).
                continue
            try:
                lost = await self._connection.call("reporting", self._report)
            except JournalError as exc:
                if state == "working" or not is_fenced(exc):
                    raise
                # The run this process ended its part of was deleted since.
                self._owned.clear()
                reported = state
                continue
            reported = state
            if lost:
                logger.warning(
                    "%d entries held by this worker were taken over by others (it did not "
                    "report for %g s); their outcomes are stored once whoever ends first",
                    lost,
                    self._queue.idle_timeout,
                )
