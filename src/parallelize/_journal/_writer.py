"""The SQLite journal's writer process: rows in on stdin, one transaction a batch.

A row costs SQLite 4-5 us to bind and insert; on the event loop's thread that is
taken from every request (and a thread fights the loop for the GIL, see
docs/journal.md). So a journaled run hands its batches to this small process,
which has a core and a GIL of its own.

Run as a script (``python -I -S _writer.py PATH SYNCHRONOUS``), never imported by
the child: it needs the standard library only, so it starts in milliseconds and
does not depend on how the parent found parallelize. The parent imports the SQL
from here, so the two always agree.

Protocol: frames of a 4-byte little-endian length and a ``marshal`` payload
``(ok_rows, failed_rows)`` (marshal carries plain data only: ints, floats, str,
bytes, None, tuples and lists; it cannot run code). The writer commits each frame
as it arrives and exits 0 at end of input: when the parent closes the pipe, or
when it dies (even by SIGKILL), after committing everything it was sent. Errors go
to stderr with exit status 1. SIGINT and SIGTERM are ignored: a Ctrl-C meant for
the run must not cost the outcomes it already handed over.
"""

from __future__ import annotations

import contextlib
import marshal
import signal
import sqlite3
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import IO

HEADER = struct.Struct("<I")

# A key already stored keeps its outcome (an outcome stored twice is stored once),
# unless the stored one is a failure that this run tried again.
INSERT_FAILED = """
INSERT INTO outcomes
    (key, ok, data, error_type, error_message, attempts, elapsed, expected, digest)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    ok = excluded.ok, data = excluded.data, error_type = excluded.error_type,
    error_message = excluded.error_message, attempts = excluded.attempts,
    elapsed = excluded.elapsed, expected = excluded.expected, digest = excluded.digest
WHERE outcomes.ok = 0
"""

# Successes bind 5 values (their error columns stay NULL), failures all 9: binding
# is most of the cost of a row.
INSERT_OK = """
INSERT INTO outcomes (key, ok, data, attempts, elapsed, expected, digest)
VALUES (?, 1, ?, ?, ?, 0, ?)
ON CONFLICT (key) DO UPDATE SET
    ok = 1, data = excluded.data, error_type = NULL, error_message = NULL,
    attempts = excluded.attempts, elapsed = excluded.elapsed, expected = 0,
    digest = excluded.digest
WHERE outcomes.ok = 0
"""

BUSY_TIMEOUT_MS = 30_000


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one write transaction (rolled back if it raises)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def write_rows(
    conn: sqlite3.Connection, ok: Sequence[Sequence[object]], failed: Sequence[Sequence[object]]
) -> None:
    """Store one batch in one transaction."""
    with transaction(conn):
        if ok:
            conn.executemany(INSERT_OK, ok)
        if failed:
            conn.executemany(INSERT_FAILED, failed)


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None  # end of input
    if len(data) < size:
        raise EOFError(f"truncated frame: {len(data)} of {size} bytes")
    return data


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, synchronous = argv
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        stdin = sys.stdin.buffer
        while (header := _read_exactly(stdin, HEADER.size)) is not None:
            (size,) = HEADER.unpack(header)
            payload = _read_exactly(stdin, size)
            if payload is None:
                raise EOFError("end of input inside a frame")
            ok, failed = marshal.loads(payload)  # noqa: S302 - plain data from our parent
            write_rows(conn, ok, failed)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as exc:  # one line for the parent's JournalError
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        sys.exit(1)
