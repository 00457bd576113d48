"""The run: input -> workers -> bounded result buffer -> the consumer's ``async for``.

Shape of a run::

    argslist ──pull──> worker 1..N ──append──> results buffer ──yield──> consumer
       (lazy, shared)   (TaskGroup owned by        (bounded by credits)
                         the supervisor task)

Invariants:

* **Credits bound memory.** A run holds ``capacity = numworkers + max_buffered``
  credits. A worker takes one *before* it pulls an item and the consumer gives it
  back when the item's result leaves the run. So at any time
  ``in flight + buffered results (+ reorder buffer when ordered) <= capacity``:
  a slow consumer stops the workers instead of letting results pile up, and the
  input is never read further ahead than ``capacity`` items.
* **Hysteresis on wake-ups.** Returned credits wake a waiting worker only once half
  the capacity is free, or when the consumer is about to sleep; a woken worker wakes
  the next one while credits remain. Without it, a fast no-op workload would pay a
  future and a loop round trip per item.
* **Structured concurrency.** Workers live in an :class:`asyncio.TaskGroup` entered
  by one supervisor task that the run owns; :meth:`Run.aclose` cancels and awaits it,
  so nothing outlives the run. The consumer never yields from inside the task group
  (PEP 789): results cross the buffer.
* **Errors.** The first exception raised by an action (or by the input) is recorded
  by the worker that saw it, the buffer is dropped, the group cancels the rest, and
  the consumer re-raises it unchanged once every task has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import heapq
import itertools
import logging
import operator
import random
import signal
import threading
import time
import weakref
from collections import deque
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
    cast,
    final,
    overload,
)

from ._actions import prepare_action
from ._aio import PullLock, start_without_hooks
from ._errors import Interrupted, explain_spread
from ._journal import JournalSession, Session
from ._observe import ItemHooks, Observer
from ._outcomes import Failure
from ._policies import DONE, RETRY, ItemPolicy, ItemState
from ._signals import SignalHandlers
from ._stats import Latency, Statistics, StatsCounters

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine
    from types import TracebackType

    from ._actions import ExecutorSpec
    from ._journal import Entry, Journal, WorkSource
    from ._limits import AdaptiveLimit
    from ._options import StageOptions
    from ._processes import ProcessPool
    from ._util import ActionKind

__all__ = ("Run",)

logger = logging.getLogger("parallelize")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")

_MISSING: Any = object()

# Actions slower than this (seconds) are timed one by one; faster ones are sampled.
_TIME_EVERY_ITEM_OVER = 50e-6
_SAMPLE_EVERY = 0.01  # seconds between two timed actions when actions are fast
# Iterators whose length hint is exact: how many items they have left.
_EXACT_HINTS: tuple[type, ...] = (
    type(iter([])),
    type(iter(())),
    type(iter(range(1))),
    type(iter(range(1 << 64))),
)

# Items of these types are unpacked as positional arguments: action(*item).
_UNPACKED = (tuple, list)


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


def _check_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and goes on anyway.

    A task whose action swallowed its cancellation (or returned a value after it) no
    longer gets a ``CancelledError`` from its next ``await``: an engine loop checks
    here before it waits, where a lost cancellation would otherwise hang the run.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
        "_cancelled",
        "_capacity",
        "_credit_waiters",
        "_credits",
        "_credits_withdrawn",
        "_done",
        "_error",
        "_executor",
        "_executor_spec",
        "_exhausted",
        "_failed_workers",
        "_fan_out",
        "_grace",
        "_grace_timer",
        "_hooks",
        "_interrupted",
        "_iterator",
        "_journal",
        "_journal_spec",
        "_kind",
        "_log_failures",
        "_loop",
        "_loop_thread",
        "_name",
        "_next_index",
        "_numworkers",
        "_observers",
        "_on_error_yield",
        "_ordered",
        "_out",
        "_pending",
        "_policy",
        "_processes",
        "_pull_lock",
        "_pulled",
        "_random",
        "_read_ended",
        "_read_items",
        "_read_wanted",
        "_reader",
        "_results_ref",
        "_retries",
        "_retry_seq",
        "_signals",
        "_state",
        "_stats",
        "_stopping",
        "_supervisor",
        "_sync_source",
        "_timing",
        "_total",
        "_unpacked",
        "_upstream",
        "_upstream_of",
        "_waiter",
        "_wake_threshold",
        "_workers",
    )

    def __init__(  # noqa: PLR0915 - one statement per slot
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
        # A journaled run goes through the policy worker, which knows each item's
        # attempts and timing, even without any policy.
        self._policy = (
            policy if policy is not None or (journal is None and not self._hooks) else ItemPolicy()
        )
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
        self._stopping = False  # take no new item
        self._cancelled = False  # the run cancelled its workers (see _cancel)
        self._journal_spec = (journal, key)
        self._journal: Session | None = None  # opened when the run starts
        # Items waiting for a retry keep their credit: make room for them.
        retry_room = 10 * numworkers if policy is not None and policy.retry is not None else 0
        self._capacity = numworkers + max_buffered + retry_room
        self._credits = self._capacity
        # Credits taken away when the run halts (see _halt); still counted as free.
        self._credits_withdrawn = 0
        self._failed_workers: set[asyncio.Task[Any] | None] = set()  # see _worker_failed
        self._wake_threshold = max(1, self._capacity // 2)
        self._credit_waiters: deque[asyncio.Future[None]] = deque()
        self._out: deque[Any] = deque()  # completed results, unordered mode
        self._pending: dict[int, Any] = {}  # index -> result, ordered mode
        self._next_index = 0  # ordered mode: index of the next result to yield
        self._pulled = 0  # items taken from the input so far
        self._timing = False  # the observed worker times its next action
        self._exhausted = False  # the input has no more items (policy workers)
        self._retries: list[tuple[float, int, ItemState]] = []  # heap by due loop time
        self._retry_seq = itertools.count()
        self._random = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._results_ref: weakref.ref[AsyncGenerator[Any, None]] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the consumer, asleep
        self._error: BaseException | None = None
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
        # With retries over an async input, one reader task pulls the input for the
        # workers (see _read_ahead): a due retry never waits for an idle input.
        self._reader: asyncio.Future[None] | None = None  # wakes the reader
        self._read_items: deque[Any] = deque()
        self._read_wanted = False
        self._read_ended = False
        self._executor: ThreadPoolExecutor | None = None  # ours: plain functions' threads
        self._processes: ProcessPool | None = None  # ours: executor="process"
        # A run whose input is another run (a pipeline's earlier stage): closed with
        # this one, and the failures it yields pass through this one unchanged.
        self._upstream = argslist if isinstance(argslist, Run) else None
        # A run's results feed the next stage whole: they are values, not arguments.
        self._unpacked: tuple[type, ...] = () if self._upstream is not None else _UNPACKED
        self._upstream_of: Run[Any] | None = None  # the stage that then() added

    def __repr__(self) -> str:
        return (
            f"<parallelize.Run {self._state.value} name={self._name!r} "
            f"numworkers={self._numworkers}>"
        )

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
            waiting_retry=0 if self._done else len(self._retries),
            retries=stats.retries,
            attempts=attempts,
            elapsed=elapsed,
            rate=rate,
            eta=eta,
            limit=self._numworkers if adaptive is None else adaptive.limit,
            latency=Latency.of(stats.latency) if latency else None,
            finished=self._done,
            undone=stats.unfinished + len(self._retries) if self._done else 0,
            waiting_limit=waiting_limit,
        )

    def _waiting_for_limits(self, in_flight: int) -> int:
        """Items among ``in_flight`` waiting for a limit's place or slot, not running."""
        policy = self._policy
        if policy is None:
            return 0
        return min(in_flight, policy.waiting[0])

    def _in_flight(self) -> int:
        """Items that hold a credit but are neither buffered nor waiting to retry."""
        held = self._capacity - self._credits - self._credits_withdrawn
        return max(0, held - len(self._out) - len(self._pending) - len(self._retries))

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
        if self._journal is None:
            results = self._ordered_results() if self._ordered else self._results()
        elif self._ordered:
            results = self._ordered_results()
            start_without_hooks(results)
            results = self._recorded(results)
        else:
            results = self._journaled_results()
        start_without_hooks(results)
        if self._fan_out:
            results = self._flattened(results)
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

    async def _results(self) -> AsyncGenerator[Any, None]:
        """Yield results in completion order."""
        yield _MISSING  # taken by start_without_hooks()
        out = self._out
        wake_at = self._wake_threshold
        while True:
            if out and self._error is None:
                # The fast path, once per result: take it and give its credit back
                # (_give_credit(), inlined).
                free = self._credits + 1
                self._credits = free
                if free == wake_at:
                    self._wake_worker()
                yield out.popleft()
            else:
                value = await self._next_slow()
                if value is _MISSING:
                    return
                yield value

    async def _ordered_results(self) -> AsyncGenerator[Any, None]:
        """Yield results in input order, holding early finishers in ``_pending``."""
        yield _MISSING  # taken by start_without_hooks()
        pending = self._pending
        while True:
            value = pending.pop(self._next_index, _MISSING)
            if value is not _MISSING and self._error is None:
                self._next_index += 1
                self._give_credit()
                yield value
            else:
                value = await self._next_slow()
                if value is _MISSING:
                    return
                yield value

    async def _journaled_results(self) -> AsyncGenerator[Any, None]:
        """Yield a journaled run's outcomes in completion order; record each once taken.

        ``_results()`` and ``_recorded()`` in one: an outcome is recorded when the
        consumer asks for the next one (its ``async for`` body is done with it).
        Outcomes come tagged by the workers as ``(entry, outcome, attempts, elapsed)``.
        """
        yield _MISSING  # taken by start_without_hooks()
        journal = self._journal
        assert journal is not None
        record = journal.record
        prepare = journal.prepare
        out = self._out
        wake_at = self._wake_threshold
        taken: Any = None
        while True:
            if taken is not None:
                record(*taken)  # the consumer is done with it
                taken = None
            if out and self._error is None:
                free = self._credits + 1  # _give_credit(), inlined as in _results()
                self._credits = free
                if free == wake_at:
                    self._wake_worker()
                taken = out.popleft()
            else:
                taken = await self._next_slow()
                if taken is _MISSING:
                    break
            prepared = prepare(taken)  # a result the journal cannot store fails here
            if prepared is not taken:
                taken = await self._unstorable(prepared)
            yield taken[1]
        journal.close(finished=True)

    async def _recorded(self, results: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        """Yield the outcomes of tagged ``results``; record each once it was taken.

        An outcome is recorded when the consumer asks for the next one: its
        ``async for`` body is done with it. Items come tagged by the workers as
        ``(entry, outcome, attempts, elapsed)``.
        """
        yield _MISSING  # taken by start_without_hooks()
        journal = self._journal
        assert journal is not None
        taken: tuple[Entry, Any, int, float | None] | None = None
        while True:
            if taken is not None:
                # The consumer asks for the next outcome: it is done with this one.
                journal.record(*taken)
                taken = None
            try:
                tagged = await anext(results)
            except StopAsyncIteration:
                break
            taken = journal.prepare(tagged)
            if taken is not tagged:
                taken = await self._unstorable(taken)
            yield taken[1]
        journal.close(finished=True)

    async def _unstorable(self, failed: Any) -> Any:
        """Return a failed item's outcome (a result the journal cannot store), or raise it."""
        if self._on_error_yield:
            return failed
        error = failed[1].exception
        self._fail(error)
        await self.aclose()
        raise error

    async def _flattened(self, results: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        """Yield each value of each item's list (a generator action's values)."""
        yield _MISSING  # taken by start_without_hooks()
        async for values in results:
            if type(values) is Failure:
                yield values
            else:
                for value in values:
                    yield value

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _take_ready(self) -> Any:
        """Return the next result if one is ready to be yielded, else ``_MISSING``."""
        if self._error is not None:
            return _MISSING
        if self._ordered:
            value = self._pending.pop(self._next_index, _MISSING)
            if value is _MISSING:
                return _MISSING
            self._next_index += 1
        elif self._out:
            value = self._out.popleft()
        else:
            return _MISSING
        self._give_credit()
        return value

    def _give_credit(self) -> None:
        self._credits += 1
        if self._credit_waiters and self._credits == self._wake_threshold:
            self._wake_worker()

    async def _next_slow(self) -> Any:
        """Wait for the next result when none is ready (the consumer's slow path).

        Returns the result, or ``_MISSING`` once every result was yielded.
        """
        try:
            while True:
                value = self._take_ready()
                if value is not _MISSING:
                    return value
                if self._done or self._error is not None:
                    break
                await self._sleep()
            await self._finish()
        except BaseException:
            # The consumer was cancelled, or the run failed: end it before leaving.
            await self.aclose()
            raise
        return _MISSING  # the end of the results

    async def _sleep(self) -> None:
        """Wait for a worker to deliver, after handing out any free credits."""
        if self._credit_waiters and self._credits > 0:
            self._wake_worker()
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None  # also when cancelled: never wake a dead waiter

    async def _finish(self) -> None:
        """Wait until every task has ended; re-raise the run's error, if any."""
        task = self._supervisor
        if task is not None and not task.done():
            # After an error the group is already cancelling the other workers.
            await asyncio.wait((task,))
        await self._stop()  # the journal, if any, is closed by its consumer
        if self._error is not None and self._journal is not None:
            self._journal.close(finished=False)
        if self._error is None and self._interrupted is not None:
            journal = self._journal
            raise Interrupted(
                self._interrupted,
                None if journal is None else journal.location,
                0 if journal is None else journal.recorded,
            )
        if self._error is not None:
            error, self._error = self._error, None
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
        self._cancelled = True
        self._halt()
        self._supervisor.cancel()
        for worker in self._workers:
            worker.cancel()

    def _halt(self) -> None:
        """Let no worker start another item, whatever its action did with a cancel.

        An action may swallow its cancellation and return (pyreqwest sometimes hands
        back a reply its cancelled task finished), and its worker then goes on as if
        never cancelled. Every worker takes a credit before its next item, and no
        worker waits for one once the run stops (``_take_credit``): withdrawing the
        free credits sends each such worker there, and it ends. The hot path needs no
        test of its own for this.
        """
        self._stopping = True
        self._credits_withdrawn += self._credits
        self._credits = 0
        self._wake_all_workers()

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
            open_session = getattr(journal, "open_session", None)
            if open_session is not None:
                # A work source (a Redis queue): the run's items come from it, and
                # argslist is added to it meanwhile.
                session: Session = open_session(
                    argslist, key=key, action_name=name, numworkers=self._numworkers
                )
                argslist = session.wrap_async(argslist)  # type: ignore[arg-type]
                own_items = False
            else:
                session = JournalSession(cast("Journal", journal), key=key, action_name=name)
                if isinstance(argslist, AsyncIterable):
                    argslist = session.wrap_async(argslist)
                else:
                    argslist = session.wrap(argslist)
            self._journal = session
        loop = asyncio.get_running_loop()
        self._loop = loop
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
        """Return the leanest worker that does everything this run asks for."""
        stats = self._stats
        general = self._ordered or self._pull_lock is not None
        if self._journal is not None and self._policy == ItemPolicy() and not self._hooks:
            plain = self._sync_source is not None
            return self._journal_worker if plain else self._journal_async_worker
        if self._policy is not None:
            if stats is not None:
                stats.per_attempt = True
            return self._policy_worker
        if stats is not None:
            self._timing = True  # the first action of each run is timed
            if general:
                # It counts each outcome and samples the clock as _observed_worker
                # does (the policy worker cost a pipeline's stage 4x: design.md).
                return self._general_worker
            stats.derived = True
            # Count the items taken without a bytecode per item: a list's, a tuple's
            # or a range's iterator knows how many it has left; any other input goes
            # through itertools.compress() with a counter as its (always true)
            # selectors: C code, a number drawn per item.
            source = self._sync_source
            assert source is not None
            if isinstance(source, _EXACT_HINTS):
                stats.hinted_from = operator.length_hint(source)
            else:
                stats.counter = counter = itertools.count(1)
                self._sync_source = itertools.compress(source, counter)
            return self._observed_worker
        # The hot path never looks for a stop (handle_signals): the others do, before
        # each new item.
        return self._general_worker if general or self._grace is not None else self._worker

    async def _supervise(self, numworkers: int) -> None:
        worker = self._choose_worker()
        try:
            stats = self._stats
            if stats is not None:
                assert self._loop is not None
                stats.started_at = self._loop.time()
                if self._timing:  # the worker samples the clock (see _choose_worker)
                    self._time_next()
            for observer in self._observers:
                observer.run_started(self)
            if self._processes is not None:
                self._processes.warm_up()
            await self._run_workers(worker, numworkers)
        except BaseExceptionGroup as group_error:
            # Workers record the first error themselves; this catches anything else.
            self._fail(group_error.exceptions[0])
        except Exception as exc:  # from an observer's run_started()
            self._record_error(exc)
        finally:
            self._wind_down()
            await self._release()

    async def _run_workers(
        self, worker: Callable[[], Coroutine[Any, Any, None]], numworkers: int
    ) -> None:
        """Run ``numworkers`` workers (and the reader, if any) in a task group."""
        reads_ahead = self._reads_ahead()
        if reads_ahead:
            assert self._loop is not None
            self._reader = self._loop.create_future()  # workers ask from the start
        async with asyncio.TaskGroup() as group:
            self._workers = [group.create_task(worker()) for _ in range(numworkers)]
            reader = group.create_task(self._read_ahead()) if reads_ahead else None
            try:
                if self._workers:
                    await asyncio.wait(self._workers)
            except asyncio.CancelledError:
                # Cancelled from anywhere (aclose(), a worker's error through the
                # group, the loop's shutdown): halt, so that a worker whose action
                # swallows its own cancellation ends instead of waiting for a credit.
                self._halt()
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
                self._record_error(exc)
        if self._processes is not None:
            await self._processes.aclose()
        if self._upstream is not None:
            # An earlier stage ends with this one: its tasks are awaited here, so
            # nothing of the pipeline outlives the last stage (and an error in a
            # later stage stops the earlier ones).
            try:
                await self._upstream.aclose()
            except Exception as exc:
                self._record_error(exc)

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
                self._record_error(exc)
        self._wake_consumer()
        self._credit_waiters.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if stats is not None:
            logger.info("finished: %s", self.statistics().summary().replace("\n", "; "))
        for observer in self._observers:
            try:
                observer.run_finished(self, self._error)
            except Exception as exc:
                self._record_error(exc)

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
        self._stopping = True
        logger.warning(
            "%s: stopping: no new items; those in flight may finish for %g s "
            "(%s again to cancel them now)",
            name,
            self._grace,
            name,
            extra={"signal": name},
        )
        self._wake_all_workers()  # sleeping workers see the stop and end
        assert self._grace is not None
        self._grace_timer = self._loop.call_later(self._grace, self._cancel)

    def _fail(self, error: BaseException) -> None:
        """Record a worker's error (an action's, the input's) as the run's error.

        Unless the run had cancelled its workers already (``break``, ``aclose()``,
        the grace after a signal ran out): what a cancelled action raised instead of
        ``CancelledError`` ("the client was closed") is not why the run ends.
        """
        if not self._cancelled:
            self._record_error(error)

    def _worker_failed(self, error: BaseException) -> None:
        """Record a worker's error, which the worker then raises to end.

        Raises ``CancelledError`` instead if the worker's task was cancelled (the
        loop's shutdown cancels every task; a cancelled action raised "the client
        was closed"): nothing must report that as a task's unhandled exception.
        """
        self._fail(error)
        task = asyncio.current_task()
        if task not in self._failed_workers:
            # The credit this worker holds (for the item that failed, or for the
            # pull that raised) is no item in flight: the statistics must not count
            # it as one (succeeded = taken - in flight - failed would go negative).
            self._failed_workers.add(task)
            self._credits_withdrawn += 1
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    def _record_error(self, error: BaseException) -> None:
        """Record the run's first error and drop what the consumer has not taken."""
        if self._error is None:
            self._error = error
            # Dropped, never taken: they hold their credits still, but they are not
            # in flight (the statistics count them as what they were: done).
            self._credits_withdrawn += len(self._out) + len(self._pending)
            self._out.clear()
            self._pending.clear()
            self._halt()  # the task group cancels the other workers: see _halt()
            self._wake_consumer()

    def _wake_consumer(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_worker(self) -> None:
        waiters = self._credit_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _take_credit(self) -> bool:
        """Wait until a credit is free and take it (the slow path of every worker).

        Returns False, taking none, once the run is stopping (``handle_signals``, or
        halted: see ``_halt``): the worker ends instead of pulling another item. A
        worker whose action swallowed its cancellation comes here, and ends.
        """
        assert self._loop is not None
        while self._credits <= 0 and not self._stopping:
            waiter = self._loop.create_future()
            self._credit_waiters.append(waiter)
            await waiter
        if self._stopping:
            return False
        self._credits -= 1
        if self._credits > 0 and self._credit_waiters:
            self._wake_worker()  # pass the baton: more credits are free
        return True

    async def _worker(self) -> None:  # noqa: C901, PLR0912 - the hot path, inlined on purpose
        """Worker for a sync input, results in completion order: the hot path.

        Every operation here runs once per item; keep it that way.
        """
        source = self._sync_source
        assert source is not None
        action = self._action
        out = self._out
        on_error_yield = self._on_error_yield
        last_kind: type | None = None
        unpack = False
        # Take the credit for the next pull before pulling (see the invariants).
        if self._credits > 0:
            self._credits -= 1
        elif not await self._take_credit():
            return
        try:
            for item in source:
                # Unpack tuples and lists (and their subclasses). Inputs are nearly
                # always of one type: decide once per type, not once per item.
                kind = type(item)
                if kind is not last_kind:
                    last_kind = kind
                    unpack = issubclass(kind, _UNPACKED)
                try:
                    if unpack:
                        value = await action(*item)
                    else:
                        value = await action(item)
                except Exception as exc:
                    if unpack and type(exc) is TypeError:
                        exc = explain_spread(exc, item, self._name)
                    if not on_error_yield:
                        self._worker_failed(exc)
                        raise exc  # noqa: TRY201 - explain_spread may have replaced it
                    value = Failure(item, exc, stage=self._name)
                out.append(value)
                waiter = self._waiter
                if waiter is not None:
                    self._waiter = None
                    if not waiter.done():
                        waiter.set_result(None)
                free = self._credits  # never negative
                if free:
                    self._credits = free - 1
                elif not await self._take_credit():
                    return
        except Exception as exc:
            self._worker_failed(exc)  # from the input; an action's error was recorded above
            raise
        self._credits += 1  # the input is exhausted: give back the unused credit

    async def _observed_worker(self) -> None:  # noqa: C901, PLR0912, PLR0915 - as _worker
        """``_worker`` that also counts, for ``stats=True`` and observers of the run.

        It counts only the failures: the items taken are counted by the input's
        iterator (see ``_choose_worker``), the finished ones are those minus the
        ones in flight (see ``statistics()``). An action is timed when ``_timing``
        is set: by a timer a hundred times a second, and for good while actions
        take over 50 us. The cost of an untimed item is one attribute test.
        """
        source = self._sync_source
        stats = self._stats
        assert source is not None
        assert stats is not None
        action = self._action
        out = self._out
        on_error_yield = self._on_error_yield
        clock = time.perf_counter
        record = stats.latency.record
        last_kind: type | None = None
        unpack = False
        if self._credits > 0:
            self._credits -= 1
        elif not await self._take_credit():
            return
        try:
            for item in source:
                kind = type(item)
                if kind is not last_kind:
                    last_kind = kind
                    unpack = issubclass(kind, _UNPACKED)
                # Timed inline (a helper coroutine would cost a frame per item).
                began = clock() if self._timing else 0.0  # perf_counter() is never 0
                try:
                    if unpack:
                        value = await action(*item)
                    else:
                        value = await action(item)
                except Exception as exc:
                    if unpack and type(exc) is TypeError:
                        exc = explain_spread(exc, item, self._name)
                    if began:
                        record(clock() - began)
                    stats.failed += 1
                    if not on_error_yield:
                        self._worker_failed(exc)
                        raise exc  # noqa: TRY201 - explain_spread may have replaced it
                    value = Failure(item, exc, stage=self._name)
                else:
                    if began:
                        duration = clock() - began
                        record(duration)
                        # Slow actions are all timed: it costs little next to them.
                        self._timing = duration >= _TIME_EVERY_ITEM_OVER
                out.append(value)
                waiter = self._waiter
                if waiter is not None:
                    self._waiter = None
                    if not waiter.done():
                        waiter.set_result(None)
                free = self._credits
                if free and not self._stopping:
                    self._credits = free - 1
                elif not await self._take_credit():
                    return
        except Exception as exc:
            self._worker_failed(exc)
            raise
        self._credits += 1

    def _time_next(self) -> None:
        """Have the next action timed (the observed worker's sampling timer)."""
        self._timing = True
        if not self._done:
            assert self._loop is not None
            assert self._stats is not None
            self._stats.timer = self._loop.call_later(_SAMPLE_EVERY, self._time_next)

    async def _general_worker(self) -> None:  # noqa: C901, PLR0912, PLR0915 - inlined, as _worker is
        """Worker for ordered results and for async inputs (a pipeline's later stages).

        With ``stats=True`` it counts each outcome and times an action when
        ``_timing`` is set, as ``_observed_worker`` does; without, that costs two
        tests per item.
        """
        sync_source = self._sync_source
        async_source = self._async_source
        lock = self._pull_lock
        action = self._action
        on_error_yield = self._on_error_yield
        passthrough = self._upstream is not None  # an earlier stage's failures pass
        stats = self._stats
        clock = time.perf_counter
        last_kind: type | None = None
        unpack = False
        while True:
            if self._credits > 0 and not self._stopping:
                self._credits -= 1
            elif not await self._take_credit():
                return
            try:
                if sync_source is not None:
                    item = next(sync_source)
                    index = self._pulled
                    self._pulled = index + 1
                else:
                    assert async_source is not None
                    assert lock is not None
                    # An async generator cannot be advanced by two tasks at once.
                    # PullLock, its fast path inlined (no coroutine when it is free).
                    if not lock.acquire_nowait():
                        await lock.acquire()
                    try:
                        item = await anext(async_source)
                        # Number the item while holding the lock: input order.
                        index = self._pulled
                        self._pulled = index + 1
                    finally:
                        lock.release()
            except (StopIteration, StopAsyncIteration):
                self._credits += 1
                return
            except Exception as exc:
                self._worker_failed(exc)
                raise
            kind = type(item)
            if kind is not last_kind:
                last_kind = kind
                unpack = issubclass(kind, self._unpacked)
                if kind is Failure and passthrough:
                    self._pass_on(index, item)
                    last_kind = None  # and decided again for the next item
                    continue
            began = clock() if self._timing else 0.0  # never set without stats
            try:
                if unpack:
                    value = await action(*item)
                else:
                    value = await action(item)
            except Exception as exc:
                if unpack and type(exc) is TypeError:
                    exc = explain_spread(exc, item, self._name)
                if stats is not None:
                    if began:
                        stats.latency.record(clock() - began)
                    stats.failed += 1
                if not on_error_yield:
                    self._worker_failed(exc)
                    raise exc  # noqa: TRY201 - explain_spread may have replaced it
                value = Failure(item, exc, stage=self._name)
            else:
                if stats is not None:
                    stats.succeeded += 1
                    if began:
                        duration = clock() - began
                        stats.latency.record(duration)
                        self._timing = duration >= _TIME_EVERY_ITEM_OVER
            self._deliver(index, value)

    # -- the policy worker: timeouts, retries, rate limit ---------------------------

    async def _pull(self) -> tuple[int, Any] | None:
        """Take the next input item with its index; None once the input is exhausted."""
        sync_source = self._sync_source
        try:
            if sync_source is not None:
                item = next(sync_source)
            else:
                assert self._async_source is not None
                assert self._pull_lock is not None
                async with self._pull_lock:
                    item = await anext(self._async_source)
        except (StopIteration, StopAsyncIteration):
            return None
        index = self._pulled
        self._pulled = index + 1
        return index, item

    def _pass_on(self, index: int, failure: Any) -> None:
        """Deliver an earlier stage's failure unchanged, without running the action."""
        if self._stats is not None:
            self._stats.passed_on += 1
        self._deliver(index, failure)

    def _deliver(self, index: int, value: Any) -> None:
        """Hand a result (or Failure) to the consumer: in order, or as it comes."""
        if self._ordered:
            self._pending[index] = value
            if index == self._next_index:
                self._wake_consumer()
        else:
            self._out.append(value)
            self._wake_consumer()

    def _wake_all_workers(self) -> None:
        waiters = self._credit_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_for_work(self) -> None:
        """Sleep until a credit is returned, a retry falls due, or the input ends.

        A worker never sleeps past the earliest waiting retry: it sets its own timer
        for it. (Loop timers may fire a little early, uvloop's by up to a millisecond;
        a woken worker that finds nothing due simply sleeps again, with a new timer.)
        """
        loop = self._loop
        assert loop is not None
        waiter = loop.create_future()
        self._credit_waiters.append(waiter)
        timer = None
        if self._retries:
            timer = loop.call_at(self._retries[0][0], _wake, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    def _due_retry(self, now: float) -> ItemState | None:
        retries = self._retries
        # Within a millisecond counts as due: timers are no finer than that.
        if retries and retries[0][0] <= now + 0.001:
            return heapq.heappop(retries)[2]
        return None

    def _schedule_retry(self, state: ItemState, failure: object, delay: float) -> None:
        """Park ``state`` until its retry is due; its worker goes on with other items."""
        assert self._loop is not None
        due = self._loop.time() + delay
        heapq.heappush(self._retries, (due, next(self._retry_seq), state))
        # The timer wakes a sleeping worker, if there is one, when the retry is due.
        self._loop.call_at(due, self._wake_worker)
        logger.debug(
            "retrying %r in %.3f s after attempt %d: %r",
            state.item,
            delay,
            state.attempts,
            failure,
            extra={"item": state.item, "attempt": state.attempts, "error": failure},
        )

    async def _next_state(self) -> ItemState | None:  # noqa: C901 - each way to find work
        """Return the next item for a policy worker: a due retry, or a new item.

        Sleeps while there is nothing to do; returns None once there never will be.
        """
        assert self._policy is not None
        assert self._loop is not None
        loop = self._loop
        while True:
            if self._stopping:
                # Items waiting for a retry are dropped: not recorded, they run again
                # on resume.
                self._wake_all_workers()
                return None
            state = self._due_retry(loop.time())
            if state is not None:
                return state
            if self._exhausted:
                if not self._retries:
                    self._wake_all_workers()  # so that the idle ones end too
                    return None
                await self._wait_for_work()
                continue
            if not self._credits:
                await self._wait_for_work()
                continue
            if self._reader is not None or self._read_items or self._read_ended:
                state = await self._next_read()
                if state is not None:
                    return state
                continue
            self._credits -= 1
            if self._credits and self._credit_waiters:
                self._wake_worker()  # pass the baton: more credits are free
            try:
                pulled = await self._pull()
            except Exception as exc:
                self._worker_failed(exc)
                raise
            if pulled is None:
                self._credits += 1
                self._exhausted = True
                continue
            state = self._new_state(*pulled)
            if state is not None:
                return state

    def _reads_ahead(self) -> bool:
        """Whether a reader task pulls the input: an async input, with retries.

        Then a retry may fall due while the input has nothing to give (a pipe that
        is idle, a queue that ends only once every item is done, the retried one
        too): a worker waiting in the input could not run it, and with one worker
        the run would never end. The reader waits in the input instead.
        """
        policy = self._policy
        return self._async_source is not None and policy is not None and policy.retry is not None

    async def _next_read(self) -> ItemState | None:
        """Take an item the reader pulled; or ask for one and wait (then None)."""
        if not self._read_items:
            if self._read_ended:
                self._exhausted = True
            else:
                self._want_item()
                await self._wait_for_work()
            return None
        self._credits -= 1
        if self._credits and self._credit_waiters:
            self._wake_worker()  # pass the baton: the next asks the reader
        index = self._pulled
        self._pulled = index + 1
        return self._new_state(index, self._read_items.popleft())

    def _want_item(self) -> None:
        """Ask the reader for one more input item."""
        self._read_wanted = True
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def _read_ahead(self) -> None:
        """Pull the async input an item at a time, when a worker asks for one."""
        assert self._async_source is not None
        assert self._loop is not None
        source = self._async_source
        loop = self._loop
        try:
            while True:
                while not self._read_wanted:
                    _check_cancelled()  # the input's own code may swallow a cancel
                    self._reader = waiter = loop.create_future()
                    await waiter
                self._read_wanted = False
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    self._read_ended = True
                    self._wake_all_workers()
                    return
                except Exception as exc:
                    self._worker_failed(exc)
                    raise
                self._read_items.append(item)
                self._wake_worker()
        finally:
            self._reader = None

    def _new_state(self, index: int, item: Any) -> ItemState | None:
        """Start a new item's state; None if it needs no action (delivered already)."""
        policy = self._policy
        journal = self._journal
        assert policy is not None
        assert self._loop is not None
        if journal is None:
            if self._upstream is not None and type(item) is Failure:
                self._pass_on(index, item)
                return None
            return policy.new_state(index, item, self._loop.time())
        entry: Entry = item
        if entry.stored is not None:
            self._replay(index, entry, journal)
            return None
        if self._upstream is not None and type(entry.item) is Failure:
            self._pass_on(index, (entry, entry.item, 0, None))
            return None
        state = policy.new_state(index, entry.item, self._loop.time())
        state.tag = entry
        return state

    async def _policy_worker(self) -> None:  # noqa: C901 - each verdict inline
        """Worker for runs with timeouts, retries, limits or a journal, in any mode."""
        policy = self._policy
        assert policy is not None
        assert self._loop is not None
        loop = self._loop
        action = self._action
        journal = self._journal
        log_failures = self._log_failures
        observed = self._stats is not None
        started_hooks = () if self._hooks is None else self._hooks.started
        last_kind: type | None = None
        unpack = False
        while (state := await self._next_state()) is not None:
            kind = type(state.item)
            if kind is not last_kind:
                last_kind = kind
                unpack = issubclass(kind, self._unpacked)
            for hook in started_hooks:
                hook(state.item, state.attempts + 1)
            attempts = state.attempts
            verdict, payload, delay, expected = await policy.attempt(
                action, unpack, state, self._random.random()
            )
            elapsed = loop.time() - state.started
            if observed:
                self._observe(state, attempts, verdict, payload, delay, elapsed, expected)
            if verdict == RETRY:
                self._schedule_retry(state, payload, delay)
                continue
            if verdict == DONE:
                if journal is not None:
                    payload = (state.tag, payload, state.attempts, elapsed)
                self._deliver(state.index, payload)
                continue
            if unpack and type(payload) is TypeError:
                payload = explain_spread(payload, state.item, self._name)
            if log_failures:
                self._log_failure(state, payload, expected=expected)
            failure: Any = Failure(
                state.item, payload, state.attempts, elapsed, expected, self._name
            )
            if not self._on_error_yield:
                self._worker_failed(payload)
                raise payload
            if journal is not None:
                failure = (state.tag, failure, state.attempts, elapsed)
            self._deliver(state.index, failure)

    def _observe(  # noqa: PLR0917 - one attempt's whole account
        self,
        state: ItemState,
        attempts_before: int,
        verdict: int,
        payload: Any,
        delay: float,
        elapsed: float,
        expected: bool,
    ) -> None:
        """Count one attempt of a policy worker and call the observers' hooks."""
        stats = self._stats
        hooks = self._hooks
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
                failure = Failure(
                    state.item, payload, state.attempts, elapsed, expected, self._name
                )
                for hook in hooks.failed:
                    hook(failure)

    async def _journal_worker(self) -> None:  # noqa: C901, PLR0915 - inlined, as _worker
        """Worker for a journaled run over a sync input, without policies.

        The hot path's shape (see ``_worker``) plus what a journal needs: each
        outcome timed and tagged with its entry, stored outcomes replayed, and a
        stop (``handle_signals``) seen before every new item.
        """
        source = self._sync_source
        journal = self._journal
        assert source is not None
        assert journal is not None
        clock = time.perf_counter
        stats = self._stats
        action = self._action
        on_error_yield = self._on_error_yield
        last_kind: type | None = None
        unpack = False
        while True:
            # Take the credit for the next pull, or end once stopping.
            free = self._credits
            if free > 0 and not self._stopping:
                self._credits = free - 1
            elif not await self._take_credit():
                return
            try:
                entry: Entry = next(source)
            except StopIteration:
                self._credits += 1
                return
            except Exception as exc:
                self._worker_failed(exc)
                raise
            index = self._pulled
            self._pulled = index + 1
            if entry.stored is not None:
                self._replay(index, entry, journal)
                continue
            item = entry.item
            kind = type(item)
            if kind is not last_kind:
                last_kind = kind
                unpack = issubclass(kind, _UNPACKED)
            started = clock()
            try:
                value = await (action(*item) if unpack else action(item))
            except Exception as exc:
                if unpack and type(exc) is TypeError:
                    exc = explain_spread(exc, item, self._name)
                if stats is not None:
                    stats.failed += 1
                if not on_error_yield:
                    self._worker_failed(exc)
                    raise exc  # noqa: TRY201 - explain_spread may have replaced it
                elapsed = clock() - started
                failure = Failure(item, exc, 1, elapsed, stage=self._name)
                self._deliver(index, (entry, failure, 1, elapsed))
                continue
            elapsed = clock() - started
            if stats is not None:
                stats.succeeded += 1
                stats.latency.record(elapsed)
            self._deliver(index, (entry, value, 1, elapsed))

    async def _journal_async_worker(self) -> None:
        """Worker for a journaled run over an async input, without policies."""
        clock = time.perf_counter
        stats = self._stats
        action = self._action
        on_error_yield = self._on_error_yield
        last_kind: type | None = None
        unpack = False
        while (state := await self._next_state()) is not None:
            item = state.item
            kind = type(item)
            if kind is not last_kind:
                last_kind = kind
                unpack = issubclass(kind, self._unpacked)
            started = clock()
            try:
                value = await (action(*item) if unpack else action(item))
            except Exception as exc:
                if unpack and type(exc) is TypeError:
                    exc = explain_spread(exc, item, self._name)
                if stats is not None:
                    stats.failed += 1
                if not on_error_yield:
                    self._worker_failed(exc)
                    raise exc  # noqa: TRY201 - explain_spread may have replaced it
                elapsed = clock() - started
                failure = Failure(item, exc, 1, elapsed, stage=self._name)
                self._deliver(state.index, (state.tag, failure, 1, elapsed))
                continue
            elapsed = clock() - started
            if stats is not None:
                stats.succeeded += 1
                stats.latency.record(elapsed)
            self._deliver(state.index, (state.tag, value, 1, elapsed))

    def _replay(self, index: int, entry: Entry, journal: Session) -> None:
        """Deliver a journaled item's stored outcome without running it."""
        outcome = journal.replayed_outcome(entry)
        if isinstance(outcome, Failure) and not self._on_error_yield:
            self._worker_failed(outcome.exception)
            raise outcome.exception
        self._deliver(index, (entry, outcome, 0, None))

    def _log_failure(self, state: ItemState, error: BaseException, *, expected: bool) -> None:
        fields = {"item": state.item, "attempt": state.attempts, "error": error}
        if expected:
            logger.warning(
                "item %r failed after %d attempts: %r",
                state.item,
                state.attempts,
                error,
                extra=fields,
            )
        else:
            logger.error(
                "item %r failed with an unexpected error on attempt %d: %r",
                state.item,
                state.attempts,
                error,
                exc_info=error,
                extra=fields,
            )
