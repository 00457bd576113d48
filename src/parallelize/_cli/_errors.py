"""How a command fails: its exit codes, and the errors that end it with one line.

``main()`` turns a :class:`UsageError` into exit 2 and an :class:`OutputError` into
exit 74, each one line on stderr, never a traceback. :func:`error_text` words an
exception for a failure record.
"""

from __future__ import annotations

__all__ = (
    "EXIT_FAILED",
    "EXIT_FAILED_FINAL",
    "EXIT_HALTED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_USAGE",
    "OutputError",
    "SaveError",
    "UsageError",
    "error_text",
)

EXIT_OK = 0  # every item succeeded
EXIT_FAILED = 1  # some items failed, some of them may succeed on a rerun (a timeout)
EXIT_FAILED_FINAL = 4  # some items failed, each for good (a 404): a rerun changes nothing
EXIT_HALTED = 3  # --halt-after: stopped early, hopeless; the rest not attempted
EXIT_USAGE = 2  # a bad option, input, output, function or journal: nothing useful was done
EXIT_INTERRUPTED = 130  # stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it)
EXIT_OUTPUT = 74  # the output could not be written (a full disk): sysexits' EX_IOERR


class SaveError(OSError):
    """A body could not be written under ``fetch --save-dir``: a failure of kind ``save``."""


class UsageError(Exception):
    """A mistake in how the command was called: exit 2 with this one-line message.

    Attributes:
        prog: The command to name before the message (default: the one running).
    """

    def __init__(self, message: str, *, prog: str | None = None) -> None:
        """Say what is wrong and what to do, in one line."""
        super().__init__(message)
        self.prog = prog


class OutputError(Exception):
    """The output could not be written: exit 74 with this one-line message.

    Raised instead of the stream's ``OSError`` (a full disk, a device that refuses
    writes). A closed pipe stays a ``BrokenPipeError``: it ends the command as
    SIGPIPE would.
    """


def error_text(exc: BaseException) -> str:
    """Return ``TypeName: message`` for an exception, as an error record's message."""
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name
