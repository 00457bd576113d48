"""The ``parallelize`` command line: ``parallelize fetch`` and ``parallelize run``.

Built on the public API only. Each module imports only those below it::

    __init__     main(): parse, dispatch, turn errors into one line and an exit code
    _parser      the grammar and the help texts (it asks the commands for theirs)
    _fetch       parallelize fetch URLS: an HTTP client, one JSON line per URL
    _run         parallelize run MODULE:FUNCTION: one JSON line per call
    _queue       parallelize queue: read, or delete, a run shared through Redis
    _execution   execute(): a Job through parallelize(), its lines, its exit code
    _shared_run  --run NAME: a run shared through Redis, its options and its queue
    _robots      --robots: each site's robots.txt, fetched once, asked per URL
    _per_key     --per-host / --per-key...: the PerKey of fetch and run, their keys
    _summary     the summary on stderr, and how to resume after a signal
    _job         Job: the action, its items, what a journal keys and compares
    _input       input lines as items (a pipe read by a thread)
    _output      ENCODE and the Sink: JSON lines written in batches
    _files       the files checked before any work: none is another
    _logging     parallelize's warnings on stderr      _loop     the event loop
    _errors      exit codes, UsageError, OutputError

Exit codes: 0 every item succeeded, 1 some failed, 2 usage error, 74 the output
could not be written, 130 interrupted, 141 stdout closed early.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._errors import EXIT_INTERRUPTED, EXIT_OUTPUT, EXIT_USAGE, OutputError, UsageError
from ._fetch import fetch_command
from ._logging import setup_logging
from ._parser import build_parser
from ._queue import queue_command
from ._run import run_command

__all__ = ("main",)

# A closed stdout (parallelize fetch ... | head) ends the run as SIGPIPE would.
_EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    The console script ``parallelize`` and ``python -m parallelize`` call this.
    Output goes to stdout (or ``-o FILE``), the summary and errors to stderr. A
    usage error is one line on stderr, never a traceback.
    """
    args = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    command = None
    try:
        options, unknown = parser.parse_known_args(args)
        command = options.command
        return _dispatch(options, unknown, args)
    except UsageError as exc:
        prog = exc.prog or (f"parallelize {command}" if command else "parallelize")
        sys.stderr.write(f"{prog}: {exc}\n")
        return EXIT_USAGE
    except OutputError as exc:
        sys.stderr.write(f"parallelize {command}: {exc}\n")
        return EXIT_OUTPUT
    except KeyboardInterrupt:
        sys.stderr.write("parallelize: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at
        # /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return _EXIT_BROKEN_PIPE


def _dispatch(options: argparse.Namespace, unknown: list[str], args: list[str]) -> int:
    if unknown:  # said by the command's parser, not the top one as parse_args() would
        where = "parallelize" if options.command is None else f"parallelize {options.command}"
        raise UsageError(
            f"unrecognized arguments: {' '.join(unknown)} (see '{where} --help')", prog=where
        )
    if options.command is None:
        raise UsageError(
            "choose a command: 'parallelize fetch URLS', "
            "'parallelize run MODULE:FUNCTION --input FILE' or 'parallelize queue' "
            "(see 'parallelize --help')",
            prog="parallelize",
        )
    setup_logging(verbose=options.verbose)
    if options.command == "fetch":
        return fetch_command(options, args)
    if options.command == "queue":
        return queue_command(options)
    return run_command(options, args)
