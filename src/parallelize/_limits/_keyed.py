"""Limits per key (a host, a tenant), with no head-of-line blocking.

Each key gets its own concurrency, rate, adaptive limit and circuit breaker.

:class:`PerKey` is what a user writes (``parallelize(..., per_key=PerKey(host_of,
concurrency=2))``); :class:`KeyedLimits` is one run's state of it, which the item
source asks before an attempt goes (``_engine/_sources.py``). An attempt whose key
cannot go now is **set aside** in its key's queue, and the worker takes an item of
another key: the keyed limit never blocks a worker the way a global limit's
``admit()`` does, which for a limit per key would be head-of-line blocking (one slow
host holding every worker). Keys with items set aside and free to go wait in a ring,
served round-robin, so a key with a million items cannot starve one with ten.

Each key holds:

* its **concurrency**: attempts in flight, at most ``concurrency`` (or its adaptive
  limit, the lower);
* its **rate**: GCRA (the generic cell rate algorithm): a theoretical arrival time
  ``tat`` moved on by ``1 / rate`` per attempt; an attempt may go once ``now >= tat -
  (burst - 1) / rate``. Smooth, with a burst, one float per key;
* its **pause**: a ``Retry-After`` on an overload outcome (429, 503, a timeout...) of
  this key holds this key alone;
* its **breaker**: ``failures`` consecutive "down" outcomes (a connection error or a
  timeout, :func:`down_of`) open it: its items set aside, and those that come while it
  is open, fail at once with :class:`~parallelize.KeyDownError`. After ``cooldown``
  one attempt goes as a probe (half open); its success closes the breaker, its
  failure opens it again for twice as long (at most ``max_cooldown``): Envoy's
  outlier ejection and resilience4j's breaker, by consecutive failures;
* its **adaptive limit**, when ``adaptive=True``: an :class:`~._estimator.Estimator`
  fed by this key's latencies and overloads alone.

The state of an idle key with nothing to remember (no pause, no debt of rate, a
closed breaker with no failures) is dropped past ``keys`` idle keys, oldest first,
so memory does not grow with the number of keys ever seen.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Final, final

from parallelize._util import check_number

from ._adaptive import overload_of
from ._base import NO_OUTCOME
from ._breakers import CLOSED, HALF_OPEN, OPEN, count_outcome, refusal
from ._estimator import Estimator
from ._per_key import KeyStatistics

if TYPE_CHECKING:
    from parallelize._engine._flow import Flow
    from parallelize._errors import KeyDownError
    from parallelize._policies import ItemState

    from ._per_key import PerKey

__all__ = ("KeyedLimits",)

# A Retry-After of one key is honoured up to this long (a key paused for a day is a
# key whose items never run: a Retry.max_wait fails them instead, as it would alone).
_MAX_PAUSE: Final = 3600.0

# What a key may do now (KeyedLimits._verdict), besides a time to wait until.
_GO: Final = -1.0
_FAIL: Final = -2.0
_BLOCKED: Final = math.inf  # until an attempt of the key ends


@final
class _Key:
    """One key's state."""

    __slots__ = (
        "breaker",
        "cooldown",
        "estimator",
        "failures",
        "in_action",
        "in_flight",
        "interval",
        "items",
        "key",
        "last_down",
        "open_until",
        "paused_until",
        "ringed",
        "seq",
        "tat",
        "timer_at",
    )

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.items: deque[ItemState] = deque()
        self.in_flight = 0  # attempts admitted and not yet released
        self.in_action = 0  # of those, running their action
        self.tat = 0.0  # GCRA's theoretical arrival time
        self.interval: float | None = None  # this key's own 1 / rate (set_rate)
        self.paused_until = 0.0
        self.breaker = CLOSED
        self.failures = 0  # consecutive down outcomes
        self.cooldown = 0.0  # the current open spell's length
        self.open_until = 0.0
        self.last_down: BaseException | None = None
        self.estimator: Estimator | None = None
        self.seq = 0  # the adaptive estimator's call numbers
        self.ringed = False  # in the ring of keys ready to go
        self.timer_at = 0.0  # a timer is set for this key at this time (0: none)

    def neutral(self, now: float) -> bool:
        """Whether forgetting this key loses nothing (but its adaptive limit)."""
        return self.forgettable(now) and self.tat <= now and not self.failures

    def forgettable(self, now: float) -> bool:
        """Whether this idle key may be forgotten to bound the keys kept.

        Not while it has items, attempts in flight, a pause, an open breaker or a
        rate of its own. A forgotten key loses its failures counted below the
        breaker's K and a rate slot still ahead (it is the oldest idle key then:
        its slot has long passed but for the busiest of runs).
        """
        return (
            self.interval is None
            and not self.items
            and not self.in_flight
            and self.paused_until <= now
            and self.breaker == CLOSED
        )


@final
class _KeyPermit:
    """One attempt's hold on its key (the :class:`~parallelize.Permit` shape)."""

    __slots__ = ("entry", "limits", "seq", "shared", "started")

    def __init__(self, limits: KeyedLimits, entry: _Key) -> None:
        self.limits = limits
        self.entry = entry
        self.seq = entry.seq
        entry.seq += 1
        self.started = 0.0
        self.shared = False  # it holds a place of the fleet's too (SharedKeys)

    def start(self) -> None:
        entry = self.entry
        entry.in_action += 1
        if entry.estimator is not None:
            entry.estimator.started(entry.in_action)
        self.started = time.perf_counter()

    def release(self, outcome: object) -> None:
        self.limits.released(self, outcome)


def _wake_nothing() -> None:
    pass


@final
class KeyedLimits:
    """One run's keys: their limits, their items set aside, the ring of ready keys.

    ``Run.keys`` of a run with ``per_key=``: read its :meth:`statistics`, give a key a
    rate of its own with :meth:`set_rate`. The rest is the engine's: the item source
    calls :meth:`route` for each attempt and :meth:`ready` for a set-aside one that
    may go now; the attempt's permit (on ``ItemState.permit``) comes back with its
    outcome.

    Added in 0.3.
    """

    __slots__ = (
        "_entries",
        "_high",
        "_idle",
        "_interval",
        "_ring",
        "_timers",
        "clock",
        "down",
        "held",
        "holding",
        "set_aside",
        "settings",
        "shared",
        "wake",
    )

    def __init__(self, settings: PerKey, numworkers: int) -> None:
        self.settings = settings
        self._entries: dict[Hashable, _Key] = {}
        self._idle: OrderedDict[Hashable, None] = OrderedDict()  # neutral keys, oldest first
        self._ring: deque[_Key] = deque()
        self._timers: list[tuple[float, int, _Key]] = []
        self._interval = 0.0 if settings.rate is None else 1.0 / settings.rate
        self._high = numworkers if settings.concurrency is None else settings.concurrency
        self.shared = settings.shared
        self.set_aside = 0
        self.held = 0  # times reading ahead stopped at the bound
        self.holding = False  # reading ahead is stopped at the bound now
        self.down = 0  # items failed at once, their key down
        # Wakes a worker: a key became ready (the run's Flow.wake_worker).
        self.wake: Callable[[], None] = _wake_nothing
        # The loop's clock, the one the item source and its timers read.
        self.clock: Callable[[], float] = time.monotonic

    def bind(self, flow: Flow) -> None:
        """Wake the run's workers when a key becomes ready; read its loop's clock."""
        self.wake = flow.wake_worker
        if flow.loop is not None:
            self.clock = flow.loop.time

    @property
    def full(self) -> bool:
        """Whether as many items are set aside as the bound allows."""
        return self.set_aside >= self.settings.set_aside

    # -- the item source's side ------------------------------------------------------

    def route(self, state: ItemState, now: float) -> bool:
        """Admit ``state``'s next attempt, or set it aside; True if it goes now.

        When it goes, ``state.permit`` is its permit, or the exception it fails with
        at once (its key is down, or the key function raised on its item).
        """
        entry = state.key_entry
        if entry is None:
            try:
                key = self.settings.key(state.item)
                hash(key)
            except Exception as exc:  # that item fails, alone, with it
                state.permit = exc
                return True
            entry = self._entry(key)
            state.key_entry = entry
        elif self._entries.get(entry.key) is not entry:  # forgotten while it waited to retry
            entry = state.key_entry = self._entry(entry.key)
        if entry.items:
            self._set_aside(entry, state, now)  # after the key's earlier items
            return False
        verdict = self._verdict(entry, now)
        if verdict == _GO:
            state.permit = self._take(entry)
            return True
        if verdict == _FAIL:
            state.permit = self._refused(entry)
            return True
        self._set_aside(entry, state, now)
        return False

    def ready(self, now: float) -> ItemState | None:
        """Return a set-aside item whose key may go now (its permit taken), or None."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, entry = heapq.heappop(timers)
            if entry.timer_at != when:
                continue  # stale: the key's timer was set again since (or it went)
            entry.timer_at = 0.0
            if entry.items and not entry.ringed:
                entry.ringed = True
                self._ring.append(entry)
        ring = self._ring
        while ring:
            entry = ring.popleft()
            entry.ringed = False
            if not entry.items:
                continue
            verdict = self._verdict(entry, now)
            if verdict == _GO:
                permit: Any = self._take(entry)
            elif verdict == _FAIL:
                permit = self._refused(entry)
            else:
                self._wait(entry, verdict)
                continue
            state = entry.items.popleft()
            self.set_aside -= 1
            state.permit = permit
            if entry.items:
                self._requeue(entry, now)  # to the back of the ring: round-robin
            return state
        return None

    async def admit_shared(self, state: ItemState) -> bool:
        """Take the fleet's place for ``state``'s admitted attempt; True if it goes.

        False: the fleet's limits hold its key; the item is set aside again, first
        of its key, and the key waits locally for as long as the fleet said.
        """
        permit = state.permit
        shared = self.shared
        if shared is None or not isinstance(permit, _KeyPermit):
            return True  # nothing to ask, or it fails at once
        entry = permit.entry
        try:
            wait = await shared.acquire(entry.key)
        except BaseException:
            state.permit = None
            self.released(permit, NO_OUTCOME)
            raise
        if wait is None:
            permit.shared = True
            return True
        state.permit = None
        entry.in_flight -= 1  # the local place, given back unused
        now = self.clock()
        entry.paused_until = max(entry.paused_until, now + max(wait, 0.001))
        entry.items.appendleft(state)
        self.set_aside += 1
        self._wait(entry, entry.paused_until)  # its timer brings the key back
        return False

    def wake_at(self) -> float | None:
        """Return the loop time of the earliest key timer (a rate, a pause, a cool-down)."""
        timers = self._timers
        while timers and timers[0][2].timer_at != timers[0][0]:
            heapq.heappop(timers)  # a stale timer
        return timers[0][0] if timers else None

    def has_ready(self) -> bool:
        """Whether a key in the ring may have an item to go."""
        return bool(self._ring)

    def set_rate(self, key: Hashable, rate: float | None) -> None:
        """Give ``key`` a rate of its own (attempts per second), or back ``PerKey.rate``.

        For what is learnt while the run goes on: a site's ``Crawl-delay``, a
        tenant's quota. The new spacing applies from the key's next attempt.

        Added in 0.3.
        """
        if rate is not None:
            check_number("rate", rate, above=0)
        entry = self._entry(key)
        entry.interval = None if rate is None or rate == math.inf else 1.0 / rate
        if entry.neutral(self.clock()):
            self._rest(entry)

    def pause(self, state: ItemState, until: float) -> None:
        """Hold ``state``'s key until ``until`` (loop time)."""
        entry = state.key_entry
        if entry is not None:
            entry.paused_until = max(entry.paused_until, until)

    # -- the permits' side ---------------------------------------------------------

    def released(self, permit: _KeyPermit, outcome: object) -> None:
        """End an attempt of the key: learn from its outcome, let the next go."""
        entry = permit.entry
        entry.in_flight -= 1
        if permit.started:
            entry.in_action -= 1
        if permit.shared:
            assert self.shared is not None
            self.shared.release(entry.key, outcome)
        now = self.clock()
        if outcome is not NO_OUTCOME:
            self._learn(entry, permit, outcome, now)
        elif entry.estimator is not None:
            entry.estimator.skip(permit.seq, entry.seq, now)
        if entry.items:
            if not entry.ringed:
                entry.ringed = True
                self._ring.append(entry)
            self.wake()
        elif not entry.in_flight:
            self._rest(entry)  # idle: forgotten, oldest first, past PerKey.keys

    def _learn(self, entry: _Key, permit: _KeyPermit, outcome: object, now: float) -> None:
        overload = overload_of(outcome)
        if overload:
            asked = _retry_after(outcome)
            if asked is not None:
                entry.paused_until = max(entry.paused_until, now + min(asked, _MAX_PAUSE))
        estimator = entry.estimator
        if estimator is not None:
            if overload:
                estimator.overload(permit.seq, entry.seq)
            elif isinstance(outcome, BaseException):
                estimator.skip(permit.seq, entry.seq, now)
            else:
                rtt = time.perf_counter() - permit.started
                estimator.sample(permit.seq, rtt, entry.seq, now)
        if self.settings.failures is not None:
            count_outcome(entry, self.settings, outcome, now)

    # -- inside --------------------------------------------------------------------

    def _entry(self, key: Hashable) -> _Key:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Key(key)
            if self.settings.adaptive:
                entry.estimator = Estimator(
                    low=1,
                    high=self._high,
                    initial=min(4, self._high),
                    tolerance=1.5,
                    backoff=0.7,
                    probe_interval=30.0,
                    now=self.clock(),
                )
            self._forget_idle()
        else:
            self._idle.pop(key, None)
        return entry

    def _verdict(self, entry: _Key, now: float) -> float:
        """``_GO``, ``_FAIL``, ``_BLOCKED`` or the loop time to look again."""
        if entry.breaker == OPEN:
            if now < entry.open_until:
                return _FAIL
            entry.breaker = HALF_OPEN  # the cool-down is over: one probe
        if entry.breaker == HALF_OPEN and entry.in_flight:
            return _BLOCKED  # the probe's outcome decides
        if entry.paused_until > now:
            return entry.paused_until
        cap = self.settings.concurrency
        if entry.estimator is not None:
            gate = entry.estimator.gate
            cap = gate if cap is None else min(cap, gate)
        if cap is not None and entry.in_flight >= cap:
            return _BLOCKED
        interval = self._interval if entry.interval is None else entry.interval
        if interval:
            due = entry.tat - (self.settings.burst - 1) * interval
            if now < due:
                return due
        return _GO

    def _take(self, entry: _Key) -> _KeyPermit:
        interval = self._interval if entry.interval is None else entry.interval
        if interval:
            now = self.clock()
            entry.tat = max(entry.tat, now) + interval
        entry.in_flight += 1
        return _KeyPermit(self, entry)

    def _refused(self, entry: _Key) -> KeyDownError:
        self.down += 1
        return refusal(entry)

    def _set_aside(self, entry: _Key, state: ItemState, now: float) -> None:
        entry.items.append(state)
        self.set_aside += 1
        if len(entry.items) == 1:
            verdict = self._verdict(entry, now)
            if verdict in (_GO, _FAIL):
                self._requeue(entry, now)
            else:
                self._wait(entry, verdict)

    def _requeue(self, entry: _Key, now: float) -> None:
        verdict = self._verdict(entry, now)
        if verdict in (_GO, _FAIL):
            if not entry.ringed:
                entry.ringed = True
                self._ring.append(entry)
        else:
            self._wait(entry, verdict)

    def _wait(self, entry: _Key, when: float) -> None:
        """Look at the key again at ``when`` (``_BLOCKED``: when an attempt ends)."""
        if when in {_BLOCKED, entry.timer_at}:
            return
        entry.timer_at = when
        heapq.heappush(self._timers, (when, id(entry), entry))

    def _rest(self, entry: _Key) -> None:
        """Note an idle key; forget the oldest idle ones past the bound."""
        self._idle[entry.key] = None
        self._idle.move_to_end(entry.key)
        self._forget_idle()

    def _forget_idle(self) -> None:
        """Forget idle keys, oldest first, while more than ``PerKey.keys`` are kept.

        A few looks per call: an idle key that cannot be forgotten yet (paused,
        its breaker open) goes to the back of the line, an active one leaves it.
        """
        entries, idle = self._entries, self._idle
        now = self.clock()
        looks = 16
        while len(entries) > self.settings.keys and idle and looks:
            looks -= 1
            key, _ = idle.popitem(last=False)
            entry = entries.get(key)
            if entry is None or entry.items or entry.in_flight or entry.ringed:
                continue  # active again: it comes back when idle
            if entry.forgettable(now):
                del entries[key]
            else:
                idle[key] = None  # not yet: to the back of the line

    def statistics(self) -> KeyStatistics:
        """Return a snapshot of the keys (see :class:`KeyStatistics`)."""
        now = self.clock()
        active = waiting = paused = opened = 0
        top: list[tuple[int, int, Hashable]] = []
        for entry in self._entries.values():
            active += entry.in_flight > 0
            paused += entry.paused_until > now
            opened += entry.breaker != CLOSED
            if entry.items:
                waiting += 1
                top.append((len(entry.items), entry.in_flight, entry.key))
        best = heapq.nlargest(10, top, key=lambda row: (row[0], row[1]))
        return KeyStatistics(
            keys=len(self._entries),
            active=active,
            waiting=waiting,
            paused=paused,
            open=opened,
            set_aside=self.set_aside,
            set_aside_limit=self.settings.set_aside,
            held=self.held,
            down=self.down,
            top=tuple((key, n, flying) for n, flying, key in best),
        )


def _retry_after(outcome: object) -> float | None:
    from parallelize._policies import retry_after_of  # noqa: PLC0415 - the layer above's reader

    return retry_after_of(outcome)
