"""``--halt-after N|P%``: stop a command when it is hopeless, keeping what was done.

GNU parallel's ``--halt soon,fail=N`` (or ``N%``), Scrapy's ``CLOSESPIDER_ERRORCOUNT``:
after N failed items, or once P% of the items that ran failed, the run takes no new
item (``Run.stop()``); those in flight finish and are written (and journaled), and the
command exits with ``EXIT_HALTED``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from parallelize import Run

__all__ = ("HALT_JUDGED_FROM", "Halt", "Halting")

# A share of failures is judged once this many items ran (succeeded or failed here):
# 1 failure in the first 2 items is not 50% of a crawl.
HALT_JUDGED_FROM: Final = 20


class Halt(NamedTuple):
    """The option as given: a count of failures, or a share of the items that ran."""

    text: str  # as written, for messages
    failures: int | None
    share: float | None  # 0.05 for 5%


class Halting:
    """Counts the failures the consumer writes; stops the run once it is hopeless."""

    __slots__ = ("failures", "halt", "halted", "run")

    def __init__(self, halt: Halt, run: Run[Any]) -> None:
        self.halt = halt
        self.run = run
        self.failures = 0
        self.halted = False

    def failed(self) -> None:
        """Count one failed item (called only for failures: no cost per success)."""
        self.failures += 1
        if self.halted:
            return
        halt = self.halt
        if halt.failures is not None:
            hopeless = self.failures >= halt.failures
        else:
            assert halt.share is not None
            stats = self.run.statistics()
            ran = stats.succeeded + stats.failed
            hopeless = ran >= HALT_JUDGED_FROM and stats.failed >= halt.share * ran
        if hopeless:
            self.halted = True
            self.run.stop()

    def line(self, noun: str, journal: str | None, resume: str) -> str:
        """Return what the command says when it halted: why, and how to go on."""
        stats = self.run.statistics()
        why = (
            f"{self.failures:,} failed"
            if self.halt.failures is not None
            else f"{stats.failed:,} of {stats.succeeded + stats.failed:,} failed"
        )
        head = (
            f"parallelize: halted by --halt-after {self.halt.text} ({why}); no new "
            f"{noun} were started after it, those in flight were written"
        )
        if journal is None:
            return f"{head}; nothing was recorded: with --journal FILE a rerun goes on from here"
        return f"{head}; to go on (the failures are tried again), run: {resume}"
