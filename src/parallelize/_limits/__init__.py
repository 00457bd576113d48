"""Limits shared by the workers of a run (or of several runs)."""

from ._rate import RateLimit

__all__ = ("RateLimit",)
