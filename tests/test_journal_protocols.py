"""journal= takes a Journal or a WorkSource, each a checked protocol, and nothing else."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import parallelize as package
from parallelize import Failure, JsonCodec, SQLiteJournal, parallelize
from parallelize._journal import (
    Codec,
    Entry,
    Journal,
    JournalSession,
    Record,
    RunInfo,
    RunSession,
    Tagged,
    WorkSource,
    missing,
    open_run_session,
)
from parallelize._redis._session import QueueSession
from parallelize.redis import RedisQueue

Key = int | str

EVERY_JOURNAL_MEMBER = (
    "open(), lookup(), append(), close(), replay, codec, flush_every, flush_interval or "
    "retry_failed"
)


async def double(item: int) -> int:
    await asyncio.sleep(0)
    return 2 * item


class MemoryJournal:
    """A Journal of one's own: records in a dict."""

    def __init__(self) -> None:
        self.replay = False
        self.retry_failed = False
        self.codec: Codec = JsonCodec()
        self.flush_every = 100
        self.flush_interval = 0.01
        self.records: dict[Key, Record] = {}
        self.closed: list[bool] = []

    def open(self, info: RunInfo) -> None:
        self.info = info

    def lookup(self, keys: Sequence[Key]) -> dict[Key, Record]:
        return {key: self.records[key] for key in keys if key in self.records}

    def append(self, records: Sequence[Record]) -> None:
        self.records.update((record.key, record) for record in records)

    def close(self, *, finished: bool) -> None:
        self.closed.append(finished)


class ListSession:
    """A WorkSource's own session: its items are its list's, not the run's input."""

    def __init__(self, items: list[int]) -> None:
        self.items = items
        self.outcomes: dict[Key, Any] = {}
        self.closed: list[bool] = []
        self.recorded = 0
        self.replayed = 0
        self.skipped = 0

    @property
    def location(self) -> str | None:
        return "a list"

    async def wrap_async(self, source: AsyncIterable[Any]) -> AsyncIterator[Entry]:
        for key, item in enumerate(self.items):
            yield Entry(key, item, None, None)

    def prepare(self, tagged: Tagged) -> Tagged:
        return tagged

    def record(self, entry: Entry, outcome: Any, attempts: int, elapsed: float | None) -> None:
        self.outcomes[entry.key] = outcome
        self.recorded += 1

    def flush(self) -> None:
        pass

    def close(self, *, finished: bool) -> None:
        self.closed.append(finished)


class ListSource:
    """A WorkSource of one's own: hands out a list, whatever the run's argslist."""

    def __init__(self, items: list[int]) -> None:
        self.items = items
        self.sessions: list[ListSession] = []

    def open_session(
        self,
        argslist: Iterable[Any] | AsyncIterable[Any],
        *,
        key: Callable[[Any], Key] | None,
        action_name: str,
        numworkers: int,
    ) -> ListSession:
        session = ListSession(self.items)
        self.sessions.append(session)
        return session


class NoLookup:
    """A Journal of one's own, unfinished: no lookup(), and a flush_interval of None."""

    replay = False
    retry_failed = False
    codec: Codec = JsonCodec()
    flush_every = 1
    lookup = 5  # not callable: as good as none

    def open(self, info: RunInfo) -> None:
        pass

    def append(self, records: Sequence[Record]) -> None:
        pass

    def close(self, *, finished: bool) -> None:
        pass

    def __repr__(self) -> str:
        return "NoLookup()"


class NotCallableSource:
    """A WorkSource whose open_session is no method."""

    open_session = "yes"

    def __repr__(self) -> str:
        return "NotCallableSource()"


def wrong(journal: object) -> str:
    return (
        rf"^journal must be a path, a Journal \(such as SQLiteJournal\('crawl\.db'\)\) or a "
        rf"WorkSource \(such as a RedisQueue\); {journal} has no open_session\(\) for a "
        rf"WorkSource, nor "
    )


def test_an_object_of_neither_kind_is_a_type_error_naming_what_it_lacks() -> None:
    """journal=42: both protocols' members named, before anything runs."""
    message = wrong(42) + EVERY_JOURNAL_MEMBER.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(TypeError, match=message + " for a Journal$"):
        parallelize(double, [1], 1, journal=42)  # type: ignore[call-overload]


def test_an_unfinished_journal_is_told_the_members_it_lacks() -> None:
    """A Journal without lookup() (or with one that is not callable): those named."""
    with pytest.raises(
        TypeError, match=wrong("NoLookup\\(\\)") + r"lookup\(\) or flush_interval for a Journal$"
    ):
        parallelize(double, [1], 1, journal=NoLookup())  # type: ignore[call-overload]


def test_a_work_source_whose_open_session_is_not_callable_is_refused() -> None:
    """open_session that is no method: the WorkSource protocol is not met."""
    with pytest.raises(TypeError, match=wrong(r"NotCallableSource\(\)")):
        parallelize(double, [1], 1, journal=NotCallableSource())  # type: ignore[call-overload]


def test_the_shipped_kinds_meet_their_protocols(tmp_path: Path) -> None:
    """SQLiteJournal is a Journal, RedisQueue a WorkSource; their sessions a RunSession."""
    assert isinstance(SQLiteJournal(tmp_path / "j.db"), Journal)
    assert isinstance(RedisQueue("redis://127.0.0.1:1", run="r"), WorkSource)
    assert not missing(MemoryJournal(), Journal)
    assert not missing(ListSource([]), WorkSource)
    assert not missing(ListSession([]), RunSession)
    for session in (JournalSession, QueueSession):
        assert [name for name in missing(session, RunSession) if name.endswith("()")] == []
        assert isinstance(vars(session)["location"], property)


def test_a_journal_of_ones_own_records_and_a_rerun_skips(run: Any) -> None:
    """A MemoryJournal passes the check, records every outcome, and a rerun runs nothing."""
    journal = MemoryJournal()

    async def main() -> list[int]:
        return sorted([r async for r in parallelize(double, range(5), 2, journal=journal)])

    assert run(main()) == [0, 2, 4, 6, 8]
    assert sorted(journal.records) == [0, 1, 2, 3, 4]
    assert journal.info == RunInfo("position", "double", "json")
    assert run(main()) == []
    assert journal.closed == [True, True]


def test_a_work_source_of_ones_own_gives_the_runs_items(run: Any) -> None:
    """A ListSource's items are run, not argslist's; outcomes go to its session."""
    source = ListSource([10, 20, 30])

    async def main() -> list[int]:
        return sorted([r async for r in parallelize(double, [1], 2, journal=source)])

    assert run(main()) == [20, 40, 60]
    (session,) = source.sessions
    assert session.outcomes == {0: 20, 1: 40, 2: 60}
    assert session.closed[-1] is True


def test_a_work_source_refuses_ordered() -> None:
    """ordered=True with a work source of one's own: the queue's ValueError."""
    with pytest.raises(ValueError, match=r"^ordered=True cannot be kept with a queue"):
        parallelize(double, [1], 1, journal=ListSource([]), ordered=True)


def test_open_run_session_on_a_journal_wraps_the_input(run: Any) -> None:
    """A Journal: its JournalSession, argslist's entries (sync or async), own items."""
    journal = MemoryJournal()
    session, entries, own = open_run_session(
        journal, [5, 6], key=None, action_name="double", numworkers=2
    )
    assert isinstance(session, JournalSession)
    assert own is True
    assert isinstance(entries, Iterator)
    assert [(entry.key, entry.item) for entry in entries] == [(0, 5), (1, 6)]

    async def items() -> AsyncIterator[int]:
        yield 7

    async def main() -> list[tuple[Key, Any]]:
        _, entries, own = open_run_session(
            journal, items(), key=str, action_name="double", numworkers=2
        )
        assert own is True
        assert isinstance(entries, AsyncIterator)
        return [(entry.key, entry.item) async for entry in entries]

    assert run(main()) == [("7", 7)]


def test_open_run_session_on_a_work_source_gives_its_own_items(run: Any) -> None:
    """A WorkSource: its session, its entries (async), not the run's own items."""
    source = ListSource([3])
    session, entries, own = open_run_session(
        source, [1, 2], key=None, action_name="double", numworkers=1
    )
    assert session is source.sessions[0]
    assert own is False
    assert isinstance(entries, AsyncIterator)

    async def main() -> list[Any]:
        return [entry.item async for entry in entries]

    assert run(main()) == [3]


def test_a_replayed_failure_comes_back_from_a_journal_of_ones_own(run: Any) -> None:
    """replay=True on one's own Journal: a stored failure is yielded again as a Failure."""
    journal = MemoryJournal()

    async def fail(item: int) -> int:
        raise ValueError(item)

    async def main() -> list[Any]:
        return [r async for r in parallelize(fail, [1], 1, journal=journal, on_error="yield")]

    assert [type(r) for r in run(main())] == [Failure]
    journal.replay = True
    (replayed,) = run(main())
    assert str(replayed.exception) == "ValueError: 1"


def test_no_method_in_the_package_answers_with_an_assertion() -> None:
    """No implementer raises AssertionError for a protocol method it cannot serve."""
    root = Path(package.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(raised, ast.Name) and raised.id == "AssertionError":
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    assert not hasattr(QueueSession, "wrap")
    assert not hasattr(QueueSession, "replayed_outcome")
