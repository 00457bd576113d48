"""A producer's turn at adding a run's input: its lock, its place, its batches.

One producer at a time adds a run's input, under a lock with a TTL that it keeps
fresh; another waits, and takes over where it stopped if it dies. Items are read
lazily, a batch per script, and reading pauses while the run holds ``max_pending``
entries not done yet. Produced again after a stop, the input goes on from the first
item not yet added (checked against the digest of the last one added).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, final

from redis import exceptions as rx

from parallelize._errors import JournalError
from parallelize._journal._anext import END, cancel, resume, start_next
from parallelize._journal._base import item_digest

from ._connection import Connection
from ._records import QueueSettings, key_text, to_json

__all__ = ("Producer", "produce")

logger = logging.getLogger("parallelize.redis")

_ENQUEUE_BATCH = 256  # items per XADD script


async def produce(
    queue: QueueSettings,
    connection: Connection,
    argslist: Iterable[Any] | AsyncIterable[Any],
    key: Callable[[Any], int | str] | None,
) -> int:
    """Add ``argslist`` to the run (see :meth:`RedisQueue.produce`); return its size.

    The caller joined the run's epoch.
    """
    await connection.call("starting the run", connection.create_group)
    producer = Producer(queue, connection, key)
    if not await producer.lock():
        return producer.produced  # the input was added in full already
    try:
        await producer.check()
        if isinstance(argslist, AsyncIterable):
            await producer.add_async(argslist)
        else:
            for item in argslist:
                if producer.add(item):
                    await producer.send()
        await producer.done()
    except BaseException:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await producer.release()
        raise
    return producer.produced


@final
class Producer:
    """One producer's turn at adding a run's input: its lock, position and batch."""

    def __init__(
        self,
        queue: QueueSettings,
        connection: Connection,
        key: Callable[[Any], int | str] | None,
    ) -> None:
        self._queue = queue
        self._connection = connection
        self._keys = connection.keys
        self._key = key
        self._client = connection.client()
        self._token = secrets.token_hex(8)
        self._ttl = max(10.0, queue.idle_timeout)
        self._refreshed = 0.0
        self.produced = 0  # items in the run (added by anybody)
        self._last = ""  # the digest of the last item added before this turn
        self._position = 0  # items of this input read so far
        self._batch: list[str] = []  # key, arguments, key, arguments...
        self._digest = ""  # the digest of the last item in the batch
        self._length = 0  # the run's entries not done, as last seen

    async def lock(self) -> bool:
        """Take the producer's lock, waiting while another producer holds it.

        Returns False when the run's input was added in full already.
        """
        queue, client = self._queue, self._client
        ttl_ms = int(self._ttl * 1000)
        said = False
        while True:
            got = await self._connection.call(
                "taking the producer lock",
                lambda: client.set(self._keys.producer, self._token, nx=True, px=ttl_ms),
            )
            produced, done = await self._connection.call(
                "reading the run",
                lambda: client.hmget(self._keys.meta, "produced", "input_done"),
            )
            self.produced = int(produced or 0)
            if done == "1":
                if got:
                    await self.release()
                return False
            if got:
                self._refreshed = time.monotonic()
                return True
            if not said:
                logger.info("another process is adding the input of %s: standing by", queue.run)
                said = True
            await asyncio.sleep(self._ttl / 3)

    async def release(self) -> None:
        """Give the lock back, if this producer still holds it."""
        client = self._client
        if await client.get(self._keys.producer) == self._token:
            await client.delete(self._keys.producer)

    async def check(self) -> None:
        """Refuse to add this input to a run produced with another kind of key."""
        queue, client = self._queue, self._client
        identity = "position" if self._key is None else "key"
        stored, last = await self._connection.call(
            "reading the run",
            lambda: client.hmget(self._keys.meta, "identity", "last"),
        )
        self._last = last or ""
        if stored is None:
            await self._connection.call(
                "starting the run",
                lambda: client.hset(self._keys.meta, "identity", identity),
            )
        elif stored != identity:
            raise JournalError(
                f"the run {queue.run!r} was produced with items identified by {stored}, "
                f"and now by {identity}: produce it the same way, or use another run name",
                queue.location,
            )

    def _lost(self) -> JournalError:
        queue = self._queue
        return JournalError(
            f"this producer lost the lock of run {queue.run!r} (it stalled for over "
            f"{self._ttl:g} s, and another producer took over): it stopped adding items",
            queue.location,
        )

    async def _refresh(self) -> None:
        """Keep the lock (every third of its TTL)."""
        if time.monotonic() - self._refreshed < self._ttl / 3:
            return
        kept = await self._connection.write(
            "keeping the producer lock",
            "REFRESH",
            [self._keys.producer],
            [self._token, int(self._ttl * 1000)],
        )
        if not kept:
            raise self._lost()
        self._refreshed = time.monotonic()

    def add(self, item: Any) -> bool:
        """Put ``item`` in the batch (unless added before); return True when it is full."""
        this = self._position
        self._position = this + 1
        if this < self.produced:  # added in an earlier turn: skip it
            if this == self.produced - 1 and self._last:
                mark = item_digest(item)
                if mark is not None and mark.hex() != self._last:
                    queue = self._queue
                    raise JournalError(
                        f"input item {this} is {item!r}, but the run {queue.run!r} had "
                        f"another item there: the input changed since it was produced. "
                        f"Produce it unchanged, or use another run name",
                        queue.location,
                    )
            return False
        item_key = this if self._key is None else self._key(item)
        try:
            args = to_json(list(item) if type(item) is tuple else item)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"item {this} ({item!r}) cannot go through Redis: items travel as JSON "
                f"({exc}). Pass plain data (str, numbers, lists, dicts), and look the "
                f"rest up in the action"
            ) from exc
        batch = self._batch
        batch.append(key_text(item_key))
        batch.append(args)
        mark = item_digest(item)
        self._digest = "" if mark is None else mark.hex()
        return len(batch) >= 2 * _ENQUEUE_BATCH

    async def add_async(self, argslist: AsyncIterable[Any]) -> None:
        """Add an async input; a batch goes as soon as the next item is not ready."""
        items = aiter(argslist)
        while True:
            item, step, waiting_on = start_next(items)
            if step is not None:
                try:
                    await self.send()  # not ready: send what was read, then wait
                    item = await resume(step, waiting_on)
                except BaseException:
                    await cancel(step)
                    raise
            if item is END:
                return
            if self.add(item):
                await self.send()

    async def send(self) -> None:
        """Add the batch to the run, once it holds fewer than max_pending entries.

        The wait comes before a batch, not after: the last batch is followed by the
        input's end at once, workers or not.
        """
        batch = self._batch
        if not batch:
            return
        queue, client = self._queue, self._client
        while self._length >= queue.max_pending:  # backpressure: the workers are behind
            await asyncio.sleep(0.05)
            await self._refresh()
            self._length = await self._connection.call(
                "waiting for the workers",
                lambda: client.xlen(self._keys.items),
            )
        await self._refresh()
        try:
            length = await self._connection.write(
                "adding items",
                "ENQUEUE",
                [self._keys.items, self._keys.meta, self._keys.producer],
                [self._token, self.produced, self._digest, "\n".join(batch)],
            )
        except rx.ResponseError as exc:
            if "PRODUCER_LOST" in str(exc):
                raise self._lost() from exc
            raise
        self.produced += len(batch) // 2
        self._batch = []
        self._length = int(length)

    async def done(self) -> None:
        """Send the last batch, and mark the run's input as added in full."""
        await self.send()
        try:
            await self._connection.write(
                "marking the input done",
                "INPUT_DONE",
                [self._keys.meta, self._keys.producer],
                [self._token, self.produced],
            )
        except rx.ResponseError as exc:
            if "PRODUCER_LOST" in str(exc):
                raise self._lost() from exc
            raise
