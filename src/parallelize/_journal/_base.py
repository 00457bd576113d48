"""What a journal stores, and the small interfaces a run's journal implements.

A journal records each item's *final* outcome (a result, or a failure with its
attempts and timing) under the item's key, durably, so that a rerun of the same job
skips what is done. ``journal=`` takes one of two kinds, each a :class:`Protocol`
checked when the run is built:

- a :class:`Journal` (the SQLite journal is the embedded default), a store that the
  run's :class:`~parallelize._journal.JournalSession` looks up and appends to;
- a :class:`WorkSource` (a Redis queue), a shared store that is also the run's
  input: it opens the run's session itself.

Either way the run then talks to a :class:`RunSession`: its entries to run, and
where each final outcome goes.

Keys: by default an item's key is its position in the input (an int), checked on
resume against a short hash of the item so that a journal is never applied to a
different input; with ``key=`` it is whatever the function returns (str or int).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, final, runtime_checkable
from zlib import crc32

from parallelize._errors import ParallelizeError
from parallelize._util import fits_utf8

__all__ = (
    "Codec",
    "Entry",
    "Journal",
    "JsonCodec",
    "Record",
    "RecordedError",
    "RunInfo",
    "RunSession",
    "Tagged",
    "WorkSource",
    "item_digest",
    "missing",
    "type_name",
)

Key = int | str


@final
@dataclasses.dataclass(frozen=True, slots=True)
class RunInfo:
    """What a run tells its journal when it opens it, to refuse a mismatch.

    Attributes:
        identity: ``"position"`` (keys are input positions) or ``"key"`` (keys come
            from the user's ``key=`` function).
        action: The action's qualified name (informational).
        codec: The codec's name; results stored by one cannot be read by another.
    """

    identity: str
    action: str
    codec: str


class Record(NamedTuple):
    """One item's final outcome, as stored (a tuple: cheap to build, one per item).

    Attributes:
        key: The item's key.
        ok: True for a result, False for a failure.
        data: The result encoded by the codec (ok), or None.
        error_type: The failure's exception type, ``module.QualName`` (failed).
        error_message: ``str()`` of the failure's exception (failed).
        attempts: Calls of the action it took.
        elapsed: Seconds from its first attempt to its end, or None.
        expected: Whether the failure was an expected one (failed).
        digest: A short hash of the item, for positional keys (else None).
    """

    key: Key
    ok: bool
    data: str | None
    error_type: str | None
    error_message: str | None
    attempts: int
    elapsed: float | None
    expected: bool
    digest: bytes | None


class RecordedError(ParallelizeError):
    """A failure read back from a journal: the original exception's type and message.

    The original exception object is not stored (a journal is data: loading it must
    not run code), so a replayed failure carries this instead.

    Attributes:
        type_name: The original exception's type, ``module.QualName``.
        message: ``str()`` of the original exception.
        data: The original exception's ``journal_data`` attribute, stored through
            the journal's codec (what a consumer needs to write the failure again,
            say), or None when it had none. Added in 0.2.

    Changed in 0.2: a :class:`parallelize.ParallelizeError` (was a plain ``Exception``).
    """

    def __init__(self, type_name: str, message: str, data: Any = None) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.data = data


@runtime_checkable
class Codec(Protocol):
    """Turns results into text and back; the default is :class:`JsonCodec`."""

    name: str

    def encode(self, value: Any) -> str:
        """Return ``value`` as text; raise TypeError or ValueError if it cannot."""

    def decode(self, text: str) -> Any:
        """Return the value that ``encode`` turned into ``text``."""


@final
class JsonCodec:
    """JSON: str, int, float, bool, None, lists and dicts with str keys.

    Never pickle by default: a journal is data, and reading one must not run code.
    """

    __slots__ = ("_encode", "_encode_ascii")

    name = "json"

    def __init__(self) -> None:
        # One encoder, made once: json.dumps() with options builds a new one per call.
        self._encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self._encode_ascii = json.JSONEncoder(separators=(",", ":")).encode

    def encode(self, value: Any) -> str:
        text: str = self._encode(value)
        if not fits_utf8(text):
            # A lone surrogate (real web data has them): the file holds UTF-8 only,
            # so escape it as JSON does (\ud83d), which decodes back to the very
            # same string.
            return str(self._encode_ascii(value))
        return text

    def decode(self, text: str) -> Any:
        return json.loads(text)


_digest_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def item_digest(item: object) -> bytes | None:
    """Return 4 bytes (a CRC-32) identifying ``item`` across runs, or None if it cannot.

    A guard against resuming with a changed input, not a cryptographic identity: a
    changed input differs in many items, and the first that differs is caught.

    JSON when the item is plain data (a URL, a tuple of numbers), else its repr; a
    repr holding a memory address (``<object at 0x...>``) differs in every process
    and gives None (not checked).
    """
    kind = type(item)
    if kind is str:
        text: str = item  # type: ignore[assignment]  # the common case, a URL
    elif kind is int:
        text = repr(item)
    else:
        try:
            text = _digest_encode(item)
        except (TypeError, ValueError):
            text = repr(item)
            if " at 0x" in text:
                return None
    return crc32(text.encode()).to_bytes(4, "little")


def type_name(error: BaseException) -> str:
    """Return the type of ``error`` as a record stores it: ``module.QualName``.

    A builtin's is its bare name (``ValueError``), as a traceback shows it.
    """
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


@runtime_checkable
class Journal(Protocol):
    """The storage behind ``parallelize(..., journal=...)``.

    A journal is opened once per run, looked up in batches while the input is read,
    appended to in batches as outcomes become final, and closed at the end. The
    methods are synchronous and called from the event loop's thread, a batch at a
    time: keep them quick (the SQLite journal hands its batches to a writer
    process; writing 1000 rows on the loop would stall it for 3-6 ms).
    """

    replay: bool  # yield stored results again on a rerun (else only the new ones)

    @property
    def retry_failed(self) -> bool | Callable[[RecordedError], bool]:
        """Which items whose stored outcome is a failure run again on a rerun.

        All (True), none (False), or those a function of their
        :class:`RecordedError` picks. A plain ``retry_failed: bool`` attribute
        does too.
        """

    codec: Codec  # turns results into text and back
    flush_every: int  # outcomes per append()
    flush_interval: float  # the most seconds an outcome waits for its append()

    def open(self, info: RunInfo) -> None:
        """Create the store, or check that it belongs to a run like ``info``.

        Raises:
            JournalError: The store is corrupt, locked by a live run, from a newer
                version, or was written by a run that cannot match this one.
        """

    def lookup(self, keys: Sequence[Key]) -> dict[Key, Record]:
        """Return the stored records among ``keys`` (missing keys are not done)."""

    def append(self, records: Sequence[Record]) -> None:
        """Store ``records`` as one transaction.

        When it returns, the records must survive this process being killed: stored,
        or handed to something (a writer process, a server) that stores them anyway.
        """

    def close(self, *, finished: bool) -> None:
        """Release the store; ``finished`` says whether the whole input was done."""


@final
class Entry:
    """An input item on its way through a journaled run (internal)."""

    __slots__ = ("data", "digest", "item", "key", "ref", "stored")

    ref: Any  # a work source's own handle on the entry (a Redis stream id), when it has one

    def __init__(self, key: Key, item: Any, digest: bytes | None, stored: Record | None) -> None:
        self.key = key
        self.item = item
        self.digest = digest
        self.stored = stored  # set when the item is replayed, not run
        self.data: str | None = None  # the result as the codec stored it (see prepare)


# An outcome as the workers deliver it to a journaled run's consumer:
# (entry, result or Failure, attempts, elapsed).
Tagged = tuple[Entry, Any, int, float | None]


class RunSession(Protocol):
    """What a run asks of its session, whichever opened it.

    Implemented by :class:`~parallelize._journal.JournalSession` (a
    :class:`Journal`'s) and by a :class:`WorkSource`'s own session (a Redis
    queue's). Only a journal's session reads a sync input or replays stored
    outcomes: those calls (``wrap()``, ``replayed_outcome()``) are on
    ``JournalSession`` alone.
    """

    recorded: int  # outcomes recorded by this run
    replayed: int  # stored outcomes yielded again without running
    skipped: int  # items done already, not run

    @property
    def location(self) -> str | None:
        """Where the journal is, for messages."""

    def wrap_async(self, source: AsyncIterable[Any]) -> AsyncIterator[Entry]:
        """Return the entries to run (a work source's own, whatever ``source``)."""

    def prepare(self, tagged: Tagged) -> Tagged:
        """Make an outcome ready to record before it is yielded (see JournalSession)."""

    def record(self, entry: Entry, outcome: Any, attempts: int, elapsed: float | None) -> None:
        """Record the final outcome of ``entry`` (taken by the consumer)."""

    def flush(self) -> None:
        """Record what is buffered now."""

    def close(self, *, finished: bool) -> None:
        """Flush, then release the journal (idempotent)."""


@runtime_checkable
class WorkSource(Protocol):
    """A journal that is also the run's input: a shared queue (:mod:`parallelize.redis`)."""

    def open_session(
        self,
        argslist: Iterable[Any] | AsyncIterable[Any],
        *,
        key: Callable[[Any], Key] | None,
        action_name: str,
        numworkers: int,
    ) -> RunSession:
        """Start a run's use of the source; ``argslist`` is added to it meanwhile."""


def missing(candidate: object, protocol: type) -> list[str]:
    """Return the members of ``protocol`` that ``candidate`` lacks, for a message.

    Methods as ``name()`` (missing or not callable), then attributes, then
    read-only attributes (properties), each in the order the protocol declares them.
    """
    methods = [
        f"{name}()"
        for name, value in vars(protocol).items()
        if not name.startswith("_")
        and callable(value)
        and not callable(getattr(candidate, name, None))
    ]
    attributes = [
        name for name in vars(protocol).get("__annotations__", {}) if not hasattr(candidate, name)
    ]
    properties = [
        name
        for name, value in vars(protocol).items()
        if isinstance(value, property) and not hasattr(candidate, name)
    ]
    return methods + attributes + properties
