"""``parallelize()``: validate the arguments and build a run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack, overload

from ._engine import Run, register_stage_factory
from ._journal import Journal, SQLiteJournal, WorkSource, missing
from ._limits import (
    AdaptiveLimit,
    KeyBreakers,
    KeyedLimits,
    Limit,
    PerKey,
    RateLimit,
    RateLimiter,
    as_limit,
    bind_to_run,
)
from ._observe import Observer
from ._options import StageOptions
from ._outcomes import Failure
from ._policies import ItemPolicy, Retry
from ._progress import Progress
from ._util import (
    check_action,
    check_argslist,
    check_bool,
    check_choice,
    check_int,
    check_seconds,
)

if TYPE_CHECKING:
    from ._multi import ProcessSetup

__all__ = ("parallelize",)

T = TypeVar("T")

OnError = Literal["raise", "yield"]


@overload
def parallelize(
    action: Callable[..., Awaitable[T]],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["raise"] = ...,
    **options: Unpack[StageOptions[T]],
) -> Run[T]: ...
@overload
def parallelize(
    action: Callable[..., Awaitable[T]],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["yield"],
    **options: Unpack[StageOptions[T]],
) -> Run[T | Failure]: ...
@overload
def parallelize(
    action: Callable[..., AsyncIterator[T]],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["raise"] = ...,
    **options: Unpack[StageOptions[list[T]]],
) -> Run[T]: ...
@overload
def parallelize(
    action: Callable[..., AsyncIterator[T]],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["yield"],
    **options: Unpack[StageOptions[list[T]]],
) -> Run[T | Failure]: ...
@overload
def parallelize(
    action: Callable[..., Iterator[T]],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["raise"] = ...,
    **options: Unpack[StageOptions[list[T]]],
) -> Run[T]: ...
@overload
def parallelize(
    action: Callable[..., Iterator[T]],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["yield"],
    **options: Unpack[StageOptions[list[T]]],
) -> Run[T | Failure]: ...
@overload
def parallelize(
    action: Callable[..., T],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["raise"] = ...,
    **options: Unpack[StageOptions[T]],
) -> Run[T]: ...
@overload
def parallelize(
    action: Callable[..., T],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    on_error: Literal["yield"],
    **options: Unpack[StageOptions[T]],
) -> Run[T | Failure]: ...
def parallelize(
    action: Callable[..., Any],
    argslist: Iterable[Any] | AsyncIterable[Any],
    numworkers: int,
    *,
    ordered: bool = False,
    on_error: OnError = "raise",
    max_buffered: int | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    retry: Retry[Any] | None = None,
    rate_limit: RateLimiter | Limit | None = None,
    adaptive: AdaptiveLimit | bool = False,
    per_key: PerKey | None = None,
    journal: str | os.PathLike[str] | Journal | WorkSource | None = None,
    key: Callable[[Any], int | str] | None = None,
    handle_signals: bool | float = False,
    stats: bool = False,
    progress: bool | Progress = False,
    observers: Iterable[Observer] = (),
    total: int | None = None,
    name: str | None = None,
    executor: Literal["thread", "process"] | Executor | None = None,
    processes: int | Literal["auto"] | None = None,
    process_setup: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
) -> Run[Any]:
    """Run ``action`` over every item of ``argslist`` with ``numworkers`` workers.

    Items are pulled lazily, so a generator of a billion inputs runs in memory
    proportional to ``numworkers``. A tuple or list item is unpacked as positional
    arguments (``action(*item)``); any other item (a str, int, dict, object) is passed
    as the single argument (``action(item)``). To pass a tuple as one argument, wrap it:
    ``(t,)``. When ``argslist`` is another run (a pipeline, see :meth:`Run.then`), its
    results are passed whole, never unpacked.

    Args:
        action: An ``async def`` function (awaited on the event loop), or a plain
            function (run in a pool of ``numworkers`` threads so it cannot block the
            loop, or in processes: see ``executor``). A generator function (``async
            def`` or not) fans out: each value it yields is one result, zero or
            more per item, delivered together when its generator ends (so a retried
            item never repeats a value).
        argslist: Any iterable (list, range, generator) or async iterable (async
            generator) of items. Read no further ahead than the workers and the
            result buffer need.
        numworkers: The most actions in flight at once (an int >= 1).
        ordered: Yield results in input order instead of completion order. Workers
            keep going while an early item is slow, until the reorder buffer
            (``numworkers + max_buffered`` items) is full. Default ``False``.
        on_error: ``"raise"`` (default): the first exception raised by an action or
            by iterating ``argslist`` cancels all other work and propagates out of the
            ``async for`` unchanged. ``"yield"``: an action's exception is yielded as a
            :class:`~parallelize.Failure` (carrying the item, the exception and the
            attempt count) in place of its result, and the run goes on. An exception
            from iterating ``argslist`` always propagates.
        max_buffered: How many finished results may wait for a slow consumer before
            the workers pause (default: ``numworkers``).
        timeout: Seconds one attempt of an action may take; it is then cancelled
            and fails with ``TimeoutError`` (retried if ``retry`` names it). Default
            None: no limit.
        deadline: Seconds an item may take over all its attempts and the waits
            between them; no attempt starts after it. Default None: no limit.
        retry: A :class:`~parallelize.Retry` policy: which failures are tried
            again, how often, after what delay. Default None: no retries.
        rate_limit: A :class:`~parallelize.RateLimit` that every attempt waits for,
            shared by all workers (and by other runs given the same object); or
            one shared by every process of a Redis run
            (:meth:`parallelize.redis.RedisQueue.rate_limit`); or any
            :class:`~parallelize.Limit` of your own, which every attempt passes
            after the adaptive limit.
        adaptive: Keep the number of actions in flight at what the service can
            take, between 1 and ``numworkers``: ``True`` for the defaults, or an
            :class:`~parallelize.AdaptiveLimit` to tune it and read its current
            ``limit``. It grows while the latency stays flat and backs off on rising
            latency and on overload (timeouts, connection errors, 429/503/504).
            Default False: always ``numworkers`` at once.
        per_key: Limits for each key apart (each host, each tenant): a
            :class:`~parallelize.PerKey` with the function from an item to its key
            (:func:`~parallelize.host_of` for URLs) and any of a concurrency, a
            rate, an adaptive limit and a circuit breaker per key. An attempt
            whose key is at its limit is set aside and its worker takes an item
            of another key, so one slow, throttling or dead key never holds the
            others' workers; a ``Retry-After`` pauses its key alone. Default
            None. Added in 0.3.
        journal: Record every item's final outcome durably, and on a rerun skip
            the items already done: a path (a :class:`~parallelize.SQLiteJournal`
            file, created owner-only) or a journal object. An outcome is recorded
            once the consumer has taken it (when it asks for the next one), so a
            crash loses nothing the consumer got; items in flight or not yet
            flushed at a crash run again. Or a :class:`parallelize.redis.RedisQueue`:
            the run is then shared by every process given the same queue, on any
            machine (``argslist`` is added to it, and this process runs what it
            gets from it). Default None.
        key: With a journal, identifies an item across runs (``key(item)``: a str
            or an int), for inputs whose order or content changes between runs.
            Default: the item's position in the input, checked against a hash of
            the item so that a changed input is refused instead of mixed up.
        handle_signals: While the run goes on, the first SIGINT (Ctrl-C) or SIGTERM
            stops it gracefully: no new item is taken, the items in flight get a
            grace period (``True``: 10 s; or a number of seconds) and the consumer
            their outcomes, the journal is flushed, and then the ``async for``
            raises :class:`~parallelize.Interrupted` saying how to resume. A second
            signal cancels the items in flight at once. The previous handlers are
            restored when the run ends. Main thread only. Default False.
        stats: Count the outcomes and time the actions, for
            :meth:`Run.statistics` (a snapshot at any time, and a summary logged at
            INFO when the run ends). Default False: counting costs a few percent of
            the engine's own time per item (nothing next to real I/O). Turned on by
            ``progress`` and ``observers``.
        progress: Show a live progress bar on stderr while the run goes on (done
            and total, rate, ETA, in flight, retries, failures, the adaptive limit):
            ``True``, or a :class:`~parallelize.Progress` to set its description or
            stream. Shown only when that stream is a terminal, so output redirected
            to a file never holds it; needs the ``progress`` extra (``rich``).
            Default False.
        observers: :class:`~parallelize.Observer` objects whose hooks are called
            on the run's events: started, item started, retrying, succeeded, failed,
            finished. Only the hooks an observer overrides are called.
        total: How many items the input has, for the progress bar's ETA, when
            ``argslist`` has no ``len()`` (a generator, a file). Default: its
            ``len()`` when it has one, else unknown.
        name: The run's name, for a pipeline's stage above all: in each
            :class:`~parallelize.Failure` (``stage``), in logs and on the progress
            bar. Default: the action's name.
        executor: Where a plain function runs. ``None`` (default) or ``"thread"``:
            in the run's own ``numworkers`` threads, for blocking I/O. ``"process"``:
            in ``numworkers`` child processes, for CPU-bound work (they use every
            core; make ``numworkers`` the number of cores). The function must be
            defined at the top level of a module, and its arguments and results are
            pickled; a child that dies fails only its item, with
            :class:`~parallelize.ProcessCrashed`, and a ``timeout`` kills the child
            running a late item. Or an :class:`concurrent.futures.Executor` of your
            own, which the run uses and does not shut down. Not for ``async def``
            actions, which run on the loop (see ``processes``).
        processes: Run an ``async def`` action in this many child processes
            (``"auto"``: one per core), many calls in flight in each, for I/O work
            whose CPU per item (parsing, TLS, the client's own code) fills one
            core. The run stays here: its input, its ``numworkers`` (the calls in
            flight, all processes together), every policy and limit (one budget
            for the run), the journal, statistics and order; each call goes to
            the child with the fewest in flight. The action (and
            ``process_setup``) must be defined at the top level of a module, and
            its arguments and results are pickled. A child that dies fails its
            calls in flight with :class:`~parallelize.ProcessCrashed` (retried if
            ``Retry`` names it) and a new one takes its place; children never
            outlive this process. Default None: the action runs on this loop.
        process_setup: With ``processes``: a function returning an async context
            manager, entered in each child before its first call and exited after
            its last (a client per process, kept in a module-level name the
            action reads). If it raises, every call fails with its error.

    Returns:
        A :class:`~parallelize.Run`: iterate it with ``async for``; use it as an
        ``async with`` block, or call ``aclose()``, to stop it early.

    Raises:
        TypeError: ``action`` is not callable (or is a coroutine object, such as
            ``fetch(url)`` instead of ``fetch``), ``argslist`` is not iterable (or is a
            str), or ``numworkers`` is not an int.
        ValueError: ``numworkers`` < 1, ``max_buffered`` < 0, an unknown
            ``on_error``, a ``timeout`` or ``deadline`` that is not > 0, or an
            ``adaptive`` limit whose bounds are above ``numworkers``.

    Example:
        >>> async with aiohttp.ClientSession() as session:
        ...     async def action(url):
        ...         async with session.get(url) as resp:
        ...             await resp.read()
        ...             return resp
        ...     async for resp in parallelize(action, urls, numworkers=100):
        ...         print(resp.status, resp.url)
    """
    kind = check_action(action)
    _check_executor(executor, kind, action)
    checked_processes = _check_processes(processes, process_setup, kind, action, executor)
    checked_argslist = check_argslist(argslist)
    checked_numworkers = check_int("numworkers", numworkers, 1)
    check_bool("ordered", ordered)
    check_choice("on_error", on_error, ("raise", "yield"))
    buffered = (
        checked_numworkers if max_buffered is None else check_int("max_buffered", max_buffered, 0)
    )
    checked_adaptive = _check_adaptive(adaptive, checked_numworkers)
    alone = timeout is None and deadline is None and retry is None and rate_limit is None
    breakers, keyed = _keys_of(
        _check_per_key(per_key), checked_numworkers, alone=alone and checked_adaptive is None
    )
    policy = _policy_of(timeout, deadline, retry, rate_limit, checked_adaptive, keyed)
    check_bool("stats", stats)
    observer_list = _check_observers(observers, progress)
    if total is not None:
        total = check_int("total", total, 0)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    checked_journal = _check_journal(journal)
    if isinstance(checked_journal, WorkSource) and ordered:
        raise ValueError(
            "ordered=True cannot be kept with a queue: its items come from many "
            "producers and workers. Drop ordered=, or sort the results by key"
        )
    _check_stage_journal(argslist, checked_journal, key)
    if key is not None:
        if journal is None:
            raise ValueError("key= identifies items in a journal: pass journal= too")
        if not callable(key):
            raise TypeError(f"key must be a function of an item, got {key!r}")
    return Run(
        action,
        checked_argslist,
        checked_numworkers,
        kind=kind,
        executor=executor,
        processes=checked_processes,
        ordered=ordered,
        on_error_yield=on_error == "yield",
        max_buffered=buffered,
        policy=policy,
        breakers=breakers,
        journal=checked_journal,
        key=key,
        grace=_check_grace(handle_signals),
        stats=stats,
        observers=observer_list,
        total=total,
        name=name,
    )


def _check_executor(executor: object, kind: str, action: Callable[..., Any]) -> None:
    if executor is None:
        return
    if not (executor in {"thread", "process"} or isinstance(executor, Executor)):
        raise TypeError(
            f'executor must be "thread", "process", a concurrent.futures.Executor or '
            f"None, got {executor!r}"
        )
    if kind in {"async", "asyncgen"}:
        name = getattr(action, "__qualname__", type(action).__name__)
        raise ValueError(
            f"executor= runs plain functions, and {name} is an async def, which runs on "
            f"the event loop: drop executor=, or make {name} a plain def"
        )
    if executor == "process":
        from ._processes import check_picklable  # noqa: PLC0415 - loaded when used

        check_picklable(action)


def _check_processes(
    processes: object,
    setup: object,
    kind: str,
    action: Callable[..., Any],
    executor: object,
) -> tuple[int, ProcessSetup | None] | None:
    """Return ``processes=`` as a number and its setup, or None without."""
    if processes is None:
        if setup is not None:
            raise ValueError("process_setup= is run in each child process: give processes= too")
        return None
    if executor is not None:
        raise ValueError("processes= and executor= cannot go together: drop executor=")
    from ._multi import check_processes  # noqa: PLC0415 - loaded when used

    return check_processes(processes, setup, kind, action)


def _check_observers(observers: object, progress: object) -> tuple[Observer, ...]:
    if isinstance(observers, Observer) or not isinstance(observers, Iterable):
        raise TypeError(
            f"observers must be a list of Observer objects, got {observers!r}: pass observers=[...]"
        )
    checked = list(observers)
    for observer in checked:
        if not isinstance(observer, Observer):
            raise TypeError(
                f"observers must be Observer objects (subclass parallelize.Observer), "
                f"got {observer!r}"
            )
    if progress is True:
        progress = Progress()
    if isinstance(progress, Progress):
        checked.append(progress.observer())
    elif progress is not False:
        raise TypeError(f"progress must be True, False or a Progress(...), got {progress!r}")
    return tuple(checked)


def _check_adaptive(adaptive: object, numworkers: int) -> AdaptiveLimit | None:
    if adaptive is True:
        adaptive = AdaptiveLimit()
    elif adaptive is False or adaptive is None:
        return None
    if not isinstance(adaptive, AdaptiveLimit):
        raise TypeError(f"adaptive must be True, False or an AdaptiveLimit(...), got {adaptive!r}")
    for name in ("min_limit", "max_limit"):
        bound = getattr(adaptive, name)
        if bound is not None and bound > numworkers:
            raise ValueError(
                f"AdaptiveLimit.{name} ({bound}) is above numworkers ({numworkers}): a run "
                f"never has more than numworkers actions in flight; raise numworkers or "
                f"lower {name}"
            )
    bind_to_run(adaptive, numworkers)  # the run's numworkers caps the limit
    return adaptive


def _policy_of(  # noqa: PLR0917 - every option an attempt goes through
    timeout: float | None,
    deadline: float | None,
    retry: object,
    rate_limit: object,
    adaptive: AdaptiveLimit | None,
    keyed: KeyedLimits | None,
) -> ItemPolicy | None:
    """Return what every attempt goes through, or None for the plain hot path."""
    if (
        timeout is None
        and deadline is None
        and retry is None
        and rate_limit is None
        and adaptive is None
        and keyed is None
    ):
        return None
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry must be a Retry(...) or None, got {retry!r}")
    limits: list[Limit] = []
    if adaptive is not None:
        limits.append(adaptive)  # its place before the rate's slot
    if rate_limit is not None:
        limits.append(_check_rate_limit(rate_limit))
    return ItemPolicy(
        timeout=None if timeout is None else check_seconds("timeout", timeout),
        deadline=None if deadline is None else check_seconds("deadline", deadline),
        retry=retry,
        limits=tuple(limits),
        adaptive=adaptive,
        keyed=keyed,
    )


def _check_per_key(per_key: object) -> PerKey | None:
    if per_key is not None and not isinstance(per_key, PerKey):
        raise TypeError(
            f"per_key must be a PerKey(...) or None, got {per_key!r}: write "
            f"per_key=PerKey(host_of, concurrency=2)"
        )
    return per_key


def _keys_of(
    per_key: PerKey | None, numworkers: int, *, alone: bool
) -> tuple[KeyBreakers | None, KeyedLimits | None]:
    """Return this run's state of ``per_key=`` (its own: a PerKey may serve many runs).

    A breaker alone (``failures=`` and no limit per key) with no other policy
    (``alone``) wraps the action (``KeyBreakers``), so the run keeps its fastest
    path; anything else is kept by the item source (``KeyedLimits``).
    """
    if per_key is None:
        return None, None
    if (
        alone
        and per_key.concurrency is None
        and per_key.rate is None
        and not per_key.adaptive
        and per_key.shared is None
    ):
        return KeyBreakers(per_key), None
    return None, KeyedLimits(per_key, numworkers)


def _check_rate_limit(rate_limit: object) -> Limit:
    if isinstance(rate_limit, RateLimit | Limit):
        return rate_limit
    if callable(getattr(rate_limit, "acquire", None)) and hasattr(rate_limit, "pause_until"):
        return as_limit(rate_limit)  # type: ignore[arg-type]  # a first-shape RateLimiter
    raise TypeError(f"rate_limit must be a RateLimit(...) or None, got {rate_limit!r}")


def _check_journal(journal: object) -> Journal | WorkSource | None:
    """Return ``journal=`` as a journal or a work source; a path opens SQLite."""
    if journal is None:
        return None
    if isinstance(journal, str | os.PathLike):
        return SQLiteJournal(journal)
    # The protocols' isinstance() sees only that each member exists; missing()
    # also wants the methods callable.
    if isinstance(journal, WorkSource) and not missing(journal, WorkSource):
        return journal  # first: a queue is a journal and the run's input too
    if isinstance(journal, Journal) and not missing(journal, Journal):
        return journal
    raise TypeError(
        f"journal must be a path, a Journal (such as SQLiteJournal('crawl.db')) or a "
        f"WorkSource (such as a RedisQueue); {journal!r} has no "
        f"{_listed(missing(journal, WorkSource))} for a WorkSource, nor "
        f"{_listed(missing(journal, Journal))} for a Journal"
    )


def _listed(names: list[str]) -> str:
    """Join names for a message: ``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _check_grace(handle_signals: object) -> float | None:
    if handle_signals is False:
        return None
    if handle_signals is True:
        return 10.0
    if isinstance(handle_signals, bool) or not isinstance(handle_signals, int | float):
        raise TypeError(
            f"handle_signals must be True, False or a grace period in seconds, "
            f"got {handle_signals!r}"
        )
    return check_seconds("handle_signals", handle_signals)


def _check_stage_journal(argslist: object, journal: object, key: object) -> None:
    """Refuse a journal by position on a later stage (its order changes every run)."""
    if (
        journal is not None
        and key is None
        and isinstance(argslist, Run)
        and not argslist.ordered
        and not isinstance(journal, WorkSource)
    ):
        raise ValueError(
            "a journal on a later stage of a pipeline needs key=: its items are the "
            "stage before's results, which come in the order they finish, so an item's "
            "position differs from run to run and a rerun could not be matched. Pass "
            "key= a function of the item (its URL, an id), or ordered=True on the "
            "stage before"
        )


register_stage_factory(parallelize)
