"""Limits per key kept for the whole fleet of a run: each key's places and rate in Redis.

:class:`SharedPerKey` is the :class:`~parallelize.SharedKeys` that
:meth:`RedisQueue.per_key` gives a :class:`~parallelize.PerKey`: an attempt of a key
goes once one script (``KEY_TAKE``, one round trip) has taken a place of the key
for the fleet and a slot of its rate. Each key is one sorted set in Redis: a lease
per place held (a token, scored with when the lease ends, by the server's clock)
and the key's GCRA TAT.

:class:`Leases` is the queue's room for the places this process holds: it gives
back those released (``KEY_GIVE``, a batch per round trip, never waited for by the
run) and keeps those held alive (``KEY_RENEW``, every third of the shortest lease),
in one background task that the queue starts and stops with itself. So an attempt
may run for longer than its lease, and a process that dies holds its places for at
most a lease: then they end, and the fleet has them back.
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

_GIVE_BATCH: Final = 1000  # places given back (or kept) per script
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
        self._renew_every = 0.0  # a third of the shortest lease held so far
        self._renew_at = 0.0  # monotonic time of the next renewal
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._tokens = itertools.count()
        self.round_trips = 0  # scripts sent to give back or keep places

    def start(self) -> None:
        """Start the task that gives back and keeps the places (the queue was opened)."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="parallelize-redis-keys"
        )

    async def stop(self) -> None:
        """Give back every place still held (for up to 2 s), then end the task.

        Never raises but a cancellation: a place not given back ends with its lease.
        """
        task = self._task
        if task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait((task,), timeout=_GOODBYE)
        finally:
            self._task = None
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))
            self.forget()
        if not task.cancelled() and task.exception() is not None:
            logger.warning(
                "places of keys held in Redis were not given back (%s): they end with their lease",
                task.exception(),
            )

    def check(self) -> None:
        """Raise the task's error, if it failed (Redis did not answer, the run was deleted)."""
        task = self._task
        if task is None:
            raise RuntimeError(
                f"{self._queue.location} is not open: use the queue's per_key() inside "
                f"'async with RedisQueue(...) as queue:'"
            )
        if task.done():
            task.result()

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

    async def _run(self) -> None:
        while True:
            if self._to_give:
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
        batch = self._to_give[:_GIVE_BATCH]
        del self._to_give[:_GIVE_BATCH]
        packed = "\n".join(f"{token}\n{pause}\n{tolerance}" for _, token, pause, tolerance in batch)
        await self._connection.write(
            "giving back places of keys", "KEY_GIVE", [row[0] for row in batch], [packed]
        )
        self.round_trips += 1

    async def _renew(self) -> None:
        held = [
            (zset, token, lease) for zset, tokens in self._held.items() for token, lease in tokens
        ]
        for start in range(0, len(held), _GIVE_BATCH):
            batch = held[start : start + _GIVE_BATCH]
            packed = "\n".join(f"{token}\n{lease}" for _, token, lease in batch)
            await self._connection.write(
                "keeping places of keys", "KEY_RENEW", [row[0] for row in batch], [packed]
            )
            self.round_trips += 1


@final
class SharedPerKey:
    """A :class:`~parallelize.PerKey`'s limits kept for every process of a Redis run.

    Made by :meth:`RedisQueue.per_key`, which puts it in a copy of a ``PerKey`` as
    ``shared=``; the run asks it once this process's own limits let an attempt go.
    Each key's ``concurrency`` and ``rate`` (with ``burst``) then hold for the
    whole fleet, by the Redis server's clock: one round trip per attempt, plus
    the places given back a batch at a time. A ``Retry-After`` on an overload
    outcome of a key pauses that key for the fleet.

    Attributes:
        concurrency: The most attempts of a key in flight in the fleet (None: no
            such limit).
        rate: The most attempts of a key a second in the fleet (None: no such limit).
        burst: Attempts of a key that may go at once after a quiet spell.
        lease: Seconds a place outlives a process that died holding it.
        taken: Places (or rate slots) taken by this process.
        refused: Times the fleet's limits held a key back.
        round_trips: Scripts sent to take a place (one per ask).
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
        self._busy: dict[str, float] = {}  # a key's zset -> its next wait when all held
        self.taken = 0
        self.refused = 0
        self.round_trips = 0

    def __repr__(self) -> str:
        return (
            f"SharedPerKey(concurrency={self.concurrency}, rate={self.rate}, "
            f"burst={self.burst}, lease={self.lease:g})"
        )

    async def acquire(self, key: Hashable) -> float | None:
        """Take a place of ``key`` in the fleet: None when taken, else seconds to wait.

        Raises:
            QueueUnavailableError: Redis did not answer for the queue's
                ``reconnect_timeout``.
            JournalError: The run was deleted while this process was on it.
        """
        leases = self._leases
        leases.check()
        zset = self._connection.keys.per_key(key)
        token = leases.token() if self.concurrency is not None else ""
        try:
            kind, wait = await self._connection.write(
                "taking a place of a key",
                "KEY_TAKE",
                [zset],
                [
                    token,
                    self.concurrency or 0,
                    self._lease_ms,
                    self._interval_us,
                    self._tolerance_us,
                ],
            )
        except BaseException:
            if token:
                leases.drop(zset, token)  # taken, maybe, by a call whose answer is lost
            raise
        self.round_trips += 1
        if kind == 0:
            if token:
                leases.hold(zset, token, self._lease_ms)
            self._busy.pop(zset, None)
            self.taken += 1
            return None
        self.refused += 1
        seconds = int(wait) / 1e6
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
