"""Shared fixtures: run each async test on every event loop we support.

Tests are plain functions that take ``run`` and call ``run(main())``; ``run`` drives
the coroutine in a fresh loop in debug mode, once on the default asyncio loop and
once on uvloop when it is installed. A test fails when asyncio logs an error (such as
"Task was destroyed but it is pending!") while it runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

Runner = Callable[[Coroutine[Any, Any, T]], T]

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test dependency where it builds
    pass
else:
    LOOPS["uvloop"] = uvloop.new_event_loop


@pytest.fixture(params=sorted(LOOPS), scope="session")
def loop_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def run(loop_name: str) -> Runner[Any]:
    """Run a coroutine to completion in a new event loop of the parametrized kind."""
    factory = LOOPS[loop_name]

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(debug=True, loop_factory=factory) as r:
            return r.run(coro)

    return runner


@pytest.fixture(scope="session")
def run_timed(loop_name: str) -> Runner[Any]:
    """Like ``run``, but without asyncio's debug mode, for tests whose subject is timing.

    Debug mode records a traceback for every future and callback: with an HTTP client
    and server in one process it costs several milliseconds of CPU per request, enough
    to make the client itself the bottleneck that an adaptive limit would measure.
    """
    factory = LOOPS[loop_name]

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(debug=False, loop_factory=factory) as r:
            return r.run(coro)

    return runner


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_asyncio_errors() -> Iterator[None]:
    """Fail a test during which asyncio logged an error (orphan or destroyed tasks)."""
    handler = _ErrorCollector()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
        gc.collect()  # destroyed-task messages are logged when tasks are collected
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in handler.records]
    assert not messages, f"asyncio logged errors: {messages}"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The base URL of a local test server in its own process, for command line tests.

    Its own session: a signal meant for the command line never reaches it.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelize.testing"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    base = proc.stdout.readline().strip()
    try:
        assert base.startswith("http://127.0.0.1:"), base
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
