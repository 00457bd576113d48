"""Where an item's outcome goes: the buffer (tagged for the journal), a retry, the error.

:class:`Outcomes` settles each attempt of the general worker: a result is delivered
to the consumer's buffer (with its journal entry, in a journaled run), a failure to
retry is parked in the retry heap, a final failure becomes a :class:`Failure` (or the
run's error under ``on_error="raise"``), logged by the one rule; and every attempt
is counted for ``statistics()`` and shown to the observers' per-item hooks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from parallelize._errors import explain_spread
from parallelize._journal import JournalSession
from parallelize._outcomes import Failure
from parallelize._policies import DONE, RETRY, ItemState

if TYPE_CHECKING:
    from parallelize._journal import Entry, RunSession
    from parallelize._observe import ItemHooks
    from parallelize._stats import StatsCounters

    from ._flow import Flow
    from ._retries import Retries

__all__ = ("Outcomes",)

logger = logging.getLogger("parallelize")


class Outcomes:
    """The outcome sink of the general worker: deliver, retry, fail; count, observe."""

    __slots__ = (
        "flow",
        "hooks",
        "journal",
        "log_failures",
        "name",
        "on_error_yield",
        "retries",
        "stats",
    )

    def __init__(
        self,
        flow: Flow,
        name: str,
        journal: RunSession | None,
        stats: StatsCounters | None,
        hooks: ItemHooks | None,
        *,
        on_error_yield: bool,
        log_failures: bool,
    ) -> None:
        self.flow = flow
        self.name = name
        self.journal = journal
        self.stats = stats
        self.hooks = hooks
        self.on_error_yield = on_error_yield
        self.log_failures = log_failures
        self.retries: Retries | None = None  # set by the item source that owns them

    def done(self, index: int, tag: Any, value: Any, attempts: int, elapsed: float | None) -> None:
        """Deliver an item's result (with its journal entry ``tag``, in a journaled run)."""
        if self.journal is not None:
            value = (tag, value, attempts, elapsed)
        self.flow.deliver(index, value)

    def failed(  # noqa: PLR0917 - an item and its end
        self,
        index: int,
        item: Any,
        tag: Any,
        error: Exception,
        attempts: int,
        elapsed: float | None,
        *,
        expected: bool,
        unpack: bool,
    ) -> None:
        """End an item with ``error``: deliver its ``Failure``, or raise the error."""
        if unpack and type(error) is TypeError:
            error = explain_spread(error, item, self.name)
        if self.log_failures:
            self._log(item, attempts, error, expected=expected)
        if not self.on_error_yield:
            self.flow.worker_failed(error)
            raise error
        failure: Any = Failure(item, error, attempts, elapsed, expected, self.name)
        self.done(index, tag, failure, attempts, elapsed)

    def retry(self, state: ItemState, failure: object, delay: float) -> None:
        assert self.retries is not None
        self.retries.schedule(state, failure, delay)

    def pass_on(self, index: int, failure: Any) -> None:
        """Deliver an earlier stage's failure unchanged, without running the action."""
        if self.stats is not None:
            self.stats.passed_on += 1
        self.flow.deliver(index, failure)

    def replay(self, index: int, entry: Entry) -> None:
        """Deliver a journaled item's stored outcome without running it."""
        journal = self.journal
        # Only a journal's own session stores what it replays (Entry.stored).
        assert isinstance(journal, JournalSession)
        outcome = journal.replayed_outcome(entry)
        if isinstance(outcome, Failure) and not self.on_error_yield:
            self.flow.worker_failed(outcome.exception)
            raise outcome.exception
        self.flow.deliver(index, (entry, outcome, 0, None))

    def observe(  # noqa: PLR0917 - one attempt's whole account
        self,
        state: ItemState,
        attempts_before: int,
        verdict: int,
        payload: Any,
        delay: float,
        elapsed: float,
        expected: bool,
    ) -> None:
        """Count one attempt of a policy and call the observers' hooks."""
        stats = self.stats
        hooks = self.hooks
        assert stats is not None
        if state.attempts != attempts_before:  # an attempt ran (not a passed deadline)
            stats.attempts += 1
            stats.latency.record(state.duration)
        if verdict == RETRY:
            stats.retries += 1
            if hooks is not None:
                for hook in hooks.retrying:
                    hook(state.item, state.attempts, payload, delay)
        elif verdict == DONE:
            stats.succeeded += 1
            if hooks is not None:
                for hook in hooks.succeeded:
                    hook(state.item, payload, state.attempts, elapsed)
        else:
            stats.failed += 1
            if hooks is not None and hooks.failed:
                failure = Failure(state.item, payload, state.attempts, elapsed, expected, self.name)
                for hook in hooks.failed:
                    hook(failure)

    def _log(self, item: Any, attempts: int, error: BaseException, *, expected: bool) -> None:
        fields = {"item": item, "attempt": attempts, "error": error}
        if expected:
            logger.warning(
                "item %r failed after %d attempts: %r",
                item,
                attempts,
                error,
                extra=fields,
            )
        else:
            logger.error(
                "item %r failed with an unexpected error on attempt %d: %r",
                item,
                attempts,
                error,
                exc_info=error,
                extra=fields,
            )
