"""One run's use of a journal: skip what is done, record what finishes.

The session wraps the run's input: it reads items a batch at a time, numbers them
(their key: position, or the user's ``key=``), looks the batch up in the journal,
and hands the engine only the items to run, each as an :class:`Entry`; an item
already done is skipped, or handed over with its stored outcome to be replayed
without running. Memory stays one batch, whatever the journal's size.

Outcomes are recorded when the consumer has *taken* them: an item's outcome is
appended when the consumer asks for the next one (the ``async for`` body finished
with it), so a crash never records an outcome that the consumer did not get.
Appends are batched: one transaction per ``flush_every`` outcomes or per
``flush_interval`` seconds, whichever comes first; at a crash, the items in flight,
the results buffered for the consumer and the last unflushed batch are run again on
resume, and nothing else.

:func:`open_run_session` opens a run's session on whichever ``journal=`` it got: this
module's :class:`JournalSession` on a :class:`Journal`, or a :class:`WorkSource`'s own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, final

from parallelize._errors import JournalError, UnstorableResult
from parallelize._outcomes import Failure
from parallelize._util import fits_utf8

from ._anext import END, cancel, resume, start_next
from ._base import (
    Entry,
    Journal,
    JsonCodec,
    Key,
    Record,
    RecordedError,
    RunInfo,
    RunSession,
    Tagged,
    WorkSource,
    item_digest,
    type_name,
)

__all__ = ("JournalSession", "open_run_session")

_BATCH = 256  # input items looked up in the journal at once

logger = logging.getLogger("parallelize")

_new_record: Callable[[type[Record], tuple[Any, ...]], Record] = tuple.__new__

# Outcomes whose round trip through the codec is checked: the first ones, and the
# first of each new type (a lossy round trip is a property of the type, mostly).
_CHECK_FIRST = 64


def _storable(text: str) -> str:
    """``text`` as SQLite's UTF-8 can hold it: lone surrogates backslash-escaped."""
    return text if fits_utf8(text) else text.encode("utf-8", "backslashreplace").decode()


def _safe_decode(codec: Any, data: str) -> Any:
    try:
        return codec.decode(data)
    except Exception:  # for a message only
        return data


@final
class JournalSession:
    """Connects one run to its journal (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_checked",
        "_closed",
        "_codec",
        "_flush_every",
        "_flush_interval",
        "_journal",
        "_json",
        "_key",
        "_timer",
        "_warned",
        "recorded",
        "replayed",
        "skipped",
    )

    def __init__(
        self, journal: Journal, *, key: Callable[[Any], Key] | None, action_name: str
    ) -> None:
        self._journal = journal
        self._key = key
        codec = self._codec = journal.codec
        self._json = isinstance(codec, JsonCodec)
        self._flush_every = journal.flush_every
        self._flush_interval = journal.flush_interval
        self._buffer: list[Record] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._checked: set[type] = set()  # result types whose round trip was checked
        self._warned: set[type] = set()  # and found lossy (warned once each)
        self.recorded = 0
        self.skipped = 0
        self.replayed = 0
        journal.open(RunInfo("position" if key is None else "key", action_name, codec.name))

    @property
    def location(self) -> str | None:
        """Where the journal is (its path), for messages."""
        path = getattr(self._journal, "path", None)
        return None if path is None else str(path)

    # -- the input side ----------------------------------------------------------

    def _decide(self, batch: Sequence[tuple[Key, Any]]) -> list[Entry]:
        """Look a batch up: the entries to hand to the engine, in input order."""
        if not batch:
            return []
        journal = self._journal
        positional = self._key is None
        stored = journal.lookup([key for key, _ in batch])
        if not stored:  # the common case: nothing of this batch is done
            if positional:
                return [Entry(key, item, item_digest(item), None) for key, item in batch]
            return [Entry(key, item, None, None) for key, item in batch]
        entries = []
        for key, item in batch:
            digest = item_digest(item) if positional else None
            record = stored.get(key)
            if record is None or (not record.ok and self._redo(record)):
                entries.append(Entry(key, item, digest, None))
                continue
            if positional and record.digest and digest and record.digest != digest:
                raise JournalError(
                    f"input item {key} is {item!r}, but the journal recorded a different "
                    f"item at that position: the input changed since the journal was "
                    f"written. Use a new journal, or give key= to identify items by "
                    f"content instead of position",
                    str(getattr(journal, "path", "")) or None,
                )
            if journal.replay:
                self.replayed += 1
                entries.append(Entry(key, item, digest, record))
            else:
                self.skipped += 1
        return entries

    def _keyed(self, position: int, item: Any) -> tuple[Key, Any]:
        if self._key is None:
            return position, item
        key = self._key(item)
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise TypeError(f"key= must return a str or an int, got {key!r} for item {item!r}")
        return (_storable(key) if isinstance(key, str) else key), item

    def wrap(self, source: Iterable[Any]) -> Iterator[Entry]:
        """Return the entries of a sync input to run or replay, lazily."""
        batch: list[tuple[Key, Any]] = []
        if self._key is None:
            # By position: zip() numbers the items in C, a batch at a time.
            items = iter(source)
            position = 0
            while batch := list(zip(range(position, position + _BATCH), items, strict=False)):
                position += len(batch)
                yield from self._decide(batch)
            return
        for position, item in enumerate(source):
            batch.append(self._keyed(position, item))
            if len(batch) == _BATCH:
                yield from self._decide(batch)
                batch = []
        if batch:
            yield from self._decide(batch)

    async def wrap_async(self, source: AsyncIterable[Any]) -> AsyncIterator[Entry]:
        """Return the entries of an async input to run or replay, lazily.

        Items are looked up a batch at a time, but a batch never waits for a slow
        input: when the next item is not ready at once (a pipe that is idle, ``tail
        -f``), the items read so far are looked up and handed on first.
        """
        batch: list[tuple[Key, Any]] = []
        position = 0
        items = aiter(source)
        step: Any = None  # the input's __anext__, started and waiting
        try:
            while True:
                item, step, waiting_on = start_next(items)
                if step is not None:
                    # Not ready: hand on what was read, then wait for it.
                    for entry in self._decide(batch):
                        yield entry
                    batch = []
                    item = await resume(step, waiting_on)
                    step = None
                if item is END:
                    break
                batch.append(self._keyed(position, item))
                position += 1
                if len(batch) == _BATCH:
                    for entry in self._decide(batch):
                        yield entry
                    batch = []
            for entry in self._decide(batch):
                yield entry
        finally:
            if step is not None:
                await cancel(step)  # left waiting (the run was closed): end it first
            if isinstance(items, AsyncGenerator):
                # Close the user's generator within the run, not in the collector.
                await items.aclose()

    # -- the output side ---------------------------------------------------------

    def replayed_outcome(self, entry: Entry) -> Any:
        """Return what to yield for a replayed entry: its result, or a Failure."""
        record = entry.stored
        assert record is not None
        if record.ok:
            return None if record.data is None else self._codec.decode(record.data)
        error = self._recorded_error(record)
        return Failure(entry.item, error, record.attempts, record.elapsed, record.expected)

    def _recorded_error(self, record: Record) -> RecordedError:
        """Return a stored failure's exception, as it is read back."""
        data = None
        if record.data is not None:
            try:
                data = self._codec.decode(record.data)
            except Exception:
                data = None
        return RecordedError(record.error_type or "Exception", record.error_message or "", data)

    def _redo(self, record: Record) -> bool:
        """Whether a stored failure runs again (the journal's ``retry_failed``)."""
        retry = self._journal.retry_failed
        if retry is True or retry is False:
            return retry
        return bool(retry(self._recorded_error(record)))

    def prepare(self, tagged: Tagged) -> Tagged:
        """Encode a result before it is yielded; one the codec cannot store fails.

        The ``async for`` body must never see a result that the journal would then
        lose: a result that does not encode becomes its item's failure
        (:class:`~parallelize.UnstorableResult`), recorded in its place. A result
        that does not come back the same (a tuple as a list, int keys as str) is
        stored, with a warning once per type.
        """
        entry, outcome, attempts, elapsed = tagged
        if entry.stored is not None or type(outcome) is Failure:
            return tagged
        kind = type(outcome)
        if kind is int and self._json:
            entry.data = str(outcome)  # an int is its own JSON (a status, a count)
            return tagged
        try:
            data = entry.data = self._codec.encode(outcome)
        except (TypeError, ValueError, RecursionError, UnicodeError) as exc:
            error = UnstorableResult(entry.item, outcome, f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
            failure = Failure(entry.item, error, attempts, elapsed, expected=False)
            return entry, failure, attempts, elapsed
        if kind not in self._checked or self.recorded + len(self._buffer) < _CHECK_FIRST:
            self._checked.add(kind)
            self._check_round_trip(outcome, data)
        return tagged

    def _check_round_trip(self, outcome: Any, data: str) -> None:
        try:
            back = self._codec.decode(data)
            # repr() too: NaN is not equal to itself, yet it comes back as it was.
            same = back == outcome or repr(back) == repr(outcome)
        except Exception:  # any failure to read it back is a loss
            same = False
        kind = type(outcome)
        if not same and kind not in self._warned:
            self._warned.add(kind)
            logger.warning(
                "the journal's %s codec does not store a %s result as it is (a replay "
                "would give %r for %r): return a type that round-trips (lists, dicts "
                "with str keys), or give the journal a codec= for it",
                self._codec.name,
                kind.__name__,
                _safe_decode(self._codec, data),
                outcome,
            )

    def record(self, entry: Entry, outcome: Any, attempts: int, elapsed: float | None) -> None:
        """Buffer the final outcome of ``entry`` (taken by the consumer)."""
        if self._closed:
            raise RuntimeError("a closed journal session cannot record (a bug in parallelize)")
        if entry.stored is not None:
            return  # a replay: stored already
        if type(outcome) is Failure:
            error = outcome.exception
            record = Record(
                entry.key,
                False,  # noqa: FBT003 - a field of the record
                self._failure_data(error),
                type_name(error),
                _storable(str(error)),
                outcome.attempts,
                outcome.elapsed,
                outcome.expected,
                entry.digest,
            )
        else:
            data = entry.data
            if data is None:  # not prepared (a caller of its own): encode it now
                prepared = self.prepare((entry, outcome, attempts, elapsed))
                if prepared[1] is not outcome:
                    self.record(*prepared)
                    return
                data = entry.data
            # Record(...) without its Python-level __new__: a third of the cost.
            record = _new_record(
                Record, (entry.key, True, data, None, None, attempts, elapsed, False, entry.digest)
            )
        self._buffer.append(record)
        if len(self._buffer) >= self._flush_every:
            self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._flush_interval, self.flush)

    def _failure_data(self, error: BaseException) -> str | None:
        """Return a failure's ``journal_data`` as the codec stores it, or None."""
        data = getattr(error, "journal_data", None)
        if data is None:
            return None
        try:
            return self._codec.encode(data)
        except (TypeError, ValueError, RecursionError, UnicodeError):
            logger.warning("the journal cannot store the journal_data of %r: left out", error)
            return None

    def flush(self) -> None:
        """Append the buffered outcomes now, in one transaction.

        On the event loop's thread, on purpose: a writer thread measured worse
        (it fights the loop for the GIL, falls behind on a busy loop, and its
        backlog grows without bound), while a batch of 1000 rows costs about 3 ms.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        buffer = self._buffer
        if buffer and not self._closed:
            self._buffer = []
            self._journal.append(buffer)
            self.recorded += len(buffer)

    def close(self, *, finished: bool) -> None:
        """Flush, then release the journal (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._journal.close(finished=finished)


def open_run_session(
    journal: Journal | WorkSource,
    argslist: Iterable[Any] | AsyncIterable[Any],
    *,
    key: Callable[[Any], Key] | None,
    action_name: str,
    numworkers: int,
) -> tuple[RunSession, Iterator[Entry] | AsyncIterator[Entry], bool]:
    """Open a run's session on ``journal``: the first thing a journaled run does.

    A journal that cannot be used fails here, before anything starts.

    Args:
        journal: A :class:`WorkSource` (checked first) or a :class:`Journal`.
        argslist: The run's input.
        key: Identifies an item (default: its position).
        action_name: The action's name, to refuse a store written by another.
        numworkers: The run's workers in this process.

    Returns:
        ``(session, entries, own_items)``: the session to record outcomes in; the
        entries to run (and, a journal's, to replay), async for an async input or a
        work source, else sync; and whether those are ``argslist``'s items (a work
        source's are its own: ``argslist`` is only what this process adds to it).

    Raises:
        JournalError: The journal refused the run (see :meth:`Journal.open`).
    """
    if isinstance(journal, WorkSource):
        # A work source (a Redis queue): the run's items come from it, and argslist
        # is added to it meanwhile (its session holds it already).
        session = journal.open_session(
            argslist, key=key, action_name=action_name, numworkers=numworkers
        )
        return session, session.wrap_async(argslist), False  # type: ignore[arg-type]  # ignored by the source
    own = JournalSession(journal, key=key, action_name=action_name)
    if isinstance(argslist, AsyncIterable):
        return own, own.wrap_async(argslist), True
    return own, own.wrap(argslist), True
