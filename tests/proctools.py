"""Helpers for tests of child processes: is a process alive, are any children left."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ("alive", "no_children_left")


def alive(pid: int) -> bool:
    """Whether a process with this id runs (a reaped child does not, nor a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers: look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def no_children_left() -> bool:
    """Whether every child that multiprocessing started has ended."""
    import multiprocessing  # noqa: PLC0415 - only to list what it started

    return not multiprocessing.active_children()
