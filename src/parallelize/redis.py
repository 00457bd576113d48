"""One run over many processes and machines, through Redis Streams.

Needs the ``redis`` extra (``pip install "parallelize[redis]"``, which brings
redis-py) and a Redis server >= 6.2 (7 recommended, with ``appendonly yes`` so that a
restart of Redis loses nothing).

The same job as on one machine, with a :class:`RedisQueue` where the journal was::

    async with RedisQueue("redis://queue.internal:6379/0", run="crawl") as queue:
        async for page in parallelize(fetch, urls, 100, journal=queue):
            ...

Every process that runs this works on the run; the first to get there adds
``urls`` to it, the others stand by to take over if it dies. A process that only
works passes :data:`NO_INPUT` (or calls :meth:`RedisQueue.work`); one that only adds
calls :meth:`RedisQueue.produce`. Any process reads the run's
:meth:`~RedisQueue.progress`, :meth:`~RedisQueue.results` and
:meth:`~RedisQueue.dead_letters`. See docs/scaling.md.
"""

from __future__ import annotations

from ._errors import MissingDependencyError

try:
    import redis as _redis_py  # noqa: F401 - only to say which extra is missing
except ImportError as _exc:  # pragma: no cover - the extra is a test dependency
    raise MissingDependencyError("parallelize.redis", "redis", "redis") from _exc

from ._redis._queue import (
    NO_INPUT,
    DeadLetter,
    QueueInUseError,
    QueueProgress,
    QueueUnavailableError,
    RedisQueue,
    SharedPerKey,
    SharedRateLimit,
    StoredOutcome,
    WorkerStatus,
)

__all__ = (
    "NO_INPUT",
    "DeadLetter",
    "QueueInUseError",
    "QueueProgress",
    "QueueUnavailableError",
    "RedisQueue",
    "SharedPerKey",
    "SharedRateLimit",
    "StoredOutcome",
    "WorkerStatus",
)
