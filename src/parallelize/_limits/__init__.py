"""Limits shared by the workers of a run (or of several runs)."""

from ._adaptive import AdaptiveLimit, AdaptiveStatistics, overload_of
from ._rate import RateLimit, RateLimiter, RateLimitStatistics

__all__ = (
    "AdaptiveLimit",
    "AdaptiveStatistics",
    "RateLimit",
    "RateLimitStatistics",
    "RateLimiter",
    "overload_of",
)
