"""Items waiting for a retry: a heap ordered by the loop time each is due, and its timers.

The item source takes a due retry before a new item; the outcome sink parks a
failed attempt here. Both use it, so it is a part of its own (no arrow between them).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parallelize._policies import ItemState

    from ._flow import Flow

__all__ = ("Retries",)

logger = logging.getLogger("parallelize")


class Retries:
    """Items waiting for a retry, in a heap ordered by the loop time they are due."""

    __slots__ = ("flow", "heap", "seq")

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.heap: list[tuple[float, int, ItemState]] = []
        self.seq = itertools.count()

    def due(self, now: float) -> ItemState | None:
        heap = self.heap
        # Within a millisecond counts as due: timers are no finer than that.
        if heap and heap[0][0] <= now + 0.001:
            return heapq.heappop(heap)[2]
        return None

    def schedule(self, state: ItemState, failure: object, delay: float) -> None:
        """Park ``state`` until its retry is due; its worker goes on with other items."""
        loop = self.flow.loop
        assert loop is not None
        due = loop.time() + delay
        heapq.heappush(self.heap, (due, next(self.seq), state))
        # The timer wakes a sleeping worker, if there is one, when the retry is due.
        loop.call_at(due, self.flow.wake_worker)
        logger.debug(
            "retrying %r in %.3f s after attempt %d: %r",
            state.item,
            delay,
            state.attempts,
            failure,
            extra={"item": state.item, "attempt": state.attempts, "error": failure},
        )
