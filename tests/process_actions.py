"""Actions for ``executor="process"`` tests: top-level, so child processes import them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator


class Unpicklable(Exception):
    """An exception that cannot cross a process boundary (it holds a lock-like object)."""

    def __init__(self) -> None:
        super().__init__("unpicklable")
        self.handle = lambda: None


def square(x: int) -> int:
    return x * x


def pid_of(_: object) -> int:
    return os.getpid()


def spin(n: int) -> int:
    """The article's do_real_work: a CPU loop."""
    out = 0
    for _ in range(n):
        out += 1
    return out


def sleep_then(seconds: float) -> tuple[int, float]:
    """Sleep (blocking), then return this process's id and the time slept."""
    time.sleep(seconds)
    return os.getpid(), seconds


def kill_self_on(item: int, poison: int = 3) -> int:
    """Die by SIGKILL on the poison item, as the out-of-memory killer would kill it."""
    if item == poison:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def exit_on(item: int) -> int:
    if item == 2:
        os._exit(7)
    return item


def fail_on(item: int) -> int:
    if item % 5 == 4:
        raise ValueError(f"bad item {item}")
    return item


def raise_unpicklable(_: object) -> None:
    raise Unpicklable


def raise_system_exit(_: object) -> None:
    raise SystemExit(3)


def return_unpicklable(_: object) -> object:
    return lambda: None


def links(page: int) -> Iterator[str]:
    """Fan-out: a listing page yields its links."""
    for i in range(page % 4):
        yield f"{page}/{i}"


class Unbuildable:
    """An action that pickles here but cannot be rebuilt in a child: as a function
    the child cannot import, it makes every child die as it starts, by itself."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (_rebuild, (os.getpid(),))

    def __call__(self, item: int) -> int:
        return item


def _rebuild(parent: int) -> Unbuildable:
    if os.getpid() != parent:
        raise ImportError("Unbuildable cannot be rebuilt in a child process")
    return Unbuildable()
