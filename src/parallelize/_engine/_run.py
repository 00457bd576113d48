"""The run's lifecycle: start, the supervisor and its task group, results, close.

``Run`` owns the task group, the credits (its ``Flow``) and the consumer's way in;
it picks the worker (one of the two inlined in ``_hot.py``, or the general one
assembled from the parts) and wires the parts. The invariants (credits bound memory,
hysteresis on wake-ups, structured concurrency, the first error re-raised unchanged)
are stated in ``_flow.py`` and ``docs/design.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import logging
import operator
import random
import signal
import threading
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from concurrent.futures import ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    NoReturn,
    Self,
    TypeVar,
    Unpack,
    final,
    overload,
)

from parallelize._actions import prepare_action
from parallelize._aio import PullLock, start_without_hooks
from parallelize._errors import Interrupted
from parallelize._journal import RunSession, open_run_session
from parallelize._observe import ItemHooks, Observer
from parallelize._outcomes import Failure
from parallelize._policies import ItemPolicy
from parallelize._signals import SignalHandlers
from parallelize._stats import Latency, Statistics, StatsCounters

from ._consumer import flattened, journaled_results, ordered_results, recorded
from ._consumer import results as plain_results
from ._flow import MISSING, Flow
from ._general import general_worker
from ._hot import UNPACKED, observed_worker, plain_worker
from ._sinks import Outcomes
from ._sources import ItemSource

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine
    from types import TracebackType

    from parallelize._actions import ExecutorSpec
    from parallelize._journal import Journal, WorkSource
    from parallelize._limits import AdaptiveLimit
    from parallelize._options import StageOptions
    from parallelize._processes import ProcessPool
    from parallelize._util import ActionKind

__all__ = ("Run", "register_stage_factory")

logger = logging.getLogger("parallelize")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")

_SAMPLE_EVERY = 0.01  # seconds between two timed actions when actions are fast
# Iterators whose length hint is exact: how many items they have left.
_EXACT_HINTS: tuple[type, ...] = (
    type(iter([])),
    type(iter(())),
    type(iter(range(1))),
    type(iter(range(1 << 64))),
)


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


def _name_of(action: Callable[..., Any]) -> str:
    """Return a short name for an action: a function's own name, or its class's."""
    while isinstance(action, functools.partial):
        action = action.func
    name = getattr(action, "__name__", None)
    return name if isinstance(name, str) else type(action).__name__


# parallelize() builds a stage for Run.then(). It lives in the API layer above,
# which this module must not import: it registers itself here when imported.
_stage_factory: Callable[..., Run[Any]] | None = None


def register_stage_factory(factory: Callable[..., Run[Any]]) -> None:
    """Let :meth:`Run.then` build its stages with ``factory`` (``parallelize``)."""
    global _stage_factory  # noqa: PLW0603 - set once, when the API layer is imported
    _stage_factory = factory


@final
class Run(Generic[T_co]):
    """A running (or ready to run) ``parallelize`` job; iterate it for the results.

    Returned by :func:`parallelize.parallelize`; not created directly. A run is an
    async iterable that can be iterated once, and an async context manager that
    closes it on exit::

        async with parallelize(fetch, urls, 100) as results:
            async for page in results:
                ...

    Leaving the ``async for`` early (``break``, an exception, cancellation) ends the
    run: the input stops being read and in-flight actions are cancelled. ``async
    with`` (or :meth:`aclose`, which may be called any number of times) also awaits
    every task: when it returns, nothing of the run is left. A bare ``break`` out of
    a bare ``async for`` cannot await: the tasks end on their own a few loop
    iterations later.
    """

    __slots__ = (
        "__weakref__",
        "_action",
        "_argslist",
        "_async_source",
        "_done",
        "_executor",
        "_executor_spec",
        "_fan_out",
        "_flow",
        "_grace",
        "_grace_timer",
        "_hooks",
        "_interrupted",
        "_items",
        "_iterator",
        "_journal",
        "_journal_spec",
        "_kind",
        "_log_failures",
        "_loop",
        "_loop_thread",
        "_name",
        "_numworkers",
        "_observers",
        "_on_error_yield",
        "_ordered",
        "_policy",
        "_processes",
        "_pull_lock",
        "_random",
        "_results_ref",
        "_signals",
        "_state",
        "_stats",
        "_supervisor",
        "_sync_source",
        "_total",
        "_unpacked",
        "_upstream",
        "_upstream_of",
        "_workers",
    )

    def __init__(
        self,
        action: Callable[..., Any],
        argslist: Iterable[Any] | AsyncIterable[Any],
        numworkers: int,
        *,
        kind: ActionKind,
        executor: ExecutorSpec = None,
        ordered: bool,
        on_error_yield: bool,
        max_buffered: int,
        policy: ItemPolicy | None = None,
        journal: Journal | WorkSource | None = None,
        key: Callable[[Any], Any] | None = None,
        grace: float | None = None,
        stats: bool = False,
        observers: tuple[Observer, ...] = (),
        total: int | None = None,
        name: str | None = None,
    ) -> None:
        self._action = action
        self._name = name or _name_of(action)
        self._argslist = argslist
        self._kind = kind
        self._executor_spec = executor
        # A generator action's values for one item come as a list: flattened.
        self._fan_out = kind in {"gen", "asyncgen"}
        self._numworkers = numworkers
        self._ordered = ordered
        self._on_error_yield = on_error_yield
        # Observers and statistics (counted only when asked for: they cost a little
        # per item). Per-item hooks need the worker that knows each item's attempts.
        self._observers = observers
        self._hooks = ItemHooks(observers) if observers else None
        self._stats = StatsCounters() if stats or observers else None
        if total is None:
            if isinstance(argslist, Run):
                # A stage gets one item per result of the stage before it.
                total = None if argslist._fan_out else argslist._total  # noqa: SLF001
            else:
                with contextlib.suppress(TypeError):
                    total = len(argslist)  # type: ignore[arg-type]
        self._total: int | None = total
        # Per-item hooks need each item's attempts: an empty policy gives them.
        self._policy = policy if policy is not None or not self._hooks else ItemPolicy()
        # One rule: final failures are logged when the run has retry= (which names
        # the expected ones: WARNING for those, ERROR with the traceback for the
        # others). Without it every failure is raised or yielded to the caller, and
        # nothing is logged, whatever else is set (a timeout, a journal, signals).
        self._log_failures = policy is not None and policy.retry is not None
        # handle_signals: the grace period for in-flight items after SIGINT/SIGTERM.
        self._grace = grace
        self._grace_timer: asyncio.TimerHandle | None = None
        self._signals: SignalHandlers | None = None
        self._interrupted: int | None = None  # the signal that stopped the run
        self._journal_spec = (journal, key)
        self._journal: RunSession | None = None  # opened when the run starts
        # Items waiting for a retry keep their credit: make room for them.
        retry_room = 10 * numworkers if policy is not None and policy.retry is not None else 0
        # Credits, buffers, wake-ups: what the workers and the consumer share.
        self._flow = Flow(numworkers + max_buffered + retry_room, ordered=ordered)
        self._random = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._results_ref: weakref.ref[AsyncGenerator[Any, None]] | None = None
        self._done = False  # every worker has finished
        self._state = _State.NEW
        self._iterator: AsyncIterator[Any] | None = None  # the results, for __anext__
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        # Exactly one of these is set when the run starts.
        self._sync_source: Iterator[Any] | None = None
        self._async_source: AsyncIterator[Any] | None = None
        self._pull_lock: PullLock | None = None
        self._items: ItemSource | None = None  # the general worker's source, if any
        self._executor: ThreadPoolExecutor | None = None  # ours: plain functions' threads
        self._processes: ProcessPool | None = None  # ours: executor="process"
        # A run whose input is another run (a pipeline's earlier stage): closed with
        # this one, and the failures it yields pass through this one unchanged.
        self._upstream = argslist if isinstance(argslist, Run) else None
        # A run's results feed the next stage whole: they are values, not arguments.
        self._unpacked: tuple[type, ...] = () if self._upstream is not None else UNPACKED
        self._upstream_of: Run[Any] | None = None  # the stage that then() added

    def __repr__(self) -> str:
        return (
            f"<parallelize.Run {self._state.value} name={self._name!r} "
            f"numworkers={self._numworkers}>"
        )

    @property
    def _stopping(self) -> bool:
        """Whether the run takes no new item (its flow's; tests read it)."""
        return self._flow.stopping

    @property
    def name(self) -> str:
        """The run's name: its ``name=``, by default the action's name.

        Names the stage in a :class:`~parallelize.Failure`, in logs and on the
        progress bar.
        """
        return self._name

    @property
    def stages(self) -> tuple[Run[Any], ...]:
        """The runs of this pipeline, the first stage first and this run last.

        A run whose input is another run (see :meth:`then`) is the last stage of a
        pipeline; read each stage's :meth:`statistics` or ``name`` from here.
        """
        upstream = self._upstream
        return (self,) if upstream is None else (*upstream.stages, self)

    # A stage's action takes the result type of the stage before. The overloads on
    # Run[T] come first, as a Run[X] also matches Run[T | Failure] (covariance, T = X).
    # A Run[X | Failure] fails them when its action takes X and not Failure, and gets
    # the last four, whose results keep the failures that pass through.
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], Awaitable[U]],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], Awaitable[U]],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], AsyncIterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], AsyncIterator[U]],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], Iterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], Iterator[U]],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], U],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Run[T],
        action: Callable[[T], U],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Run[T | Failure],
        action: Callable[[T], Awaitable[U]],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Run[T | Failure],
        action: Callable[[T], AsyncIterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Run[T | Failure],
        action: Callable[[T], Iterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Run[T | Failure],
        action: Callable[[T], U],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    def then(
        self,
        action: Callable[..., Any],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = "raise",
        **options: Unpack[StageOptions[Any]],
    ) -> Run[Any]:
        """Add a stage: run ``action`` over this run's results, as they come.

        ``run.then(action, n, ...)`` is ``parallelize(action, run, n, ...)``: the
        same options, with this run as the input. The stages run at once, each with
        its own workers and policies, joined by their bounded buffers: the first
        results leave the last stage while the first is still reading its input, and
        a slow stage holds back the ones before it instead of filling memory::

            pages = (
                parallelize(fetch, urls, 100, retry=Retry(on=OSError))
                .then(parse, 2, executor="process")
                .then(store, 1)
            )
            async with pages:
                async for row in pages:
                    ...

        Each result is passed to the next stage's action whole, as its one
        argument: a result is a value, not an argument list, so a tuple or a list
        is never unpacked (unlike the items of a plain ``argslist``).

        Iterate the last stage only. Closing it (or an error in any stage) ends
        every stage and awaits all their tasks. An earlier stage's
        :class:`~parallelize.Failure` (with ``on_error="yield"``) passes through
        the later stages unchanged, without calling their actions, and names the
        stage that failed: after an ``on_error="yield"`` stage, every later stage's
        static type is ``Run[U | Failure]``, so check ``isinstance(result,
        Failure)``. ``action`` takes the previous stage's result type (the failures
        never reach it), which type checkers verify.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(
                f"{self!r} has started: add its stages with then() before iterating it"
            )
        if self._upstream_of is not None:
            raise RuntimeError(
                f"{self!r} already feeds the stage {self._upstream_of.name!r}: a run "
                f"has one reader; call then() on the last stage"
            )
        assert _stage_factory is not None, "parallelize() registers itself on import"
        stage = _stage_factory(action, self, numworkers, on_error=on_error, **options)
        self._upstream_of = stage
        return stage

    @property
    def adaptive(self) -> AdaptiveLimit | None:
        """The run's :class:`~parallelize.AdaptiveLimit` (``adaptive=True`` makes one).

        None without ``adaptive=``. Read its ``limit`` or ``statistics()`` at any
        time, for a progress display or metrics.
        """
        return None if self._policy is None else self._policy.adaptive

    def statistics(self) -> Statistics:
        """Return a snapshot of the run's progress: counts, rate, ETA, latency percentiles.

        Cheap enough to call ten times a second; final once the run has ended
        (``Statistics.finished``). Needs ``stats=True`` (or ``progress=`` or
        ``observers=``): counting costs a little per item, so it is off by default.

        Raises:
            RuntimeError: The run was made without ``stats=True``.
        """
        return self._statistics(latency=True)

    def _statistics(self, *, latency: bool) -> Statistics:
        """``statistics()``, with the percentiles only if asked (they cost 20 us)."""
        stats = self._stats
        if stats is None:
            raise RuntimeError(
                "statistics() needs a run that counts: parallelize(..., stats=True) "
                "(progress= and observers= turn it on too)"
            )
        loop = self._loop
        started = self._state is not _State.NEW and loop is not None
        if stats.finished_at is not None:
            now = stats.finished_at
        else:
            now = loop.time() if started and loop is not None else stats.started_at
        in_flight = 0 if self._done or not started else self._in_flight()
        waiting_limit = self._waiting_for_limits(in_flight) if in_flight else 0
        in_flight -= waiting_limit
        if stats.derived:
            # The lean worker counts the items it took and its failures only.
            unfinished = stats.unfinished if self._done else in_flight
            if stats.counter is not None:
                # How far the counter has gone: "count(n + 1)" after n items
                # (compress() draws a number for each item it passes on).
                taken = int(repr(stats.counter)[6:-1]) - 1
            else:
                assert stats.hinted_from is not None
                assert self._sync_source is not None
                taken = stats.hinted_from - operator.length_hint(self._sync_source)
            succeeded = taken - unfinished - stats.failed
        else:
            succeeded = stats.succeeded
        # Without retries (every worker but the policy worker) one attempt per item.
        attempts = stats.attempts if stats.per_attempt else succeeded + stats.failed + in_flight
        journal = self._journal
        replayed = 0 if journal is None else journal.replayed
        skipped = 0 if journal is None else journal.skipped
        done = succeeded + stats.failed + replayed + skipped + stats.passed_on
        elapsed = max(0.0, now - stats.started_at) if started else 0.0
        ran = succeeded + stats.failed
        rate = ran / elapsed if elapsed > 0 else 0.0
        total = self._total
        eta = None
        if total is not None and rate > 0:
            eta = max(0, total - done) / rate
        adaptive = self.adaptive
        return Statistics(
            total=total,
            done=done,
            succeeded=succeeded,
            failed=stats.failed,
            replayed=replayed,
            skipped=skipped,
            passed_on=stats.passed_on,
            in_flight=in_flight,
            waiting_retry=0 if self._done else self._waiting_retry(),
            retries=stats.retries,
            attempts=attempts,
            elapsed=elapsed,
            rate=rate,
            eta=eta,
            limit=self._numworkers if adaptive is None else adaptive.limit,
            latency=Latency.of(stats.latency) if latency else None,
            finished=self._done,
            undone=stats.unfinished + self._waiting_retry() if self._done else 0,
            waiting_limit=waiting_limit,
        )

    def _waiting_retry(self) -> int:
        """Items waiting for a retry (they hold their credits)."""
        return 0 if self._items is None else self._items.waiting

    def _in_flight(self) -> int:
        """Items that hold a credit but are neither buffered nor waiting to retry."""
        return self._flow.in_flight(self._waiting_retry())

    def _waiting_for_limits(self, in_flight: int) -> int:
        """Items among ``in_flight`` waiting for a limit's place or slot, not running."""
        policy = self._policy
        if policy is None:
            return 0
        return min(in_flight, policy.waiting[0])

    # -- the consumer's side -----------------------------------------------------

    def __aiter__(self) -> AsyncIterator[T_co]:
        if self._iterator is not None:
            return self  # started by anext(): an async for goes on from there
        if self._state is not _State.NEW:
            msg = (
                f"{self!r} was already iterated; a run can be iterated once. "
                f"Call parallelize() again for a new run."
            )
            raise RuntimeError(msg)
        self._state = _State.RUNNING
        self._start()
        # An async generator (its C-level __anext__ is the cheapest per result) that
        # the run references only weakly: when the consumer drops it (break), the
        # weakref's callback cancels the run's work at once.
        flow = self._flow
        journal = self._journal
        if journal is None:
            results = (ordered_results if self._ordered else plain_results)(flow, self._next_slow)
        elif self._ordered:
            results = ordered_results(flow, self._next_slow)
            start_without_hooks(results)
            results = recorded(results, journal, self._unstorable)
        else:
            results = journaled_results(flow, journal, self._next_slow, self._unstorable)
        start_without_hooks(results)
        if self._fan_out:
            results = flattened(results)
            start_without_hooks(results)
        self._results_ref = weakref.ref(results, self._on_results_dropped)
        return results

    async def __anext__(self) -> T_co:
        """Return the next result, as ``anext()`` on the seed article's generator does.

        The first call starts the run. A run driven by ``anext()`` alone is ended by
        :meth:`aclose` (or ``async with``), not by dropping it: the run holds its
        own iterator then.

        Added in 0.2.
        """
        iterator = self._iterator
        if iterator is None:
            if self._state is _State.NEW:
                iterator = self._iterator = self.__aiter__()
            else:
                msg = (
                    f"{self!r} is iterated by async for; take its results there, or call "
                    f"parallelize() again for a new run"
                )
                raise RuntimeError(msg)
        return await anext(iterator)

    if not TYPE_CHECKING:  # a Run is no Iterable to a type checker, which says so itself

        def __iter__(self) -> NoReturn:
            """Refuse a plain ``for`` or ``list()``, saying what to write instead."""
            msg = (
                "a parallelize() run is an async iterable: use 'async for result in "
                "parallelize(...)' or '[r async for r in parallelize(...)]' inside an "
                "async function (asyncio.run(main()) runs one), not 'for' or list()"
            )
            raise TypeError(msg)

    def _on_results_dropped(self, _ref: object) -> None:
        self._abandon()

    async def _unstorable(self, failed: Any) -> Any:
        """Return a failed item's outcome (a result the journal cannot store), or raise it."""
        if self._on_error_yield:
            return failed
        error = failed[1].exception
        self._flow.fail(error)
        await self.aclose()
        raise error

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _next_slow(self) -> Any:
        """Wait for the next result when none is ready (the consumer's slow path).

        Returns the result, or ``MISSING`` once every result was yielded.
        """
        try:
            while True:
                value = self._flow.take_ready()
                if value is not MISSING:
                    return value
                if self._done or self._flow.error is not None:
                    break
                await self._flow.sleep()
            await self._finish()
        except BaseException:
            # The consumer was cancelled, or the run failed: end it before leaving.
            await self.aclose()
            raise
        return MISSING  # the end of the results

    async def _finish(self) -> None:
        """Wait until every task has ended; re-raise the run's error, if any."""
        task = self._supervisor
        if task is not None and not task.done():
            # After an error the group is already cancelling the other workers.
            await asyncio.wait((task,))
        await self._stop()  # the journal, if any, is closed by its consumer
        if self._flow.error is not None and self._journal is not None:
            self._journal.close(finished=False)
        if self._flow.error is None and self._interrupted is not None:
            journal = self._journal
            raise Interrupted(
                self._interrupted,
                None if journal is None else journal.location,
                0 if journal is None else journal.recorded,
            )
        if self._flow.error is not None:
            error, self._flow.error = self._flow.error, None
            raise error

    def _abandon(self) -> None:
        """Cancel the work: the consumer dropped its iterator without closing the run.

        Called from the iterator's ``__del__`` (``break`` out of ``async for``); the
        cancelled supervisor finishes on its own, and ``aclose()`` still awaits it.
        """
        task = self._supervisor
        loop = self._loop
        if task is None or task.done() or loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._cancel()
            self._close_journal()
        else:  # the garbage collector may run finalizers in any thread
            loop.call_soon_threadsafe(self._cancel)
            loop.call_soon_threadsafe(self._close_journal)

    def _close_journal(self) -> None:
        """Record what the consumer took and release the journal (it is gone).

        At once, not when the supervisor ends: a rerun right after a ``break``
        must find the journal free.
        """
        if self._journal is not None:
            self._journal.close(finished=False)

    def _cancel(self) -> None:
        """Cancel the supervisor, and every worker at once.

        The task group would cancel the workers too, but only once the supervisor
        runs again; until then a worker woken in the same loop iteration (by a free
        place in a limit, say) would start one more action, perhaps on a client
        that the consumer is closing.
        """
        assert self._supervisor is not None
        self._flow.cancelled = True
        self._flow.halt()
        self._supervisor.cancel()
        for worker in self._workers:
            worker.cancel()

    async def aclose(self) -> None:
        """Stop the run: stop reading input, cancel in-flight actions, await all tasks.

        Safe to call at any time and any number of times. Results not yet consumed
        are dropped. Threads already running a plain-function action cannot be
        interrupted; they finish in the background and their results are dropped.
        """
        try:
            await self._stop()
        finally:
            if self._journal is not None:
                self._journal.close(finished=False)  # no-op after a finished run

    async def _stop(self) -> None:
        """End the tasks of the run (``aclose()`` without releasing the journal)."""
        self._state = _State.CLOSED
        task = self._supervisor
        if task is None:
            return
        if not task.done():
            self._cancel()
            # wait() returns when the task is done without raising its CancelledError;
            # if *we* are cancelled meanwhile, that propagates as it should.
            await asyncio.wait((task,))
        if not task.cancelled():
            task.result()  # the supervisor catches everything but cancellation

    # -- the workers' side -------------------------------------------------------

    def _start(self) -> None:
        argslist = self._argslist
        own_items = True  # whether the run's items are argslist's (not a work source's)
        journal, key = self._journal_spec
        if journal is not None:
            # First: a journal that cannot be used fails before anything starts.
            name = getattr(self._action, "__qualname__", type(self._action).__name__)
            session, argslist, own_items = open_run_session(
                journal, argslist, key=key, action_name=name, numworkers=self._numworkers
            )
            self._journal = session
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._flow.loop = loop
        self._loop_thread = threading.get_ident()
        if self._grace is not None:
            self._signals = SignalHandlers(loop, self._on_signal)
            self._signals.install()
        self._action, self._executor, self._processes = prepare_action(
            self._action, self._kind, self._executor_spec, self._numworkers
        )
        if isinstance(argslist, AsyncIterable):
            self._async_source = aiter(argslist)
            self._pull_lock = PullLock()  # no convoy: see PullLock
        else:
            self._sync_source = iter(argslist)
        # No more workers than items, when the input knows its length (a work
        # source's items are its own: argslist is only what this process adds).
        numworkers = self._numworkers
        if own_items:
            with contextlib.suppress(TypeError):
                numworkers = min(numworkers, len(self._argslist))  # type: ignore[arg-type]
        self._supervisor = loop.create_task(self._supervise(numworkers))

    def _choose_worker(self) -> Callable[[], Coroutine[Any, Any, None]]:
        """Return the worker for this run: one of the two inlined ones, or the general.

        The inlined ones (``_hot.py``) serve a sync input in completion order without
        policies, journal or per-item hooks; everything else is assembled from the
        parts (``_general.py``).
        """
        stats = self._stats
        flow = self._flow
        source = self._sync_source
        general = (
            self._ordered
            or source is None
            or self._policy is not None
            or self._journal is not None
            or (stats is None and self._grace is not None)
        )
        if self._policy is None and (stats is not None or self._journal is not None):
            flow.timing = True  # the first action is timed; a journaled run's, every one
        if not general:
            assert source is not None
            if stats is None:
                # The hot path never looks for a stop (handle_signals): the others
                # do, before each new item.
                return functools.partial(
                    plain_worker, flow, source, self._action, self._name,
                    on_error_yield=self._on_error_yield,
                )  # fmt: skip
            stats.derived = True
            # Count the items taken without a bytecode per item: a list's, a tuple's
            # or a range's iterator knows how many it has left; any other input goes
            # through itertools.compress() with a counter as its (always true)
            # selectors: C code, a number drawn per item.
            if isinstance(source, _EXACT_HINTS):
                stats.hinted_from = operator.length_hint(source)
            else:
                stats.counter = counter = itertools.count(1)
                self._sync_source = source = itertools.compress(source, counter)
            return functools.partial(
                observed_worker, flow, source, self._action, self._name, stats,
                on_error_yield=self._on_error_yield,
            )  # fmt: skip
        if stats is not None and self._policy is not None:
            stats.per_attempt = True
        outcomes = Outcomes(
            flow,
            self._name,
            self._journal,
            stats,
            self._hooks,
            on_error_yield=self._on_error_yield,
            log_failures=self._log_failures,
        )
        self._items = items = ItemSource(
            flow,
            self._sync_source,
            self._async_source,
            self._pull_lock,
            self._policy,
            outcomes,
            journaled=self._journal is not None,
            passthrough=self._upstream is not None,
        )
        outcomes.retries = items.retries
        return functools.partial(
            general_worker, flow, items, self._action, self._policy, outcomes,
            self._unpacked, stats, self._hooks, self._random,
        )  # fmt: skip

    async def _supervise(self, numworkers: int) -> None:
        worker = self._choose_worker()
        try:
            stats = self._stats
            if stats is not None:
                assert self._loop is not None
                stats.started_at = self._loop.time()
                if self._flow.timing:  # the worker samples the clock (see _choose_worker)
                    self._time_next()
            for observer in self._observers:
                observer.run_started(self)
            if self._processes is not None:
                self._processes.warm_up()
            await self._run_workers(worker, numworkers)
        except BaseExceptionGroup as group_error:
            # Workers record the first error themselves; this catches anything else.
            self._flow.fail(group_error.exceptions[0])
        except Exception as exc:  # from an observer's run_started()
            self._flow.record_error(exc)
        finally:
            self._wind_down()
            await self._release()

    async def _run_workers(
        self, worker: Callable[[], Coroutine[Any, Any, None]], numworkers: int
    ) -> None:
        """Run ``numworkers`` workers (and the reader, if any) in a task group."""
        items = self._items
        reads_ahead = items is not None and items.reads_ahead()
        if items is not None and reads_ahead:
            items.start_reader()  # workers ask the reader from the start
        async with asyncio.TaskGroup() as group:
            self._workers = [group.create_task(worker()) for _ in range(numworkers)]
            reader = None
            if items is not None and reads_ahead:
                reader = group.create_task(items.read_ahead())
            try:
                if self._workers:
                    await asyncio.wait(self._workers)
            except asyncio.CancelledError:
                # Cancelled from anywhere (aclose(), a worker's error through the
                # group, the loop's shutdown): halt, so that a worker whose action
                # swallows its own cancellation ends instead of waiting for a credit.
                self._flow.halt()
                raise
            if reader is not None:
                reader.cancel()  # the workers are done: so is the input

    async def _release(self) -> None:
        """Close what the run holds open: the input, the processes, earlier stages."""
        source = self._async_source
        if isinstance(source, AsyncGenerator):
            # Our own iterator over the user's async input: close it here, inside the
            # run's lifetime, rather than leave it to the garbage collector.
            try:
                await source.aclose()
            except Exception as exc:
                self._flow.record_error(exc)
        if self._processes is not None:
            await self._processes.aclose()
        if self._upstream is not None:
            # An earlier stage ends with this one: its tasks are awaited here, so
            # nothing of the pipeline outlives the last stage (and an error in a
            # later stage stops the earlier ones).
            try:
                await self._upstream.aclose()
            except Exception as exc:
                self._flow.record_error(exc)

    def _wind_down(self) -> None:
        """Finish the supervisor's work once every worker has ended."""
        stats = self._stats
        if stats is not None:
            self._stop_counting(stats)
        self._done = True
        self._workers = []
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        if self._signals is not None:
            self._signals.restore()
        if self._journal is not None:
            try:
                self._journal.flush()  # what the consumer took, even if it left
            except Exception as exc:
                self._flow.record_error(exc)
        self._flow.wake_consumer()
        self._flow.credit_waiters.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if stats is not None:
            logger.info("finished: %s", self.statistics().summary().replace("\n", "; "))
        for observer in self._observers:
            try:
                observer.run_finished(self, self._flow.error)
            except Exception as exc:
                self._flow.record_error(exc)

    def _stop_counting(self, stats: StatsCounters) -> None:
        # What still holds a credit now was in flight when the run was cancelled.
        stats.unfinished = self._in_flight()
        if stats.timer is not None:
            stats.timer.cancel()
        assert self._loop is not None
        stats.finished_at = self._loop.time()

    def _on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: first stop taking items (grace), then cancel at once."""
        name = signal.Signals(signum).name
        assert self._loop is not None
        if self._interrupted is not None:
            logger.warning("%s again: cancelling the items in flight now", name)
            self._cancel()
            return
        self._interrupted = signum
        self._flow.stopping = True
        logger.warning(
            "%s: stopping: no new items; those in flight may finish for %g s "
            "(%s again to cancel them now)",
            name,
            self._grace,
            name,
            extra={"signal": name},
        )
        self._flow.wake_all_workers()  # sleeping workers see the stop and end
        assert self._grace is not None
        self._grace_timer = self._loop.call_later(self._grace, self._cancel)

    def _time_next(self) -> None:
        """Have the next action timed (the observed worker's sampling timer)."""
        self._flow.timing = True
        if not self._done:
            assert self._loop is not None
            assert self._stats is not None
            self._stats.timer = self._loop.call_later(_SAMPLE_EVERY, self._time_next)

    # -- the policy worker: timeouts, retries, rate limit ---------------------------
