"""The input: its lines read (from a file, or a pipe without blocking the loop) as items.

A command parses each line into an item, or None to skip it. A line that is not
UTF-8 reaches the parser as a :class:`NotUTF8`, for a failure record of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from parallelize import NO_INPUT

from ._errors import UsageError

__all__ = (
    "NotUTF8",
    "Parse",
    "count_items",
    "decode_line",
    "is_regular_file",
    "open_input",
    "read_items",
)

T = TypeVar("T")

# A pipe on stdin is read by a thread, this many bytes at a time, at most this many
# chunks ahead of the run.
_CHUNK = 1 << 16
_CHUNKS_AHEAD = 4

Parse = Callable[[int, str], T | None]


@contextlib.contextmanager
def open_input(path: str | None, what: str) -> Iterator[IO[bytes] | None]:
    """Open the input for reading (``-``: stdin, left open), or raise :class:`UsageError`.

    None when there is no input: a worker of a run shared through Redis.
    """
    if path is None:
        yield None
        return
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = Path(path).open("rb")  # noqa: SIM115 - the with below closes it
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc
    with stream:
        yield stream


def is_regular_file(stream: IO[bytes]) -> bool:
    """Tell whether ``stream`` is a file on disk (not a pipe or a terminal)."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def read_items(stream: IO[bytes] | None, parse: Parse[T]) -> Iterable[T] | AsyncIterator[T]:
    """Return the items of ``stream``: ``parse(number, text)`` of each line but None.

    A file on disk is read as a plain iterator (it never blocks for long). A pipe or
    a terminal is read by a thread, so that a slow writer cannot freeze the event
    loop and every request in flight with it. No stream: no input of this process's
    own (a worker of a run shared through Redis).
    """
    if stream is None:
        return NO_INPUT
    if is_regular_file(stream):
        return _file_items(stream, parse)
    return _pipe_items(stream, parse)


def count_items(stream: IO[bytes] | None, parse: Parse[Any]) -> int | None:
    """How many items a file on disk holds (for the progress bar's ETA), or None."""
    if stream is None or not is_regular_file(stream):
        return None
    position = stream.tell()
    try:
        return sum(1 for _ in _file_items(stream, parse))
    finally:
        stream.seek(position)


class NotUTF8(str):
    """An input line that is not UTF-8, decoded with U+FFFD for each bad byte.

    The commands make it a failure record (it is no URL, no JSON) instead of
    passing the replacement characters on as if they had been read.

    Attributes:
        reason: Where the first bad byte is, for the record's message.
    """

    __slots__ = ("reason",)
    reason: str


def decode_line(raw: bytes) -> str:
    """Return a line's text; a :class:`NotUTF8` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = NotUTF8(raw.decode("utf-8", "replace").strip())
        text.reason = f"the line is not UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}"
        return text


def _file_items(stream: IO[bytes], parse: Parse[T]) -> Iterator[T]:
    for number, raw in enumerate(stream, 1):
        item = parse(number, decode_line(raw))
        if item is not None:
            yield item


async def _pipe_items(stream: IO[bytes], parse: Parse[T]) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    room = threading.Semaphore(_CHUNKS_AHEAD)  # backpressure: the reader stays ahead by 4
    # A daemon thread, never joined: a read from a terminal cannot be interrupted, and
    # waiting for it would hang the exit after Ctrl-C. It holds nothing but the fd.
    threading.Thread(
        target=_read_chunks,
        args=(stream.fileno(), loop, chunks, room),
        name="parallelize-stdin",
        daemon=True,
    ).start()
    number = 0
    rest = b""
    while True:
        data = await chunks.get()
        room.release()
        if not data:
            break
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        for raw in lines:
            number += 1
            item = parse(number, decode_line(raw))
            if item is not None:
                yield item
    if rest:
        item = parse(number + 1, decode_line(rest))
        if item is not None:
            yield item


def _read_chunks(
    fd: int,
    loop: asyncio.AbstractEventLoop,
    chunks: asyncio.Queue[bytes],
    room: threading.Semaphore,
) -> None:
    """Read ``fd`` to its end in a thread, handing each chunk to the loop (b"": the end)."""
    while True:
        room.acquire()
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            data = b""
        try:
            loop.call_soon_threadsafe(chunks.put_nowait, data)
        except RuntimeError:  # the loop is closed: nobody reads any more
            return
        if not data:
            return
