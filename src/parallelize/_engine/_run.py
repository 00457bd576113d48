"""The run's lifecycle: start, the supervisor and its task group, results, close.

``Run`` owns the supervisor task, the credits (its ``Flow``), the journal's session
and the consumer's way in; the worker and its parts are chosen and wired by
``_assemble.py``, the workers run by ``_supervisor.py``. The invariants (credits bound memory,
hysteresis on wake-ups, structured concurrency, the first error re-raised unchanged)
are stated in ``_flow.py`` and ``docs/design.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import random
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
    NoReturn,
    Self,
    TypeVar,
    final,
)

from parallelize._actions import prepare_action
from parallelize._aio import PullLock
from parallelize._errors import Interrupted
from parallelize._journal import RunSession, open_run_session
from parallelize._observe import ItemHooks, Observer
from parallelize._policies import ItemPolicy
from parallelize._stats import Statistics, StatsCounters

from ._assemble import assemble
from ._consumer import open_results
from ._flow import MISSING, Flow
from ._grace import Grace
from ._hot import UNPACKED
from ._snapshot import sample_clock, snapshot, stop_counting
from ._sources import ItemSource
from ._stages import Stages
from ._supervisor import release, run_workers

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from types import TracebackType

    from parallelize._actions import ExecutorSpec, ProcessesSpec
    from parallelize._journal import Journal, WorkSource
    from parallelize._limits import AdaptiveLimit, KeyBreakers, KeyedLimits
    from parallelize._multi import ProcessShards
    from parallelize._processes import ProcessPool
    from parallelize._util import ActionKind

__all__ = ("Run",)

logger = logging.getLogger("parallelize")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")


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


@final
class Run(Stages[T_co]):
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
        "_breakers",
        "_done",
        "_executor",
        "_executor_spec",
        "_fan_out",
        "_flow",
        "_grace",
        "_handling",
        "_hooks",
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
        "_processes_spec",
        "_pull_lock",
        "_random",
        "_results_ref",
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
        processes: ProcessesSpec = None,
        ordered: bool,
        on_error_yield: bool,
        max_buffered: int,
        policy: ItemPolicy | None = None,
        breakers: KeyBreakers | None = None,
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
        # A breaker per key with no other limit per key: around the action.
        self._breakers = breakers
        # handle_signals: the grace period for in-flight items after SIGINT/SIGTERM.
        self._grace = grace
        self._handling: Grace | None = None  # the signal handlers, once started
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
        self._processes: ProcessPool | ProcessShards | None = None  # ours: processes
        self._processes_spec = processes
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
    def ordered(self) -> bool:
        """Whether the results come in input order (``ordered=True``).

        Added in 0.2.
        """
        return self._ordered

    @property
    def stages(self) -> tuple[Run[Any], ...]:
        """The runs of this pipeline, the first stage first and this run last.

        A run whose input is another run (see :meth:`then`) is the last stage of a
        pipeline; read each stage's :meth:`statistics` or ``name`` from here.
        """
        upstream = self._upstream
        return (self,) if upstream is None else (*upstream.stages, self)

    def _take_stage(self, make: Callable[[], Run[Any]]) -> Run[Any]:
        """Make the stage that this run feeds (``make()``), if it may feed one."""
        if self._state is not _State.NEW:
            raise RuntimeError(
                f"{self!r} has started: add its stages with then() before iterating it"
            )
        if self._upstream_of is not None:
            raise RuntimeError(
                f"{self!r} already feeds the stage {self._upstream_of.name!r}: a run "
                f"has one reader; call then() on the last stage"
            )
        stage = make()
        self._upstream_of = stage
        return stage

    @property
    def adaptive(self) -> AdaptiveLimit | None:
        """The run's :class:`~parallelize.AdaptiveLimit` (``adaptive=True`` makes one).

        None without ``adaptive=``. Read its ``limit`` or ``statistics()`` at any
        time, for a progress display or metrics.
        """
        return None if self._policy is None else self._policy.adaptive

    @property
    def keys(self) -> KeyedLimits | KeyBreakers | None:
        """The run's keys, with ``per_key=`` (None without).

        ``keys.statistics()`` (a :class:`~parallelize.KeyStatistics`, also in
        :meth:`statistics`), ``keys.set_rate(key, per_second)`` to give one key a rate
        of its own while the run goes on (a ``Crawl-delay`` read from its site).

        Added in 0.3.
        """
        if self._breakers is not None:
            return self._breakers
        return None if self._policy is None else self._policy.keyed

    def statistics(self) -> Statistics:
        """Return a snapshot of the run's progress: counts, rate, ETA, latency percentiles.

        Cheap enough to call ten times a second; final once the run has ended
        (``Statistics.finished``). Needs ``stats=True`` (or ``progress=`` or
        ``observers=``): counting costs a little per item, so it is off by default.

        Raises:
            RuntimeError: The run was made without ``stats=True``.
        """
        stats = self._stats
        if stats is None:
            raise RuntimeError(
                "statistics() needs a run that counts: parallelize(..., stats=True) "
                "(progress= and observers= turn it on too)"
            )
        return snapshot(
            stats,
            self._flow,
            self._items,
            self._policy,
            self._journal,
            keys=self.keys,
            source=self._sync_source,
            started=self._state is not _State.NEW and self._loop is not None,
            done=self._done,
            total=self._total,
            numworkers=self._numworkers,
        )

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
        results = open_results(
            self._flow,
            self._journal,
            self._next_slow,
            self._unstorable,
            ordered=self._ordered,
            fan_out=self._fan_out,
        )
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
        interrupted = None if self._handling is None else self._handling.interrupted
        if self._flow.error is None and interrupted is not None:
            journal = self._journal
            raise Interrupted(
                interrupted,
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

    def stop(self) -> None:
        """Take no new item; let those in flight finish, then end the ``async for``.

        For a consumer that judges the run should end early (too many failures,
        enough results) without losing the work in flight: unlike ``break``, which
        cancels the items in flight, each of their outcomes is still yielded (and
        recorded by a journal, which marks the run interrupted: a rerun with it
        resumes the rest). The items in flight keep their ``timeout=`` and
        retries; items not yet taken from the input are left there. Calling it
        again does nothing. Call it on the run's event loop (from the ``async
        for`` body, say).
        """
        flow = self._flow
        if flow.stopping:
            return
        flow.stopping = True
        flow.wake_all_workers()  # sleeping workers see the stop and end

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
            self._handling = Grace(self._grace, self._flow, loop, self._cancel)
        self._action, self._executor, self._processes = prepare_action(
            self._action, self._kind, self._executor_spec, self._numworkers, self._processes_spec
        )
        if self._breakers is not None:
            self._breakers.clock = loop.time
            # The guard takes each item whole and unpacks it as the workers would.
            self._action = self._breakers.guard(self._action, self._name, self._unpacked)
            self._unpacked = ()
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
        """Return the worker for this run, its parts wired (see ``_assemble.py``)."""
        assembly = assemble(
            self._flow,
            self._action,
            name=self._name,
            sync_source=self._sync_source,
            async_source=self._async_source,
            lock=self._pull_lock,
            policy=self._policy,
            journal=self._journal,
            stats=self._stats,
            hooks=self._hooks,
            ordered=self._ordered,
            on_error_yield=self._on_error_yield,
            log_failures=self._log_failures,
            unpacked=self._unpacked,
            passthrough=self._upstream is not None,
            draw=self._random,
        )
        self._items = assembly.items
        self._sync_source = assembly.source
        return assembly.worker

    async def _supervise(self, numworkers: int) -> None:
        worker = self._choose_worker()
        try:
            stats = self._stats
            if stats is not None:
                assert self._loop is not None
                stats.started_at = self._loop.time()
                if self._flow.timing:  # the worker samples the clock (see _assemble.py)
                    sample_clock(self._flow, stats, self._loop)
            for observer in self._observers:
                observer.run_started(self)
            if self._processes is not None:
                self._processes.warm_up()
                await self._processes.started()
            await run_workers(worker, numworkers, self._flow, self._items, self._workers)
        except BaseExceptionGroup as group_error:
            # Workers record the first error themselves; this catches anything else.
            self._flow.fail(group_error.exceptions[0])
        except Exception as exc:  # from an observer's run_started()
            self._flow.record_error(exc)
        finally:
            self._wind_down()
            upstream = self._upstream
            await release(
                self._flow,
                self._async_source,
                self._processes,
                None if upstream is None else upstream.aclose,
            )

    def _wind_down(self) -> None:
        """Finish the supervisor's work once every worker has ended."""
        stats = self._stats
        if stats is not None:
            assert self._loop is not None
            stop_counting(stats, self._flow, self._items, self._loop)
        self._done = True
        self._workers = []
        if self._handling is not None:
            self._handling.restore()
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
