"""Limits per key on the command line: fetch's per host, run's per key of a field.

The options (``--per-host N`` on fetch, ``--per-key N`` on run, and the rate,
burst, adaptive and breaker ones beside them) share their ``dest`` names, so one
function makes the :class:`~parallelize.PerKey` of either command.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

from parallelize import PerKey, host_of

from ._errors import UsageError

if TYPE_CHECKING:
    import argparse

__all__ = ("MAX_COOLDOWN", "host_key", "per_key_of", "unkeyed")

# PerKey's own default: an open breaker's cool-down doubles up to this.
MAX_COOLDOWN: Final = 300.0


def unkeyed(line: int) -> Hashable:
    """Return the key of an item that has none (a bad line): its own, limited by no other.

    It fails at once, as it did without limits per key, never spaced by a rate
    shared with other bad lines.
    """
    return (None, line)


def host_key(item: Any) -> Hashable:
    """Return the key of a fetch item ``(line, url)``: its ``host:port``.

    A line that is no URL (:func:`~parallelize.host_of` refuses it, or it is
    marked already) gets a key of its own, so that its record stays the one it
    has without limits per key (``invalid_url``), and comes at once.
    """
    line, url = item
    if type(url) is str:
        try:
            return host_of(url)
        except ValueError:
            pass
    return unkeyed(line)


def per_key_of(
    options: argparse.Namespace,
    key: Callable[[Any], Hashable],
    noun: str,
    *,
    needed: bool = False,
    failures: int | None = None,
    breaker_alone: bool = False,
) -> PerKey | None:
    """Return the command's :class:`~parallelize.PerKey`, or None when it sets no limit.

    Args:
        options: The parsed options (``per_key``, ``per_key_rate``,
            ``per_key_burst``, ``per_key_adaptive``, ``key_failures``,
            ``key_cooldown``).
        key: The function of an item to its key.
        noun: ``"host"`` or ``"key"``, as the options are spelt (``--per-host``).
        needed: Make one even when no limit is asked for (``--robots`` sets each
            site's rate while the run goes on).
        failures: The breaker's K when ``--{noun}-failures`` is not given: always
            (fetch's default: a breaker alone keeps the library's fastest path,
            see ``KeyBreakers``), or only with limits per key when ``breaker_alone``
            is False.
        breaker_alone: Whether ``failures`` applies with no limit per key too.

    Raises:
        UsageError: An option that needs another one missing.
    """
    limits = (options.per_key, options.per_key_rate, options.per_key_adaptive)
    breaker = options.key_failures
    if breaker is None:  # not given: the default
        on = breaker_alone or needed or any(limits) or options.key_cooldown is not None
        breaker = failures if on else None
    breaker = breaker or None  # 0: off
    if options.per_key_burst is not None and options.per_key_rate is None:
        raise UsageError(f"--per-{noun}-burst goes with --per-{noun}-rate R")
    if options.key_cooldown is not None and breaker is None:
        raise UsageError(
            f"--{noun}-cooldown goes with the breaker: give --{noun}-failures K (K >= 1)"
        )
    if not needed and breaker is None and not any(limits):
        return None
    cooldown = 10.0 if options.key_cooldown is None else options.key_cooldown
    return PerKey(
        key,
        # Only --robots: a limit that never binds (the workers are fewer), so that
        # the run's keys take the rates that robots.txt files set.
        concurrency=options.per_key or (options.workers if needed and not any(limits) else None),
        rate=options.per_key_rate,
        burst=options.per_key_burst or 1,
        adaptive=options.per_key_adaptive,
        failures=breaker,
        cooldown=cooldown,
        max_cooldown=max(MAX_COOLDOWN, cooldown),
    )
