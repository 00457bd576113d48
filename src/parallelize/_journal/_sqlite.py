"""The default journal: one SQLite file beside the run (standard library only).

Layout: a ``meta`` table (format version, how items are identified, the codec, the
run's state) and an ``outcomes`` table with one row per item key. Writes are
batched by the caller into one transaction each, in WAL mode: a commit costs one
write of the log, readers never block the writer, and ``synchronous=NORMAL`` keeps
every committed outcome across a crash of the process (SIGKILL); ``durable=True``
(``synchronous=FULL``) keeps it across a power loss too, at the price of an fsync
per batch.

A second process cannot use the journal while a run holds it: the run takes an
exclusive ``flock`` on ``<path>.lock`` (not on the database itself, whose POSIX
locks SQLite owns and a stray ``close()`` would drop).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, final

from parallelize._errors import JournalError
from parallelize._util import check_bool, check_int, check_seconds

from ._base import Codec, JsonCodec, Key, Record, RunInfo

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, no lock check
    fcntl = None  # type: ignore[assignment]

__all__ = ("SQLiteJournal",)

FORMAT = 1  # the layout written by this version; a newer file is refused
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...): well under SQLite's variable limit

_META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
# Positions are integers: the key is then the rowid itself, one B-tree instead of a
# table and an index. Keys from key= may be str or int: no type (no conversion).
_OUTCOMES = """
CREATE TABLE IF NOT EXISTS outcomes (
    key {key_type} PRIMARY KEY,
    ok INTEGER NOT NULL,
    data TEXT,
    error_type TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL,
    elapsed REAL,
    expected INTEGER NOT NULL,
    digest BLOB
)
"""

# A key already stored keeps its outcome (an outcome stored twice is stored once),
# unless the stored one is a failure that this run tried again.
_INSERT = """
INSERT INTO outcomes
    (key, ok, data, error_type, error_message, attempts, elapsed, expected, digest)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    ok = excluded.ok, data = excluded.data, error_type = excluded.error_type,
    error_message = excluded.error_message, attempts = excluded.attempts,
    elapsed = excluded.elapsed, expected = excluded.expected, digest = excluded.digest
WHERE outcomes.ok = 0
"""


_INSERT_OK = """
INSERT INTO outcomes (key, ok, data, attempts, elapsed, expected, digest)
VALUES (?, 1, ?, ?, ?, 0, ?)
ON CONFLICT (key) DO UPDATE SET
    ok = 1, data = excluded.data, error_type = NULL, error_message = NULL,
    attempts = excluded.attempts, elapsed = excluded.elapsed, expected = 0,
    digest = excluded.digest
WHERE outcomes.ok = 0
"""

_SELECT = (
    "SELECT key, ok, data, error_type, error_message, attempts, elapsed, expected, digest "
    "FROM outcomes WHERE key IN ({marks})"
)


@final
class SQLiteJournal:
    """Record every item's final outcome in a SQLite file, and resume from it.

    Pass it as ``parallelize(..., journal=SQLiteJournal("crawl.db"))``, or just
    ``journal="crawl.db"`` for the defaults. The file is created readable and
    writable by its owner only.

    Args:
        path: The database file (created if missing).
        replay: On a rerun, yield the stored outcomes of the items already done,
            without running them, in their place among the new ones (a stored
            failure as a :class:`~parallelize.Failure` carrying a
            :class:`~parallelize.RecordedError`); default False: yield only the
            outcomes of items run now.
        retry_failed: On a rerun, run again the items whose stored outcome is a
            failure (default False: a failure is final too).
        durable: Also survive a power loss (fsync each batch); default False:
            survive a crash of the process.
        codec: Turns results into text and back (default :class:`JsonCodec`);
            never pickle, unless you trust every reader of the file.
        flush_every: Outcomes per transaction (default 1000).
        flush_interval: The most seconds an outcome waits for its transaction
            (default 0.2): the bound on what a crash can lose.

    Added in 0.1.
    """

    __slots__ = (
        "_conn",
        "_last_int_key",
        "_lock_file",
        "codec",
        "durable",
        "flush_every",
        "flush_interval",
        "path",
        "replay",
        "retry_failed",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        replay: bool = False,
        retry_failed: bool = False,
        durable: bool = False,
        codec: Codec | None = None,
        flush_every: int = 1000,
        flush_interval: float = 0.2,
    ) -> None:
        self.path = Path(path)
        self.replay = check_bool("replay", replay)
        self.retry_failed = check_bool("retry_failed", retry_failed)
        self.durable = check_bool("durable", durable)
        self.codec: Codec = JsonCodec() if codec is None else codec
        if not isinstance(self.codec, Codec):
            raise TypeError(f"codec must have name, encode() and decode(), got {codec!r}")
        self.flush_every = check_int("flush_every", flush_every, 1)
        self.flush_interval = check_seconds("flush_interval", flush_interval)
        self._conn: sqlite3.Connection | None = None
        # The highest int key stored when the run opened the file (None: nothing
        # stored): keys above it need no lookup, so a new run, or a resumed one past
        # what was done, reads nothing back.
        self._last_int_key: int | None = None
        self._lock_file: IO[bytes] | None = None

    def __repr__(self) -> str:
        return (
            f"SQLiteJournal({str(self.path)!r}, replay={self.replay}, "
            f"retry_failed={self.retry_failed})"
        )

    def _error(self, message: str) -> JournalError:
        return JournalError(message, str(self.path))

    def _lock(self) -> None:
        lock_path = f"{self.path}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        lock_file = os.fdopen(fd, "r+b")
        if fcntl is not None:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.close()
                raise self._error(
                    f"journal {str(self.path)!r} is in use by another run (it holds "
                    f"{lock_path!r}); wait for it to finish, or use another journal file"
                ) from None
        self._lock_file = lock_file

    def open(self, info: RunInfo) -> None:
        """Create the file, or check that it was written by a run like ``info``."""
        if self._conn is not None:
            raise RuntimeError(f"{self!r} is already open; a journal serves one run at a time")
        self._lock()
        try:
            self._connect(info)
        except BaseException:
            self._release()
            raise

    def _connect(self, info: RunInfo) -> None:
        if not self.path.exists():
            # Created owner-only before SQLite opens it; SQLite gives its -wal and
            # -shm files the same permissions.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(f"cannot open journal {str(self.path)!r}: {exc}") from exc
        self._conn = conn
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            conn.execute(_META)
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            if not meta:
                key_type = "INTEGER" if info.identity == "position" else ""
                conn.execute(_OUTCOMES.format(key_type=key_type))
        except sqlite3.DatabaseError as exc:
            raise self._error(
                f"{str(self.path)!r} is not a parallelize journal, or it is corrupt "
                f"({exc}); nothing was changed in it. Move it away, or pass another path"
            ) from exc
        if not meta:
            self._write_meta(
                {
                    "format": str(FORMAT),
                    "identity": info.identity,
                    "codec": info.codec,
                    "action": info.action,
                    "created_at": str(time.time()),
                }
            )
        else:
            self._check(meta, info)
        self._write_meta({"state": "running"})
        last = conn.execute("SELECT max(key), count(*) FROM outcomes").fetchone()
        if last[1] == 0:
            self._last_int_key = None
        elif info.identity == "position":
            self._last_int_key = last[0]
        else:  # str keys (key=): every batch is looked up
            self._last_int_key = -1

    def _check(self, meta: dict[str, str], info: RunInfo) -> None:
        path = str(self.path)
        found = meta.get("format", "?")
        if not found.isdigit() or int(found) > FORMAT:
            raise self._error(
                f"journal {path!r} was written by a newer parallelize (format {found}, "
                f"this one reads up to {FORMAT}); upgrade parallelize to resume it"
            )
        if meta.get("identity") != info.identity:
            how = {"position": "by position in the input", "key": "by a key= function"}
            raise self._error(
                f"journal {path!r} identifies items {how.get(meta.get('identity', ''), '?')}, "
                f"but this run identifies them {how[info.identity]}: a journal cannot "
                f"switch; rerun as it was written, or use a new journal file"
            )
        if meta.get("codec") != info.codec:
            raise self._error(
                f"journal {path!r} stores results with the {meta.get('codec')!r} codec, "
                f"this run uses {info.codec!r}; pass the same codec, or use a new journal"
            )

    def _write_meta(self, values: dict[str, str]) -> None:
        assert self._conn is not None
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def lookup(self, keys: Sequence[Key]) -> dict[Key, Record]:
        """Return the stored records among ``keys``."""
        conn = self._conn
        assert conn is not None
        last = self._last_int_key
        if last is None or not keys:
            return {}  # nothing was stored before this run
        first = keys[0]
        if last >= 0 and isinstance(first, int) and first > last:
            return {}  # positions come in ascending batches: all past what was done
        found: dict[Key, Record] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))  # placeholders only: no value in the SQL
            rows = conn.execute(_SELECT.format(marks=marks), chunk)
            for key, ok, data, etype, emsg, attempts, elapsed, expected, digest in rows:
                found[key] = Record(
                    key, bool(ok), data, etype, emsg, attempts, elapsed, bool(expected), digest
                )
        return found

    def append(self, records: Sequence[Record]) -> None:
        """Store ``records`` in one transaction."""
        # Successes bind 6 values (their error columns stay NULL), failures all 9:
        # binding is most of the cost of a row.
        ok = [(r[0], r[2], r[5], r[6], r[8]) for r in records if r[1]]
        failed = [r for r in records if not r[1]]
        with self._transaction() as conn:
            if ok:
                conn.executemany(_INSERT_OK, ok)
            if failed:
                conn.executemany(_INSERT, failed)

    def close(self, *, finished: bool) -> None:
        """Mark the run finished (or interrupted) and release the file."""
        if self._conn is None:
            return
        try:
            self._write_meta({"state": "finished" if finished else "interrupted"})
        finally:
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # releases the flock

    def counts(self) -> dict[str, int]:
        """Return how many outcomes are stored: ``{"ok": ..., "failed": ...}``.

        Opens the file read-only if no run holds it open here.
        """
        if self._conn is not None:
            rows = self._conn.execute("SELECT ok, count(*) FROM outcomes GROUP BY ok")
            found = dict(rows.fetchall())
        else:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                found = dict(conn.execute("SELECT ok, count(*) FROM outcomes GROUP BY ok"))
        return {"ok": found.get(1, 0), "failed": found.get(0, 0)}
