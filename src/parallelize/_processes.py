"""``executor="process"``: plain functions in a pool of child processes, one item each.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: when one of its processes
dies, every pending future fails with ``BrokenProcessPool`` and the pool is dead, so
one poison item takes the others in flight down with it; and it cannot stop a call
that runs too long. Here each child runs one item at a time over its own socket, so:

* a child that dies (killed, out of memory, a crash in C code) fails exactly the item
  it was running, with :class:`ProcessCrashed` (retried if ``Retry`` names it), and
  the next item gets a new child;
* an item that is cancelled (its ``timeout``, or the run closing) kills its child
  at once: a timeout on a CPU-bound item really stops it;
* the parent waits for replies on the event loop (no thread per pool): one
  ``write`` and one ``data_received`` per item.

Children are started lazily, as many as items run at once, with the ``forkserver``
start method on Linux (safe in a process that has threads, and fast once the server
runs) and ``spawn`` elsewhere: the function must be importable by name (checked before
any child starts, see :func:`check_picklable`), and a script that uses it needs the
``if __name__ == "__main__":`` guard. Arguments and results
are pickled between this process and its own children only. Children ignore SIGINT:
Ctrl-C in a terminal reaches the whole process group, and the run, not the child,
decides what a signal means (``handle_signals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import pickle
import pickletools
import signal
import socket
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from ._errors import ActionError, ProcessCrashed

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ("ProcessPool", "check_picklable", "end_children", "kill_child")

_HEADER = 8  # bytes of a frame's length, little-endian
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_EXIT_WAIT = 5.0  # seconds a closed pool waits for its children before killing them


def _process_class() -> type[BaseProcess]:
    """Children start from the fork server on Linux, as fresh interpreters elsewhere."""
    from multiprocessing import context  # noqa: PLC0415 - its classes vary by platform

    if "forkserver" in multiprocessing.get_all_start_methods():
        return context.ForkServerProcess
    return context.SpawnProcess


def check_picklable(
    function: Callable[..., Any], option: str = 'executor="process"', what: str = "action"
) -> None:
    """Raise a TypeError that says what to do if a child could not get ``function``.

    A child receives the action pickled, that is by reference: it imports the
    function by its module and qualified name. Two ways that fails, told apart here
    before any child starts (a child that cannot import its action dies starting):

    * the function has no such name (a lambda, a nested function): pickling fails;
    * it lives in a ``__main__`` that the child cannot import again, because it has
      no file (``python -c``, an interactive session, a notebook): pickling works
      here, and unpickling fails there. A child re-imports ``__main__`` by its module
      name (``python -m``) or its path (``python script.py``), as multiprocessing's
      spawn preparation does, and the script's guard keeps its main code from
      running again.
    """
    name = getattr(function, "__qualname__", None) or repr(function)
    try:
        data = pickle.dumps(function, _PROTOCOL)
    except Exception as exc:
        raise TypeError(_unpicklable_message(name, exc, option, what)) from exc
    if _main_is_importable():
        return
    for module, qualname in _imported_names(data):
        if module == "__main__":
            culprit = "it" if qualname == name else f"{qualname}, which it refers to,"
            raise TypeError(
                f"{what} {name} cannot run in child processes ({option}): "
                f"{culprit} is defined in __main__, and this __main__ has no file "
                f"(python -c, an interactive session or a notebook), so the children, "
                f"which import the {what} by its module and name, cannot find it. "
                f"Define it at the top level of a module file and import it from "
                f"there (or run a script, `python script.py`, with its main code under "
                f'`if __name__ == "__main__":`)'
            )


def _unpicklable_message(name: str, exc: Exception, option: str, what: str) -> str:
    how = f"{option} sends the {what} to its child processes by module and name"
    if "<lambda>" in name:
        return (
            f"{what} {name} is a lambda: {how}, and a lambda has none; define it with "
            f"def at the top level of a module"
        )
    outer, local, _ = name.rpartition(".<locals>.")
    if local:
        return (
            f"{what} {name} is defined inside {outer}(): {how}, and a child cannot "
            f"import what is local to a function; define it at the top level of a module"
        )
    return (
        f"{what} {name} cannot be sent to the child processes ({exc}): {how}; define "
        f"it at the top level of a module (not a lambda, a nested function or a method "
        f"of a local class)"
    )


def _main_is_importable() -> bool:
    """Whether a child can import ``__main__`` again: by module name or by path."""
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    return spec_name is not None or getattr(main, "__file__", None) is not None


# Opcodes that push a string, that store to or fetch from the memo, that push nothing.
_STRINGS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_NO_PUSH = frozenset({"PROTO", "FRAME", "STOP"})


def _imported_names(data: bytes) -> Iterator[tuple[str, str]]:
    """Yield the (module, qualified name) pairs that unpickling ``data`` imports.

    Protocol 4 and later name a global with two strings on the stack, then
    STACK_GLOBAL; a string seen before comes from the memo. Only the last two pushes
    matter, so only they are kept (None for anything but a string).
    """
    memo: dict[int, object] = {}
    pushed: deque[object] = deque([None, None], maxlen=2)
    for opcode, arg, _ in pickletools.genops(data):
        op = opcode.name
        if op in {"GLOBAL", "INST"}:  # protocols 0 to 3: "module name" in one argument
            module, _, qualname = str(arg).partition(" ")
            yield module, qualname
        elif op == "STACK_GLOBAL":
            first, second = pushed
            if isinstance(first, str) and isinstance(second, str):
                yield first, second
        if op == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif op in _PUTS:
            if isinstance(arg, int):
                memo[arg] = pushed[-1]
        elif op in _STRINGS:
            pushed.append(arg)
        elif op not in _NO_PUSH:
            pushed.append(memo.get(arg) if op in _GETS and isinstance(arg, int) else None)


# -- the child's side -----------------------------------------------------------------


def _serve(sock: socket.socket, function: Callable[..., Any], fan_out: bool) -> None:
    """Run ``function`` on each request until the socket closes: a child's whole life."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock.sendall(bytes(_HEADER))  # ready: an empty frame
    reader = sock.makefile("rb")
    while True:
        header = reader.read(_HEADER)
        if len(header) < _HEADER:
            return  # the pool closed its end: exit
        args = pickle.loads(reader.read(int.from_bytes(header, "little")))  # noqa: S301 - from our parent
        try:
            value = function(*args)
            if fan_out:
                value = list(value)
        except BaseException as exc:
            payload = _error_payload(function, exc)
        else:
            try:
                payload = pickle.dumps((True, value), _PROTOCOL)
            except Exception as exc:
                name = getattr(function, "__qualname__", type(function).__name__)
                error = ActionError(
                    f"action {name} returned a {type(value).__name__} that cannot be "
                    f"pickled, so it cannot leave its worker process ({exc}); return "
                    f"plain data (str, bytes, numbers, lists, dicts, dataclasses)"
                )
                payload = _error_payload(function, error)
        sock.sendall(len(payload).to_bytes(_HEADER, "little") + payload)


def _error_payload(function: Callable[..., Any], exc: BaseException) -> bytes:
    """Pickle an error for the parent, with its traceback as text."""
    text = "".join(traceback.format_exception(exc))
    name = getattr(function, "__qualname__", type(function).__name__)
    if not isinstance(exc, Exception):
        # SystemExit or KeyboardInterrupt from the action must not stop the run.
        exc = ActionError(f"action {name} raised {exc!r} in its worker process")
    try:
        return pickle.dumps((False, exc, text), _PROTOCOL)
    except Exception:
        error = ActionError(
            f"action {name} raised {type(exc).__name__}: {exc} in its worker process "
            f"(the exception itself cannot be pickled; its traceback follows)"
        )
        try:
            return pickle.dumps((False, error, text), _PROTOCOL)
        except Exception:
            return pickle.dumps((False, ActionError(str(error)), text), _PROTOCOL)


# -- the parent's side ----------------------------------------------------------------


class RemoteTraceback(Exception):  # noqa: N818 - what it holds, as concurrent.futures names it
    """The traceback of an exception raised in a child, as the ``__cause__`` of it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


class _Lost(Exception):  # noqa: N818 - internal: the child's socket closed mid-item
    pass


class _Child(asyncio.Protocol):
    """One child process and the parent's end of its socket."""

    def __init__(self, process: BaseProcess, loop: asyncio.AbstractEventLoop) -> None:
        self.process = process
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.reply: asyncio.Future[bytes] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance().
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if len(buffer) < _HEADER:
            return
        size = int.from_bytes(buffer[:_HEADER], "little")
        if len(buffer) < _HEADER + size:
            return
        payload = bytes(buffer[_HEADER : _HEADER + size])
        del buffer[: _HEADER + size]
        reply = self.reply
        if reply is not None and not reply.done():
            reply.set_result(payload)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - any loss
        self.lost = True
        reply = self.reply
        if reply is not None and not reply.done():
            reply.set_exception(_Lost())

    async def request(self, payload: bytes) -> bytes:
        assert self.transport is not None
        reply: asyncio.Future[bytes] = self.loop.create_future()
        self.reply = reply
        self.transport.write(len(payload).to_bytes(_HEADER, "little") + payload)
        try:
            return await reply
        finally:
            self.reply = None

    def kill(self) -> None:
        kill_child(self.transport, self.process)


class _Killable(Protocol):
    process: BaseProcess

    def kill(self) -> None: ...


async def end_children(children: Iterable[_Killable]) -> None:
    """Wait for each child to exit, killing those that take too long (or all, if cancelled)."""
    try:
        for child in children:
            if not await _wait_exit(child.process, _EXIT_WAIT):
                child.kill()
                await _wait_exit(child.process, _EXIT_WAIT)
    except BaseException:
        for child in children:  # cancelled while waiting: leave none running
            child.kill()
        raise


def kill_child(transport: asyncio.Transport | None, process: BaseProcess) -> None:
    """Abort the parent's end of a child's socket, and SIGKILL the child if it started."""
    if transport is not None:
        transport.abort()
    if process.pid is not None:  # started
        with contextlib.suppress(OSError, ValueError):
            process.kill()


class ProcessPool:
    """Up to ``size`` child processes that run ``function``, one call each at a time.

    ``call`` is the run's action; ``warm_up`` starts the children before the first
    item arrives; ``aclose`` ends the children and waits for them.
    """

    def __init__(self, function: Callable[..., Any], size: int, *, fan_out: bool) -> None:
        self._function = function
        self._size = size
        self._fan_out = fan_out
        self._process_class = _process_class()
        self._idle: deque[_Child] = deque()
        self._live: set[_Child] = set()  # started (or starting) and not killed
        self._dead: set[_Child] = set()  # killed, not yet reaped
        # Calls waiting for a child that is starting; woken with a child, or with
        # None to look again (a child died: there is room to start another).
        self._waiters: deque[asyncio.Future[_Child | None]] = deque()
        self._warming: asyncio.Task[None] | None = None
        # Starts in flight in their threads, even those whose caller was cancelled.
        self._starting: set[asyncio.Future[None]] = set()
        self._closed = False

    async def call(self, *args: Any) -> Any:
        """Run ``function(*args)`` in a child; its result, or its exception re-raised."""
        payload = pickle.dumps(args, _PROTOCOL)
        child = self._idle.pop() if self._idle else await self._acquire()
        try:
            reply = await child.request(payload)
        except _Lost:
            raise await self._crashed(child) from None
        except BaseException:
            # Cancelled (a timeout, the run closing): the child is still busy with
            # this item, and nothing can interrupt it but killing it.
            self._kill(child)
            raise
        self._release(child)
        ok, *rest = pickle.loads(reply)  # noqa: S301 - from our own child
        if ok:
            return rest[0]
        error, text = rest
        error.__cause__ = RemoteTraceback(text)
        raise error

    def warm_up(self) -> None:
        """Start every child now, at once, so that the first items find them ready.

        The pool owns the task that starts them (``aclose`` ends it). Errors are
        left to the calls: one that finds no child starts its own and gets the
        error there, with its item.
        """

        async def start_one() -> None:
            # The workers may have started children of their own meanwhile.
            if len(self._live) < self._size and not self._closed:
                with contextlib.suppress(Exception):
                    self._release(await self._start_child())

        async def start_all() -> None:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._size - len(self._live)):
                    group.create_task(start_one())

        self._warming = asyncio.get_running_loop().create_task(start_all())

    async def started(self) -> None:
        """Return at once: a call waits for its own child (see ``warm_up``)."""

    async def _acquire(self) -> _Child:
        """Return an idle child, starting one if there is room, else wait for one."""
        loop = asyncio.get_running_loop()
        while True:
            if self._idle:
                return self._idle.pop()
            if len(self._live) < self._size:
                return await self._start_child()
            waiter: asyncio.Future[_Child | None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                child = await waiter
            except BaseException:
                handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if handed is not None:
                    self._release(handed)  # handed over as we were cancelled
                raise
            if child is not None:
                return child

    def _release(self, child: _Child) -> None:
        """Hand a free child to a waiting call, or keep it idle."""
        if self._closed:
            self._kill(child)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(child)
                return
        self._idle.append(child)

    def _kill(self, child: _Child) -> None:
        child.kill()
        self._forget(child)

    def _forget(self, child: _Child) -> None:
        """Count ``child`` as gone (it is reaped in ``aclose``): a waiting call may start one."""
        self._live.discard(child)
        self._dead.add(child)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _start_child(self) -> _Child:
        if self._closed:
            raise RuntimeError("the process pool is closed")
        loop = asyncio.get_running_loop()
        parent_end, child_end = socket.socketpair()
        process = self._process_class(
            target=_serve,
            args=(child_end, self._function, self._fan_out),
            name="parallelize-worker",
            daemon=True,
        )
        child = _Child(process, loop)
        self._live.add(child)
        # In a thread: the first start also starts the fork server, and waits for it
        # (a fifth of a second), which must not stall the loop. The thread owns
        # child_end until start() returns (see _start), and the pool owns the thread's
        # future until it is done: aclose() waits for it.
        starting = loop.run_in_executor(None, _start, process, child_end)
        self._starting.add(starting)
        starting.add_done_callback(self._starting.discard)
        try:
            try:
                await asyncio.shield(starting)
            except asyncio.CancelledError:
                # The start goes on in its thread: kill the child once it exists, and
                # take the start's own error, if any, so that none is left unretrieved.
                starting.add_done_callback(functools.partial(_abandon, child))
                raise
            ready: asyncio.Future[bytes] = loop.create_future()
            child.reply = ready
            try:
                await loop.create_unix_connection(lambda: child, sock=parent_end)
                await ready  # the child has imported the action and serves
            finally:
                child.reply = None
        except _Lost:
            raise await self._crashed(child, starting=True) from None
        except BaseException:
            # Before create_unix_connection() returns, parent_end is ours to close;
            # after, the transport's (closing the socket object again is a no-op).
            parent_end.close()
            self._kill(child)
            raise
        return child

    async def _crashed(self, child: _Child, *, starting: bool = False) -> ProcessCrashed:
        """Wait for a child whose socket closed to exit; describe how it ended."""
        self._forget(child)
        process = child.process
        # Let it end on its own first: killing it at once would report our own
        # SIGKILL instead of how it ended (the exit code of its import error, say).
        try:
            if not await _wait_exit(process, _EXIT_WAIT):
                child.kill()
                await _wait_exit(process, _EXIT_WAIT)
        except BaseException:
            child.kill()
            raise
        return ProcessCrashed(process.pid, process.exitcode, starting=starting)

    async def _stop_starting(self) -> None:
        """Stop the warm-up, and wait for every start still running in its thread."""
        warming = self._warming
        if warming is not None and not warming.done():
            warming.cancel()
            await asyncio.wait((warming,))
        if self._starting:
            # A start cannot be interrupted in its thread: wait for it (its child is
            # killed as it ends, or with the others below), so that no start outlives
            # the run, still using the fork server and spawning a child after it.
            await asyncio.wait(set(self._starting))

    async def aclose(self) -> None:
        """End every child: close the idle ones' sockets (they exit), kill the rest."""
        self._closed = True
        await self._stop_starting()
        idle = set(self._idle)
        self._idle.clear()
        for child in list(self._live):
            if child in idle and child.transport is not None:
                child.transport.close()  # the child reads the end of its input and exits
            else:
                self._kill(child)
        children = self._live | self._dead
        self._live, self._dead = set(), set()
        await end_children(children)
        for child in children:
            if child.process.pid is not None:  # started: reap it
                child.process.join(0)
                with contextlib.suppress(ValueError):
                    child.process.close()


def _start(process: BaseProcess, child_end: socket.socket) -> None:
    """Start ``process`` (in a thread), then close this process's copy of ``child_end``.

    ``child_end`` must stay open until ``start()`` returns, whatever happens to the
    call that asked for the child: the fork server's start sends the socket's
    descriptor *number* to the server (SCM_RIGHTS) late in the call. Closed early, it
    is a bad descriptor (or, reused, another file); the server, sent half a request,
    dies of it, and every later start fails until it is reaped.
    """
    try:
        process.start()
    finally:
        child_end.close()


def _abandon(child: _Child, starting: asyncio.Future[None]) -> None:
    """After a start whose caller was cancelled: kill the child, keep its error quiet."""
    if not starting.cancelled() and starting.exception() is None:
        child.kill()


async def _wait_exit(process: BaseProcess, within: float) -> bool:
    """Wait for ``process`` to exit, on the loop (its sentinel); True if it did."""
    if process.pid is None or process.exitcode is not None:
        return True  # never started, or reaped
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    sentinel = process.sentinel
    loop.add_reader(sentinel, _set_done, exited)
    try:
        async with asyncio.timeout(within):
            await exited
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sentinel)
    process.join(0)
    return True


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
