"""A run's session on a queue: what the engine uses as ``journal=`` (input and journal).

The engine reads the run's entries from :meth:`QueueSession.wrap_async` and hands
each final outcome to :meth:`QueueSession.record`. Entries are read a batch at a
time (the next batch read ahead while one runs), each marked as started in Redis
just before it is handed to the engine; every ``idle_timeout / 2`` the entries of
silent workers are taken over, and a suspect (its attempts cut short twice, or on
its last chance) runs alone until its outcome is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, final

from parallelize._errors import JournalError, UnstorableResult
from parallelize._journal._base import Entry, Tagged, type_name
from parallelize._outcomes import Failure

from . import NO_INPUT
from ._connection import Connection
from ._member import Member
from ._producer import produce
from ._records import GROUP, QueueSettings, decode, encode, number, to_json

__all__ = ("QueueSession",)

logger = logging.getLogger("parallelize.redis")


@final
class QueueSession:
    """A run's input and journal, in one: the engine's side of a :class:`RedisQueue`.

    A :class:`~parallelize._journal.RunSession`: the queue is the run's input, so
    its session neither wraps a sync input nor replays (no ``wrap()`` or
    ``replayed_outcome()``, which only a journal's session has).

    Args:
        queue: The queue's settings (the queue itself).
        connection: The queue's connection.
        member: This process's part in the run (what it holds and stores).
        finished: Reads whether the run is over (:meth:`RedisQueue.finished`).
        argslist: The run's input to add (or :data:`NO_INPUT`).
        key: Identifies an item (default: its position).
        action_name: The action's name: every worker of a run runs the same one.
        numworkers: The run's workers in this process.
    """

    def __init__(
        self,
        queue: QueueSettings,
        connection: Connection,
        member: Member,
        *,
        finished: Callable[[], Awaitable[bool]],
        argslist: Iterable[Any] | AsyncIterable[Any],
        key: Callable[[Any], int | str] | None,
        action_name: str,
        numworkers: int,
    ) -> None:
        self._queue = queue
        self._connection = connection
        self._keys = connection.keys
        self._member = member
        self._finished = finished
        self._argslist = argslist
        self._key = key
        self._action_name = action_name
        self._batch = queue.batch or min(numworkers, 256)
        # Entries marked as started in Redis at a time, just before they are handed
        # to the engine (which runs each as soon as it takes it). One mark per start
        # would cost a round trip per item; a mark ahead of need charges the entries
        # not reached yet if this process dies. A quarter of the workers bounds both:
        # at most that many charged in vain, a round trip per that many starts, and
        # exact (one at a time) up to 7 workers.
        self._mark_ahead = max(1, min(numworkers, 256) // 4)
        # Taken over after this many started attempts cut short: runs alone. Two
        # (PEERS: a neighbour of one crash runs with company again), and an item's
        # last allowed attempt always runs alone, so that a dead letter is never a
        # neighbour of the item that killed its worker.
        self._alone_at = min(2, queue.max_deliveries - 1)
        self._closed = False
        self._in_engine = 0  # entries handed to the engine whose outcome was not taken
        self._read_any = False  # whether the last read found entries (even skipped ones)
        self._ahead: asyncio.Task[list[Entry]] | None = None  # the next batch, read ahead
        self._next_claim = 0.0  # when to look for the entries of silent workers
        self._drained = asyncio.Event()
        self._drained.set()
        self._consumer_json = encode(queue.consumer)
        self.recorded = 0
        self.replayed = 0
        self.skipped = 0

    @property
    def location(self) -> str:
        return self._queue.location

    async def wrap_async(self, source: AsyncIterable[Any]) -> AsyncIterator[Entry]:  # noqa: ARG002
        """Yield the run's entries for this process, until the run is over.

        ``source`` is the run's argslist, which the session holds already: it is
        added to the run by a producer task, while this reads the run's stream.
        """
        await self._connection.join()
        await self._check_run()
        await self._member.begin()
        producer = None
        if self._argslist is not NO_INPUT:
            producer = asyncio.get_running_loop().create_task(
                produce(self._queue, self._connection, self._argslist, self._key),
                name="parallelize-redis-produce",
            )
        finished = False
        try:
            idle = 0.0
            while True:
                producer = self._check_helpers(producer)
                suspects, entries, marked = await self._read()
                for entry in suspects:
                    # Started twice without an outcome (or its last chance): alone
                    # until its outcome is stored.
                    await self._drain()
                    await self._mark_alone(entry)
                    self._hand()
                    yield entry
                    await self._drain()
                    await self._until_stored(entry)
                half = len(entries) // 2 if len(entries) >= self._batch else -1
                for i, entry in enumerate(entries):
                    if i == half:
                        # A full batch: more is likely waiting. Read it while this
                        # one runs, so that no worker waits for a round trip.
                        self._ahead = asyncio.get_running_loop().create_task(self._take(mark=0))
                    if i >= marked:
                        # Marked before it is handed: a death right after it starts
                        # is charged to it.
                        marked = await self._mark_started(entries, i)
                    self._hand()
                    yield entry
                if entries or suspects or self._read_any:
                    idle = 0.0
                    continue
                if await self._finished():
                    finished = True
                    return
                idle = min(0.2, idle * 2 or 0.005)
                await asyncio.sleep(idle)
        finally:
            await self._end(producer, finished=finished)

    async def _end(self, producer: asyncio.Task[int] | None, *, finished: bool) -> None:
        """Stop the producer and the read ahead; note how this process's part ended."""
        for task in (producer, self._ahead):
            if task is not None:
                task.cancel()
                await asyncio.wait((task,))
        self._member.end(finished=finished)

    async def _read(self) -> tuple[list[Entry], list[Entry], int]:
        """Return the next entries: suspects, the others, how many of those marked.

        Suspects run alone; the first entries of the others may be marked as
        started already. Every ``idle_timeout / 2``, first the entries of silent workers; then a
        batch of new ones (read ahead already, when the last batch was full). A
        batch read for the engine, which waits for it, comes with its first
        entries marked as started: the same round trip.
        """
        suspects: list[Entry] = []
        entries: list[Entry] = []
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._queue.idle_timeout / 2
            suspects, entries = await self._claim()
        ahead = self._ahead
        if ahead is not None:
            self._ahead = None
            entries += await ahead
            return suspects, entries, 0
        if entries:
            entries += await self._take(mark=0)
            return suspects, entries, 0
        entries = await self._take(mark=self._mark_ahead)
        return suspects, entries, min(len(entries), self._mark_ahead)

    async def _mark_started(self, entries: list[Entry], i: int) -> int:
        """Mark ``entries[i:]`` as started, a few ahead; return the index past them."""
        end = min(len(entries), i + self._mark_ahead)
        packed = "\n".join([entry.ref for entry in entries[i:end]])
        await self._connection.write(
            "marking items started",
            "STARTED",
            [self._keys.started],
            [self._queue.consumer, packed],
        )
        return end

    def _check_helpers(self, producer: asyncio.Task[int] | None) -> asyncio.Task[int] | None:
        """Raise the error of the producer, the storer or the heartbeat, if one failed."""
        self._member.check()
        if producer is not None and producer.done():
            producer.result()  # its error, if it failed, is the run's
            return None
        return producer

    async def _until_stored(self, entry: Entry) -> None:
        """Wait until the outcome of ``entry`` is stored (it is alone until then).

        Not only taken: while its outcome waits for the storer, the entry is still
        marked as running alone, and a death then would be charged to it.
        """
        member = self._member
        while member.holds(entry.ref):  # until stored (a rare path)
            member.wake_storer()
            await asyncio.sleep(0.001)

    async def _mark_alone(self, entry: Entry) -> None:
        """Note that ``entry`` runs alone here: if this worker dies, it is to blame."""
        await self._connection.write(
            "marking a suspect",
            "STARTED",
            [self._keys.solo],
            [self._queue.consumer, entry.ref],
        )

    def _hand(self) -> None:
        self._in_engine += 1
        self._drained.clear()

    async def _drain(self) -> None:
        """Wait until every entry handed to the engine has had its outcome taken."""
        while self._in_engine:
            await self._drained.wait()

    async def _check_run(self) -> None:
        queue, connection, meta = self._queue, self._connection, self._keys.meta
        client = connection.client()
        mine = encode({"action": self._action_name, "codec": "json"})
        stored = await connection.call(
            "reading the run",
            lambda: client.hsetnx(meta, "info", mine),
        )
        if stored:
            return
        info = await connection.call(
            "reading the run",
            lambda: client.hget(meta, "info"),
        )
        theirs = decode(info or "{}")
        if theirs.get("action") != self._action_name:
            raise JournalError(
                f"the run {queue.run!r} is worked on by the action "
                f"{theirs.get('action')!r}, not {self._action_name!r}: every worker of a "
                f"run runs the same action. Use another run name for this one",
                queue.location,
            )

    def _entry(self, entry_id: str, key_json: str, args: str) -> Entry:
        entry = Entry(key_json, decode(args), None, None)
        entry.ref = entry_id
        self._member.hold(entry_id)
        return entry

    async def _take(self, *, mark: int) -> list[Entry]:
        """Read a batch of new entries; mark the first ``mark`` of them as started."""
        keys = self._keys
        read, skipped = await self._connection.write(
            "reading items",
            "TAKE",
            [keys.items, keys.outcomes, keys.started],
            [GROUP, self._queue.consumer, self._batch, mark],
        )
        self.skipped += int(skipped)
        self._read_any = bool(read or skipped)  # skipped: there may be more at once
        return [self._entry(*fields) for fields in read]

    async def _claim(self) -> tuple[list[Entry], list[Entry]]:
        queue, keys = self._queue, self._keys
        claimed, dead, mine = await self._connection.write(
            "taking over the entries of silent workers",
            "CLAIM",
            [keys.items, keys.meta, keys.dead, keys.solo, keys.deaths, keys.started, keys.tries],
            [
                GROUP,
                queue.consumer,
                int(queue.idle_timeout * 1000),
                1000,
                queue.max_deaths,
                queue.max_deliveries,
                self._alone_at,
            ],
        )
        if claimed or dead:
            logger.warning(
                "took over %d entries of workers silent for %g s (those started twice "
                "before without an outcome run alone until they have one); %d went to "
                "the dead letters",
                len(claimed),
                queue.idle_timeout,
                dead,
            )
        # An entry whose attempt was cut short once ran with company when its worker
        # died: most likely innocent, it runs with company again. One cut short twice
        # (or on its last chance) is a suspect: it runs alone, so that if it kills
        # this worker too, it alone is charged (and its neighbours are not).
        suspects: list[Entry] = []
        others: list[Entry] = []
        for entry_id, k, a, alone in claimed:
            entry = self._entry(entry_id, k, a)
            (suspects if alone == 1 else others).append(entry)
        # This worker's own entries, idle for long: those it holds are alive (Redis
        # was away); one it does not hold was read for it while the answer was lost
        # with the connection, and would otherwise wait for good. It never started.
        holds = self._member.holds
        lost = [self._entry(entry_id, k, a) for entry_id, k, a in mine if not holds(entry_id)]
        if lost:
            logger.warning(
                "%d entries read for this worker never reached it (the connection was "
                "lost with the answer); running them now",
                len(lost),
            )
        others += lost
        return suspects, others

    def prepare(self, tagged: Tagged) -> Tagged:
        """Encode a result before it is yielded; one that JSON cannot hold fails.

        As the SQLite journal's session does: the ``async for`` body never sees a
        result that would then be lost, and the storer never meets one it cannot send.
        """
        entry, outcome, attempts, elapsed = tagged
        if type(outcome) is Failure:
            return tagged
        try:
            entry.data = to_json(outcome)
        except (TypeError, ValueError, RecursionError) as exc:
            error = UnstorableResult(entry.item, outcome, f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            failure = Failure(entry.item, error, attempts, elapsed, expected=False)
            return entry, failure, attempts, elapsed
        return tagged

    def record(self, entry: Entry, outcome: Any, attempts: int, elapsed: float | None) -> None:
        """Hand the final outcome of ``entry`` (taken by the consumer) to be stored."""
        queue = self._queue
        self._in_engine -= 1
        if not self._in_engine:
            self._drained.set()
        if isinstance(outcome, Failure):
            error = outcome.exception
            data = None if queue.failure_data is None else queue.failure_data(outcome)
            record = encode(
                {
                    "ok": False,
                    "error": {"type": type_name(error), "message": str(error)},
                    "expected": outcome.expected,
                    "attempts": outcome.attempts,
                    "elapsed": outcome.elapsed,
                    "worker": queue.consumer,
                    "result": data,
                }
            )
            ok = "0"
        else:
            try:
                data = entry.data if entry.data is not None else to_json(outcome)
            except (TypeError, ValueError) as exc:
                raise JournalError(
                    f"cannot store the result of item {entry.item!r} in Redis: {exc}. "
                    f"Return plain data from the action (str, numbers, lists, dicts)",
                    queue.location,
                ) from exc
            record = (
                f'{{"ok":true,"result":{data},"attempts":{attempts},'
                f'"elapsed":{number(elapsed)},"worker":{self._consumer_json}}}'
            )
            ok = "1"
        self._member.store(entry.ref, entry.key, record, ok)
        self.recorded += 1

    def flush(self) -> None:
        self._member.wake_storer()

    def close(self, *, finished: bool) -> None:  # noqa: ARG002 - the run's end is read in Redis
        self._closed = True
        self._member.wake_storer()
