"""How an action is called: on the loop, in threads, in processes; fanned out or not.

:func:`prepare_action` turns the user's action into the one thing the workers call,
``await action(*args)``, whatever it is:

* an ``async def``: as it is, on the event loop;
* a plain function: in the run's own thread pool (``numworkers`` threads), or in
  child processes (``executor="process"``, see ``_processes``), or in the user's
  own :class:`concurrent.futures.Executor`;
* a generator function, async or not (fan-out): its values collected into a list
  per item, which the run's consumer flattens. An item's outputs are delivered
  together when its generator ends, so a retry never repeats an output.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ActionError
from ._util import ActionKind

if TYPE_CHECKING:
    # Imported where used: a run without processes never loads multiprocessing
    # and ctypes (about 10 ms of a CLI's start).
    from ._multi import ProcessSetup, ProcessShards
    from ._processes import ProcessPool

__all__ = ("ExecutorSpec", "ProcessesSpec", "prepare_action", "thread_action")

ExecutorSpec = Literal["thread", "process"] | Executor | None
# processes=: how many child processes, and their process_setup.
ProcessesSpec = tuple[int, "ProcessSetup | None"] | None


def prepare_action(  # noqa: PLR0911 - one return per way an action runs
    action: Callable[..., Any],
    kind: ActionKind,
    executor: ExecutorSpec,
    numworkers: int,
    processes: ProcessesSpec = None,
) -> tuple[Callable[..., Any], ThreadPoolExecutor | None, ProcessPool | ProcessShards | None]:
    """Return the action the workers await, and the pool the run must close, if any."""
    if processes is not None:
        from ._multi import ProcessShards  # noqa: PLC0415 - see the imports

        size, setup = processes
        shards = ProcessShards(action, size, fan_out=kind == "asyncgen", setup=setup)
        return shards.call, None, shards
    if kind == "async":
        return action, None, None
    if kind == "asyncgen":
        return _collect_async(action), None, None
    fan_out = kind == "gen"
    if executor == "process":
        from ._processes import ProcessPool  # noqa: PLC0415 - see the imports

        pool = ProcessPool(action, numworkers, fan_out=fan_out)
        return pool.call, None, pool
    plain = _drained(action) if fan_out else action
    if executor is None or executor == "thread":
        threads = ThreadPoolExecutor(max_workers=numworkers, thread_name_prefix="parallelize")
        return thread_action(plain, threads), threads, None
    assert isinstance(executor, Executor)
    if isinstance(executor, ThreadPoolExecutor):
        return thread_action(plain, executor), None, None
    return _executor_action(action, executor, fan_out), None, None


def _collect_async(action: Callable[..., Any]) -> Callable[..., Any]:
    async def collect(*args: Any) -> list[Any]:
        return [value async for value in action(*args)]

    functools.update_wrapper(collect, action)
    return collect


def _drained(action: Callable[..., Any]) -> Callable[..., Any]:
    def drain(*args: Any) -> list[Any]:
        return list(action(*args))

    functools.update_wrapper(drain, action)
    return drain


def _call(action: Callable[..., Any], args: tuple[Any, ...], fan_out: bool) -> Any:
    """Call an action in another executor's worker (a module-level, picklable function)."""
    value = action(*args)
    return list(value) if fan_out else value


def _executor_action(
    action: Callable[..., Any], executor: Executor, fan_out: bool
) -> Callable[..., Any]:
    async def run_in_executor(*args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, _call, action, args, fan_out)

    functools.update_wrapper(run_in_executor, action)
    return run_in_executor


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
