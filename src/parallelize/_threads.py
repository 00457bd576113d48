"""Plain-function actions: run each call in the run's own thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._errors import ActionError

__all__ = ("thread_action",)


def thread_action(action: Callable[..., Any], executor: ThreadPoolExecutor) -> Callable[..., Any]:
    """Wrap a plain function so that each call runs in ``executor``'s threads."""

    def call_in_context(ctx: contextvars.Context, args: tuple[Any, ...]) -> Any:
        result = ctx.run(action, *args)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            name = getattr(action, "__qualname__", type(action).__name__)
            msg = (
                f"action {name} is a plain function, so it runs in a worker thread, but it "
                f"returned the awaitable {type(result).__name__}; define the action with "
                f"`async def` (a lambda cannot be async) so that it is awaited on the loop"
            )
            raise ActionError(msg)
        return result

    async def run_in_thread(*args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            executor, call_in_context, contextvars.copy_context(), args
        )

    functools.update_wrapper(run_in_thread, action)
    return run_in_thread
