"""Journals: durable records of each item's final outcome, to resume a run."""

from ._base import Codec, Journal, JsonCodec, Record, RecordedError, RunInfo
from ._session import Entry, JournalSession, Session, WorkSource
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
    "SQLiteJournal",
    "Session",
    "WorkSource",
)
