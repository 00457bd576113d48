"""The command's event loop: one per command, uvloop's when installed and wanted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ("run_loop",)

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run ``main`` in a new event loop: uvloop's when installed and wanted."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop  # noqa: PLC0415 - optional, imported where used
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
