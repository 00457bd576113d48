"""parallelize: run an async action over huge numbers of inputs with a bounded pool.

The house, top to bottom. A module imports from its own layer or the ones below,
never up, and no import cycle runs through any modules; imports under ``if
TYPE_CHECKING:`` are for types only (an observer's hooks are typed with the Run
they observe). ``tests/test_layers.py`` holds the map below to that::

    [command line]
    __main__        ``python -m parallelize``
    _cli/           parallelize fetch | run | queue, on the public faces only
    [faces]
    parallelize     this module: the public names
    http            open_client(): one seam over aiohttp, httpx and pyreqwest
    redis           RedisQueue: one run over many processes and machines
    _redis._queue   the RedisQueue itself: builds the rooms of _redis/, work()
    prometheus      PrometheusExporter: a run's statistics as metrics
    testing/        the test server (``python -m parallelize.testing``)
    [api]
    _api            parallelize(): check the arguments, build a Run
    _sync           sync(): a run as a plain iterator, its event loop in this thread
    [engine]
    _engine/        Run: input -> workers (one TaskGroup) -> bounded buffer -> consumer,
                    from parts: sources, the general worker, sinks, the flow of credits
    [parts]
    _progress       the progress bar (rich), an observer redrawn from a loop timer
    _observe        Observer: hooks on a run's events
    _options        StageOptions: the keyword options of a stage
    _policies       Retry, Backoff, timeouts and deadlines: one attempt (ItemPolicy)
    _limits/        Limit, the one seam of every limit; RateLimit (GCRA), AdaptiveLimit,
                    PerKey (limits per key, set aside by the item source; a breaker
                    alone kept around the action: KeyBreakers)
    _journal/       Journal, SQLiteJournal and its writer, the session that skips and records
    _redis/         the queue's rooms: records, connection, shared limits, places of
                    keys (per_key), member, producer, session (journal=)
    _actions        how an action is called: loop, threads, processes; fan-out
    _processes      executor="process": one child process per item in flight
    _multi          processes=N: an async action in N children, many calls in each
    _multi_child    processes=N, a child's side: its calls as tasks; the frames
    _signals        SIGINT/SIGTERM handlers for a graceful stop
    _stats          the counters, the latency histogram, the Statistics snapshot
    _outcomes       Failure, yielded for a failed item
    _aio            asyncio plumbing
    _http_client    http's seam: Client, Reply, the steps every backend shares
    _http_aiohttp   http's aiohttp backend
    _http_pyreqwest http's pyreqwest backend
    _http_settings  http's settings: proxies, certificates, limits
    _http_cookies   http's cookie jar, driven at each hop by both backends
    _http_urls      http's URL checks
    _http_errors    http's exceptions (HTTPClientError and its kinds)
    [base]
    _errors         the exception tree (drawn there)
    _util           argument validators, one rule per kind of value; small helpers
"""

import typing as _typing

from ._api import parallelize as parallelize
from ._engine import Run as Run
from ._errors import ActionError as ActionError
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import Interrupted as Interrupted
from ._errors import JournalError as JournalError
from ._errors import KeyDownError as KeyDownError
from ._errors import MissingDependencyError as MissingDependencyError
from ._errors import ParallelizeError as ParallelizeError
from ._errors import ProcessCrashed as ProcessCrashed
from ._errors import RetriesExhausted as RetriesExhausted
from ._errors import RetryWaitTooLong as RetryWaitTooLong
from ._errors import UnstorableResult as UnstorableResult
from ._journal import Journal as Journal
from ._journal import JsonCodec as JsonCodec
from ._journal import RecordedError as RecordedError
from ._journal import SQLiteJournal as SQLiteJournal
from ._limits import NO_OUTCOME as NO_OUTCOME
from ._limits import AdaptiveLimit as AdaptiveLimit
from ._limits import AdaptiveStatistics as AdaptiveStatistics
from ._limits import KeyBreakers as KeyBreakers
from ._limits import KeyedLimits as KeyedLimits
from ._limits import KeyStatistics as KeyStatistics
from ._limits import Limit as Limit
from ._limits import PerKey as PerKey
from ._limits import Permit as Permit
from ._limits import RateLimit as RateLimit
from ._limits import RateLimitStatistics as RateLimitStatistics
from ._limits import SharedKeys as SharedKeys
from ._limits import down_of as down_of
from ._limits import host_of as host_of
from ._limits import overload_of as overload_of
from ._observe import Observer as Observer
from ._outcomes import Failure as Failure
from ._policies import Backoff as Backoff
from ._policies import Retry as Retry
from ._policies import parse_retry_after as parse_retry_after
from ._policies import retry_after_of as retry_after_of
from ._progress import Progress as Progress
from ._redis import NO_INPUT as NO_INPUT
from ._stats import Latency as Latency
from ._stats import Statistics as Statistics
from ._sync import sync as sync

if _typing.TYPE_CHECKING:
    from ._multi import open_processes as open_processes


def __getattr__(name: str) -> _typing.Any:
    # open_processes is loaded when first asked for: its module brings
    # multiprocessing and ctypes, 10 ms of every start that never uses them.
    if name == "open_processes":
        from ._multi import open_processes  # noqa: PLC0415

        open_processes.__module__ = __name__
        globals()[name] = open_processes
        return open_processes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "open_processes"})


__all__ = (
    "NO_INPUT",
    "NO_OUTCOME",
    "ActionError",
    "AdaptiveLimit",
    "AdaptiveStatistics",
    "Backoff",
    "DeadlineExceeded",
    "Failure",
    "Interrupted",
    "Journal",
    "JournalError",
    "JsonCodec",
    "KeyBreakers",
    "KeyDownError",
    "KeyStatistics",
    "KeyedLimits",
    "Latency",
    "Limit",
    "MissingDependencyError",
    "Observer",
    "ParallelizeError",
    "PerKey",
    "Permit",
    "ProcessCrashed",
    "Progress",
    "RateLimit",
    "RateLimitStatistics",
    "RecordedError",
    "RetriesExhausted",
    "Retry",
    "RetryWaitTooLong",
    "Run",
    "SQLiteJournal",
    "SharedKeys",
    "Statistics",
    "UnstorableResult",
    "down_of",
    "host_of",
    "open_processes",
    "overload_of",
    "parallelize",
    "parse_retry_after",
    "retry_after_of",
    "sync",
)

__version__ = "0.1.0.dev0"

# Show public names in reprs and tracebacks, not private module paths.
for _obj in (
    parallelize,
    Run,
    Failure,
    ActionError,
    MissingDependencyError,
    ParallelizeError,
    ProcessCrashed,
    RetriesExhausted,
    RetryWaitTooLong,
    DeadlineExceeded,
    UnstorableResult,
    RateLimit,
    RateLimitStatistics,
    AdaptiveLimit,
    AdaptiveStatistics,
    Limit,
    Permit,
    PerKey,
    KeyStatistics,
    KeyedLimits,
    KeyBreakers,
    KeyDownError,
    SharedKeys,
    host_of,
    down_of,
    overload_of,
    JournalError,
    Journal,
    Interrupted,
    JsonCodec,
    RecordedError,
    SQLiteJournal,
    Observer,
    Progress,
    Statistics,
    Latency,
    Backoff,
    Retry,
    parse_retry_after,
    retry_after_of,
    sync,
):
    _obj.__module__ = "parallelize"
del _obj
type(NO_INPUT).__module__ = "parallelize"
type(NO_OUTCOME).__module__ = "parallelize"
