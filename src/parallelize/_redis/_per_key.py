"""Limits per key kept for the whole fleet of a run: each key's places and rate in Redis.

:class:`SharedPerKey` is the :class:`~parallelize.SharedKeys` that
:meth:`RedisQueue.per_key` gives a :class:`~parallelize.PerKey`: an attempt of a key
goes once a script (``KEY_TAKE``) has taken a place of the key for the fleet and a
slot of its rate. Each key is one sorted set in Redis: a lease per place held (a
token, scored with when the lease ends, by the server's clock) and the key's GCRA
TAT.

:class:`Leases` is the queue's room for the places this process holds, with two
background tasks that the queue starts and stops with itself. One asks for places:
the asks of every attempt waiting go in one script, one round trip (at most one
per attempt, and one connection to Redis however many workers ask at once). The
other gives back the places released (``KEY_GIVE``, a batch per round trip, never
waited for by the run) and keeps those held alive (``KEY_RENEW``, every third of
the shortest lease). So an attempt may run for longer than its lease, and a process
that dies holds its places for at most a lease: then they end, and the fleet has
them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Hashable
from typing import Final, final

from parallelize._limits import NO_OUTCOME, PerKey, overload_of
from parallelize._policies import retry_after_of

from ._connection import Connection
from ._records import QueueSettings

__all__ = ("Leases", "SharedPerKey")

logger = logging.getLogger("parallelize.redis")

_BATCH: Final = 1000  # places asked for, given back or kept per script
_GIVE_GATHER: Final = 0.002  # seconds the places given back wait for an ask to carry them
_GOODBYE: Final = 2.0  # seconds the queue's close waits to give back the places held
# A key whose places are all held is asked again after this long, doubled at each
# refusal in a row up to _BUSY_MOST (and never after its first lease ends): a place
# given back is most often sooner than that lease, and this bounds the round trips
# of a key that stays busy (at most 4 a second per process).
_BUSY_FIRST: Final = 0.005
_BUSY_MOST: Final = 0.25
_BUSY_KEYS: Final = 10_000  # keys whose refusals in a row are remembered
# A Retry-After of one key is honoured up to this long (as PerKey does in a process).
_MAX_PAUSE: Final = 3600.0


@final
class Leases:
    """The places of keys this process holds in the run: given back and kept alive.

    Args:
        queue: The queue's settings (the queue itself): its consumer name marks the
            tokens, so that ``redis-cli`` tells whose a place is.
        connection: The queue's connection.
    """

    def __init__(self, queue: QueueSettings, connection: Connection) -> None:
        self._queue = queue
        self._connection = connection
        # Places held: a key's zset -> its tokens and their leases (ms), oldest first.
        self._held: dict[str, deque[tuple[str, int]]] = {}
        self._holding = 0  # places held, all keys together
        self._to_give: list[tuple[str, str, int, int]] = []  # zset, token, pause, tolerance
        self._wake = asyncio.Event()
        # Asks waiting to be sent: a key's zset, the ask (packed), its answer to come.
        self._to_take: list[tuple[str, str, asyncio.Future[tuple[int, int]]]] = []
        self._take_wake = asyncio.Event()
        # Held while places are given back (alone, or with asks): an ask never
        # overtakes a place given back before it (on another connection), so that a
        # process is not refused a place it has just given back.
        self._in_order = asyncio.Lock()
        self._renew_every = 0.0  # a third of the shortest lease held so far
        self._renew_at = 0.0  # monotonic time of the next renewal
        self._closing = False
        self._tasks: tuple[asyncio.Task[None], asyncio.Task[None]] | None = None
        self._tokens = itertools.count()
        self.take_round_trips = 0  # scripts sent to take places
        self.give_round_trips = 0  # scripts sent to give back or keep places

    def start(self) -> None:
        """Start the tasks that ask for, give back and keep places (the queue opened)."""
        self._closing = False
        loop = asyncio.get_running_loop()
        self._tasks = (
            loop.create_task(self._taker(), name="parallelize-redis-key-asks"),
            loop.create_task(self._keeper(), name="parallelize-redis-key-places"),
        )

    async def stop(self) -> None:
        """End the asks; give back every place still held (for up to 2 s); end the tasks.

        Never raises but a cancellation: a place not given back ends with its lease.
        """
        if self._tasks is None:
            return
        taker, keeper = self._tasks
        self._closing = True
        self._wake.set()
        try:
            taker.cancel()  # an ask still waiting fails: the queue is closed
            await asyncio.wait((taker,))
            await asyncio.wait((keeper,), timeout=_GOODBYE)
        finally:
            self._tasks = None
            if not keeper.done():
                keeper.cancel()
                await asyncio.wait((keeper,))
            self.forget()
        if not keeper.cancelled() and keeper.exception() is not None:
            logger.warning(
                "places of keys held in Redis were not given back (%s): they end with their lease",
                keeper.exception(),
            )

    def check(self) -> None:
        """Raise the error of a task that failed (Redis did not answer, the run was deleted)."""
        if self._tasks is None:
            raise RuntimeError(
                f"{self._queue.location} is not open: use the queue's per_key() inside "
                f"'async with RedisQueue(...) as queue:'"
            )
        for task in self._tasks:
            if task.done():
                task.result()

    async def take(self, zset: str, ask: str) -> tuple[int, int]:
        """Ask for a place of a key (``ask``: the fields of ``KEY_TAKE``); its answer.

        Sent with the asks of the other attempts waiting, in one script.
        """
        self.check()
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._to_take.append((zset, ask, future))
        self._take_wake.set()
        return await future

    def forget(self) -> None:
        """Forget the places held and those to give back: the run was deleted."""
        self._held.clear()
        self._holding = 0
        self._to_give.clear()

    def token(self) -> str:
        """Return a token for a new place: unique in the run, naming this process."""
        return f"{self._queue.consumer}:{next(self._tokens)}"

    def hold(self, zset: str, token: str, lease_ms: int) -> None:
        """Note a place taken: kept alive until given back."""
        self._held.setdefault(zset, deque()).append((token, lease_ms))
        every = lease_ms / 3000
        if not self._holding or every < self._renew_every:
            # The first place held, or a shorter lease: the task learns when to renew.
            now = time.monotonic()
            at = now + every
            self._renew_at = min(self._renew_at, at) if self._holding else at
            self._renew_every = every
            self._wake.set()
        self._holding += 1

    def give(self, zset: str, pause_us: int, tolerance_us: int) -> None:
        """Give back a place of the key (the oldest held here), and pause it if asked.

        The oldest: a lease renewed least lately, so that the places kept for the
        attempts still running end last. Sent by the task, a batch at a time.
        """
        tokens = self._held.get(zset)
        token = ""
        if tokens:
            token = tokens.popleft()[0]
            self._holding -= 1
            if not tokens:
                del self._held[zset]
        if token or pause_us:
            self._to_give.append((zset, token, pause_us, tolerance_us))
            self._wake.set()

    def drop(self, zset: str, token: str) -> None:
        """Give back ``token``, which a call cut short may have taken."""
        self._to_give.append((zset, token, 0, 0))
        self._wake.set()

    async def _taker(self) -> None:
        """Send the asks waiting, a batch per round trip, while one is out the others gather."""
        batch: list[tuple[str, str, asyncio.Future[tuple[int, int]]]] = []
        try:
            while True:
                if not self._to_take:
                    self._take_wake.clear()
                    await self._take_wake.wait()
                    continue
                # An ask cut short is not sent (its caller gave its token back).
                batch = [ask for ask in self._to_take[:_BATCH] if not ask[2].done()]
                del self._to_take[:_BATCH]
                if batch:
                    async with self._in_order:
                        await self._take(batch)
                batch = []
        finally:
            for _, _, future in [*batch, *self._to_take]:
                if not future.done():
                    future.set_exception(
                        RuntimeError(f"{self._queue.location} was closed while a key waited")
                    )
            self._to_take.clear()

    async def _take(self, batch: list[tuple[str, str, asyncio.Future[tuple[int, int]]]]) -> None:
        # The places given back meanwhile go first, in the same script: a process is
        # not refused the places it has just given back (nor waits for the keeper).
        gives = self._to_give[:_BATCH]
        del self._to_give[:_BATCH]
        try:
            answers = await self._connection.write(
                "taking a place of a key",
                "KEY_TAKE",
                [row[0] for row in gives] + [zset for zset, _, _ in batch],
                [len(gives), _packed(gives), "\n".join([ask for _, ask, _ in batch])],
            )
        except BaseException as exc:
            self._to_give[:0] = gives  # the keeper sends them (twice does no harm)
            if not isinstance(exc, Exception):
                raise
            for _, _, future in batch:  # Redis did not answer, the run was deleted
                if not future.done():
                    future.set_exception(exc)
            return
        self.take_round_trips += 1
        for (_, _, future), (kind, wait) in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result((int(kind), int(wait)))

    async def _keeper(self) -> None:
        """Give back the places released, and keep alive those held, until closed."""
        while True:
            if self._to_give:
                if not self._closing:
                    # A moment for the next ask to carry them (one round trip for both);
                    # the fleet has them 2 ms later at most.
                    await asyncio.sleep(_GIVE_GATHER)
                await self._give()
                continue
            if self._closing:
                if not self._held:
                    return
                for zset, tokens in self._held.items():
                    self._to_give.extend((zset, token, 0, 0) for token, _ in tokens)
                self._held.clear()
                self._holding = 0
                continue
            now = time.monotonic()
            if self._holding and now >= self._renew_at:
                self._renew_at = now + self._renew_every
                await self._renew()
                continue
            self._wake.clear()
            wait = self._renew_at - now if self._holding else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _give(self) -> None:
        async with self._in_order:
            batch = self._to_give[:_BATCH]
            del self._to_give[:_BATCH]
            if not batch:
                return  # an ask carried them
            await self._connection.write(
                "giving back places of keys",
                "KEY_GIVE",
                [row[0] for row in batch],
                [_packed(batch)],
            )
        self.give_round_trips += 1

    async def _renew(self) -> None:
        held = [
            (zset, token, lease) for zset, tokens in self._held.items() for token, lease in tokens
        ]
        for start in range(0, len(held), _BATCH):
            batch = held[start : start + _BATCH]
            packed = "\n".join(f"{token}\n{lease}" for _, token, lease in batch)
            await self._connection.write(
                "keeping places of keys", "KEY_RENEW", [row[0] for row in batch], [packed]
            )
            self.give_round_trips += 1


def _packed(gives: list[tuple[str, str, int, int]]) -> str:
    """Return the fields of places given back, as ``KEY_GIVE`` and ``KEY_TAKE`` read them."""
    return "\n".join([f"{token}\n{pause}\n{tolerance}" for _, token, pause, tolerance in gives])


@final
class SharedPerKey:
    """A :class:`~parallelize.PerKey`'s limits kept for every process of a Redis run.

    Made by :meth:`RedisQueue.per_key`, which puts it in a copy of a ``PerKey`` as
    ``shared=``; the run asks it once this process's own limits let an attempt go.
    Each key's ``concurrency`` and ``rate`` (with ``burst``) then hold for the
    whole fleet, by the Redis server's clock: at most one round trip per attempt
    (the asks of the attempts waiting go together), plus the places given back a
    batch at a time. A ``Retry-After`` on an overload outcome of a key pauses that
    key for the fleet.

    Attributes:
        concurrency: The most attempts of a key in flight in the fleet (None: no
            such limit).
        rate: The most attempts of a key a second in the fleet (None: no such limit).
        burst: Attempts of a key that may go at once after a quiet spell.
        lease: Seconds a place outlives a process that died holding it.
        asked: Asks for a place (or rate slot) this process made.
        taken: Of those, the places (or rate slots) taken.
        refused: Of those, the times the fleet's limits held a key back.
    """

    def __init__(
        self, connection: Connection, leases: Leases, per_key: PerKey, *, lease: float
    ) -> None:
        self._connection = connection
        self._leases = leases
        self.concurrency = per_key.concurrency
        self.rate = per_key.rate
        self.burst = per_key.burst
        self.lease = lease
        interval = 0.0 if per_key.rate is None else 1.0 / per_key.rate
        self._interval_us = round(interval * 1e6)
        self._tolerance_us = round((per_key.burst - 1) * interval * 1e6)
        self._lease_ms = max(1, round(lease * 1000))
        # An ask's fields after its token (see KEY_TAKE).
        most = per_key.concurrency or 0
        self._ask = f"{most}\n{self._lease_ms}\n{self._interval_us}\n{self._tolerance_us}"
        self._busy: dict[str, float] = {}  # a key's zset -> its next wait when all held
        self.asked = 0
        self.taken = 0
        self.refused = 0

    def __repr__(self) -> str:
        return (
            f"SharedPerKey(concurrency={self.concurrency}, rate={self.rate}, "
            f"burst={self.burst}, lease={self.lease:g})"
        )

    @property
    def round_trips(self) -> int:
        """Scripts sent to ask for places, by every ``per_key()`` of the queue together."""
        return self._leases.take_round_trips

    async def acquire(self, key: Hashable) -> float | None:
        """Take a place of ``key`` in the fleet: None when taken, else seconds to wait.

        Raises:
            QueueUnavailableError: Redis did not answer for the queue's
                ``reconnect_timeout``.
            JournalError: The run was deleted while this process was on it.
        """
        leases = self._leases
        zset = self._connection.keys.per_key(key)
        token = leases.token() if self.concurrency is not None else ""
        self.asked += 1
        try:
            kind, wait = await leases.take(zset, f"{token}\n{self._ask}")
        except BaseException:
            if token:
                leases.drop(zset, token)  # taken, maybe, by an ask whose answer is lost
            raise
        if kind == 0:
            if token:
                leases.hold(zset, token, self._lease_ms)
            self._busy.pop(zset, None)
            self.taken += 1
            return None
        self.refused += 1
        seconds = wait / 1e6
        if kind == 1:  # every place held: a place given back is most often sooner
            busy = self._busy
            backoff = busy.get(zset, _BUSY_FIRST)
            if len(busy) >= _BUSY_KEYS and zset not in busy:
                busy.clear()
            busy[zset] = min(backoff * 2, _BUSY_MOST)
            seconds = min(seconds, backoff)
        return seconds

    def release(self, key: Hashable, outcome: object) -> None:
        """Give back the place :meth:`acquire` took (queued: the run does not wait).

        An overload outcome with a ``Retry-After`` pauses the key for the fleet too.
        """
        pause_us = 0
        if outcome is not NO_OUTCOME and overload_of(outcome):
            asked = retry_after_of(outcome)
            if asked:
                pause_us = round(min(asked, _MAX_PAUSE) * 1e6)
        if self.concurrency is not None or pause_us:
            self._leases.give(self._connection.keys.per_key(key), pause_us, self._tolerance_us)
