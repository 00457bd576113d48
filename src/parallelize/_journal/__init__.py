"""Journals: durable records of each item's final outcome, to resume a run."""

from ._base import (
    Codec,
    Entry,
    Journal,
    JsonCodec,
    Record,
    RecordedError,
    RunInfo,
    RunSession,
    Tagged,
    WorkSource,
    missing,
)
from ._session import JournalSession, open_run_session
from ._sqlite import SQLiteJournal

__all__ = (
    "Codec",
    "Entry",
    "Journal",
    "JournalSession",
    "JsonCodec",
    "Record",
    "RecordedError",
    "RunInfo",
    "RunSession",
    "SQLiteJournal",
    "Tagged",
    "WorkSource",
    "missing",
    "open_run_session",
)
