"""Each key's circuit breaker: its states, and the breaker alone around the action.

The breaker of a key counts its consecutive "down" outcomes (``PerKey.down``: a
connection error, a timeout); ``PerKey.failures`` of them open it. While it is open
the key's items fail at once with :class:`~parallelize.KeyDownError`; after the
cool-down one attempt goes as a probe (half open): a reply closes the breaker, a
down outcome opens it again for twice as long (at most ``max_cooldown``). Envoy's
outlier ejection and resilience4j's breaker, by consecutive failures.

:func:`count_outcome` is that state machine, shared by both ways a run keeps it:

* with limits that set items aside (concurrency, rate, adaptive, the fleet's),
  :class:`~._keyed.KeyedLimits` keeps it beside them, and the key's other items
  wait aside while its probe is out;
* with a breaker alone and no other policy (``PerKey(key, failures=K)``, the
  command line's default), :class:`KeyBreakers` wraps the action instead, so that
  the run keeps its fastest path (the hand-inlined worker): a key with no failure
  costs a call of the key function and a dict lookup, and has no state at all.
  Nothing is set aside there: while the probe is out, the key's other items fail
  at once, as while it is open (resilience4j's half-open state, one permitted call).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final, Protocol, final

from parallelize._errors import KeyDownError, explain_spread

from ._per_key import KeyStatistics, down_of

if TYPE_CHECKING:
    from ._per_key import PerKey

__all__ = ("CLOSED", "HALF_OPEN", "OPEN", "KeyBreakers", "count_outcome", "refusal")

CLOSED: Final = 0
OPEN: Final = 1
HALF_OPEN: Final = 2


class BreakerState(Protocol):
    """A key's breaker fields (a ``_Key`` of ``_keyed.py``, or a :class:`_Breaker`)."""

    key: Hashable
    breaker: int
    failures: int  # consecutive down outcomes
    cooldown: float  # the current open spell's length
    open_until: float
    last_down: BaseException | None


def count_outcome(entry: BreakerState, settings: PerKey, outcome: object, now: float) -> None:
    """Count a down outcome, or a reply; open, reopen or close the breaker.

    Another failure (an exception that is not "down": the action's own error) leaves
    the breaker as it is: it says nothing of the key.
    """
    assert settings.failures is not None
    if settings.down(outcome):
        entry.failures += 1
        if isinstance(outcome, BaseException):
            entry.last_down = outcome
        if entry.breaker == HALF_OPEN:
            _open(entry, min(settings.max_cooldown, entry.cooldown * 2), now)
        elif entry.breaker == CLOSED and entry.failures >= settings.failures:
            _open(entry, settings.cooldown, now)
    elif not isinstance(outcome, BaseException):
        entry.failures = 0  # the key answered
        if entry.breaker != CLOSED:
            entry.breaker = CLOSED
            entry.cooldown = 0.0


def _open(entry: BreakerState, cooldown: float, now: float) -> None:
    entry.breaker = OPEN
    entry.cooldown = cooldown
    entry.open_until = now + cooldown


def refusal(entry: BreakerState) -> KeyDownError:
    """Return the error an item of a key that is down fails with."""
    error = KeyDownError(entry.key, entry.failures, entry.cooldown)
    error.__cause__ = entry.last_down
    return error


@final
class _Breaker:
    """The breaker of one key with failures (a key without has no state)."""

    __slots__ = ("breaker", "cooldown", "failures", "key", "last_down", "open_until", "probing")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.breaker = CLOSED
        self.failures = 0
        self.cooldown = 0.0
        self.open_until = 0.0
        self.last_down: BaseException | None = None
        self.probing = False  # the half-open breaker's probe is out


@final
class KeyBreakers:
    """One run's breakers per key, with no other limit per key: around the action.

    What :attr:`Run.keys <parallelize.Run.keys>` is for ``PerKey(key, failures=K)``
    with no other policy. Only keys with consecutive failures (or an open breaker)
    have state, at most ``PerKey.keys`` of them with a closed breaker (the oldest
    are forgotten); nothing is set aside.

    Added in 0.3.
    """

    __slots__ = ("_entries", "clock", "down", "settings")

    def __init__(self, settings: PerKey) -> None:
        assert settings.failures is not None
        self.settings = settings
        self._entries: dict[Hashable, _Breaker] = {}
        self.down = 0  # items failed at once with KeyDownError
        self.clock: Callable[[], float] = time.monotonic

    def guard(
        self, action: Callable[..., Awaitable[Any]], name: str, unpacked: tuple[type, ...]
    ) -> Callable[[Any], Awaitable[Any]]:
        """Return ``action`` behind the breakers: called with the item, not unpacked.

        The workers then unpack nothing; the guard unpacks ``unpacked`` items as
        they would (and explains a ``TypeError`` of the spread the same way).
        """
        settings = self.settings
        key_of = settings.key
        entries = self._entries
        # down_of() says no value is down: a key with no failure skips the look.
        values_count = settings.down is not down_of

        async def guarded(item: Any) -> Any:
            key = key_of(item)  # one that raises fails the item alone, with it
            entry = entries.get(key)
            probe = False
            if entry is not None and entry.breaker != CLOSED:
                now = self.clock()
                if entry.breaker == OPEN and now >= entry.open_until:
                    entry.breaker = HALF_OPEN  # the cool-down is over: one probe
                if entry.breaker == OPEN or entry.probing:
                    self.down += 1
                    raise refusal(entry)
                entry.probing = probe = True
            unpack = isinstance(item, unpacked)
            try:
                value = await (action(*item) if unpack else action(item))
            except Exception as exc:
                self._ended(key, exc, probe=probe)
                if unpack and type(exc) is TypeError:
                    raise explain_spread(exc, item, name) from None
                raise
            except BaseException:
                # Cancelled (or worse): nothing learnt of the key.
                if probe and (entry := entries.get(key)) is not None:
                    entry.probing = False
                raise
            if probe or (entries and key in entries) or values_count:
                self._ended(key, value, probe=probe)
            return value

        return guarded

    def _ended(self, key: Hashable, outcome: object, *, probe: bool) -> None:
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            if not self.settings.down(outcome):
                return  # a key with no failure stays without state
            entry = entries[key] = _Breaker(key)
            if len(entries) > self.settings.keys:
                self._forget()
        if probe:
            entry.probing = False
        count_outcome(entry, self.settings, outcome, self.clock())
        if entry.breaker == CLOSED and not entry.failures:
            del entries[key]  # neutral again

    def _forget(self) -> None:
        """Forget the oldest key with a closed breaker (its failures below K)."""
        for looks, (key, entry) in enumerate(self._entries.items()):
            if entry.breaker == CLOSED and not entry.probing:
                del self._entries[key]
                return
            if looks >= 16:
                return

    def set_rate(self, key: Hashable, rate: float | None) -> None:  # noqa: ARG002
        """Refuse: a rate of one key needs limits that set items aside."""
        raise ValueError(
            f"cannot set a rate of key {key!r}: this run's PerKey has a breaker alone "
            f"(failures=), kept around the action; give PerKey a limit too "
            f"(concurrency=, rate= or adaptive=True) to set rates per key"
        )

    def statistics(self) -> KeyStatistics:
        """Return a snapshot: only keys with failures are kept, none is set aside."""
        opened = sum(entry.breaker != CLOSED for entry in self._entries.values())
        return KeyStatistics(
            keys=len(self._entries),
            active=0,
            waiting=0,
            paused=0,
            open=opened,
            set_aside=0,
            set_aside_limit=self.settings.set_aside,
            held=0,
            down=self.down,
            top=(),
            limited=False,
        )
