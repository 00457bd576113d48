"""Asyncio plumbing that the standard library does not offer as such."""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from typing import Any

__all__ = ("start_without_hooks",)


def start_without_hooks(generator: AsyncGenerator[Any, None]) -> None:
    """Advance ``generator`` to its first ``yield`` with no async-generator hooks set.

    The event loop's hooks (``sys.set_asyncgen_hooks``) are bound to an async
    generator on its first step. Without them, a generator the consumer drops before
    the end is closed at once by the garbage collector, instead of by a task that the
    loop's finalizer hook schedules for later. That task would outlive ``aclose()``,
    and scheduling it from a finalizer crashes uvloop in debug mode (uvloop issue
    730). Our generators need no async clean-up: the run's own ``aclose()`` does it.
    """
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
    try:
        # The first step only reaches the generator's opening ``yield``.
        generator.asend(None).send(None)
    except StopIteration:
        pass
    finally:
        sys.set_asyncgen_hooks(*hooks)
