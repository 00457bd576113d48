"""The one seam every kind of limit plugs into: :class:`Limit` and its :class:`Permit`.

A run passes each attempt of an item through its limits in order (the adaptive
limit's place before the rate limit's slot: the other way round, slots granted
while waiting for a place would bunch up into a burst). Each limit's
:meth:`Limit.admit` waits until the attempt may go and hands back a
:class:`Permit`; once every limit has admitted it, the run calls
:meth:`Permit.start` on each, runs the action, and gives each permit back with
:meth:`Permit.release` and the attempt's outcome (last taken, first released).
The run never reaches into a limit past these methods, so a concurrency limit, a
rate, the adaptive limit, the fleet's limits in Redis and limits per key all look
the same to it.
"""

from __future__ import annotations

from typing import Any, Final, Protocol, final, runtime_checkable

__all__ = ("NO_OUTCOME", "NO_PERMIT", "Limit", "Permit")


@final
class _NoOutcome:
    """The outcome of an attempt that never ran its action, or was cancelled in it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_OUTCOME"


NO_OUTCOME: Final = _NoOutcome()


class Permit(Protocol):
    """One attempt's hold on a :class:`Limit`, from its admission to its release.

    Added in 0.2.
    """

    def start(self) -> None:
        """Mark the attempt's action as started (every limit has admitted it)."""

    def release(self, outcome: object) -> None:
        """Give the hold back: the attempt is over.

        ``outcome`` is what the action returned, the exception it raised, or
        :data:`NO_OUTCOME` if it never ran (another limit or the run was
        cancelled first) or was cancelled while running.
        """


@runtime_checkable
class Limit(Protocol):
    """What a run asks of every limit its attempts pass: ``admit`` and ``pause_until``.

    :class:`~parallelize.RateLimit` and :class:`~parallelize.AdaptiveLimit`
    implement it; so may your own (a limit per host, a token from a shared
    service): the run calls nothing else.

    Added in 0.2.
    """

    async def admit(self, item: Any) -> Permit:
        """Wait until an attempt of ``item`` may go; return its :class:`Permit`.

        Cancellation while waiting must leave the limit as it was.
        """
        ...

    def pause_until(self, when: float) -> None:
        """Hold every attempt until ``when`` (``time.monotonic()``): the service asked.

        Called when an attempt's failure carried a ``Retry-After``. A limit that
        has no use for it does nothing.
        """


@final
class _NoPermit:
    """The permit of a limit with nothing to give back (a rate's slot is spent)."""

    __slots__ = ()

    def start(self) -> None:
        pass

    def release(self, outcome: object) -> None:
        pass

    def __repr__(self) -> str:
        return "NO_PERMIT"


NO_PERMIT: Final[Permit] = _NoPermit()
