"""``fetch --recrawl JOURNAL``: conditional requests from an earlier run's records.

The earlier journal is opened read-only (it is never changed, and may be read by
several processes at once). For each URL, its success record gives the
validators the server sent: ``If-None-Match`` from its ``ETag``,
``If-Modified-Since`` from its ``Last-Modified`` (both when both were sent, as
RFC 9110 allows; a server then goes by the ETag), and the file it was saved to.
A 304 is a success that keeps that file. The records have the validators when
that run was given ``--fields header:etag,header:last-modified`` (a recrawl adds
them itself, so that each recrawl feeds the next).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Final

from ._errors import UsageError

__all__ = ("VALIDATOR_FIELDS", "Previous", "check_previous")

VALIDATOR_FIELDS: Final = ("header:etag", "header:last-modified")


def check_previous(path: str, journal: str | None) -> None:
    """Refuse a ``--recrawl`` journal that cannot be read, or is the run's own journal.

    Raises:
        UsageError: Saying which, and what to do.
    """
    if journal is not None and Path(journal).resolve() == Path(path).resolve():
        raise UsageError(
            f"--recrawl {path} is the run's own --journal: give the recrawl a new journal "
            f"(--journal recrawl.db), the earlier one is only read"
        )
    try:
        with contextlib.closing(_connect(path)) as connection:
            connection.execute("SELECT key, ok, data FROM outcomes LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise UsageError(
            f"--recrawl {path}: cannot read it as a parallelize journal ({exc}): give the "
            f"--journal file of an earlier fetch"
        ) from None


def _connect(path: str) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise sqlite3.OperationalError("no such file")
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


class Previous:
    """An earlier run's records, looked up by key (``fetch``'s journal key)."""

    __slots__ = ("_connection",)

    def __init__(self, path: str) -> None:
        """Open ``path`` read-only (checked by :func:`check_previous` first)."""
        self._connection = _connect(path)

    def close(self) -> None:
        """Close the journal."""
        self._connection.close()

    def conditions(self, key: str) -> tuple[list[tuple[str, str]], str | None]:
        """Return the conditional headers for ``key``, and the file its body was saved to."""
        row = self._connection.execute(
            "SELECT data FROM outcomes WHERE key = ? AND ok = 1", (key,)
        ).fetchone()
        if row is None or row[0] is None:
            return [], None
        try:
            line = json.loads(row[0])
            record: Any = json.loads(line) if isinstance(line, str) else line
        except ValueError:
            return [], None
        if not isinstance(record, dict):
            return [], None
        headers = []
        etag = _header(record, "etag")
        if etag:
            headers.append(("If-None-Match", etag))
        modified = _header(record, "last-modified")
        if modified:
            headers.append(("If-Modified-Since", modified))
        file = record.get("file")
        return headers, file if isinstance(file, str) else None


def _header(record: dict[str, Any], name: str) -> str | None:
    """Return a header's value from a record's ``header:NAME`` or ``headers`` field."""
    value = record.get(f"header:{name}")
    if isinstance(value, str):
        return value
    every = record.get("headers")
    if isinstance(every, dict):
        values = every.get(name)
        if isinstance(values, list) and values and isinstance(values[0], str):
            return values[0]
    return None
