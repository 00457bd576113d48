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
        exception: The exception raised by the last attempt, unchanged.
        attempts: How many times the action was called for this item (at least 1).

    Example:
        >>> async for outcome in parallelize(fetch, urls, 100, on_error="yield"):
        ...     if isinstance(outcome, Failure):
        ...         log.warning("%s failed: %r", outcome.item, outcome.exception)
    """

    item: Any
    exception: BaseException
    attempts: int = 1

    def __repr__(self) -> str:
        return (
            f"Failure(item={self.item!r}, exception={self.exception!r}, attempts={self.attempts})"
        )
