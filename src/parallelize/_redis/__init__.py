"""Scale-out over Redis Streams: the implementation behind :mod:`parallelize.redis`.

This package's own module imports nothing of redis-py, so that the command line can
name :data:`NO_INPUT` without the extra installed.
"""

from __future__ import annotations

from typing import Any, Final, Self

__all__ = ("NO_INPUT",)


class _NoInput:
    """The input of a process that only works on a run (it adds nothing to it)."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration

    def __repr__(self) -> str:
        return "NO_INPUT"


NO_INPUT: Final = _NoInput()
