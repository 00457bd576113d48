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
import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar, final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.retry import Retry as _RedisRetry
from redis.backoff import NoBackoff

from parallelize._errors import JournalError, UnstorableResult
from parallelize._journal._base import item_digest
from parallelize._journal._session import (
    _END,
    Entry,
    Tagged,
    _cancel,
    _resume,
    _start_next,
    _type_name,
)
from parallelize._limits import AdaptiveLimit
from parallelize._limits._rate import check_per_second
from parallelize._outcomes import Failure
from parallelize._util import check_int, check_seconds, fits_utf8

from . import NO_INPUT, _scripts

if TYPE_CHECKING:
    from parallelize._engine import Run

__all__ = (
    "NO_INPUT",
    "DeadLetter",
    "QueueInUseError",
    "QueueProgress",
    "QueueUnavailableError",
    "RedisQueue",
    "SharedRateLimit",
    "StoredOutcome",
    "WorkerStatus",
)

logger = logging.getLogger("parallelize.redis")

T = TypeVar("T")

_GROUP: Final = "workers"
_ENQUEUE_BATCH = 256  # items per XADD script
_STORE_BATCH = 1000  # outcomes per store script
_STORE_GATHER = 0.005  # seconds a small batch of outcomes waits for more
_CALL_TIMEOUT = 10.0  # seconds one call to Redis may take before it is tried again
_encode_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
_decode = json.loads


def _encode(value: Any) -> str:
    """Return the JSON text of ``value``, lone surrogates escaped.

    What UTF-8 cannot hold is written as JSON's escape (backslash, u, d83d), which
    decodes back to the very same string.
    """
    text: str = _encode_text(value)
    return text if fits_utf8(text) else str(_encode_ascii(value))


def _json(value: Any) -> str:
    """``_encode(value)``, without the encoder for the common cases: a str, an int."""
    kind = type(value)
    if kind is str:
        text: str = encode_basestring(value)  # what the encoder does with a str
        return text if fits_utf8(text) else str(encode_basestring_ascii(value))
    if kind is int:
        return str(value)
    return _encode(value)


# Errors after which Redis may well answer again: retried until reconnect_timeout.
_TRANSIENT = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,  # a replica promoted while we wrote
    rx.TryAgainError,
    rx.MasterDownError,
    OSError,
)
# Of those, the ones a server sends: whoever gets one has reached it (a server
# loading its data at a start, a replica), so the first connection waits for it too.
_ANSWERED = (rx.BusyLoadingError, rx.ReadOnlyError, rx.TryAgainError, rx.MasterDownError)
_NAMES_SHOWN = 5  # workers named in a refusal to delete; the rest are counted


class QueueUnavailableError(JournalError):
    """Redis cannot be reached: at first, or for longer than ``reconnect_timeout``.

    The queue's first connection is not retried: a server never reached is a wrong
    URL or a server not started. Once reached, Redis is waited for (a restart, a
    failover) for up to the queue's ``reconnect_timeout``.

    Nothing is lost: an item whose outcome was not stored stays pending in the
    run's stream and runs again once Redis is back.
    """


class QueueInUseError(JournalError):
    """:meth:`RedisQueue.delete` refused: workers are on the run.

    A worker counts as alive until its ``idle_timeout`` has passed since its last
    report (by the Redis server's clock).

    Attributes:
        run: The run's name.
        workers: The consumer names of the workers alive, sorted.

    Added in 0.2.
    """

    def __init__(self, run: str, workers: Iterable[str], location: str) -> None:
        self.run = run
        self.workers = tuple(sorted(workers))
        super().__init__(
            f"the run {run!r} has {_count_workers(self.workers)} alive "
            f"({_names(self.workers)}), so it was not deleted: their late writes would "
            f"reach a new run of that name. Stop them (or wait until they have been "
            f"silent for their idle_timeout), or call delete(force=True): their writes "
            f"are then refused, and they stop with an error",
            location,
        )


def _count_workers(workers: Sequence[str]) -> str:
    return "1 worker" if len(workers) == 1 else f"{len(workers)} workers"


def _names(workers: Sequence[str]) -> str:
    """Name the first few of ``workers``, and count the others, for one line."""
    shown = ", ".join(workers[:_NAMES_SHOWN])
    more = len(workers) - _NAMES_SHOWN
    return shown if more <= 0 else f"{shown} and {more} more"


def _is_fenced(error: BaseException) -> bool:
    """Whether ``error`` is a write refused because the run was deleted (FENCED)."""
    cause = error.__cause__
    return isinstance(cause, rx.ResponseError) and str(cause).startswith("FENCED")


def _mask(url: str) -> str:
    """Return ``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _key_text(key: int | str) -> str:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"key= must return a str or an int, got {key!r}")
    return _json(key)


def _tls_refused(error: BaseException) -> bool:
    """Whether ``error`` is a TLS failure that trying again cannot mend."""
    seen: BaseException | None = error
    for _ in range(5):  # the error, and what it was raised from
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "null"
    return repr(value)


# -- what the queue tells -----------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True, slots=True)
class StoredOutcome:
    """An item's final outcome as stored in the run (exactly once).

    Attributes:
        key: The item's key: its position in the input, or what ``key=`` gave.
        ok: True for a result, False for a failure.
        result: The result (JSON data), or for a failure what the queue's
            ``failure_data`` made of it (else None).
        error_type: The failure's exception type, ``module.QualName`` (failed).
        error_message: ``str()`` of that exception (failed).
        expected: Whether the failure was an expected one (failed).
        attempts: Calls of the action it took, in the worker that stored it.
        elapsed: Seconds from its first attempt to its end, when measured.
        worker: The consumer name of the worker that stored it.
    """

    key: int | str
    ok: bool
    result: Any
    error_type: str | None
    error_message: str | None
    expected: bool
    attempts: int
    elapsed: float | None
    worker: str

    @classmethod
    def _parse(cls, key_text: str, record: str) -> StoredOutcome:
        data = _decode(record)
        error = data.get("error") or {}
        return cls(
            key=_decode(key_text),
            ok=bool(data["ok"]),
            result=data.get("result"),
            error_type=error.get("type"),
            error_message=error.get("message"),
            expected=bool(data.get("expected", False)),
            attempts=int(data.get("attempts", 1)),
            elapsed=data.get("elapsed"),
            worker=data.get("worker", ""),
        )


@final
@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """An item taken out of the run because it kept killing (or stalling) workers.

    Attributes:
        key: The item's key.
        item: The item (its JSON form: a tuple comes back as a list).
        deliveries: Its attempts that started and ended without an outcome (their
            worker died or stopped answering while it ran). Entries a worker held
            without starting them are not counted.
        reason: Why it was taken out.
        worker: The last worker it was handed to.
        entry_id: Its entry's id in the run's stream.
    """

    key: int | str
    item: Any
    deliveries: int
    reason: str
    worker: str
    entry_id: str


@final
@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker process of a run, as it last reported (every few seconds).

    Attributes:
        name: Its consumer name (``host-pid-random``).
        host: The machine's host name.
        pid: Its process id.
        state: ``"working"``, ``"finished"`` or ``"stopped"`` (left early).
        in_flight: Entries it held: running, waiting to run, or being stored.
        ok: Outcomes it stored as results.
        failed: Outcomes it stored as failures.
        seen: When it last reported (Unix time, by its own clock).
    """

    name: str
    host: str
    pid: int
    state: str
    in_flight: int
    ok: int
    failed: int
    seen: float


@final
@dataclasses.dataclass(frozen=True, slots=True)
class QueueProgress:
    """A snapshot of a run, readable from any machine (:meth:`RedisQueue.progress`).

    Attributes:
        run: The run's name.
        produced: Items added to the run so far.
        input_done: Whether the whole input has been added.
        ok: Items whose stored outcome is a result.
        failed: Items whose stored outcome is a failure.
        dead: Items in the dead letters.
        remaining: Entries not done yet: waiting for a worker or in flight.
        in_flight: Entries handed to a worker and not done yet.
        workers: Every worker that has taken part, as it last reported.
    """

    run: str
    produced: int
    input_done: bool
    ok: int
    failed: int
    dead: int
    remaining: int
    in_flight: int
    workers: tuple[WorkerStatus, ...]

    @property
    def done(self) -> int:
        """Items with a stored outcome (results and failures)."""
        return self.ok + self.failed

    @property
    def finished(self) -> bool:
        """Whether the run is over: the whole input added, and every entry done."""
        return self.input_done and self.remaining == 0

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain data (for JSON)."""
        data = dataclasses.asdict(self)
        data["done"] = self.done
        data["finished"] = self.finished
        return data


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
        if failure_data is not None and not callable(failure_data):
            raise TypeError(f"failure_data must be a function of a Failure, got {failure_data!r}")
        self.failure_data = failure_data
        self._options = options
        prefix = f"parallelize:{{{run}}}:"
        self._items = prefix + "items"
        self._outcomes = prefix + "outcomes"
        self._results = prefix + "results"
        self._dead = prefix + "dead"
        self._meta = prefix + "meta"
        self._workers = prefix + "workers"
        self._solo = prefix + "solo"
        self._started = prefix + "started"
        self._tries = prefix + "tries"
        self._deaths = prefix + "deaths"
        self._producer = prefix + "producer"
        self._rate = prefix + "rate"
        self._alive = prefix + "alive"
        # The run's epoch this process joined (see _scripts): its writes are refused
        # once the run is deleted. None until it produces or works.
        self._epoch: str | None = None
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self._client: Any = None  # a redis.asyncio.Redis; Any: its types are loose
        self._scripts: dict[str, Any] = {}
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
        self._session: _Session | None = None
        self._state = "idle"
        self._counts = [0, 0]  # results and failures this process stored
        self._budgets: list[tuple[AdaptiveLimit, int]] = []  # limits sharing a budget
        self.alive = 0  # workers of the run alive at the last report

    def __repr__(self) -> str:
        return f"RedisQueue({_mask(self.url)!r}, run={self.run!r})"

    @property
    def location(self) -> str:
        """The queue, for messages: its URL (without password) and run."""
        return f"{_mask(self.url)} run {self.run}"

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError(f"{self!r} is open already")
        options: dict[str, Any] = {
            "decode_responses": True,
            # No socket timeouts in redis-py: with one, it sends every command
            # through asyncio.wait_for(), which on Python 3.11 can swallow a
            # cancellation (CPython gh-86296), and a run then never ends. Each
            # call is bounded by asyncio.timeout() in _call() instead.
            "socket_timeout": None,
            "socket_connect_timeout": None,
            "health_check_interval": 15,
            # Retried here, with the messages and the bound the queue promises.
            "retry": _RedisRetry(NoBackoff(), 0),
        }
        options.update(self._options)
        try:
            client = aioredis.from_url(self.url, **options)
        except ValueError as exc:
            raise ValueError(f"cannot use the Redis URL {_mask(self.url)!r}: {exc}") from exc
        self._client = client
        for name in _scripts.__all__:
            self._scripts[name] = client.register_script(getattr(_scripts, name))
        try:
            # Reading a run creates nothing in Redis: the stream and its group are
            # made by the first producer or worker.
            await self._call("connecting", client.ping, patient=False)
        except BaseException:
            self._client = None
            await client.aclose()
            raise
        self._closing = False
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._storer(), name="parallelize-redis-store"),
            loop.create_task(self._heartbeats(), name="parallelize-redis-heartbeat"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Store the outcomes still buffered, say goodbye, and disconnect."""
        client = self._client
        if client is None:
            return
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
                if self._state != "idle":
                    with contextlib.suppress(*_TRANSIENT, rx.RedisError):
                        async with asyncio.timeout(2.0):
                            await self._release()
                            await self._report()
            finally:
                self._client = None
                self._tasks = []
                await client.aclose()
        if not storer.cancelled() and storer.exception() is not None:
            raise storer.exception()  # type: ignore[misc]

    def _redis(self) -> Any:
        if self._client is None:
            raise RuntimeError(
                f"{self!r} is not open: use it in 'async with RedisQueue(...) as queue:'"
            )
        return self._client

    async def _create_group(self) -> bool:
        """Create the run's stream and group, unless they exist; True if created."""
        try:
            await self._redis().xgroup_create(self._items, _GROUP, id="0", mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def _join(self) -> None:
        """Make sure the run's group exists, for a worker: refuse a run that was lost.

        Items were added (the run's counts say so) but the stream is gone: Redis lost
        it (restarted without persistence), or it was deleted in part. Then join the
        run's epoch.
        """
        created = await self._call("starting the run", self._create_group)
        if created:
            client = self._redis()
            produced = await self._call(
                "reading the run", lambda: client.hget(self._meta, "produced")
            )
            if int(produced or 0) > 0:
                await self._call("", lambda: client.delete(self._items))
                raise self._gone()
        await self._join_epoch()

    async def _join_epoch(self) -> None:
        """Take the run's epoch (a new run's first process sets it) for its writes."""
        client = self._redis()
        self._epoch = await self._call(
            "joining the run",
            lambda: self._scripts["EPOCH"](
                keys=[self._meta], args=[secrets.token_hex(8)], client=client
            ),
        )

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """Call the script ``name`` that writes, fenced by the epoch this process joined.

        Its callers (the storer, the reports) write only once the run was joined
        (by :meth:`_join` or :meth:`produce`); an epoch forgotten since by
        :meth:`delete` is no epoch, and its writes are refused as a deleted run's.
        """
        return self._scripts[name](  # type: ignore[no-any-return]
            keys=[self._meta, *keys], args=[self._epoch or "", *args], client=self._redis()
        )

    async def _write(self, doing: str, name: str, keys: list[str], args: list[Any]) -> Any:
        """Call the script ``name`` that writes, through :meth:`_call`, joining if need be."""
        if self._epoch is None:
            await self._join_epoch()  # a shared rate limit used before a run starts
        return await self._call(doing, lambda: self._script(name, keys, args))

    async def _call(
        self, doing: str, call: Callable[[], Awaitable[T]], *, patient: bool = True
    ) -> T:
        """Return ``await call()``, retried while Redis does not answer.

        Args:
            doing: What the call is for, for messages ("storing outcomes").
            call: Makes the call (again at each try).
            patient: False for the queue's first connection: a server never reached
                is a wrong URL or a server not started, not one restarting, and is
                not waited for.

        Raises:
            QueueUnavailableError: Redis did not answer for ``reconnect_timeout``, or
                could not be reached at all (``patient=False``).
            JournalError: Redis refused the credentials, the TLS handshake or the
                database number, or the run is gone (or was deleted while this
                process was on it).
        """
        deadline = 0.0
        delay = 0.05
        warned = 0.0
        while True:
            try:
                async with asyncio.timeout(_CALL_TIMEOUT):
                    result = await call()
            except (rx.RedisError, OSError) as exc:
                refusal = self._refusal(exc, doing)
                if refusal is not None:
                    raise refusal from exc
                if not isinstance(exc, _TRANSIENT):
                    raise
                if not patient and not isinstance(exc, _ANSWERED):
                    raise self._unreachable(exc, doing) from exc
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.reconnect_timeout
                if now >= deadline:
                    raise QueueUnavailableError(
                        f"Redis at {_mask(self.url)} did not answer for "
                        f"{self.reconnect_timeout:g} s while {doing} ({exc}); nothing is "
                        f"lost: the items without a stored outcome run again once it is "
                        f"back. Start it (and give it persistence: appendonly yes), or "
                        f"fix the URL",
                        self.location,
                    ) from exc
                if now - warned >= 30.0:
                    logger.warning(
                        "Redis at %s does not answer while %s (%s); trying again for "
                        "up to %.0f s more, nothing is lost meanwhile",
                        _mask(self.url),
                        doing,
                        exc,
                        deadline - now,
                    )
                    warned = now
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if warned:
                logger.warning("Redis at %s answers again", _mask(self.url))
            return result

    def _unreachable(self, error: BaseException, doing: str) -> QueueUnavailableError:
        return QueueUnavailableError(
            f"cannot reach Redis at {_mask(self.url)} while {doing} "
            f"({type(error).__name__}: {str(error).rstrip('.') or 'timed out'}). Check that "
            f"a Redis server runs there, and the host and port in the URL (and that this "
            f"machine may reach them). Not retried: only a server reached once is waited "
            f"for (up to reconnect_timeout, {self.reconnect_timeout:g} s)",
            self.location,
        )

    def _refusal(self, error: BaseException, doing: str) -> JournalError | None:
        """Return the error to raise for what trying again cannot mend, else None."""
        where = _mask(self.url)
        if isinstance(error, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError):
            return JournalError(
                f"Redis at {where} refused us while {doing}: {error}. Check the user and "
                f"password in the URL (redis://user:password@host:port/db)",
                self.location,
            )
        if _tls_refused(error):
            return JournalError(
                f"TLS with Redis at {where} failed while {doing}: {error}. Give the "
                f"certificate authority that signed the server's certificate "
                f"(RedisQueue(..., ssl_ca_certs='ca.pem')), or use redis:// for a server "
                f"without TLS",
                self.location,
            )
        if isinstance(error, rx.ResponseError):
            text = str(error)
            if "NOGROUP" in text:
                return self._gone()
            if "FENCED" in text:
                return JournalError(
                    f"the run {self.run!r} was deleted from Redis at {where} while this "
                    f"process was on it (delete(force=True), or parallelize queue delete "
                    f"--force): its writes are refused, so that none reaches a new run of "
                    f"that name. It stopped; start it again to work on a new run",
                    self.location,
                )
            if "DB index" in text:  # "DB index is out of range", "invalid DB index"
                return JournalError(
                    f"Redis at {where} refused the database number in the URL while "
                    f"{doing}: {error}. Give one the server has (0 to 15 by default, its "
                    f"'databases' setting): redis://host:6379/0",
                    self.location,
                )
        return None

    def _gone(self) -> JournalError:
        return JournalError(
            f"the run {self.run!r} is gone from Redis at {_mask(self.url)} (no stream or "
            f"consumer group): it was deleted, or Redis restarted without persistence. "
            f"Give Redis 'appendonly yes', and start the run again",
            self.location,
        )

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
        await self._join_epoch()
        return await self._produce(argslist, key)

    async def _produce(
        self, argslist: Iterable[Any] | AsyncIterable[Any], key: Callable[[Any], int | str] | None
    ) -> int:
        await self._call("starting the run", self._create_group)
        producer = _Producer(self, key)
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
    ) -> _Session:
        """Start a run's use of the queue (called by the engine, when the run starts).

        Returns the session that is the run's input (the run's items, read from the
        stream; ``argslist`` is added to the run meanwhile, unless it is
        :data:`NO_INPUT`) and its journal (each outcome is stored, then acked).
        """
        self._redis()
        if self._session is not None:
            raise RuntimeError(f"{self!r} is used by another run already: one at a time")
        self._session = _Session(self, argslist, key, action_name, numworkers)
        return self._session

    async def _storer(self) -> None:
        """Store the outcomes handed over, a batch per round trip, until closed."""
        keys = [
            self._items,
            self._outcomes,
            self._results,
            self._meta,
            self._workers,
            self._solo,
            self._deaths,
            self._started,
            self._tries,
        ]
        head = [_GROUP, self.consumer, "1" if self.results_stream else "0"]
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
            counts = await self._call(
                "storing outcomes",
                lambda: self._script("STORE", keys, args),  # noqa: B023 - called now
            )
            self._counts[0] += int(counts[0])
            self._counts[1] += int(counts[1])
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
            released = await self._script(
                "RELEASE",
                [self._items, self._started, self._solo],
                [_GROUP, self.consumer, int(self.idle_timeout * 1000), *ids],
            )
            logger.info("gave back %d entries without an outcome to the run", released)
            self._owned.clear()

    def _status(self) -> str:
        return _encode(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "state": self._state,
                "in_flight": len(self._owned),
                "seen": time.time(),
            }
        )

    async def _report(self) -> int:
        """Refresh the entries this process holds, and write its status.

        Returns how many of them others took over. Also resizes this process's
        share of the run's concurrency budget, if it has one.
        """
        ids = list(self._owned)
        working = self._state == "working"
        taken, alive, gone = await self._script(
            "HEARTBEAT",
            [self._items, self._workers, self._alive],
            [
                _GROUP,
                self.consumer,
                self._status(),
                "1" if working else "0",
                int(self.idle_timeout * 1000),
                *ids,
            ],
        )
        self.alive = int(alive)
        for limit, total in self._budgets:
            limit._cap(max(1, total // max(1, self.alive)))  # noqa: SLF001
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
        every = self.idle_timeout / 3
        reported = "idle"
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._report_soon.wait()
            self._report_soon.clear()
            state = self._state
            if state == "idle" or (state != "working" and state == reported and not self._owned):
                # A part that ended is told once: then nothing of the run is this
                # process's to report (and a deleted run is left deleted).
                continue
            try:
                lost = await self._call("reporting", self._report)
            except JournalError as exc:
                if state == "working" or not _is_fenced(exc):
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
                    self.idle_timeout,
                )

    # -- reading the run ----------------------------------------------------------

    async def progress(self) -> QueueProgress:
        """Return a snapshot of the run: produced, done, failed, dead, per worker."""
        client = self._redis()

        async def read() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._meta)
                pipe.xlen(self._items)
                pipe.xpending(self._items, _GROUP)
                pipe.hgetall(self._workers)
                return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

        meta, remaining, pending, workers = await self._call("reading progress", read)
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
            workers=_workers_of(workers),
        )

    async def finished(self) -> bool:
        """Whether the run is over: its whole input added, and every entry done."""
        client = self._redis()

        async def read() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hget(self._meta, "input_done")
                pipe.xlen(self._items)
                return await pipe.execute()  # type: ignore[no-any-return]

        done, remaining = await self._call("reading progress", read)
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
        text = _key_text(key)
        record = await self._call("reading an outcome", lambda: client.hget(self._outcomes, text))
        return None if record is None else StoredOutcome._parse(text, record)  # noqa: SLF001

    async def results(self, *, follow: bool = False) -> AsyncIterator[StoredOutcome]:
        """Yield the run's outcomes in the order they were stored.

        Args:
            follow: Go on yielding new outcomes as they are stored, until the run
                is over (default: stop at the last one stored now).
        """
        client = self._redis()
        last = "0-0"
        while True:
            read = await self._call(
                "reading results",
                lambda: client.xread({self._results: last}, count=1000),  # noqa: B023
            )
            entries = read[0][1] if read else []
            for entry_id, fields in entries:
                last = entry_id
                yield StoredOutcome._parse(fields["k"], fields["r"])  # noqa: SLF001
            if entries:
                continue
            if not follow or await self.finished():
                # One more read: outcomes stored between the read and the check.
                read = await self._call(
                    "reading results",
                    lambda: client.xread({self._results: last}, count=1000),  # noqa: B023
                )
                for _, fields in read[0][1] if read else []:
                    yield StoredOutcome._parse(fields["k"], fields["r"])  # noqa: SLF001
                return
            await asyncio.sleep(0.2)

    async def dead_letters(self) -> list[DeadLetter]:
        """Return the items taken out of the run, with the reason of each."""
        client = self._redis()
        entries = await self._call("reading dead letters", lambda: client.xrange(self._dead))
        return [
            DeadLetter(
                key=_decode(fields["k"]),
                item=_decode(fields["a"]),
                deliveries=int(fields["deliveries"]),
                reason=fields["reason"],
                worker=fields["worker"],
                entry_id=fields["id"],
            )
            for _, fields in entries
        ]

    async def delete(self, *, force: bool = False) -> None:
        """Remove every key of the run from Redis (its items, outcomes, everything).

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
        client = self._redis()
        names = [
            self._alive,
            self._items,
            self._outcomes,
            self._results,
            self._dead,
            self._meta,
            self._workers,
            self._solo,
            self._started,
            self._tries,
            self._deaths,
            self._producer,
            self._rate,
        ]
        flag = "1" if force else "0"
        # This process's own part, if it ended, is not in the way (its last report
        # may not have been sent yet).
        me = self.consumer if self._session is None else ""
        deleted, alive = await self._call(
            "deleting the run",
            lambda: self._scripts["DELETE"](keys=names, args=[flag, me], client=client),
        )
        if not deleted:
            raise QueueInUseError(self.run, alive, self.location)
        if alive:
            logger.warning(
                "deleted the run %s under %s (%s): their writes are refused from now on",
                self.run,
                _count_workers(alive),
                _names(sorted(alive)),
            )
        # This queue's next producer or worker joins a new run; a part of this
        # process that ended has nothing left to report (one running is fenced out).
        self._epoch = None
        if self._session is None:
            self._state = "idle"
            self._owned.clear()

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
        check_int("total", total, 1)
        limit = AdaptiveLimit(**options)
        self._budgets.append((limit, total))
        if self.alive:
            limit._cap(max(1, total // self.alive))  # noqa: SLF001
        return limit

    def rate_limit(self, per_second: float, *, burst: int = 1) -> SharedRateLimit:
        """Return a rate limit shared by every process of the run (one quota).

        Pass it as ``rate_limit=`` in each worker: together they start at most
        ``per_second`` calls a second, as one :class:`~parallelize.RateLimit` would.
        """
        return SharedRateLimit(self, per_second, burst=burst)


def _workers_of(fields: dict[str, str]) -> tuple[WorkerStatus, ...]:
    workers = []
    for name, value in fields.items():
        if ":" in name:
            continue
        status = _decode(value)
        workers.append(
            WorkerStatus(
                name=name,
                host=str(status.get("host", "")),
                pid=int(status.get("pid", 0)),
                state=str(status.get("state", "")),
                in_flight=int(status.get("in_flight", 0)),
                ok=int(fields.get(f"{name}:ok", 0)),
                failed=int(fields.get(f"{name}:failed", 0)),
                seen=float(status.get("seen", 0.0)),
            )
        )
    return tuple(sorted(workers, key=lambda w: w.name))


# -- the producer -------------------------------------------------------------------


@final
class _Producer:
    """One producer's turn at adding a run's input: its lock, position and batch."""

    def __init__(self, queue: RedisQueue, key: Callable[[Any], int | str] | None) -> None:
        self._queue = queue
        self._key = key
        self._client = queue._redis()  # noqa: SLF001
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
            got = await queue._call(  # noqa: SLF001
                "taking the producer lock",
                lambda: client.set(queue._producer, self._token, nx=True, px=ttl_ms),  # noqa: SLF001
            )
            produced, done = await queue._call(  # noqa: SLF001
                "reading the run",
                lambda: client.hmget(queue._meta, "produced", "input_done"),  # noqa: SLF001
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
        queue, client = self._queue, self._client
        if await client.get(queue._producer) == self._token:  # noqa: SLF001
            await client.delete(queue._producer)  # noqa: SLF001

    async def check(self) -> None:
        """Refuse to add this input to a run produced with another kind of key."""
        queue, client = self._queue, self._client
        identity = "position" if self._key is None else "key"
        stored, last = await queue._call(  # noqa: SLF001
            "reading the run",
            lambda: client.hmget(queue._meta, "identity", "last"),  # noqa: SLF001
        )
        self._last = last or ""
        if stored is None:
            await queue._call(  # noqa: SLF001
                "starting the run",
                lambda: client.hset(queue._meta, "identity", identity),  # noqa: SLF001
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
        queue = self._queue
        kept = await queue._write(  # noqa: SLF001
            "keeping the producer lock",
            "REFRESH",
            [queue._producer],  # noqa: SLF001
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
            args = _json(list(item) if type(item) is tuple else item)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"item {this} ({item!r}) cannot go through Redis: items travel as JSON "
                f"({exc}). Pass plain data (str, numbers, lists, dicts), and look the "
                f"rest up in the action"
            ) from exc
        batch = self._batch
        batch.append(_key_text(item_key))
        batch.append(args)
        mark = item_digest(item)
        self._digest = "" if mark is None else mark.hex()
        return len(batch) >= 2 * _ENQUEUE_BATCH

    async def add_async(self, argslist: AsyncIterable[Any]) -> None:
        """Add an async input; a batch goes as soon as the next item is not ready."""
        items = aiter(argslist)
        while True:
            item, step, waiting_on = _start_next(items)
            if step is not None:
                try:
                    await self.send()  # not ready: send what was read, then wait
                    item = await _resume(step, waiting_on)
                except BaseException:
                    await _cancel(step)
                    raise
            if item is _END:
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
            self._length = await queue._call(  # noqa: SLF001
                "waiting for the workers",
                lambda: client.xlen(queue._items),  # noqa: SLF001
            )
        await self._refresh()
        try:
            length = await queue._write(  # noqa: SLF001
                "adding items",
                "ENQUEUE",
                [queue._items, queue._meta, queue._producer],  # noqa: SLF001
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
        queue = self._queue
        try:
            await queue._write(  # noqa: SLF001
                "marking the input done",
                "INPUT_DONE",
                [queue._meta, queue._producer],  # noqa: SLF001
                [self._token, self.produced],
            )
        except rx.ResponseError as exc:
            if "PRODUCER_LOST" in str(exc):
                raise self._lost() from exc
            raise


# -- one run's session --------------------------------------------------------------


@final
class _Session:
    """A run's input and journal, in one: the engine's side of a :class:`RedisQueue`."""

    def __init__(
        self,
        queue: RedisQueue,
        argslist: Iterable[Any] | AsyncIterable[Any],
        key: Callable[[Any], int | str] | None,
        action_name: str,
        numworkers: int,
    ) -> None:
        self._queue = queue
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
        self._consumer_json = _encode(queue.consumer)
        self.recorded = 0
        self.replayed = 0
        self.skipped = 0

    @property
    def location(self) -> str:
        return self._queue.location

    def wrap(self, source: Iterable[Any]) -> Any:  # noqa: ARG002 - the Session protocol
        raise AssertionError("a queue's session reads with wrap_async()")

    def replayed_outcome(self, entry: Entry) -> Any:  # noqa: ARG002 - the Session protocol
        raise AssertionError("a queue's session replays nothing")

    async def wrap_async(self, source: AsyncIterable[Any]) -> AsyncIterator[Entry]:  # noqa: ARG002
        """Yield the run's entries for this process, until the run is over.

        ``source`` is the run's argslist, which the session holds already: it is
        added to the run by a producer task, while this reads the run's stream.
        """
        queue = self._queue
        await queue._join()  # noqa: SLF001
        await self._check_run()
        queue._state = "working"  # noqa: SLF001
        await queue._call("reporting", queue._report)  # noqa: SLF001
        producer = None
        if self._argslist is not NO_INPUT:
            producer = asyncio.get_running_loop().create_task(
                queue._produce(self._argslist, self._key),  # noqa: SLF001
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
                if await queue.finished():
                    finished = True
                    return
                idle = min(0.2, idle * 2 or 0.005)
                await asyncio.sleep(idle)
        finally:
            await self._end(producer, finished=finished)

    async def _end(self, producer: asyncio.Task[int] | None, *, finished: bool) -> None:
        """Stop the producer and the read ahead; note how this process's part ended."""
        queue = self._queue
        for task in (producer, self._ahead):
            if task is not None:
                task.cancel()
                await asyncio.wait((task,))
        queue._state = "finished" if finished else "stopped"  # noqa: SLF001
        queue._session = None  # noqa: SLF001
        queue._report_soon.set()  # noqa: SLF001

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
        queue = self._queue
        end = min(len(entries), i + self._mark_ahead)
        packed = "\n".join([entry.ref for entry in entries[i:end]])
        await queue._write(  # noqa: SLF001
            "marking items started",
            "STARTED",
            [queue._started],  # noqa: SLF001
            [queue.consumer, packed],
        )
        return end

    def _check_helpers(self, producer: asyncio.Task[int] | None) -> asyncio.Task[int] | None:
        """Raise the error of the producer, the storer or the heartbeat, if one failed."""
        for helper in self._queue._tasks:  # noqa: SLF001
            if helper.done():
                helper.result()  # Redis did not answer for reconnect_timeout, say
        if producer is not None and producer.done():
            producer.result()  # its error, if it failed, is the run's
            return None
        return producer

    async def _until_stored(self, entry: Entry) -> None:
        """Wait until the outcome of ``entry`` is stored (it is alone until then).

        Not only taken: while its outcome waits for the storer, the entry is still
        marked as running alone, and a death then would be charged to it.
        """
        queue = self._queue
        while entry.ref in queue._owned:  # noqa: SLF001 - until stored (a rare path)
            queue._store_wake.set()  # noqa: SLF001
            await asyncio.sleep(0.001)

    async def _mark_alone(self, entry: Entry) -> None:
        """Note that ``entry`` runs alone here: if this worker dies, it is to blame."""
        queue = self._queue
        await queue._write(  # noqa: SLF001
            "marking a suspect",
            "STARTED",
            [queue._solo],  # noqa: SLF001
            [queue.consumer, entry.ref],
        )

    def _hand(self) -> None:
        self._in_engine += 1
        self._drained.clear()

    async def _drain(self) -> None:
        """Wait until every entry handed to the engine has had its outcome taken."""
        while self._in_engine:
            await self._drained.wait()

    async def _check_run(self) -> None:
        queue = self._queue
        client = queue._redis()  # noqa: SLF001
        mine = _encode({"action": self._action_name, "codec": "json"})
        stored = await queue._call(  # noqa: SLF001
            "reading the run",
            lambda: client.hsetnx(queue._meta, "info", mine),  # noqa: SLF001
        )
        if stored:
            return
        info = await queue._call(  # noqa: SLF001
            "reading the run",
            lambda: client.hget(queue._meta, "info"),  # noqa: SLF001
        )
        theirs = _decode(info or "{}")
        if theirs.get("action") != self._action_name:
            raise JournalError(
                f"the run {queue.run!r} is worked on by the action "
                f"{theirs.get('action')!r}, not {self._action_name!r}: every worker of a "
                f"run runs the same action. Use another run name for this one",
                queue.location,
            )

    def _entry(self, entry_id: str, key_text: str, args: str) -> Entry:
        entry = Entry(key_text, _decode(args), None, None)
        entry.ref = entry_id
        self._queue._owned[entry_id] = None  # noqa: SLF001
        return entry

    async def _take(self, *, mark: int) -> list[Entry]:
        """Read a batch of new entries; mark the first ``mark`` of them as started."""
        queue = self._queue
        read, skipped = await queue._write(  # noqa: SLF001
            "reading items",
            "TAKE",
            [queue._items, queue._outcomes, queue._started],  # noqa: SLF001
            [_GROUP, queue.consumer, self._batch, mark],
        )
        self.skipped += int(skipped)
        self._read_any = bool(read or skipped)  # skipped: there may be more at once
        return [self._entry(*fields) for fields in read]

    async def _claim(self) -> tuple[list[Entry], list[Entry]]:
        queue = self._queue
        claimed, dead, mine = await queue._write(  # noqa: SLF001
            "taking over the entries of silent workers",
            "CLAIM",
            [
                queue._items,  # noqa: SLF001
                queue._meta,  # noqa: SLF001
                queue._dead,  # noqa: SLF001
                queue._solo,  # noqa: SLF001
                queue._deaths,  # noqa: SLF001
                queue._started,  # noqa: SLF001
                queue._tries,  # noqa: SLF001
            ],
            [
                _GROUP,
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
        owned = queue._owned  # noqa: SLF001
        lost = [self._entry(entry_id, k, a) for entry_id, k, a in mine if entry_id not in owned]
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
            entry.data = _json(outcome)
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
            record = _encode(
                {
                    "ok": False,
                    "error": {"type": _type_name(error), "message": str(error)},
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
                data = entry.data if entry.data is not None else _json(outcome)
            except (TypeError, ValueError) as exc:
                raise JournalError(
                    f"cannot store the result of item {entry.item!r} in Redis: {exc}. "
                    f"Return plain data from the action (str, numbers, lists, dicts)",
                    queue.location,
                ) from exc
            record = (
                f'{{"ok":true,"result":{data},"attempts":{attempts},'
                f'"elapsed":{_number(elapsed)},"worker":{self._consumer_json}}}'
            )
            ok = "1"
        queue._to_store.append((entry.ref, entry.key, record, ok))  # noqa: SLF001
        self.recorded += 1
        # The storer sends at once when idle; while a round trip is out, outcomes
        # gather for the next one (a batch as large as the wait made it).
        queue._store_wake.set()  # noqa: SLF001

    def flush(self) -> None:
        self._queue._store_wake.set()  # noqa: SLF001

    def close(self, *, finished: bool) -> None:  # noqa: ARG002 - the run's end is read in Redis
        self._closed = True
        self._queue._store_wake.set()  # noqa: SLF001


# -- a rate limit for the whole run -------------------------------------------------


@final
class SharedRateLimit:
    """A rate limit kept in Redis, shared by every process of a run.

    Made by :meth:`RedisQueue.rate_limit`; pass it as ``rate_limit=``. The same
    GCRA as :class:`~parallelize.RateLimit`, over the server's clock: each process
    reserves a few slots at a time (about 50 ms worth), so a fleet takes one round
    trip per few calls and never more than ``per_second`` (plus ``burst``) in
    total. A slot not used in time is dropped, never bunched with the next; a
    ``Retry-After`` pauses the whole fleet.
    """

    def __init__(self, queue: RedisQueue, per_second: float, *, burst: int = 1) -> None:
        check_per_second(per_second)
        self._queue = queue
        self._interval = 1.0 / per_second
        self.burst = check_int("burst", burst, 1)
        self._lease = max(1, min(100, int(per_second * 0.05)))
        self._slots: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._pause: float = 0.0  # a Retry-After to tell the others, in monotonic time
        self.calls = 0
        self.dropped = 0
        self.round_trips = 0

    @property
    def per_second(self) -> float:
        """The run's sustained rate, in calls per second."""
        return 1.0 / self._interval

    def __repr__(self) -> str:
        return f"SharedRateLimit(per_second={self.per_second:g}, burst={self.burst})"

    async def acquire(self) -> None:
        """Wait for this call's slot in the run's shared quota."""
        slots = self._slots
        while True:
            now = time.monotonic()
            while slots and slots[0] < now - self._interval:
                slots.popleft()  # its moment passed unused: never bunch it with the next
                self.dropped += 1
            if slots:
                at = slots.popleft()
                self.calls += 1
                if at > now:
                    await asyncio.sleep(at - now)
                return
            async with self._lock:
                if not slots:
                    await self._reserve()

    async def _reserve(self) -> None:
        queue = self._queue
        interval_us = int(self._interval * 1e6)
        tolerance_us = int((self.burst - 1) * self._interval * 1e6)
        if self._pause:
            delay = max(0.0, self._pause - time.monotonic())
            self._pause = 0.0
            await queue._write(  # noqa: SLF001
                "pausing the run's calls",
                "RATE_PAUSE",
                [queue._rate],  # noqa: SLF001
                [int(delay * 1e6), tolerance_us],
            )
            self.round_trips += 1
        offsets: Sequence[int] = await queue._write(  # noqa: SLF001
            "reserving calls",
            "RATE",
            [queue._rate],  # noqa: SLF001
            [interval_us, tolerance_us, self._lease],
        )
        self.round_trips += 1
        now = time.monotonic()
        self._slots.extend(now + offset / 1e6 for offset in offsets)

    def pause_until(self, when: float) -> None:
        """Let no call of the run go before ``when`` (a ``time.monotonic()`` value)."""
        kept = [at for at in self._slots if at >= when]
        self._slots.clear()
        self._slots.extend(kept)
        self._pause = max(self._pause, when)
