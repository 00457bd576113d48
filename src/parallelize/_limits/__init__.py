"""Limits shared by the workers of a run (or of several runs)."""

from ._adaptive import AdaptiveLimit, AdaptiveStatistics, bind_to_run, overload_of
from ._base import NO_OUTCOME, NO_PERMIT, Limit, Permit
from ._breakers import KeyBreakers
from ._keyed import KeyedLimits
from ._per_key import KeyStatistics, PerKey, SharedKeys, down_of, host_of
from ._rate import RateLimit, RateLimiter, RateLimitStatistics, as_limit

__all__ = (
    "NO_OUTCOME",
    "NO_PERMIT",
    "AdaptiveLimit",
    "AdaptiveStatistics",
    "KeyBreakers",
    "KeyStatistics",
    "KeyedLimits",
    "Limit",
    "PerKey",
    "Permit",
    "RateLimit",
    "RateLimitStatistics",
    "RateLimiter",
    "SharedKeys",
    "as_limit",
    "bind_to_run",
    "down_of",
    "host_of",
    "overload_of",
)
