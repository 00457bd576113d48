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
import json
import marshal
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, final

from parallelize._errors import JournalError
from parallelize._util import check_bool, check_int, check_seconds

from . import _writer
from ._base import Codec, JsonCodec, Key, Record, RecordedError, RunInfo

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, no lock check
    fcntl = None  # type: ignore[assignment]

__all__ = ("SQLiteJournal",)

FORMAT = 1  # the layout written by this version; a newer file is refused
_DRAIN_WAIT = 30.0  # seconds to wait for a dead run's writer process to finish
_CLOSE_WAIT = 60.0  # seconds to wait for our own writer process at close
_PIPE_SIZE = 1 << 20  # bytes of outcomes in the pipe before the run waits for the writer
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
            failure: True for all, False (the default) for none (a failure is final
            too), or a function of the stored failure (a :class:`RecordedError`,
            with its ``data``) that says whether to run it again: final for a 404,
            again for a timeout, say. Changed in 0.2: a function too.
        durable: Also survive a power loss (fsync each batch); default False:
            survive a crash of the process.
        codec: Turns results into text and back (default :class:`JsonCodec`);
            never pickle, unless you trust every reader of the file.
        flush_every: Outcomes per transaction (default 1000).
        flush_interval: The most seconds an outcome waits for its transaction
            (default 0.2): the bound on what a crash can lose.
        settings: What shapes an outcome besides the item (a request's method and
            headers, a model's version): names to JSON values, stored with the
            journal. A rerun whose settings differ is refused, naming what changed,
            so that outcomes made one way are never replayed as made another.
            None (default): not checked. Added in 0.2.
        adopt_settings: On a rerun whose ``settings`` differ, keep the stored
            outcomes anyway and store these settings from now on (default False:
            refuse). Added in 0.2.

    Added in 0.1.
    """

    __slots__ = (
        "_appended",
        "_conn",
        "_last_int_key",
        "_lock_file",
        "_settings",
        "_writer",
        "adopt_settings",
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
        retry_failed: bool | Callable[[RecordedError], bool] = False,
        durable: bool = False,
        codec: Codec | None = None,
        flush_every: int = 1000,
        flush_interval: float = 0.2,
        settings: Mapping[str, Any] | None = None,
        adopt_settings: bool = False,
    ) -> None:
        self.path = Path(path)
        self.replay = check_bool("replay", replay)
        self.retry_failed: bool | Callable[[RecordedError], bool] = (
            retry_failed if callable(retry_failed) else check_bool("retry_failed", retry_failed)
        )
        self.durable = check_bool("durable", durable)
        self.codec: Codec = JsonCodec() if codec is None else codec
        if not isinstance(self.codec, Codec):
            raise TypeError(f"codec must have name, encode() and decode(), got {codec!r}")
        self.flush_every = check_int("flush_every", flush_every, 1)
        self.flush_interval = check_seconds("flush_interval", flush_interval)
        self.adopt_settings = check_bool("adopt_settings", adopt_settings)
        try:
            # Round-tripped: what a rerun compares is what was stored.
            self._settings: dict[str, Any] | None = (
                None if settings is None else json.loads(json.dumps(dict(settings)))
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"settings must map names to JSON values, got {settings!r}") from exc
        self._conn: sqlite3.Connection | None = None
        # The highest int key stored when the run opened the file (None: nothing
        # stored): keys above it need no lookup, so a new run, or a resumed one past
        # what was done, reads nothing back.
        self._last_int_key: int | None = None
        self._lock_file: IO[bytes] | None = None
        self._writer: subprocess.Popen[bytes] | None = None
        self._appended = 0  # batches appended by this run

    def __repr__(self) -> str:
        return (
            f"SQLiteJournal({str(self.path)!r}, replay={self.replay}, "
            f"retry_failed={self.retry_failed})"
        )

    def _error(self, message: str) -> JournalError:
        return JournalError(message, str(self.path))

    def _lock(self) -> None:
        """Take the file for this run, or say who holds it.

        The lock file names the run's process. When that process is gone but the
        lock is still held, its writer process is storing the last outcomes it was
        sent (the run was killed): wait for it, then every stored outcome counts.
        """
        lock_path = f"{self.path}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._error(
                f"cannot create journal {str(self.path)!r}: {exc.strerror} "
                f"({lock_path!r}); check that its directory exists and is writable"
            ) from exc
        lock_file = os.fdopen(fd, "r+b")
        if fcntl is not None:
            deadline = time.monotonic() + _DRAIN_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _pid_in(lock_file)
                    if (holder is None or _alive(holder)) or time.monotonic() > deadline:
                        lock_file.close()
                        raise self._error(
                            f"journal {str(self.path)!r} is in use by another run "
                            f"(process {holder or '?'} holds {lock_path!r}); wait for it "
                            f"to finish, or use another journal file"
                        ) from None
                    time.sleep(0.01)  # a dead run's writer is finishing its last batch
            lock_file.seek(0)
            lock_file.truncate()
            lock_file.write(str(os.getpid()).encode())
            lock_file.flush()
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
                    **self._settings_meta(),
                }
            )
        else:
            self._check(meta, info)
            self._check_settings(meta)
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

    def _settings_meta(self) -> dict[str, str]:
        if self._settings is None:
            return {}
        return {"settings": json.dumps(self._settings, sort_keys=True)}

    def _check_settings(self, meta: dict[str, str]) -> None:
        """Refuse a rerun whose settings differ from the stored ones (or adopt them)."""
        if self._settings is None:
            return
        stored = json.loads(meta.get("settings", "{}"))
        changes = [
            f"{name} {stored.get(name)!r} -> {self._settings.get(name)!r}"
            for name in sorted(stored.keys() | self._settings.keys())
            if stored.get(name) != self._settings.get(name)
        ]
        if not changes:
            return
        if self.adopt_settings:
            self._write_meta(self._settings_meta())
            return
        raise self._error(
            f"journal {str(self.path)!r} holds outcomes made with other settings "
            f"({'; '.join(changes)}): its outcomes would be replayed as if made with "
            f"these. Use a new journal file, or reuse this one on purpose (the command "
            f"line's --reuse-journal, SQLiteJournal(adopt_settings=True))"
        )

    def _write_meta(self, values: dict[str, str]) -> None:
        assert self._conn is not None
        with _writer.transaction(self._conn) as conn:
            conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

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
        """Store ``records``: the first batch here, the next ones by a writer process.

        A batch handed to the writer process is stored even if this process is
        killed right after: the writer commits everything it was sent before it
        exits. A run of one batch never starts it.
        """
        ok = [(r[0], r[2], r[5], r[6], r[8]) for r in records if r[1]]
        failed = [tuple(r) for r in records if not r[1]]
        self._appended += 1
        if self._appended == 1:
            assert self._conn is not None
            _writer.write_rows(self._conn, ok, failed)
            return
        writer = self._writer if self._writer is not None else self._start_writer()
        if writer.poll() is not None:
            # Dead since the last batch: say so now, not once the pipe's buffer (a
            # megabyte of outcomes, thousands of items) has filled up.
            raise self._writer_error(f"it exited (code {writer.returncode})")
        payload = marshal.dumps((ok, failed))
        stream = writer.stdin
        assert stream is not None
        try:
            stream.write(_writer.HEADER.pack(len(payload)))
            stream.write(payload)
            stream.flush()
        except OSError as exc:  # BrokenPipeError: the writer is gone
            raise self._writer_error(f"cannot hand outcomes to it ({exc})") from exc

    def _start_writer(self) -> subprocess.Popen[bytes]:
        assert self._lock_file is not None
        command = [
            sys.executable,
            "-I",  # isolated: the standard library only, no user site, no PYTHON* vars
            "-S",
            _writer.__file__,
            str(self.path),
            "FULL" if self.durable else "NORMAL",
        ]
        try:
            writer = subprocess.Popen(  # noqa: S603 - our own script, our own arguments
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                # It holds the run's lock too, until its last batch is stored.
                pass_fds=(self._lock_file.fileno(),),
                start_new_session=True,  # a Ctrl-C for the run is not for it
            )
        except OSError as exc:
            raise self._error(f"cannot start the journal's writer process: {exc}") from exc
        assert writer.stdin is not None
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
            with contextlib.suppress(OSError):  # a system limit: keep the default
                fcntl.fcntl(writer.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._writer = writer
        return writer

    def _writer_error(self, what: str) -> JournalError:
        """Return the error for a writer process that failed, with its own words."""
        writer = self._writer
        said = ""
        if writer is not None:
            with contextlib.suppress(OSError, ValueError):
                assert writer.stdin is not None
                writer.stdin.close()
            try:
                writer.wait(_CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait()
            assert writer.stderr is not None
            said = writer.stderr.read().decode(errors="replace").strip()
            writer.stderr.close()
            self._writer = None
        return self._error(
            f"the writer process of journal {str(self.path)!r} failed: {what}"
            f"{': ' + said if said else ''}. Outcomes it did not store run again on "
            f"resume"
        )

    def _stop_writer(self) -> None:
        """Let the writer process store what it was sent, and end."""
        writer = self._writer
        if writer is None:
            return
        assert writer.stdin is not None
        try:
            writer.stdin.close()
            code = writer.wait(_CLOSE_WAIT)
        except OSError as exc:
            raise self._writer_error(f"cannot hand outcomes to it ({exc})") from exc
        except subprocess.TimeoutExpired:
            raise self._writer_error(f"still busy after {_CLOSE_WAIT:g} s") from None
        if code != 0:
            raise self._writer_error(f"exit status {code}")
        assert writer.stderr is not None
        writer.stderr.close()
        self._writer = None

    def close(self, *, finished: bool) -> None:
        """Mark the run finished (or interrupted) and release the file."""
        if self._conn is None:
            return
        try:
            self._stop_writer()
            self._write_meta({"state": "finished" if finished else "interrupted"})
        finally:
            self._release()

    def _release(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:  # after an error: it stores what it has, and ends
            for stream in (writer.stdin, writer.stderr):
                with contextlib.suppress(OSError):
                    stream.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                writer.wait(_CLOSE_WAIT)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            lock_file.close()  # releases the flock (once the writer has ended too)
        self._appended = 0

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


def _pid_in(lock_file: IO[bytes]) -> int | None:
    """Return the process id written in a lock file, if any."""
    lock_file.seek(0)
    text = lock_file.read(32).strip()
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
