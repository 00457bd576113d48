"""The exception tree of parallelize: every error it raises on its own account.

Errors raised by a user's own action, or by iterating the user's own input, come out
unchanged: they are never wrapped. The classes below are for what parallelize itself
has to say, so ``except ParallelizeError`` catches all of them; where one is also a
built-in error, it says so, and an ``except`` of that built-in catches it too::

    ParallelizeError
    ├── ActionError             (an action misbehaved in a way found only while running;
    │                            also a TypeError)
    ├── RetriesExhausted        (an item's result still asked for a retry after the last)
    ├── RetryWaitTooLong        (the wait before an item's next attempt passed Retry.max_wait)
    ├── DeadlineExceeded        (an item's deadline passed; also a TimeoutError)
    ├── KeyDownError            (PerKey's breaker: the item's key is down; also a
    │                            ConnectionError)
    ├── JournalError            (a journal cannot be used: corrupt, locked, mismatched...)
    │   ├── QueueUnavailableError  (parallelize.redis: Redis cannot be reached)
    │   └── QueueInUseError        (parallelize.redis: RedisQueue.delete() refused,
    │                               workers are on the run)
    ├── RecordedError           (a failure read back from a journal: its type and message)
    ├── UnstorableResult        (an item's result that its journal's codec cannot store)
    ├── Interrupted             (a run stopped on SIGINT/SIGTERM, after saving its work)
    ├── ProcessCrashed          (the child process running an item died)
    ├── MissingDependencyError  (an optional extra is not installed; also an ImportError)
    └── HTTPClientError         (parallelize.http: a request got no usable reply; .kind)
        ├── ConnectError            (refused, reset, closed early; also a ConnectionError)
        │   ├── DNSError            (the host name did not resolve)
        │   └── TLSError            (the TLS handshake failed)
        ├── RequestTimeoutError     (no complete reply within the client's timeout;
        │   │                        also a TimeoutError)
        │   └── ConnectTimeoutError (no connection within its connect_timeout)
        ├── RedirectError           (a redirect that cannot be followed)
        │   └── TooManyRedirectsError  (more than max_redirects)
        ├── ProtocolError           (a malformed reply, or a body cut short)
        ├── InvalidURLError         (not an absolute http(s) URL; also a ValueError)
        └── BodyTooLargeError       (a body longer than max_body)

The classes are defined below and public as ``parallelize.X``, except four homes
next to the code that raises them: ``RecordedError`` in ``_journal``
(``parallelize.RecordedError``), the queue's two in ``_redis``
(``parallelize.redis.X``), ``HTTPClientError`` and its subclasses in ``http``
(``parallelize.http.X``). ``tests/test_errors_tree.py`` checks that this drawing
and the classes agree.

Bad arguments to :func:`parallelize.parallelize` (and to every other entry point) are
plain :class:`TypeError` and :class:`ValueError`, raised before any work starts (see
``_util``); misuse of a run's lifecycle is a :class:`RuntimeError`.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = (
    "ActionError",
    "DeadlineExceeded",
    "Interrupted",
    "JournalError",
    "KeyDownError",
    "MissingDependencyError",
    "ParallelizeError",
    "ProcessCrashed",
    "RetriesExhausted",
    "RetryWaitTooLong",
    "UnstorableResult",
)


class ParallelizeError(Exception):
    """Base class of the errors that parallelize raises on its own account."""


class ActionError(ParallelizeError, TypeError):
    """An action was called correctly but did something parallelize cannot run.

    The usual case: a plain function (run in a worker thread) returned a coroutine,
    because it is a ``lambda`` or a ``def`` that calls an ``async def`` without
    awaiting it.
    """


class Interrupted(ParallelizeError):  # noqa: N818 - says what happened, as it reads
    """A run with ``handle_signals=True`` was stopped by SIGINT or SIGTERM.

    Raised out of the ``async for`` once the run has stopped: no new item was taken
    after the signal, the items in flight had their grace period, and a journal, if
    any, holds every outcome the consumer took. The message says how to resume.

    Attributes:
        signal: The signal's number (``signal.SIGINT``...).
        journal: Where the outcomes are recorded (a path), or None without a journal.
    """

    def __init__(self, signal: int, journal: str | None, recorded: int) -> None:
        import signal as signals  # noqa: PLC0415 - only for the name in the message

        self.signal = signal
        self.journal = journal
        self.recorded = recorded
        name = signals.Signals(signal).name
        if journal is None:
            how = "nothing was recorded (no journal=): a rerun starts over"
        else:
            how = (
                f"{recorded} outcomes were recorded in {journal!r} by this run: run the "
                f"same job again with that journal to resume where it stopped"
            )
        super().__init__(f"stopped by {name}; {how}")


class JournalError(ParallelizeError):
    """A journal cannot be used for this run, or a result cannot be stored in it.

    The message says why and what to do; nothing already recorded is changed.

    Attributes:
        path: The journal's location (a file path, a URL), or None.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class MissingDependencyError(ParallelizeError, ImportError):
    """An optional integration was used without its extra installed.

    Attributes:
        extra: The name of the extra that provides it, as in
            ``pip install "parallelize[extra]"``.
    """

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(
            f'{feature} needs the {module!r} package: pip install "parallelize[{extra}]"',
            name=module,
        )


class RetriesExhausted(ParallelizeError):  # noqa: N818 - says what happened, as it reads
    """An item's action kept returning a result that ``Retry.if_result`` rejects.

    When the last attempt *raises*, the item fails with that exception itself;
    this is for results that were retried without raising (an HTTP 503 response).

    Attributes:
        item: The input item.
        attempts: How many times the action was called for it.
        last_result: What the last attempt returned.
    """

    def __init__(self, item: Any, attempts: int, last_result: Any) -> None:
        self.item = item
        self.attempts = attempts
        self.last_result = last_result
        super().__init__(
            f"item {item!r}: still retryable after {attempts} attempts, last result {last_result!r}"
        )


class RetryWaitTooLong(ParallelizeError):  # noqa: N818 - says what happened, as it reads
    """The wait before an item's next attempt was longer than ``Retry.max_wait``.

    A service's ``Retry-After`` of an hour would hold the item (and, without a
    journal, its outcome) for an hour: the item fails at once instead. The last
    failure is :attr:`last` (and the ``__cause__`` when it is an exception).

    Attributes:
        item: The input item.
        attempts: How many times the action was called for it.
        wait: The wait asked for, in seconds.
        max_wait: The cap it passed, in seconds.
        last: The last attempt's failure: an exception, or the result retried.

    Added in 0.2.
    """

    def __init__(
        self, item: Any, attempts: int, wait: float, max_wait: float, last: object
    ) -> None:
        self.item = item
        self.attempts = attempts
        self.wait = wait
        self.max_wait = max_wait
        self.last = last
        super().__init__(
            f"the next attempt would wait {wait:g} s, longer than max_wait {max_wait:g} s "
            f"(after {attempts} attempts; last: {last!r})"
        )


class DeadlineExceeded(ParallelizeError, TimeoutError):  # noqa: N818 - as it reads
    """An item's ``deadline`` passed: before or during an attempt, or before its next.

    A :class:`TimeoutError`, as the per-attempt ``timeout``'s, but its own class:
    the whole item is out of time, and it is never retried. The last failure, if
    any, is :attr:`last` (and the ``__cause__`` when it is an exception).

    Attributes:
        item: The input item.
        deadline: The item's deadline, in seconds from its first attempt.
        attempts: How many times the action was called for it.
        last: The last attempt's failure, or None if none failed.

    Added in 0.2.
    """

    def __init__(self, item: Any, deadline: float, attempts: int, last: object = None) -> None:
        self.item = item
        self.deadline = deadline
        self.attempts = attempts
        self.last = last
        after = f"after {attempts} attempts" if attempts else "before any attempt"
        last_text = "" if last is None else f"; last: {last!r}"
        super().__init__(f"the item's deadline of {deadline:g} s has passed ({after}{last_text})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.item, self.deadline, self.attempts, self.last))


class KeyDownError(ParallelizeError, ConnectionError):
    """The item's key (its host) is down: :class:`~parallelize.PerKey`'s breaker is open.

    The item failed at once, without an attempt: ``failures`` consecutive attempts of
    its key failed as down (connection errors, timeouts), and the key's items fail
    this way until a probe, let through after ``cooldown`` seconds, succeeds. The last
    of those failures is the ``__cause__``. Never retried (a retry would only wait to
    be refused again); a ``ConnectionError``, as the failures that opened the breaker.

    The command line records it as ``"host_down"`` (``fetch``) or ``"key_down"``
    (``run``).

    Attributes:
        key: The item's key.
        failures: Consecutive down outcomes of the key when it was refused.
        cooldown: Seconds the breaker stays open from its last opening.

    Added in 0.3.
    """

    def __init__(self, key: Any, failures: int, cooldown: float) -> None:
        self.key = key
        self.failures = failures
        self.cooldown = cooldown
        failed = "its last attempt" if failures == 1 else f"{failures} attempts in a row"
        super().__init__(
            f"{key!r} is down: {failed} failed (a connection error or a timeout); its "
            f"items fail at once until a probe, {cooldown:g} s after the breaker opened, "
            f"succeeds"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.failures, self.cooldown))


class UnstorableResult(ParallelizeError):  # noqa: N818 - says what it is, as it reads
    """An item's result that the journal's codec cannot store: the item fails alone.

    Found before the result is yielded, so the ``async for`` body never sees a result
    that would be lost; the failure is recorded in its place (a rerun runs the item
    again). Return plain data from the action, or give the journal a ``codec=``
    that stores this type.

    Attributes:
        item: The input item.
        result: The result that could not be stored.

    Added in 0.2.
    """

    def __init__(self, item: Any, result: Any, why: str) -> None:
        self.item = item
        self.result = result
        super().__init__(
            f"the journal's codec cannot store the result of item {item!r}, a "
            f"{type(result).__name__}: {why}. Return plain data (str, numbers, lists, "
            f"dicts with str keys), or give the journal a codec= that stores it"
        )


class ProcessCrashed(ParallelizeError):  # noqa: N818 - says what happened, as it reads
    """The child process running an item (``executor="process"``) died before replying.

    It was killed (SIGKILL, the out-of-memory killer), crashed in C code, or called
    ``os._exit()``. Only the item it was running fails; the next item gets a new
    process. To try such items again, name it: ``Retry(on=ProcessCrashed)``; an item
    that kills its process every time fails after the last attempt instead of looping.

    Attributes:
        pid: The dead process's id.
        starting: True if it died before it could run anything (it could not
            import the action, say): then no item can run.
        exitcode: Its exit code: negative for a signal (``-9`` for SIGKILL), None if
            it could not be told.
    """

    def __init__(self, pid: int | None, exitcode: int | None, *, starting: bool = False) -> None:
        import signal as signals  # noqa: PLC0415 - only for the name in the message

        self.pid = pid
        self.exitcode = exitcode
        self.starting = starting
        if exitcode is None:
            how = "its exit code is unknown"
        elif exitcode < 0:
            try:
                how = f"killed by {signals.Signals(-exitcode).name}"
            except ValueError:
                how = f"killed by signal {-exitcode}"
        else:
            how = f"exit code {exitcode}"
        if starting:
            message = (
                f"a worker process (pid {pid}) died while starting ({how}), before it "
                f"could run this item; its own error is printed above. A script that "
                f'uses child processes (executor="process", processes=) needs the '
                f'`if __name__ == "__main__":` guard '
                f"around its main code, and the action must be importable from its module"
            )
        else:
            message = (
                f"the worker process (pid {pid}) running this item died ({how}); the "
                f"next items get a new process; Retry(on=ProcessCrashed) would try this "
                f"one again"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(type(self), starting=self.starting), (self.pid, self.exitcode))


def explain_spread(error: TypeError, item: Any, name: str) -> TypeError:
    """Say where the arguments came from when a spread item does not fit the action.

    A list or tuple item is spread as the action's arguments (the seed article's
    rule): ``process_batch([1, 2, 3])`` is called as ``process_batch(1, 2, 3)``.
    The interpreter's "takes 1 positional argument but 3 were given" does not say
    so: the returned error does, and how to pass the list whole, with the
    original as its cause. Any other error is returned unchanged.
    """
    text = str(error)
    if f"{name}() " not in text or "argument" not in text:
        return error
    shown = repr(item) if len(repr(item)) <= 60 else f"{type(item).__name__} of {len(item)}"
    explained = TypeError(
        f"{text}: parallelize spreads a list or tuple item as the action's arguments, "
        f"so item {shown} was called as {name}(*item). To pass it whole, make each "
        f"item a 1-tuple, (item,), e.g. ((batch,) for batch in batches)"
    )
    explained.__cause__ = error
    return explained
