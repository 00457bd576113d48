"""The command's logging: parallelize's warnings on stderr, one line each.

Per-item failures are left to the output's records, unless ``-v`` asks for them.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ("setup_logging",)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """The CLI's own handler, told apart from any other on the logger.

    It writes to whatever ``sys.stderr`` is at the time, so that the progress bar,
    which puts its own stream there while it is shown, keeps log lines above it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` to the current ``sys.stderr``."""
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: bool) -> None:
    """Show parallelize's warnings on stderr (a signal received, a journal's advice).

    The per-item failure messages are left out unless ``verbose``: each failure is
    in the output already, as its record.
    """
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("parallelize: %(message)s"))
    if not verbose:
        handler.addFilter(lambda record: not hasattr(record, "item"))
    logger = logging.getLogger("parallelize")
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)  # main() called again in one process
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
