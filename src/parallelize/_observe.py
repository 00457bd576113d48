"""Observers: user hooks on a run's events, and how the engine finds the ones in use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._engine import Run
    from ._outcomes import Failure

__all__ = ("ItemHooks", "Observer")


class Observer:
    """Hooks on a run's events: subclass it and override the methods you need.

    Pass instances as ``parallelize(..., observers=[...])``. Every method here does
    nothing; the run calls only the ones a subclass overrides, so an observer that
    overrides only :meth:`run_started` and :meth:`run_finished` (a progress
    display, a metrics exporter reading :meth:`Run.statistics`) costs nothing per
    item. Overriding an ``item_*`` hook routes the run through the worker that
    knows each item's attempts: a few microseconds per item, plus the hook's own
    time.

    Hooks run on the event loop, in the worker that handles the item: keep them
    quick and never block (hand slow work to a queue). An exception raised by a
    hook ends the run with that exception, like an action's error under
    ``on_error="raise"``.

    Example:
        >>> class Failures(Observer):
        ...     def item_failed(self, failure):
        ...         alerts.send(f"{failure.item}: {failure.exception!r}")
        >>> async for page in parallelize(fetch, urls, 100, observers=[Failures()]):
        ...     ...
    """

    def run_started(self, run: Run[Any]) -> None:
        """Observe the start of the run; ``run.statistics()`` works from now on."""

    def item_started(self, item: Any, attempt: int) -> None:
        """Observe an attempt of ``item`` about to start (``attempt`` counts from 1).

        The attempt may still wait for a rate limit or an adaptive limit's place.
        """

    def item_retrying(self, item: Any, attempt: int, error: object, delay: float) -> None:
        """Observe a failed attempt of ``item`` that is tried again in ``delay`` seconds.

        ``error`` is the exception, or the result that ``Retry.if_result`` rejected;
        ``attempt`` is the number of the attempt that failed.
        """

    def item_succeeded(self, item: Any, result: Any, attempts: int, elapsed: float) -> None:
        """Observe ``item`` ending with ``result``.

        ``elapsed`` runs from its first attempt's start to its end, with the waits
        between ``attempts`` attempts.
        """

    def item_failed(self, failure: Failure) -> None:
        """Observe an item ending as a failure, after its retries.

        The run goes on (``on_error="yield"``) or ends with it.
        """

    def run_finished(self, run: Run[Any], error: BaseException | None) -> None:
        """Observe the end of the run: every worker has ended.

        The run is complete, failed with ``error``, was cancelled (``break``), or
        was stopped by a signal; ``run.statistics()`` is final.
        """


def _overridden(observers: Iterable[Observer], name: str) -> tuple[Callable[..., None], ...]:
    base = getattr(Observer, name)
    return tuple(
        getattr(observer, name)
        for observer in observers
        if getattr(type(observer), name, base) is not base
    )


class ItemHooks:
    """The per-item hooks that the observers of a run override (internal)."""

    __slots__ = ("failed", "retrying", "started", "succeeded")

    def __init__(self, observers: Iterable[Observer]) -> None:
        observers = tuple(observers)
        self.started = _overridden(observers, "item_started")
        self.retrying = _overridden(observers, "item_retrying")
        self.succeeded = _overridden(observers, "item_succeeded")
        self.failed = _overridden(observers, "item_failed")

    def __bool__(self) -> bool:
        return bool(self.started or self.retrying or self.succeeded or self.failed)
