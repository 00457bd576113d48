"""Per-item policies: retry, backoff, timeouts, and reading a service's Retry-After.

The math here is pure (functions of the attempt number, the settings, a random
draw and the current time) so that it can be tested without an event loop; the
engine does the waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Never, TypeVar, final, overload

from ._errors import DeadlineExceeded, KeyDownError, RetriesExhausted, RetryWaitTooLong
from ._limits._base import NO_OUTCOME, Limit, Permit
from ._util import check_callable, check_int, check_number, check_seconds

if TYPE_CHECKING:
    from ._limits import AdaptiveLimit, KeyedLimits

__all__ = (
    "Backoff",
    "ItemPolicy",
    "ItemState",
    "Retry",
    "parse_retry_after",
    "retry_after_of",
)


# The result type a Retry's if_result reads. Covariant, although if_result takes it
# as an argument: mypy solves parallelize()'s result type from retry= before the
# action (a callable, inferred in its second pass), so a contravariant Retry with no
# if_result (Retry[object]) would widen every run's results to object. Covariant,
# that Retry is Retry[Never], which fits every action and decides nothing.
R_co = TypeVar("R_co", covariant=True)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter and a cap, between the attempts of one item.

    The delay before retry ``n`` (1 for the first retry) is
    ``min(maximum, initial * multiplier ** (n - 1))``, reduced by a random fraction
    of at most ``jitter`` of itself: ``jitter=0`` waits exactly that long,
    ``jitter=1`` anywhere between 0 and that long ("full jitter"). Jitter spreads
    the retries of items that failed together, so they do not hit the service
    again at the same moment.

    Attributes:
        initial: Seconds before the first retry (default 0.1).
        maximum: The cap on any one delay, in seconds (default 30).
        multiplier: Growth factor per retry, >= 1 (default 2).
        jitter: Fraction of the delay drawn at random, between 0 and 1 (default 0.5).

    Added in 0.1.
    """

    initial: float = 0.1
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        check_seconds("Backoff.initial", self.initial, zero=True, infinite=True)
        check_seconds("Backoff.maximum", self.maximum, zero=True, infinite=True)
        check_number("Backoff.multiplier", self.multiplier, at_least=1)
        check_number("Backoff.jitter", self.jitter, at_least=0, at_most=1)

    def delay(self, retry: int, draw: float) -> float:
        """Return the seconds to wait before retry number ``retry`` (>= 1).

        Args:
            retry: 1 before the second attempt, 2 before the third, ...
            draw: A uniform random number in [0, 1).
        """
        try:
            base = self.initial * self.multiplier ** (retry - 1)
        except OverflowError:  # a huge retry number: the cap applies anyway
            base = self.maximum
        return min(self.maximum, base) * (1 - self.jitter * draw)


def _check_exception_types(
    value: object,
) -> tuple[type[Exception], ...]:
    types = value if isinstance(value, tuple) else (value,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"Retry.on must be an exception type or a tuple of them, got {value!r}")
        if not issubclass(kind, Exception):
            # CancelledError, KeyboardInterrupt, SystemExit: retrying them breaks
            # cancellation and timeouts (tenacity issue 529).
            raise ValueError(  # noqa: TRY004 - a type, but not an allowed one
                f"Retry.on must name Exception subclasses; {kind.__name__} is a "
                f"BaseException that parallelize never retries"
            )
    return types


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Retry(Generic[R_co]):
    """Which failures of an item are tried again, how often, and after how long.

    ``on`` has no default on purpose: name the failures you expect (a retry of a
    bug only hides it). An exception of one of the ``on`` types (or one for which
    ``if_exception`` returns True) is an *expected* failure and is retried; any other
    exception is *unexpected*: it ends the item at once and is logged with its
    traceback. A result for which ``if_result`` returns True (an HTTP 503 response,
    say) is retried like an expected failure without anything being raised.

    Before each retry the item waits for the service's own ``Retry-After`` if the
    failure carries one (see :func:`retry_after_of`), else for the backoff delay.
    While it waits, its worker serves other items. A wait longer than ``max_wait``
    is not waited: the item fails at once with :class:`~parallelize.RetryWaitTooLong`
    (and one past the item's ``deadline`` with :class:`~parallelize.DeadlineExceeded`).
    Cancellation is never retried.

    Attributes:
        on: The exception types that are retried (``TimeoutError`` covers the
            per-attempt ``timeout``).
        attempts: The most calls of the action for one item, first one included
            (default 3; 1 disables retries).
        backoff: The delays between attempts (default ``Backoff()``).
        if_exception: Also retry an exception for which this returns True.
        if_result: Retry a returned value for which this returns True; if the last
            attempt still returns such a value, the item fails with
            :class:`~parallelize.RetriesExhausted` carrying it. It is given what
            one call of the action returns: the action's result, or for a
            generator action the list of the values it yielded.
        retry_after: Reads a service's requested delay from a failure (an exception
            or a result); default :func:`retry_after_of`. None ignores them.
        max_wait: The longest wait before one retry, in seconds (default 300); a
            ``Retry-After`` (or backoff) asking more fails the item at once. None:
            no cap. Added in 0.2.

    ``Retry`` is generic in the result type that ``if_result`` reads:
    ``Retry[T]`` suits an action returning ``T`` (``parallelize(fetch, urls, n,
    retry=...)`` rejects a mismatch), and a ``Retry`` without ``if_result`` is a
    ``Retry[Never]``, which suits every action. A ``lambda`` given inline to
    ``parallelize(..., retry=Retry(...))`` or ``then()`` gets its argument's type
    from the action; one built on its own line has nothing to get it from, so
    annotate the variable (``retry: Retry[ClientResponse] = Retry(...)``) or
    give ``if_result`` a ``def`` with a typed argument.

    Example:
        >>> retry: Retry[aiohttp.ClientResponse] = Retry(
        ...     on=(aiohttp.ClientError, TimeoutError), attempts=5,
        ...     if_result=lambda resp: resp.status in (429, 502, 503, 504))

    Added in 0.1. Generic (``Retry[T]``) since 0.2.
    """

    on: type[Exception] | tuple[type[Exception], ...]
    attempts: int = 3
    backoff: Backoff = Backoff()
    if_exception: Callable[[Exception], bool] | None = None
    if_result: Callable[[R_co], bool] | None = None
    retry_after: Callable[[object], float | None] | None = dataclasses.field(
        default_factory=lambda: retry_after_of
    )
    max_wait: float | None = 300.0

    if TYPE_CHECKING:
        # The type checker's view of the generated __init__ (the dataclass's runs):
        # without if_result nothing tells R_co, so the policy is a Retry[Never],
        # which needs no annotation and fits every action's result.
        @overload
        def __init__(
            self: Retry[Never],
            on: type[Exception] | tuple[type[Exception], ...],
            attempts: int = ...,
            backoff: Backoff = ...,
            if_exception: Callable[[Exception], bool] | None = ...,
            if_result: None = ...,
            retry_after: Callable[[object], float | None] | None = ...,
            max_wait: float | None = ...,
        ) -> None: ...
        @overload
        def __init__(
            self,
            on: type[Exception] | tuple[type[Exception], ...],
            attempts: int = ...,
            backoff: Backoff = ...,
            if_exception: Callable[[Exception], bool] | None = ...,
            *,
            if_result: Callable[[R_co], bool],
            retry_after: Callable[[object], float | None] | None = ...,
            max_wait: float | None = ...,
        ) -> None: ...
        def __init__(  # noqa: PLR0917 - the dataclass's positional order
            self,
            on: type[Exception] | tuple[type[Exception], ...],
            attempts: int = 3,
            backoff: Backoff = ...,
            if_exception: Callable[[Exception], bool] | None = None,
            if_result: Callable[[R_co], bool] | None = None,
            retry_after: Callable[[object], float | None] | None = ...,
            max_wait: float | None = 300.0,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "on", _check_exception_types(self.on))
        check_int("Retry.attempts", self.attempts, 1)
        if not isinstance(self.backoff, Backoff):
            raise TypeError(f"Retry.backoff must be a Backoff, got {self.backoff!r}")
        if self.max_wait is not None:
            check_seconds("Retry.max_wait", self.max_wait, zero=True, infinite=True)
        for name in ("if_exception", "if_result", "retry_after"):
            check_callable(f"Retry.{name}", getattr(self, name), none=True)

    def is_expected(self, error: Exception) -> bool:
        """Tell whether ``error`` is one of the failures this policy retries."""
        if isinstance(error, self.on):
            return True
        return self.if_exception is not None and bool(self.if_exception(error))


def parse_retry_after(value: str, *, now: float | None = None) -> float | None:
    """Parse an HTTP ``Retry-After`` value: delay-seconds or an HTTP-date.

    Returns:
        The seconds to wait (never negative), or None if the value is neither.
    """
    text = value.strip()
    if text.isdigit():
        return float(text)
    import email.utils  # noqa: PLC0415 - a date is rare; 2 ms of import at start

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _headers_of(thing: object) -> Mapping[str, str] | None:
    headers = getattr(thing, "headers", None)
    if headers is None:  # httpx.HTTPStatusError carries the response
        headers = getattr(getattr(thing, "response", None), "headers", None)
    return headers if isinstance(headers, Mapping) else None


def retry_after_of(failure: object) -> float | None:
    """Return the delay a failure asks for, in seconds, or None.

    Understands, without importing any HTTP client: an exception or result with a
    ``retry_after`` attribute (seconds); an object with ``headers`` holding
    ``Retry-After`` (aiohttp's ``ClientResponse`` and ``ClientResponseError``,
    httpx's ``Response``); and one whose ``response`` has such headers (httpx's
    ``HTTPStatusError``).
    """
    explicit = getattr(failure, "retry_after", None)
    if isinstance(explicit, int | float) and not isinstance(explicit, bool):
        return max(0.0, float(explicit))
    headers = _headers_of(failure)
    if headers is None:
        return None
    value = headers.get("Retry-After")
    return parse_retry_after(value) if isinstance(value, str) else None


@final
class ItemState:
    """One item's progress through its attempts (internal, mutable)."""

    __slots__ = (
        "attempts",
        "deadline_at",
        "duration",
        "index",
        "item",
        "key_entry",
        "permit",
        "started",
        "tag",
    )

    def __init__(self, index: int, item: Any, started: float, deadline_at: float | None) -> None:
        self.index = index
        self.item = item
        self.attempts = 0
        self.started = started  # loop time of the first attempt's start
        self.deadline_at = deadline_at  # loop time after which no attempt may run
        self.tag: Any = None  # the journal's entry for the item, in a journaled run
        self.duration = 0.0  # seconds the last attempt's action took (0: none ran)
        # With PerKey limits: the item's key's state, and its next attempt's permit
        # on that key (or the exception the item fails with at once), taken by the
        # item source.
        self.key_entry: Any = None
        self.permit: Any = None


# What an attempt comes to: the engine's next step for the item.
DONE = 0  # payload: the result
RETRY = 1  # payload: the failure (exception or result); delay: seconds to wait
FAIL = 2  # payload: the exception that ends the item; expected: named by the user

Verdict = tuple[int, Any, float, bool]  # (kind, payload, delay, expected)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ItemPolicy:
    """Timeouts, retries and the limits that every attempt of an item goes through."""

    timeout: float | None = None
    deadline: float | None = None
    retry: Retry[Any] | None = None
    # Every attempt passes these in order (parallelize._limits.Limit): the adaptive
    # limit's place before the rate limit's slot, since taking them the other way
    # round would let slots granted while waiting for a place bunch up into a burst.
    limits: tuple[Limit, ...] = ()
    adaptive: AdaptiveLimit | None = None  # also among the limits: run.adaptive
    # Limits per key: taken by the item source before an attempt reaches attempt()
    # (set aside there, never waited for), the permit on ItemState.permit. A
    # Retry-After then pauses the item's key alone.
    keyed: KeyedLimits | None = None
    # Attempts of this run waiting in a limit's admit(): Statistics.waiting_limit.
    waiting: list[int] = dataclasses.field(default_factory=lambda: [0])

    def new_state(self, index: int, item: Any, now: float) -> ItemState:
        deadline_at = None if self.deadline is None else now + self.deadline
        return ItemState(index, item, now, deadline_at)

    async def attempt(
        self, action: Callable[..., Any], unpack: bool, state: ItemState, draw: float
    ) -> Verdict:
        """Run one attempt of ``state``'s item and tell what comes next."""
        limits = self.limits
        keyed = state.permit
        if keyed is not None:
            state.permit = None
            if isinstance(keyed, BaseException):
                # Refused by its key (down), or the key function raised: no attempt.
                state.duration = 0.0
                return FAIL, keyed, 0.0, isinstance(keyed, KeyDownError)
        if not limits and keyed is None:
            return await self._attempt(action, unpack, state, draw, ())
        permits: list[Permit] = [] if keyed is None else [keyed]
        try:
            if limits:
                waiting = self.waiting
                waiting[0] += 1
                try:
                    for limit in limits:
                        # One by one: a permit taken is given back if a later one fails.
                        permits.append(await limit.admit(state.item))  # noqa: PERF401
                finally:
                    waiting[0] -= 1
            return await self._attempt(action, unpack, state, draw, permits)
        finally:
            # Whatever _attempt has not given back (it never ran, or was cancelled).
            while permits:
                permits.pop().release(NO_OUTCOME)

    async def _attempt(  # noqa: C901 - one attempt, each outcome inline
        self,
        action: Callable[..., Any],
        unpack: bool,
        state: ItemState,
        draw: float,
        permits: list[Permit] | tuple[()],
    ) -> Verdict:
        loop = asyncio.get_running_loop()
        now = loop.time()
        limit = None if self.timeout is None else now + self.timeout
        if state.deadline_at is not None:
            if now >= state.deadline_at:
                state.duration = 0.0
                return FAIL, self._past_deadline(state, None), 0.0, True
            limit = state.deadline_at if limit is None else min(limit, state.deadline_at)
        state.attempts += 1
        item = state.item
        # No timer without a time limit (a journal or a rate limit alone): a timeout
        # context costs a few microseconds per attempt for nothing.
        timer = None if limit is None else asyncio.timeout_at(limit)
        if permits:
            for permit in permits:
                permit.start()
        # The duration by the performance counter: uvloop's loop.time() moves in ms.
        began = time.perf_counter()
        try:
            if timer is None:
                value = await (action(*item) if unpack else action(item))
            else:
                async with timer:
                    value = await (action(*item) if unpack else action(item))
        except Exception as error:
            state.duration = time.perf_counter() - began
            end = loop.time()
            if permits:
                _release(permits, error)
            # timer.expired(): our timeout (or deadline) ended the attempt, as opposed
            # to a TimeoutError raised by the action itself.
            expired = timer is not None and timer.expired()
            if expired and state.deadline_at is not None and limit == state.deadline_at:
                return FAIL, self._past_deadline(state, error), 0.0, True
            return self._after_exception(error, state, draw, end, expired)
        state.duration = time.perf_counter() - began
        if permits:
            _release(permits, value)
        retry = self.retry
        if retry is None or retry.if_result is None or not retry.if_result(value):
            return DONE, value, 0.0, False
        return self._after_retryable(value, state, draw, loop.time())

    def _after_exception(
        self, error: Exception, state: ItemState, draw: float, now: float, timed_out: bool
    ) -> Verdict:
        retry = self.retry
        if retry is None or not retry.is_expected(error):
            return FAIL, error, 0.0, timed_out
        return self._after_retryable(error, state, draw, now)

    def _after_retryable(
        self, failure: object, state: ItemState, draw: float, now: float
    ) -> Verdict:
        retry = self.retry
        assert retry is not None
        error = failure if isinstance(failure, Exception) else None
        if state.attempts >= retry.attempts:
            return FAIL, error or RetriesExhausted(state.item, state.attempts, failure), 0.0, True
        asked = None if retry.retry_after is None else retry.retry_after(failure)
        delay = retry.backoff.delay(state.attempts, draw) if asked is None else asked
        if retry.max_wait is not None and delay > retry.max_wait:
            # Not worth holding the item (and its outcome) for: it fails now.
            late = RetryWaitTooLong(state.item, state.attempts, delay, retry.max_wait, failure)
            late.__cause__ = error
            return FAIL, late, 0.0, True
        if state.deadline_at is not None and now + delay >= state.deadline_at:
            # No time left for another attempt: end the item now.
            return FAIL, self._past_deadline(state, failure), 0.0, True
        if asked is not None:
            if self.keyed is not None:
                # Limits per key: the service of this key asked, the others did not.
                self.keyed.pause(state, now + asked)
            elif self.limits:
                # The service asked everybody to wait, not only this item.
                until = time.monotonic() + asked
                for each in self.limits:
                    each.pause_until(until)
        return RETRY, failure, delay, True

    def _past_deadline(self, state: ItemState, last: object) -> DeadlineExceeded:
        assert self.deadline is not None
        error = DeadlineExceeded(state.item, self.deadline, state.attempts, last)
        if isinstance(last, BaseException):
            error.__cause__ = last
        return error


def _release(permits: list[Permit], outcome: object) -> None:
    """Give the permits back with the attempt's outcome, the last taken first."""
    while permits:
        permits.pop().release(outcome)
