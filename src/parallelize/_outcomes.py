"""Value types that describe how an item ended."""

from __future__ import annotations

import dataclasses
from typing import Any, final

__all__ = ("Failure",)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """An item whose action raised, yielded in place of its result.

    Yielded by ``parallelize(..., on_error="yield")`` so that one bad input out of a
    million does not stop the run. Every input item ends as exactly one result or one
    ``Failure``.

    Attributes:
        item: The input item exactly as it came from ``argslist``.
        exception: The exception that ended the item, unchanged: what the last
            attempt raised, or :class:`~parallelize.RetriesExhausted` when its result
            was still one to retry.
        attempts: How many times the action was called for this item (at least 1).
        elapsed: Seconds from the item's first attempt to its end, when retries or
            timeouts are in use; None otherwise (it is not measured then).
        expected: True for a failure named by the user (``Retry.on``,
            ``Retry.if_exception``, ``Retry.if_result``) or a ``timeout``; False for an
            unexpected exception, which is also logged with its traceback.
        stage: The name of the run (the pipeline stage) whose action failed: its
            ``name=``, by default the action's name. A failure from an earlier stage
            passes through the later ones unchanged, so it keeps saying where it
            happened; ``item`` is that stage's input.

    Example:
        >>> async for outcome in parallelize(fetch, urls, 100, on_error="yield"):
        ...     if isinstance(outcome, Failure):
        ...         log.warning("%s failed: %r", outcome.item, outcome.exception)
    """

    item: Any
    exception: BaseException
    attempts: int = 1
    elapsed: float | None = None
    expected: bool = False
    stage: str | None = None

    def __repr__(self) -> str:
        extra = "" if self.elapsed is None else f", elapsed={self.elapsed:.3f}"
        stage = "" if self.stage is None else f", stage={self.stage!r}"
        return (
            f"Failure(item={self.item!r}, exception={self.exception!r}, "
            f"attempts={self.attempts}{extra}, expected={self.expected}{stage})"
        )
