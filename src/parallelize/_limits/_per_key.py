"""Limits per key, as a user writes them: :class:`PerKey`, its key functions, its figures.

The run's state of them lives beside: ``_keyed.py`` (limits that set items aside)
and ``_breakers.py`` (a breaker alone, around the action).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable
from typing import Any, Protocol, final, runtime_checkable

from parallelize._util import check_bool, check_callable, check_int, check_number, check_seconds

__all__ = ("KeyStatistics", "PerKey", "SharedKeys", "down_of", "host_of")

# Connection failures of the HTTP clients we know, by class name (none imported).
_DOWN_ERROR_NAMES = frozenset(
    {"ClientConnectionError", "ServerTimeoutError", "NetworkError", "TimeoutException"}
)


def down_of(outcome: object) -> bool:
    """Tell whether an attempt's outcome says its key (its host) is down.

    The default ``down`` predicate of :class:`PerKey`: a ``TimeoutError`` (the
    ``timeout`` option's too) or a ``ConnectionError`` (``parallelize.http``'s
    ``ConnectError`` and ``RequestTimeoutError`` are both), and aiohttp's and httpx's
    connection and timeout errors. A reply, whatever its status, is not: the host
    answered.

    Added in 0.3.
    """
    if not isinstance(outcome, BaseException):
        return False
    if isinstance(outcome, TimeoutError | ConnectionError):
        return True
    return any(kind.__name__ in _DOWN_ERROR_NAMES for kind in type(outcome).__mro__)


def host_of(url: object) -> str:
    """Return the key of a URL for :class:`PerKey`: its host and port, lower case.

    ``https://Example.com/a`` and ``https://example.com:443/b`` are one key
    (``example.com:443``); ``http://example.com`` is another (``example.com:80``). An
    item that is not a URL string raises ``ValueError`` (that item fails, alone).

    Added in 0.3.
    """
    if not isinstance(url, str):
        raise TypeError(f"host_of() takes a URL string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not an absolute URL (no scheme://): {url!r}")
    scheme = scheme.lower()
    netloc = rest
    for stop in "/?#":
        netloc = netloc.partition(stop)[0]
    netloc = netloc.rpartition("@")[2].lower()
    if netloc.startswith("["):  # an IPv6 literal
        host, _, port = netloc.partition("]")
        host += "]"
        port = port.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    if not host:
        raise ValueError(f"a URL with no host: {url!r}")
    if not port:
        port = {"http": "80", "https": "443", "ws": "80", "wss": "443"}.get(scheme, "")
    return f"{host}:{port}" if port else host


@runtime_checkable
class SharedKeys(Protocol):
    """Limits per key kept outside this process: the whole fleet's (in Redis).

    A run whose :class:`PerKey` has ``shared=`` asks it once its own limits admit
    an attempt: :meth:`acquire` takes the key's place in the fleet (and its rate
    slot), or says how long to hold the key before asking again; meanwhile the
    item waits aside, first of its key, and the worker takes another.

    Added in 0.3.
    """

    async def acquire(self, key: Hashable) -> float | None:
        """Take a fleet-wide place of ``key``: None when taken, else seconds to wait."""
        ...

    def release(self, key: Hashable, outcome: object) -> None:
        """Give back the place :meth:`acquire` took (without waiting: I/O is queued)."""


@final
@dataclasses.dataclass(frozen=True, slots=True)
class PerKey:
    """Limits that apply to each key apart: ``parallelize(..., per_key=PerKey(...))``.

    ``key`` maps an item to its key (:func:`host_of` for URLs); every other field is
    a limit that each key gets its own copy of, all optional (give at least one)
    and combinable with the run's own ``numworkers``, ``rate_limit`` and
    ``adaptive``. An attempt whose key is at a limit is set aside and its worker
    takes an item of another key; keys waiting are served round-robin.

    Attributes:
        key: A function of an item, its key (hashable). One that raises fails that
            item alone, with its exception.
        concurrency: The most attempts of one key in flight (None: no such limit).
        rate: The most attempts of one key per second (None: no such limit), spread
            evenly (GCRA), with ``burst``.
        burst: Attempts of one key that may go at once after a quiet spell
            (default 1: none bunch up).
        adaptive: Give each key its own adaptive concurrency limit (see
            :class:`~parallelize.AdaptiveLimit`), fed by that key's latency and
            overloads, at most ``concurrency`` (or ``numworkers``).
        failures: The circuit breaker: this many consecutive ``down`` outcomes of a
            key open its breaker, and its items fail at once with
            :class:`~parallelize.KeyDownError` until a probe succeeds. None (the
            default) turns it off.
        cooldown: Seconds an open breaker waits before its probe (default 10);
            doubled each time the probe fails, up to ``max_cooldown`` (default 300).
        down: Tells a "key is down" outcome (default :func:`down_of`: connection
            errors and timeouts).
        set_aside: The most items set aside at once, all keys together (default
            10,000). At the bound the run reads no further ahead until a key can
            go again (``Statistics.keys.held`` counts those times).
        keys: How many idle keys keep their state (default 10,000); older idle keys
            with nothing to remember are forgotten.
        shared: The same limits kept for the whole fleet of a Redis run
            (:meth:`parallelize.redis.RedisQueue.per_key`), or any
            :class:`SharedKeys`: asked after this process's own limits.

    Example:
        >>> polite = PerKey(host_of, concurrency=2, rate=1.0, failures=5)
        >>> async for page in parallelize(fetch, urls, 200, per_key=polite):
        ...     ...

    Added in 0.3.
    """

    key: Callable[[Any], Hashable]
    concurrency: int | None = None
    rate: float | None = None
    burst: int = 1
    adaptive: bool = False
    failures: int | None = None
    cooldown: float = 10.0
    max_cooldown: float = 300.0
    down: Callable[[object], bool] = down_of
    set_aside: int = 10_000
    keys: int = 10_000
    shared: SharedKeys | None = None

    def __post_init__(self) -> None:
        check_callable("PerKey.key", self.key, "a function of an item, its key")
        if self.concurrency is not None:
            check_int("PerKey.concurrency", self.concurrency, 1)
        if self.rate is not None:
            check_number("PerKey.rate", self.rate, above=0)
            if self.rate == math.inf:
                raise ValueError("PerKey.rate must be finite; None sets no rate")
        check_int("PerKey.burst", self.burst, 1)
        check_bool("PerKey.adaptive", self.adaptive)
        if self.failures is not None:
            check_int("PerKey.failures", self.failures, 1)
        check_seconds("PerKey.cooldown", self.cooldown, zero=True)
        check_seconds("PerKey.max_cooldown", self.max_cooldown, zero=True)
        if self.max_cooldown < self.cooldown:
            raise ValueError(
                f"PerKey.max_cooldown ({self.max_cooldown:g}) must be >= cooldown "
                f"({self.cooldown:g})"
            )
        check_callable("PerKey.down", self.down, "a function of an outcome")
        check_int("PerKey.set_aside", self.set_aside, 1)
        check_int("PerKey.keys", self.keys, 1)
        if self.shared is not None and not isinstance(self.shared, SharedKeys):
            raise TypeError(
                f"PerKey.shared must have acquire() and release() (a SharedKeys, such as "
                f"RedisQueue.per_key()'s), got {self.shared!r}"
            )
        if (
            self.concurrency is None
            and self.rate is None
            and not self.adaptive
            and self.failures is None
        ):
            raise ValueError(
                "PerKey limits nothing: give concurrency=, rate=, adaptive=True or "
                "failures= (or drop per_key=)"
            )


@final
@dataclasses.dataclass(frozen=True, slots=True)
class KeyStatistics:
    """The keys of a run with :class:`PerKey` limits, at one moment.

    Attributes:
        keys: Keys whose state is kept (idle ones with nothing to remember are
            dropped past ``PerKey.keys``).
        active: Keys with an attempt in flight.
        waiting: Keys with items set aside.
        paused: Keys held by a ``Retry-After``.
        open: Keys whose breaker is open or half open.
        set_aside: Items set aside, all keys together.
        set_aside_limit: ``PerKey.set_aside``.
        held: Times the run stopped reading ahead because ``set_aside`` was full.
        down: Items failed at once with :class:`~parallelize.KeyDownError`.
        top: Up to ten keys with the most items set aside: ``(key, set aside, in
            flight)``, the most first.
        limited: False for a breaker alone (``PerKey(key, failures=K)`` with no
            other policy, :class:`~parallelize.KeyBreakers`): then only keys with
            failures are kept (``keys``), and none is counted active or set aside.

    Added in 0.3.
    """

    keys: int
    active: int
    waiting: int
    paused: int
    open: int
    set_aside: int
    set_aside_limit: int
    held: int
    down: int
    top: tuple[tuple[Hashable, int, int], ...]
    limited: bool = True
