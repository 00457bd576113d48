"""A run's work shared by many processes on many machines, over Redis Streams.

A producer adds the input to the run's stream (lazily, pausing while the stream
holds ``max_pending`` entries); workers read it through one consumer group, run
``parallelize`` over what they get, and store each final outcome under its item's
key, then ack and delete the entry, in one atomic script. So:

- delivery is at least once: an entry stays pending until its outcome is stored;
  a worker that dies has its pending entries taken over by the others once they
  have been idle for ``idle_timeout`` (a live worker keeps its own fresh with a
  heartbeat, so a long item is never taken from it);
- the recorded outcome is exactly once: an outcome is stored only if its key has
  none (``HSETNX``), so an item run twice is counted and written once;
- only an attempt that really started is charged: a worker marks an entry as
  started (in Redis) before it hands it to one of its workers, and the entries a
  dead worker held without starting them (the rest of its batch, a batch read
  ahead, suspects waiting their turn) are taken over uncharged;
- an entry taken over after two started attempts without an outcome (two of its
  workers died while it ran) is a suspect: it runs alone in its new worker
  (nothing else in flight there) until it has an outcome, so that an item which
  kills its worker is the only one charged, never its neighbours; one that took
  down ``max_deaths`` workers while alone goes to the dead letters with the
  reason, as does one with ``max_deliveries`` started attempts (its last one is
  always alone).

The engine sees the queue as a journal that is also the run's input: see
:meth:`RedisQueue.open_session`. Everything in Redis is JSON, never pickle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Self, final
from urllib.parse import urlsplit

from parallelize._limits import AdaptiveLimit, PerKey
from parallelize._outcomes import Failure
from parallelize._util import check_callable, check_int, check_seconds

from . import NO_INPUT
from ._connection import Connection, mask
from ._member import Member
from ._per_key import Leases, SharedPerKey
from ._producer import produce
from ._records import (
    GROUP,
    DeadLetter,
    Keys,
    QueueInUseError,
    QueueProgress,
    QueueUnavailableError,
    StoredOutcome,
    WorkerStatus,
    count_workers,
    decode,
    key_text,
    name_workers,
    parse_outcome,
    workers_of,
)
from ._session import QueueSession
from ._shared import SharedBudget, SharedRateLimit

if TYPE_CHECKING:
    from parallelize._engine import Run

__all__ = (
    "NO_INPUT",
    "DeadLetter",
    "QueueInUseError",
    "QueueProgress",
    "QueueUnavailableError",
    "RedisQueue",
    "SharedPerKey",
    "SharedRateLimit",
    "StoredOutcome",
    "WorkerStatus",
)

logger = logging.getLogger("parallelize.redis")


# -- the queue ----------------------------------------------------------------------


@final
class RedisQueue:
    """One run's work in Redis: shared by producers and workers on any machine.

    Open it with ``async with``; then add the input with :meth:`produce`, work on it
    with :meth:`work`, or both at once with ``parallelize(action, items, n,
    journal=queue)``: the same call as on one machine with a journal file, with the
    queue in its place. Any process may read :meth:`progress`, :meth:`results`,
    :meth:`get` and :meth:`dead_letters`.

    Args:
        url: Where Redis is: ``redis://[[user]:password@]host[:port][/db]``, or
            ``rediss://`` for TLS (certificates through ``options``:
            ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``...).
        run: The run's name: every process of one job gives the same one.
        max_pending: The producer pauses while the run holds this many entries
            not done yet (default 100,000): Redis memory stays bounded whatever
            the input's size.
        idle_timeout: Seconds after which the entries of a worker that stopped
            answering (killed, machine lost, frozen) are taken over by the others
            (default 30). A live worker reports every third of it, however long
            its items take.
        max_deaths: An item whose worker dies (or goes silent) this many times
            while it runs alone goes to the dead letters (default 3).
        max_deliveries: An item whose attempts started this many times without an
            outcome (their worker died or went silent while it ran) goes to the
            dead letters too (default 10, at least 2). Only attempts that started
            count: not the entries a dead worker held without running them. An
            item's last allowed attempt runs alone (so does every attempt after
            two cut short), so a dead letter is always an item that took its
            worker down with nothing else in flight; 2 dead-letters an item at
            its second death, the first in company, the second alone.
        batch: Entries read at a time by a worker (default: the run's numworkers,
            at most 256).
        results_stream: Also append each outcome to the run's results stream, for
            :meth:`results` (default True). The outcomes stay readable by key.
        reconnect_timeout: Seconds to keep trying while Redis does not answer
            (restarting, failing over), before giving up with
            :class:`QueueUnavailableError` (default 300). Nothing is lost meanwhile.
        failure_data: A function of a :class:`~parallelize.Failure`, whose JSON
            value is stored with the failure as its ``result`` (default None).
        **options: Passed to ``redis.asyncio.from_url`` (TLS files, timeouts).

    Example:
        >>> async with RedisQueue("redis://queue.internal:6379/0", run="crawl") as queue:
        ...     async for page in parallelize(fetch, urls, 100, journal=queue):
        ...         print(page)

    Added in 0.2.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        run: str,
        max_pending: int = 100_000,
        idle_timeout: float = 30.0,
        max_deaths: int = 3,
        max_deliveries: int = 10,
        batch: int | None = None,
        results_stream: bool = True,
        reconnect_timeout: float = 300.0,
        failure_data: Callable[[Failure], Any] | None = None,
        **options: Any,
    ) -> None:
        if urlsplit(str(url)).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                f"url must be a Redis URL such as redis://host:6379/0 (rediss:// for "
                f"TLS), got {url!r}"
            )
        if not run or any(c in str(run) for c in "{} \t\n"):
            raise ValueError(f"run must be a non-empty name without spaces or braces, got {run!r}")
        self.url = url
        self.run = run
        self.max_pending = check_int("max_pending", max_pending, 1)
        self.idle_timeout = check_seconds("idle_timeout", idle_timeout)
        self.max_deaths = check_int("max_deaths", max_deaths, 1)
        if max_deliveries == 1 and not isinstance(max_deliveries, bool):
            # An item's last attempt runs alone, to tell it from the items in flight
            # next to it when its worker dies; a first attempt cannot (the whole run
            # would go one item at a time).
            raise ValueError(
                "max_deliveries must be >= 2, got 1: an item's last attempt runs alone, "
                "so that a death is never charged to its neighbours, and its first "
                "cannot. Pass 2 to dead-letter an item at its second death (the first "
                "in company, the second alone)"
            )
        self.max_deliveries = check_int("max_deliveries", max_deliveries, 2)
        self.batch = None if batch is None else check_int("batch", batch, 1)
        self.results_stream = bool(results_stream)
        self.reconnect_timeout = check_seconds("reconnect_timeout", reconnect_timeout)
        self.failure_data = check_callable(
            "failure_data", failure_data, "a function of a Failure", none=True
        )
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self._keys = Keys.of(run)
        # The parts of the queue (each reads the queue's settings when it needs them):
        # its connection (also what a shared rate limit writes through), this
        # process's part in the run, the run's concurrency budget, and the places of
        # keys this process holds (per_key()).
        self.connection = Connection(self, self._keys, options)
        self._budget = SharedBudget()
        self._member = Member(self, self.connection, self._budget)
        self._leases = Leases(self, self.connection)

    def __repr__(self) -> str:
        return f"RedisQueue({mask(self.url)!r}, run={self.run!r})"

    @property
    def location(self) -> str:
        """The queue, for messages: its URL (without password) and run."""
        return f"{mask(self.url)} run {self.run}"

    @property
    def alive(self) -> int:
        """Workers of the run alive at this process's last report (0 before one)."""
        return self._member.alive

    @property
    def _items(self) -> str:
        return self._keys.items  # the run's stream (the tests delete it)

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.connection.is_open:
            raise RuntimeError(f"{self!r} is open already")
        await self.connection.open()
        self._member.start()
        self._leases.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Store the outcomes still buffered, say goodbye, and disconnect."""
        if not self.connection.is_open:
            return
        try:
            try:
                await self._leases.stop()
            finally:
                error = await self._member.stop()
        finally:
            await self.connection.close()
        if error is not None:
            raise error

    def _redis(self) -> Any:
        return self.connection.client()

    # -- producing ----------------------------------------------------------------

    async def produce(
        self,
        argslist: Iterable[Any] | AsyncIterable[Any],
        *,
        key: Callable[[Any], int | str] | None = None,
    ) -> int:
        """Add ``argslist`` to the run, lazily; return how many items the run has.

        Items are read a batch at a time, and reading pauses while the run holds
        ``max_pending`` entries not done yet. One producer at a time: another
        process producing the same run waits, and takes over where it stopped if it
        dies. Produced again after a stop, the input goes on from the first item
        not yet added (checked against the last one added, as a journal checks).

        Args:
            argslist: The items, as for :func:`~parallelize.parallelize`; each must
                be JSON data (a tuple arrives as a list, and is unpacked the same).
            key: Identifies an item (a str or an int): an item whose key has a
                stored outcome is not run again. Default: its position.

        Raises:
            TypeError: An item is not JSON data, or ``key`` returned neither a
                str nor an int.
            JournalError: The run was produced with another kind of key, or the
                input changed since it was produced.
        """
        self._redis()
        await self.connection.join_epoch()
        return await produce(self, self.connection, argslist, key)

    # -- working ------------------------------------------------------------------

    def work(self, action: Callable[..., Any], numworkers: int, **options: Any) -> Run[Any]:
        """Run ``action`` over the run's items as they come, until the run is over.

        The same as ``parallelize(action, NO_INPUT, numworkers, journal=self,
        **options)``: every option of :func:`~parallelize.parallelize` applies
        (timeouts, retries, rate limits, adaptive, ``on_error``, stats...), in
        this process. It yields the outcomes of the items this process ran.
        """
        from parallelize._api import parallelize  # noqa: PLC0415 - the API imports this module

        return parallelize(action, NO_INPUT, numworkers, journal=self, **options)

    def open_session(
        self,
        argslist: Iterable[Any] | AsyncIterable[Any],
        *,
        key: Callable[[Any], int | str] | None,
        action_name: str,
        numworkers: int,
    ) -> QueueSession:
        """Start a run's use of the queue (called by the engine, when the run starts).

        Returns the session that is the run's input (the run's items, read from the
        stream; ``argslist`` is added to the run meanwhile, unless it is
        :data:`NO_INPUT`) and its journal (each outcome is stored, then acked).
        """
        self._redis()
        if self._member.in_session:
            raise RuntimeError(f"{self!r} is used by another run already: one at a time")
        session = QueueSession(
            self,
            self.connection,
            self._member,
            finished=self.finished,
            argslist=argslist,
            key=key,
            action_name=action_name,
            numworkers=numworkers,
        )
        self._member.in_session = True
        return session

    # -- reading the run ----------------------------------------------------------

    async def progress(self) -> QueueProgress:
        """Return a snapshot of the run: produced, done, failed, dead, per worker."""
        client = self._redis()

        async def read() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._keys.meta)
                pipe.xlen(self._keys.items)
                pipe.xpending(self._keys.items, GROUP)
                pipe.hgetall(self._keys.workers)
                return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

        meta, remaining, pending, workers = await self.connection.call("reading progress", read)
        in_flight = 0 if isinstance(pending, Exception) else int(pending["pending"])
        return QueueProgress(
            run=self.run,
            produced=int(meta.get("produced", 0)),
            input_done=meta.get("input_done") == "1",
            ok=int(meta.get("ok", 0)),
            failed=int(meta.get("failed", 0)),
            dead=int(meta.get("dead", 0)),
            remaining=int(remaining),
            in_flight=in_flight,
            workers=workers_of(workers),
        )

    async def finished(self) -> bool:
        """Whether the run is over: its whole input added, and every entry done."""
        client = self._redis()

        async def read() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hget(self._keys.meta, "input_done")
                pipe.xlen(self._keys.items)
                return await pipe.execute()  # type: ignore[no-any-return]

        done, remaining = await self.connection.call("reading progress", read)
        return done == "1" and int(remaining) == 0

    async def wait(self, *, poll: float = 0.5) -> QueueProgress:
        """Wait until the run is over; return its final progress."""
        while True:
            progress = await self.progress()
            if progress.finished:
                return progress
            await asyncio.sleep(poll)

    async def get(self, key: int | str) -> StoredOutcome | None:
        """Return the stored outcome of the item with ``key``, or None if it has none."""
        client = self._redis()
        text = key_text(key)
        record = await self.connection.call(
            "reading an outcome", lambda: client.hget(self._keys.outcomes, text)
        )
        return None if record is None else parse_outcome(text, record)

    async def results(self, *, follow: bool = False) -> AsyncIterator[StoredOutcome]:
        """Yield the run's outcomes in the order they were stored.

        Args:
            follow: Go on yielding new outcomes as they are stored, until the run
                is over (default: stop at the last one stored now).
        """
        client = self._redis()
        last = "0-0"
        while True:
            read = await self.connection.call(
                "reading results",
                lambda: client.xread({self._keys.results: last}, count=1000),  # noqa: B023
            )
            entries = read[0][1] if read else []
            for entry_id, fields in entries:
                last = entry_id
                yield parse_outcome(fields["k"], fields["r"])
            if entries:
                continue
            if not follow or await self.finished():
                # One more read: outcomes stored between the read and the check.
                read = await self.connection.call(
                    "reading results",
                    lambda: client.xread({self._keys.results: last}, count=1000),  # noqa: B023
                )
                for _, fields in read[0][1] if read else []:
                    yield parse_outcome(fields["k"], fields["r"])
                return
            await asyncio.sleep(0.2)

    async def dead_letters(self) -> list[DeadLetter]:
        """Return the items taken out of the run, with the reason of each."""
        client = self._redis()
        entries = await self.connection.call(
            "reading dead letters", lambda: client.xrange(self._keys.dead)
        )
        return [
            DeadLetter(
                key=decode(fields["k"]),
                item=decode(fields["a"]),
                deliveries=int(fields["deliveries"]),
                reason=fields["reason"],
                worker=fields["worker"],
                entry_id=fields["id"],
            )
            for _, fields in entries
        ]

    async def delete(self, *, force: bool = False) -> None:
        """Remove every key of the run from Redis (its items, outcomes, everything).

        The places of keys of :meth:`per_key` go too (found by a ``SCAN`` of the
        run's prefix, once the rest is deleted).

        Refused while workers are on the run (alive: each counts until its
        ``idle_timeout`` has passed since its last report, by the Redis server's
        clock): a worker's late writes (an outcome it was storing, a heartbeat) would
        recreate keys, and a new run of that name would skip the items they name.
        With ``force=True`` the run is deleted anyway and its processes are fenced
        out: every write of theirs is refused from then on, and they stop with a
        :class:`~parallelize.JournalError`.

        The queue stays usable: the next producer or worker starts the run afresh.

        Args:
            force: Delete even while workers are alive, and fence them out
                (default False). Added in 0.2.

        Raises:
            QueueInUseError: Workers are alive and ``force`` is False; it names them.
        """
        self._redis()
        flag = "1" if force else "0"
        # This process's own part, if it ended, is not in the way (its last report
        # may not have been sent yet).
        me = "" if self._member.in_session else self.consumer
        deleted, alive = await self.connection.call(
            "deleting the run",
            lambda: self.connection.script("DELETE", self._keys.every(), [flag, me]),
        )
        if not deleted:
            raise QueueInUseError(self.run, alive, self.location)
        if alive:
            logger.warning(
                "deleted the run %s under %s (%s): their writes are refused from now on",
                self.run,
                count_workers(alive),
                name_workers(sorted(alive)),
            )
        # This queue's next producer or worker joins a new run; a part of this
        # process that ended has nothing left to report (one running is fenced out).
        self.connection.forget_epoch()
        self._member.forget()
        self._leases.forget()
        # The zsets of keys (per_key()) have names of their own: found by a scan. No
        # process of the run writes them any more (their writes are fenced out), and
        # each expires on its own anyway.
        await self.connection.call("deleting the run's keys", self._delete_keys)

    async def _delete_keys(self) -> None:
        client = self._redis()
        found: list[str] = []
        async for name in client.scan_iter(match=self._keys.per_key_pattern(), count=1000):
            found.append(name)
            if len(found) >= 500:
                await client.unlink(*found)
                found.clear()
        if found:
            await client.unlink(*found)

    def adaptive_limit(self, total: int, **options: Any) -> AdaptiveLimit:
        """Return an adaptive limit for this process, within a budget for the run.

        The run's workers together keep at most ``total`` calls in flight: each
        process's limit moves as :class:`~parallelize.AdaptiveLimit` does (on its
        latency and overloads) under a ceiling of ``total`` divided by the workers
        alive, which is updated at every report (a third of ``idle_timeout``).
        Pass it as ``adaptive=`` in each worker.

        Args:
            total: The most calls in flight across the whole run (>= 1).
            **options: For :class:`~parallelize.AdaptiveLimit` (``min_limit``,
                ``tolerance``...; ``max_limit`` is this process's own cap).
        """
        return self._budget.limit(total, self.alive, **options)

    def rate_limit(self, per_second: float, *, burst: int = 1) -> SharedRateLimit:
        """Return a rate limit shared by every process of the run (one quota).

        Pass it as ``rate_limit=`` in each worker: together they start at most
        ``per_second`` calls a second, as one :class:`~parallelize.RateLimit` would.
        """
        return SharedRateLimit(self, per_second, burst=burst)

    def per_key(self, per_key: PerKey, *, lease: float = 60.0) -> PerKey:
        """Return ``per_key`` with its limits kept for every process of the run.

        Each key's ``concurrency`` and ``rate`` (with ``burst``) then hold for the
        whole fleet, by the Redis server's clock: ten workers on ten machines
        together keep one host at its limit. This process's own limits apply as
        well (asked first), as do its ``adaptive`` and ``failures``. An attempt
        asks Redis once: the asks of the attempts waiting at once go in one
        script, one round trip. Its place is given back without waiting when it
        ends, with the next asks. A ``Retry-After`` on an overload outcome of a
        key pauses that key for the fleet. Pass the result as ``per_key=`` in
        each process, with the same limits; on the run's items (:meth:`work`),
        give a small ``set_aside`` (twice ``numworkers``, say), so that a process
        whose keys are held does not keep the run's items aside from the others.

        A place outlives a process that dies holding it by at most ``lease``; a
        live process keeps its places however long its attempts take. Keys are
        one sorted set each in Redis (named by the SHA-1 of ``str(key)``), which
        expires once unused and which :meth:`delete` removes.

        Args:
            per_key: The limits per key, as for one process.
            lease: Seconds a place of a key stays taken after its process died or
                stopped answering (default 60): what a crash costs that key.
                Renewed every third of it while the process lives.

        Returns:
            A copy of ``per_key`` whose ``shared=`` is a :class:`SharedPerKey`.

        Raises:
            TypeError: ``per_key`` is not a :class:`~parallelize.PerKey`.
            ValueError: ``per_key`` has a ``shared=`` already, or ``lease`` is not
                a number of seconds > 0.

        Example:
            >>> limits = PerKey(host_of, concurrency=2, rate=1.0, set_aside=400)
            >>> polite = queue.per_key(limits)
            >>> async for page in queue.work(fetch, 200, per_key=polite):
            ...     ...

        Added in 0.3.
        """
        if not isinstance(per_key, PerKey):
            raise TypeError(f"per_key must be a PerKey, got {per_key!r}")
        if per_key.shared is not None:
            raise ValueError(
                f"per_key has a shared= already ({per_key.shared!r}): pass the PerKey "
                f"without it, and per_key() adds the run's"
            )
        lease = check_seconds("lease", lease)
        shared = SharedPerKey(self.connection, self._leases, per_key, lease=lease)
        return dataclasses.replace(per_key, shared=shared)
