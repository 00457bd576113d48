"""``processes=N``: an async action in N child processes, many calls in flight in each.

The run itself stays in this process: its input, its workers, every policy (retries,
``Retry-After``, timeouts, the rate limit, the adaptive limit, limits per key), the
journal, statistics, ordering and signals. Only the action moves: each worker's call
becomes a message to a child, whose event loop runs it as a task among the others
it was sent, and its outcome comes back as a message. So the run has one budget for
each limit however many processes, and one journal writer, for free: none of them
needed to learn about processes.

Messages go over one socket per child, in frames (an 8-byte length, then a pickled
list). Calls made in one turn of the event loop go in one frame, and the outcomes a
child has in one turn come back in one: a busy run pays a pickle of a batch, not a
system call per item. A call goes to the child with the fewest calls in flight.

* A call that is cancelled (its ``timeout``, the run closing) sends the child a
  cancel for its task; the outcome, if it comes anyway, is dropped.
* A child that dies fails the calls it had in flight with
  :class:`~parallelize.ProcessCrashed` (retried if ``Retry`` names it), and the next
  call starts a new child in its place.
* No orphan: a child exits when its socket to the parent closes (the parent gone,
  however it ended), and on Linux the kernel kills it (``PR_SET_PDEATHSIG``) when
  the fork server that started it exits, which it does when this process dies.
* ``process_setup``, an async context manager factory, is entered in each child
  before its first call and exited after its last (a client per process). If it
  fails, the pool is broken: every call fails with its error, none restarts it.

Children start from the fork server on Linux (``spawn`` elsewhere), run uvloop's
loop when it is installed, and ignore SIGINT (the run decides what a signal means).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import itertools
import multiprocessing
import os
import pickle
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, cast

from ._errors import ActionError, ProcessCrashed
from ._multi_child import (
    HEADER,
    PROTOCOL,
    READY,
    ProcessSetup,
    child_main,
    frames,
)
from ._processes import (
    RemoteTraceback,
    _process_class,
    _start,
    _wait_exit,
    check_picklable,
    end_children,
    kill_child,
)
from ._util import check_action, check_callable, check_int

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ("ProcessSetup", "ProcessShards", "auto_processes", "check_processes", "open_processes")

_EXIT_WAIT = 5.0  # seconds a closed pool waits for its children before killing them


def auto_processes() -> int:
    """Return the processes of ``processes="auto"``: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_processes(
    processes: object, setup: object, kind: str, action: Callable[..., Any]
) -> tuple[int, ProcessSetup | None]:
    """Check ``processes`` (a number, or ``"auto"``), its action and its setup."""
    size = auto_processes() if processes == "auto" else check_int("processes", processes, 1)
    name = getattr(action, "__qualname__", type(action).__name__)
    if kind not in {"async", "asyncgen"}:
        raise ValueError(
            f"processes= runs an async action in child processes, and {name} is a plain "
            f'function: use executor="process" for a plain function (one call per child '
            f"at a time), or make {name} an async def"
        )
    check_picklable(action, "processes=")
    if setup is not None:
        check_callable("process_setup", setup, "a function that returns an async context manager")
        check_picklable(cast("Callable[..., Any]", setup), "processes=", what="process_setup")
    return size, cast("ProcessSetup | None", setup)


@contextlib.asynccontextmanager
async def open_processes(
    action: Callable[..., Awaitable[Any]],
    processes: int | Literal["auto"] = "auto",
    *,
    setup: ProcessSetup | None = None,
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Run an async function in child processes; yield an async function that calls it.

    What ``parallelize(action, ..., processes=N)`` does, as a part of your own: the
    function yielded sends each call to the child with the fewest calls in flight
    and returns its value (or raises its exception, the child's traceback as its
    ``__cause__``), so that work can be done around the call in this process. The
    block is entered once the children have started; they end when it is left.

    Example:
        >>> async with open_processes(parse_page, 4, setup=open_db) as parse:
        ...     async for row in parallelize(parse, pages, 200):
        ...         ...

    Added in 0.3.
    """
    kind = check_action(action)
    size, checked_setup = check_processes(processes, setup, kind, action)
    shards = ProcessShards(action, size, fan_out=kind == "asyncgen", setup=checked_setup)
    try:
        shards.warm_up()
        await shards.started()  # the first calls' timeouts do not count the start
        yield shards.call
    finally:
        await shards.aclose()


# -- the child's side -------------------------------------------------------------------


def _preload(function: Callable[..., Any], setup: ProcessSetup | None) -> None:
    """Have the fork server import our action's module (and uvloop) before its children.

    Each child then starts with them imported (copied, not imported again): the
    imports are paid once, not once per child (0.02 s of a child's CPU instead of
    0.08-0.12 for the command line's). Only parallelize's own modules (the command
    line's actions): a user's module may start a thread or a client as it is
    imported, which a forked child would inherit broken; a child imports those
    itself. Only before the fork server starts (the first child process of this
    one); later calls change nothing.
    """
    modules = {"uvloop"} if importlib.util.find_spec("uvloop") is not None else set()
    for given in (function, setup):
        part: Any = given
        while isinstance(part, functools.partial):
            part = part.func
        module = getattr(part, "__module__", None)
        if isinstance(module, str) and module.startswith("parallelize."):
            modules.add(module)
    with contextlib.suppress(ValueError, AttributeError):  # no fork server here
        multiprocessing.set_forkserver_preload(sorted(modules))


def _is_ready(child: _Child) -> bool:
    return _is_ready_future(child.ready)


def _is_ready_future(future: asyncio.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


# -- the parent's side ------------------------------------------------------------------


class _Child(asyncio.Protocol):
    """One child process, the parent's end of its socket, and its calls in flight."""

    def __init__(
        self, process: BaseProcess, pool: ProcessShards, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.process = process
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.load = 0  # calls given to it: waiting for it to start, or in flight
        self.outbox: list[tuple[Any, ...]] = []
        self.flushing = False
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        for replies in frames(self.buffer, data):
            calls = self.calls
            for reply in replies:
                ident = reply[0]
                if ident == READY:
                    self.started(reply)
                    continue
                future = calls.pop(ident, None)
                if future is None or future.done():
                    continue  # cancelled meanwhile
                if reply[1]:
                    future.set_result(reply[2])
                else:
                    error = reply[2]
                    error.__cause__ = RemoteTraceback(reply[3])
                    future.set_exception(error)

    def started(self, reply: tuple[Any, ...]) -> None:
        if self.ready.done():
            return
        if reply[1]:
            self.ready.set_result(None)
        else:
            error = reply[2]
            error.__cause__ = RemoteTraceback(reply[3])
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: the pool keeps it as its break

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - any loss
        self.lost = True
        self.pool.lost(self)

    def send(self, message: tuple[Any, ...]) -> None:
        self.outbox.append(message)
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flushing = False
        messages, self.outbox = self.outbox, []
        transport = self.transport
        if transport is None or self.lost or not messages:
            return
        try:
            payload = pickle.dumps(messages, PROTOCOL)
        except Exception:
            payload = pickle.dumps([m for m in messages if self.picklable(m)], PROTOCOL)
        transport.write(len(payload).to_bytes(HEADER, "little") + payload)

    def picklable(self, message: tuple[Any, ...]) -> bool:
        try:
            pickle.dumps(message, PROTOCOL)
        except Exception as exc:
            future = self.calls.pop(message[0], None)
            if future is not None and not future.done():
                future.set_exception(
                    TypeError(
                        f"the arguments of this item cannot be sent to a child process "
                        f"(processes=): {exc}; give the action picklable items"
                    )
                )
            return False
        return True

    def kill(self) -> None:
        kill_child(self.transport, self.process)


class ProcessShards:
    """``size`` child processes that each run many calls of an async ``function`` at once.

    ``call`` is the run's action; ``warm_up`` starts the children before the first
    item arrives; ``aclose`` ends them and waits for them.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        size: int,
        *,
        fan_out: bool,
        setup: ProcessSetup | None = None,
    ) -> None:
        self._function = function
        self._size = size
        self._fan_out = fan_out
        self._setup = setup
        self._process_class = _process_class()
        self._children: list[_Child] = []  # live: started or starting
        self._dead: set[_Child] = set()  # not yet reaped
        self._ids = itertools.count()
        self._broken: BaseException | None = None  # process_setup failed
        self._starting: set[asyncio.Task[None]] = set()
        self._reaping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def call(self, *args: Any) -> Any:
        """Run ``function(*args)`` in a child; its value, or its exception re-raised."""
        child = self._pick()
        child.load += 1
        try:
            if not child.ready.done() or child.ready.exception() is not None:
                await self._ready(child)
            ident = next(self._ids)
            future: asyncio.Future[Any] = child.loop.create_future()
            child.calls[ident] = future
            child.send((ident, args))
            try:
                return await future
            except asyncio.CancelledError:
                if child.calls.pop(ident, None) is not None and not child.lost:
                    child.send((ident,))  # cancel its task there
                raise
        finally:
            child.load -= 1

    def _pick(self) -> _Child:
        """Return the child with the fewest calls, starting children up to ``size``.

        A child still starting counts: calls wait for it rather than all going to
        the first one ready.
        """
        if self._broken is not None:
            raise self._setup_failed()
        children = self._children
        if len(children) < self._size:
            if self._closed:
                raise RuntimeError("the process pool is closed")
            while len(children) < self._size:
                self._start_child()
        best = children[0]
        fewest = best.load
        for child in children:
            if child.load < fewest:
                best, fewest = child, child.load
        return best

    async def _ready(self, child: _Child) -> None:
        """Wait for ``child`` to be ready; raise this call's error if it cannot be."""
        # Shielded: a call cancelled while waiting must not cancel the child's start.
        await asyncio.wait((child.ready,))
        if self._broken is not None:
            raise self._setup_failed()
        error = None if child.ready.cancelled() else child.ready.exception()
        if isinstance(error, ProcessCrashed):  # died starting: this call fails
            raise ProcessCrashed(error.pid, error.exitcode, starting=True)
        if error is not None:
            raise ActionError(f"a child process could not start: {error!r}") from error

    def _setup_failed(self) -> ActionError:
        """Return this call's error (its own: one object raised by many calls grows)."""
        broken = self._broken
        assert broken is not None
        error = ActionError(
            f"process_setup failed in a child process, so no item can run: "
            f"{type(broken).__name__}: {broken}"
        )
        error.__cause__ = broken
        return error

    def warm_up(self) -> None:
        """Start every child now, so that the first items find them ready."""
        _preload(self._function, self._setup)
        while len(self._children) < self._size and not self._closed:
            self._start_child()

    async def started(self) -> None:
        """Wait until every child has started, or failed to (``warm_up`` first).

        The run waits for it before its first item: a call's ``timeout`` then times
        the call, not the children's start (a fraction of a second, more on a
        loaded machine: a 0.3 s timeout failed a first call that took 0 s). A child
        that fails to start is told to the calls that go to it.
        """
        readies = [child.ready for child in self._children]
        if readies:
            await asyncio.wait(readies)

    def _start_child(self) -> None:
        loop = asyncio.get_running_loop()
        parent_end, child_end = socket.socketpair()
        process = self._process_class(
            target=child_main,
            args=(child_end, self._function, self._setup, self._fan_out),
            name="parallelize-process",
            daemon=True,
        )
        child = _Child(process, self, loop)
        self._children.append(child)
        task = loop.create_task(self._start(child, parent_end, child_end))
        self._starting.add(task)
        task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task[None]) -> None:
        self._starting.discard(task)
        if not task.cancelled():
            task.exception()  # told to the calls through child.ready

    async def _start(
        self, child: _Child, parent_end: socket.socket, child_end: socket.socket
    ) -> None:
        loop = child.loop
        try:
            # In a thread: the first start also starts the fork server (see _processes).
            await loop.run_in_executor(None, _start, child.process, child_end)
            await loop.create_unix_connection(lambda: child, sock=parent_end)
        except BaseException as exc:
            parent_end.close()
            if not child.ready.done():
                child.ready.set_exception(
                    exc if isinstance(exc, Exception) else ProcessCrashed(None, None)
                )
                child.ready.exception()
            self._remove(child)
            raise
        try:
            await child.ready
        except Exception as exc:
            self._broken = exc

    def lost(self, child: _Child) -> None:
        """Note a child whose socket closed: its calls fail once its exit is known."""
        self._remove(child)
        if self._closed:
            return
        task = child.loop.create_task(self._crashed(child))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _remove(self, child: _Child) -> None:
        if child in self._children:
            self._children.remove(child)
        self._dead.add(child)

    async def _crashed(self, child: _Child) -> None:
        process = child.process
        try:
            if not await _wait_exit(process, _EXIT_WAIT):
                child.kill()
                await _wait_exit(process, _EXIT_WAIT)
        finally:
            starting = not child.ready.done()
            if starting:
                child.ready.set_exception(
                    ProcessCrashed(process.pid, process.exitcode, starting=True)
                )
                child.ready.exception()
            calls, child.calls = child.calls, {}
            for future in calls.values():
                if not future.done():
                    future.set_exception(ProcessCrashed(process.pid, process.exitcode))

    async def aclose(self) -> None:
        """End every child: close their sockets (they cancel their calls and exit)."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        if self._starting:
            await asyncio.wait(set(self._starting))
        children = [*self._children, *self._dead]
        self._children = []
        self._dead = set()
        for child in children:
            if child.transport is not None:
                child.transport.close()  # the child sees the end of its input and exits
        try:
            await end_children(children)
        finally:
            for task in list(self._reaping):
                task.cancel()
        for child in children:
            for future in child.calls.values():
                future.cancel()
            if child.process.pid is not None:  # started: reap it
                child.process.join(0)
                with contextlib.suppress(ValueError):
                    child.process.close()
