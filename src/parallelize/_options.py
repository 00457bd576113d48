"""The keyword options a stage takes: :class:`StageOptions`, for :meth:`Run.then`.

Below the engine and the API both: ``Run.then()`` and ``parallelize()`` take the
same options, and the engine must not import the API (arrows point one way).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Generic, Literal, TypedDict, TypeVar

if TYPE_CHECKING:
    from ._journal import Journal, WorkSource
    from ._limits import AdaptiveLimit, Limit, PerKey, RateLimiter
    from ._observe import Observer
    from ._policies import Retry
    from ._progress import Progress

__all__ = ("StageOptions",)

R = TypeVar("R")  # what a stage's Retry.if_result reads


class StageOptions(TypedDict, Generic[R], total=False):
    """The keyword options of :func:`parallelize` but ``on_error``, for :meth:`Run.then`.

    ``R`` is the type one call of the action returns (a generator action's: the list
    of its values), which ``retry``'s ``if_result`` reads.
    """

    ordered: bool
    max_buffered: int | None
    timeout: float | None
    deadline: float | None
    retry: Retry[R] | None
    rate_limit: RateLimiter | Limit | None
    adaptive: AdaptiveLimit | bool
    per_key: PerKey | None
    journal: str | os.PathLike[str] | Journal | WorkSource | None
    key: Callable[[Any], int | str] | None
    handle_signals: bool | float
    stats: bool
    progress: bool | Progress
    observers: Iterable[Observer]
    total: int | None
    name: str | None
    executor: Literal["thread", "process"] | Executor | None
    processes: int | Literal["auto"] | None
    process_setup: Callable[[], AbstractAsyncContextManager[Any]] | None
