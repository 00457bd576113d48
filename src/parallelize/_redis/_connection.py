"""A queue's connection to Redis: the client, the calls retried, the run's epoch.

:class:`Connection` opens and closes the redis-py client, registers the scripts,
and makes every call through :meth:`Connection.call`: bounded by a timeout, tried
again while Redis does not answer (a restart, a failover) for up to the queue's
``reconnect_timeout``, and turned into a clear :class:`~parallelize.JournalError`
when trying again cannot mend it (credentials, TLS, a database number, a run gone
or deleted). Writes go through scripts fenced by the run's epoch
(:meth:`Connection.write`): once a run is deleted, its processes' writes are
refused.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.retry import Retry as _RedisRetry
from redis.backoff import NoBackoff

from parallelize._errors import JournalError

from . import _scripts
from ._records import GROUP, Keys, QueueSettings, QueueUnavailableError

__all__ = ("ANSWERED", "TRANSIENT", "Connection", "is_fenced", "mask")

logger = logging.getLogger("parallelize.redis")

T = TypeVar("T")

_CALL_TIMEOUT = 10.0  # seconds one call to Redis may take before it is tried again

# Errors after which Redis may well answer again: retried until reconnect_timeout.
TRANSIENT: Final = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,  # a replica promoted while we wrote
    rx.TryAgainError,
    rx.MasterDownError,
    OSError,
)
# Of those, the ones a server sends: whoever gets one has reached it (a server
# loading its data at a start, a replica), so the first connection waits for it too.
ANSWERED: Final = (rx.BusyLoadingError, rx.ReadOnlyError, rx.TryAgainError, rx.MasterDownError)


def is_fenced(error: BaseException) -> bool:
    """Whether ``error`` is a write refused because the run was deleted (FENCED)."""
    cause = error.__cause__
    return isinstance(cause, rx.ResponseError) and str(cause).startswith("FENCED")


def mask(url: str) -> str:
    """Return ``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _tls_refused(error: BaseException) -> bool:
    """Whether ``error`` is a TLS failure that trying again cannot mend."""
    seen: BaseException | None = error
    for _ in range(5):  # the error, and what it was raised from
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@final
class Connection:
    """One queue's client to Redis, and its calls: retried, fenced, explained.

    Args:
        queue: The queue's settings (the queue itself): its URL, run and
            ``reconnect_timeout``, read at each use; its repr names it in messages.
        keys: The run's keys.
        options: For ``redis.asyncio.from_url``, over the queue's defaults.
    """

    def __init__(self, queue: QueueSettings, keys: Keys, options: dict[str, Any]) -> None:
        self._queue = queue
        self.keys = keys
        self._options = options
        self._client: Any = None  # a redis.asyncio.Redis; Any: its types are loose
        self._scripts: dict[str, Any] = {}
        # The run's epoch this process joined (see _scripts): its writes are refused
        # once the run is deleted. None until it produces or works.
        self._epoch: str | None = None

    @property
    def is_open(self) -> bool:
        """Whether the client is open (between :meth:`open` and :meth:`close`)."""
        return self._client is not None

    async def open(self) -> None:
        """Make the client and reach Redis once (not waited for: see :meth:`call`)."""
        options: dict[str, Any] = {
            "decode_responses": True,
            # No socket timeouts in redis-py: with one, it sends every command
            # through asyncio.wait_for(), which on Python 3.11 can swallow a
            # cancellation (CPython gh-86296), and a run then never ends. Each
            # call is bounded by asyncio.timeout() in call() instead.
            "socket_timeout": None,
            "socket_connect_timeout": None,
            "health_check_interval": 15,
            # Retried here, with the messages and the bound the queue promises.
            "retry": _RedisRetry(NoBackoff(), 0),
        }
        options.update(self._options)
        url = self._queue.url
        try:
            client = aioredis.from_url(url, **options)
        except ValueError as exc:
            raise ValueError(f"cannot use the Redis URL {mask(url)!r}: {exc}") from exc
        self._client = client
        for name in _scripts.__all__:
            self._scripts[name] = client.register_script(getattr(_scripts, name))
        try:
            # Reading a run creates nothing in Redis: the stream and its group are
            # made by the first producer or worker.
            await self.call("connecting", client.ping, patient=False)
        except BaseException:
            self._client = None
            await client.aclose()
            raise

    async def close(self) -> None:
        """Disconnect (the client is forgotten first: the queue is closed at once)."""
        client = self._client
        self._client = None
        if client is not None:
            await client.aclose()

    def client(self) -> Any:
        """Return the open client; refuse a queue that is not open."""
        if self._client is None:
            raise RuntimeError(
                f"{self._queue!r} is not open: use it in 'async with RedisQueue(...) as queue:'"
            )
        return self._client

    # -- the run's group and epoch ----------------------------------------------------

    async def create_group(self) -> bool:
        """Create the run's stream and group, unless they exist; True if created."""
        try:
            await self.client().xgroup_create(self.keys.items, GROUP, id="0", mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def join(self) -> None:
        """Make sure the run's group exists, for a worker: refuse a run that was lost.

        Items were added (the run's counts say so) but the stream is gone: Redis lost
        it (restarted without persistence), or it was deleted in part. Then join the
        run's epoch.
        """
        created = await self.call("starting the run", self.create_group)
        if created:
            client = self.client()
            produced = await self.call(
                "reading the run", lambda: client.hget(self.keys.meta, "produced")
            )
            if int(produced or 0) > 0:
                await self.call("", lambda: client.delete(self.keys.items))
                raise self.gone()
        await self.join_epoch()

    async def join_epoch(self) -> None:
        """Take the run's epoch (a new run's first process sets it) for its writes."""
        client = self.client()
        self._epoch = await self.call(
            "joining the run",
            lambda: self._scripts["EPOCH"](
                keys=[self.keys.meta], args=[secrets.token_hex(8)], client=client
            ),
        )

    def forget_epoch(self) -> None:
        """Forget the run's epoch (it was deleted): the next write joins a new run."""
        self._epoch = None

    def script(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """Call the script ``name`` as it is (not fenced: one that reads, or deletes)."""
        return self._scripts[name](  # type: ignore[no-any-return]
            keys=keys, args=args, client=self.client()
        )

    def fenced(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """Call the script ``name`` that writes, fenced by the epoch this process joined.

        Its callers (the storer, the reports) write only once the run was joined
        (by :meth:`join` or a producer); an epoch forgotten since by a delete is no
        epoch, and its writes are refused as a deleted run's.
        """
        return self.script(name, [self.keys.meta, *keys], [self._epoch or "", *args])

    async def write(self, doing: str, name: str, keys: list[str], args: list[Any]) -> Any:
        """Call the script ``name`` that writes, through :meth:`call`, joining if need be."""
        if self._epoch is None:
            await self.join_epoch()  # a shared rate limit used before a run starts
        return await self.call(doing, lambda: self.fenced(name, keys, args))

    # -- calls ------------------------------------------------------------------------

    async def call(
        self, doing: str, call: Callable[[], Awaitable[T]], *, patient: bool = True
    ) -> T:
        """Return the answer to one call to Redis, retried while Redis does not answer.

        Args:
            doing: What the call is for, for messages ("storing outcomes").
            call: Makes the call (again at each try).
            patient: False for the queue's first connection: a server never reached
                is a wrong URL or a server not started, not one restarting, and is
                not waited for.

        Raises:
            QueueUnavailableError: Redis did not answer for ``reconnect_timeout``, or
                could not be reached at all (``patient=False``).
            JournalError: Redis refused the credentials, the TLS handshake or the
                database number, or the run is gone (or was deleted while this
                process was on it).
        """
        deadline = 0.0
        delay = 0.05
        warned = 0.0
        while True:
            try:
                async with asyncio.timeout(_CALL_TIMEOUT):
                    result = await call()
            except (rx.RedisError, OSError) as exc:
                refusal = self._refusal(exc, doing)
                if refusal is not None:
                    raise refusal from exc
                if not isinstance(exc, TRANSIENT):
                    raise
                if not patient and not isinstance(exc, ANSWERED):
                    raise self._unreachable(exc, doing) from exc
                now = time.monotonic()
                if not deadline:
                    deadline = now + self._queue.reconnect_timeout
                if now >= deadline:
                    raise QueueUnavailableError(
                        f"Redis at {mask(self._queue.url)} did not answer for "
                        f"{self._queue.reconnect_timeout:g} s while {doing} ({exc}); nothing "
                        f"is lost: the items without a stored outcome run again once it is "
                        f"back. Start it (and give it persistence: appendonly yes), or "
                        f"fix the URL",
                        self._queue.location,
                    ) from exc
                if now - warned >= 30.0:
                    logger.warning(
                        "Redis at %s does not answer while %s (%s); trying again for "
                        "up to %.0f s more, nothing is lost meanwhile",
                        mask(self._queue.url),
                        doing,
                        exc,
                        deadline - now,
                    )
                    warned = now
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if warned:
                logger.warning("Redis at %s answers again", mask(self._queue.url))
            return result

    def _unreachable(self, error: BaseException, doing: str) -> QueueUnavailableError:
        queue = self._queue
        return QueueUnavailableError(
            f"cannot reach Redis at {mask(queue.url)} while {doing} "
            f"({type(error).__name__}: {str(error).rstrip('.') or 'timed out'}). Check that "
            f"a Redis server runs there, and the host and port in the URL (and that this "
            f"machine may reach them). Not retried: only a server reached once is waited "
            f"for (up to reconnect_timeout, {queue.reconnect_timeout:g} s)",
            queue.location,
        )

    def _refusal(self, error: BaseException, doing: str) -> JournalError | None:
        """Return the error to raise for what trying again cannot mend, else None."""
        queue = self._queue
        where = mask(queue.url)
        if isinstance(error, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError):
            return JournalError(
                f"Redis at {where} refused us while {doing}: {error}. Check the user and "
                f"password in the URL (redis://user:password@host:port/db)",
                queue.location,
            )
        if _tls_refused(error):
            return JournalError(
                f"TLS with Redis at {where} failed while {doing}: {error}. Give the "
                f"certificate authority that signed the server's certificate "
                f"(RedisQueue(..., ssl_ca_certs='ca.pem')), or use redis:// for a server "
                f"without TLS",
                queue.location,
            )
        if isinstance(error, rx.ResponseError):
            text = str(error)
            if "NOGROUP" in text:
                return self.gone()
            if "FENCED" in text:
                return JournalError(
                    f"the run {queue.run!r} was deleted from Redis at {where} while this "
                    f"process was on it (delete(force=True), or parallelize queue delete "
                    f"--force): its writes are refused, so that none reaches a new run of "
                    f"that name. It stopped; start it again to work on a new run",
                    queue.location,
                )
            if "DB index" in text:  # "DB index is out of range", "invalid DB index"
                return JournalError(
                    f"Redis at {where} refused the database number in the URL while "
                    f"{doing}: {error}. Give one the server has (0 to 15 by default, its "
                    f"'databases' setting): redis://host:6379/0",
                    queue.location,
                )
        return None

    def gone(self) -> JournalError:
        """Return the error for a run whose stream or group is gone from Redis."""
        queue = self._queue
        return JournalError(
            f"the run {queue.run!r} is gone from Redis at {mask(queue.url)} (no stream or "
            f"consumer group): it was deleted, or Redis restarted without persistence. "
            f"Give Redis 'appendonly yes', and start the run again",
            queue.location,
        )
