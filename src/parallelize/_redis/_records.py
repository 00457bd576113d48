"""What a run holds in Redis and what the queue tells of it: keys, JSON, records.

The names of a run's keys (:class:`Keys`), the JSON codec every value goes through
(JSON, never pickle; lone surrogates escaped), the records the queue returns
(:class:`StoredOutcome`, :class:`DeadLetter`, :class:`WorkerStatus`,
:class:`QueueProgress`) and the queue's two errors. Also :class:`QueueSettings`:
what the other parts of the queue read of its settings. Nothing here talks to Redis.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, Final, Protocol, final

from parallelize._errors import JournalError
from parallelize._outcomes import Failure
from parallelize._util import fits_utf8

__all__ = (
    "GROUP",
    "DeadLetter",
    "Keys",
    "QueueInUseError",
    "QueueProgress",
    "QueueSettings",
    "QueueUnavailableError",
    "StoredOutcome",
    "WorkerStatus",
    "count_workers",
    "decode",
    "encode",
    "key_text",
    "name_workers",
    "number",
    "parse_outcome",
    "to_json",
    "workers_of",
)

GROUP: Final = "workers"  # the run's consumer group
_NAMES_SHOWN = 5  # workers named in a refusal to delete; the rest are counted


# -- keys -------------------------------------------------------------------------


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Keys:
    """The names of a run's keys in Redis (what each holds: see ``_scripts``).

    ``{run}`` is a hash tag: a Redis Cluster keeps a run's keys in one slot, as
    scripts need.
    """

    alive: str
    items: str
    outcomes: str
    results: str
    dead: str
    meta: str
    workers: str
    solo: str
    started: str
    tries: str
    deaths: str
    producer: str
    rate: str

    @classmethod
    def of(cls, run: str) -> Keys:
        """Return the keys of the run named ``run``."""
        prefix = f"parallelize:{{{run}}}:"
        return cls(*[prefix + field.name for field in dataclasses.fields(cls)])

    def every(self) -> list[str]:
        """Every key of the run with a fixed name (to delete it; see :meth:`per_key`)."""
        return list(dataclasses.astuple(self))

    def per_key(self, key: object) -> str:
        """Return the name of the zset of ``key``, a key of a :class:`~parallelize.PerKey`.

        Named by the SHA-1 of ``str(key)``: bounded, safe whatever the key holds, and
        the same in every process (keys whose ``str()`` is the same share a place).
        """
        text = str(key).encode("utf-8", "surrogatepass")
        digest = hashlib.sha1(text, usedforsecurity=False).hexdigest()
        return f"{self.meta[: -len('meta')]}key:{digest}"

    def per_key_pattern(self) -> str:
        """Return the ``SCAN MATCH`` pattern of every zset of :meth:`per_key`."""
        prefix = self.meta[: -len("meta")]
        return "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "key:*"


# -- what the other parts read of the queue's settings --------------------------------


class QueueSettings(Protocol):
    """What the parts of a queue read of its settings: the :class:`RedisQueue` itself.

    Read when needed, never copied: the parts see the queue's settings as they are
    (each documented on :class:`RedisQueue`).
    """

    url: str
    run: str
    consumer: str  # this process's consumer name in the run
    max_pending: int
    idle_timeout: float
    max_deaths: int
    max_deliveries: int
    batch: int | None
    results_stream: bool
    reconnect_timeout: float
    failure_data: Callable[[Failure], Any] | None

    @property
    def location(self) -> str:
        """The queue, for messages (its URL without password, and its run)."""


# -- JSON ---------------------------------------------------------------------------

_encode_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
decode = json.loads


def encode(value: Any) -> str:
    """Return the JSON text of ``value``, lone surrogates escaped.

    What UTF-8 cannot hold is written as JSON's escape (backslash, u, d83d), which
    decodes back to the very same string.
    """
    text: str = _encode_text(value)
    return text if fits_utf8(text) else str(_encode_ascii(value))


def to_json(value: Any) -> str:
    """``encode(value)``, without the encoder for the common cases: a str, an int."""
    kind = type(value)
    if kind is str:
        text: str = encode_basestring(value)  # what the encoder does with a str
        return text if fits_utf8(text) else str(encode_basestring_ascii(value))
    if kind is int:
        return str(value)
    return encode(value)


def key_text(key: int | str) -> str:
    """Return the JSON text of an item's key; refuse a key of another type."""
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"key= must return a str or an int, got {key!r}")
    return to_json(key)


def number(value: float | None) -> str:
    """Return the JSON text of a float that may be missing or not finite (null)."""
    if value is None or not math.isfinite(value):
        return "null"
    return repr(value)


# -- errors -------------------------------------------------------------------------


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
            f"the run {run!r} has {count_workers(self.workers)} alive "
            f"({name_workers(self.workers)}), so it was not deleted: their late writes "
            f"would reach a new run of that name. Stop them (or wait until they have "
            f"been silent for their idle_timeout), or call delete(force=True): their "
            f"writes are then refused, and they stop with an error",
            location,
        )


def count_workers(workers: Sequence[str]) -> str:
    """Return "1 worker" or "N workers", for messages."""
    return "1 worker" if len(workers) == 1 else f"{len(workers)} workers"


def name_workers(workers: Sequence[str]) -> str:
    """Name the first few of ``workers``, and count the others, for one line."""
    shown = ", ".join(workers[:_NAMES_SHOWN])
    more = len(workers) - _NAMES_SHOWN
    return shown if more <= 0 else f"{shown} and {more} more"


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


def parse_outcome(key_json: str, record: str) -> StoredOutcome:
    """Return the :class:`StoredOutcome` of a key's JSON text and its stored record."""
    data = decode(record)
    error = data.get("error") or {}
    return StoredOutcome(
        key=decode(key_json),
        ok=bool(data["ok"]),
        result=data.get("result"),
        error_type=error.get("type"),
        error_message=error.get("message"),
        expected=bool(data.get("expected", False)),
        attempts=int(data.get("attempts", 1)),
        elapsed=data.get("elapsed"),
        worker=data.get("worker", ""),
    )


def workers_of(fields: dict[str, str]) -> tuple[WorkerStatus, ...]:
    """Return the workers of a run's ``workers`` hash, sorted by name."""
    workers = []
    for name, value in fields.items():
        if ":" in name:
            continue
        status = decode(value)
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
