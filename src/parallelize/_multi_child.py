"""``processes=N``, a child's side: serve the calls its parent sends, until it goes.

The frames both sides write (an 8-byte length, then a pickled list of messages)
and read (``frames``) are defined here; the parent's side is ``_multi.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import pickle
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, cast

from ._errors import ActionError

__all__ = ("HEADER", "PROTOCOL", "READY", "ProcessSetup", "child_main", "error_reply", "frames")

ProcessSetup = Callable[[], AbstractAsyncContextManager[Any]]

HEADER: Final = 8  # bytes of a frame's length, little-endian
PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
# The ready frame's id: the child's setup is done (or failed).
READY: Final = -1
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent (the fork server) exits."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_main(
    sock: socket.socket,
    function: Callable[..., Any],
    setup: ProcessSetup | None,
    fan_out: bool,
) -> None:
    """Serve calls until the parent closes the socket: a child's whole life."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop  # noqa: PLC0415 - optional

        runner: asyncio.Runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(_serve(sock, function, setup, fan_out))


async def _serve(
    sock: socket.socket,
    function: Callable[..., Any],
    setup: ProcessSetup | None,
    fan_out: bool,
) -> None:
    loop = asyncio.get_running_loop()
    server = _Server(function, fan_out, loop)
    await loop.create_unix_connection(lambda: server, sock=sock)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if setup is not None:
                try:
                    await stack.enter_async_context(setup())
                except Exception as exc:
                    server.send([error_reply(READY, function, exc, setup=True)])
                    await server.drained()
                    return
            server.send([(READY, True, None)])
            await server.closed
            await server.stop()
    finally:
        server.close()


class _Server(asyncio.Protocol):
    """A child's end of its socket: calls in, outcomes out, a task per call."""

    def __init__(
        self, function: Callable[..., Any], fan_out: bool, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.function = function
        self.fan_out = fan_out
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.outbox: list[tuple[Any, ...]] = []
        self.flushing = False
        self.closed: asyncio.Future[None] = loop.create_future()
        self.paused = False
        self.resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - any loss
        if not self.closed.done():
            self.closed.set_result(None)
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)

    def data_received(self, data: bytes) -> None:
        for messages in frames(self.buffer, data):
            for message in messages:
                if len(message) == 1:  # a cancel
                    task = self.tasks.get(message[0])
                    if task is not None:
                        task.cancel()
                else:
                    ident, args = message
                    self.tasks[ident] = self.loop.create_task(self.call(ident, args))

    async def call(self, ident: int, args: tuple[Any, ...]) -> None:
        try:
            if self.fan_out:
                value: Any = [v async for v in self.function(*args)]
            else:
                value = await self.function(*args)
        except asyncio.CancelledError:
            self.tasks.pop(ident, None)
            raise
        except BaseException as exc:
            reply = error_reply(ident, self.function, exc)
        else:
            reply = (ident, True, value)
        del self.tasks[ident]
        self.send([reply])

    def send(self, replies: list[tuple[Any, ...]]) -> None:
        self.outbox += replies
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flushing = False
        replies, self.outbox = self.outbox, []
        if self.transport is None or self.transport.is_closing():
            return
        try:
            payload = pickle.dumps(replies, PROTOCOL)
        except Exception:
            payload = pickle.dumps([self.picklable(reply) for reply in replies], PROTOCOL)
        self.transport.write(len(payload).to_bytes(HEADER, "little") + payload)

    def picklable(self, reply: tuple[Any, ...]) -> tuple[Any, ...]:
        try:
            pickle.dumps(reply, PROTOCOL)
        except Exception as exc:
            ident, ok, value = reply[:3]
            if ok:
                name = getattr(self.function, "__qualname__", type(self.function).__name__)
                error = ActionError(
                    f"action {name} returned a {type(value).__name__} that cannot be "
                    f"pickled, so it cannot leave its process ({exc}); return plain data "
                    f"(str, bytes, numbers, lists, dicts, dataclasses)"
                )
                return error_reply(ident, self.function, error)
            return error_reply(ident, self.function, ActionError(f"{value!r}"))
        return reply

    async def drained(self) -> None:
        self.flush()
        while self.paused and not self.closed.done():
            self.resumed = self.loop.create_future()
            await self.resumed

    async def stop(self) -> None:
        """Cancel every call still running (the parent has gone), and wait for them."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def frames(buffer: bytearray, data: bytes) -> Iterator[list[tuple[Any, ...]]]:
    """Add ``data`` to ``buffer``; yield each whole frame's list of messages, unpickled."""
    buffer += data
    while len(buffer) >= HEADER:
        size = int.from_bytes(buffer[:HEADER], "little")
        if len(buffer) < HEADER + size:
            return
        messages = pickle.loads(buffer[HEADER : HEADER + size])  # noqa: S301 - our own process
        del buffer[: HEADER + size]
        yield messages


def error_reply(
    ident: int, function: Callable[..., Any], exc: BaseException, *, setup: bool = False
) -> tuple[Any, ...]:
    """Return an exception for the parent, with its traceback as text (picklable)."""
    text = "".join(traceback.format_exception(exc))
    name = getattr(function, "__qualname__", type(function).__name__)
    if not isinstance(exc, Exception):
        # SystemExit or KeyboardInterrupt from the action must not stop the run.
        exc = ActionError(f"action {name} raised {exc!r} in its process")
    try:
        pickle.dumps(exc, PROTOCOL)
    except Exception:
        where = "process_setup" if setup else f"action {name}"
        exc = ActionError(
            f"{where} raised {type(exc).__name__}: {exc} in its process (the exception "
            f"itself cannot be pickled; its traceback follows)"
        )
    return (ident, False, exc, text)
