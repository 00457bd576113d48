"""``fetch --robots``: each site's robots.txt, fetched once, asked before its URLs go.

:class:`RobotsGate` stands between the input and the run. The first URL of a site
(scheme, host and port) starts one fetch of its robots.txt, one task in the gate's
task group, however many URLs of the site follow; the site's URLs are held (up to
``held`` of all sites together, then the input is read no further) until it is
known, while the URLs of sites already known go on. So no URL of a site is
requested before its robots.txt is read, and a ``Crawl-delay`` becomes the site's
rate (``Run.keys.set_rate``) before its first URL is admitted: no burst of URLs
that were already on their way.

What a robots.txt answer means follows RFC 9309, section 2.3.1:

* 2xx: its rules, parsed by :mod:`urllib.robotparser` (the first 512 KiB: the RFC
  asks for at least 500 KiB);
* 4xx but 429 ("unavailable"): no rules, everything allowed;
* 429, 5xx, or no answer at all (a connection error, a timeout: "unreachable"):
  everything disallowed for this run. 429 counts as unreachable, not unavailable:
  a site asking us to slow down has not said it has no robots.txt;
* more redirects than the client follows (10; the RFC asks for at least 5):
  unavailable, everything allowed.

A URL disallowed becomes a :class:`RobotsDeniedURL`: the action raises its
:class:`RobotsError` without a request (record kind ``robots``, never retried).
Memory: one parsed robots.txt per site, and the held URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Final, Self

from parallelize import KeyBreakers, host_of
from parallelize.http import HTTPClientError, TooManyRedirectsError

from ._errors import error_text

if TYPE_CHECKING:
    from urllib.robotparser import RobotFileParser

    from parallelize import KeyedLimits, Run
    from parallelize.http import Client

__all__ = ("MarkedURL", "RobotsError", "RobotsGate", "agent_token")

# A site: the URL's scheme, and its host key (host_of: "host:port").
_Site = tuple[str, Hashable]

# RFC 9309, section 2.5: a crawler SHOULD parse at least 500 KiB of a robots.txt.
MAX_ROBOTS_BYTES: Final = 512 * 1024


class MarkedURL(str):
    """A URL that gets a failure record instead of a request: ``error()`` is raised."""

    __slots__ = ("reason",)
    reason: str

    def error(self) -> Exception:
        """Return the exception the action raises for this URL."""
        raise NotImplementedError


class RobotsError(Exception):
    """The site's robots.txt disallows the URL (record kind ``robots``)."""


class RobotsDeniedURL(MarkedURL):
    """A URL that the robots.txt of its site disallows."""

    __slots__ = ()

    def error(self) -> Exception:
        """Return the :class:`RobotsError` saying why."""
        return RobotsError(self.reason)


def agent_token(headers: Iterable[tuple[str, str]]) -> str:
    """Return the user agent that robots.txt groups are matched against.

    The product token of the ``User-Agent`` header given with ``-H`` (its first
    word, before any ``/``: ``MyBot`` of ``MyBot/1.0 (+https://...)``), else
    ``parallelize``.
    """
    agent = "parallelize"
    for name, value in headers:
        if name.lower() == "user-agent" and value.split():
            agent = value.split()[0].split("/")[0] or agent
    return agent


class _Rules:
    """One site's robots.txt, as far as this run cares: a verdict per URL."""

    __slots__ = ("denied", "parser", "site")

    def __init__(
        self,
        site: str,
        parser: RobotFileParser | None = None,
        *,
        denied: str | None = None,
    ) -> None:
        self.site = site
        self.parser = parser  # None: no rules (all allowed, unless ``denied``)
        self.denied = denied  # why every URL is disallowed, or None

    def refusal(self, agent: str, url: str) -> str | None:
        """Return why ``url`` may not be fetched, or None if it may."""
        if self.denied is not None:
            return self.denied
        if self.parser is None or self.parser.can_fetch(agent, url):
            return None
        return f"the robots.txt of {self.site} disallows this URL for user agent {agent!r}"


class _Enough(Exception):  # noqa: N818 - not an error: the body read is long enough
    """Raised from the body callback to stop reading past ``MAX_ROBOTS_BYTES``."""


class RobotsGate:
    """The robots.txt of every site of a run: fetched once, asked for each URL.

    Use it around the run, on the run's client: ``async with RobotsGate(client,
    agent, fetches=workers, rate=None) as gate``, give the run ``gate.items(items)``
    (once: the gate holds that one stream's URLs) and, once the run exists,
    ``gate.bind(run)`` (a Crawl-delay needs ``run.keys``).
    """

    def __init__(
        self, client: Client, agent: str, *, fetches: int, rate: float | None, held: int = 10_000
    ) -> None:
        """Fetch at most ``fetches`` robots.txt at once; ``rate`` is --per-host-rate."""
        self._client = client
        self._agent = agent
        self._slots = asyncio.Semaphore(fetches)
        self._rate = rate
        self._held_limit = held
        self._sites: dict[_Site, asyncio.Task[_Rules]] = {}  # one fetch per site, ever
        self._rates: dict[Hashable, float] = {}  # the rate set per key, the slowest
        self._group = asyncio.TaskGroup()
        self._keys: KeyedLimits | None = None
        self._ready: deque[tuple[int, str]] = deque()  # items free to go, in order
        self._held: dict[_Site, list[tuple[int, str]]] = {}  # items of sites not known yet
        self._count = 0  # items held, all sites together
        self._resolved: deque[_Site] = deque()  # sites known since last looked

    async def __aenter__(self) -> Self:
        """Open the task group of the fetches."""
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Cancel the fetches still going (the run is over), and wait for them.

        The group is left as if its body ended well: an error of the run goes on
        as it is, not wrapped in an ExceptionGroup (the fetches raise nothing).
        """
        for task in self._sites.values():
            task.cancel()
        await self._group.__aexit__(None, None, None)

    def bind(self, run: Run[Any]) -> None:
        """Take the run's keys, to set the rate of a site with a Crawl-delay."""
        keys = run.keys
        # --robots always makes limits per key that take a rate (per_key_of's needed=).
        assert not isinstance(keys, KeyBreakers)
        self._keys = keys

    async def items(
        self, source: Iterable[tuple[int, str]] | AsyncIterator[tuple[int, str]]
    ) -> AsyncIterator[tuple[int, str]]:
        """Yield ``source``'s items once their sites' robots.txt is known.

        Disallowed URLs come out as :class:`RobotsDeniedURL`. Items of a known site,
        or that are no http(s) URL (the action's own error says what is wrong),
        go on at once; the others wait for their site, the input read on meanwhile
        up to ``held`` items waiting.
        """
        pull = _puller(source)
        exhausted = False
        ready, held = self._ready, self._held
        while True:
            self._release()
            if ready:
                yield ready.popleft()
            elif not exhausted and self._count < self._held_limit:
                item = await pull()
                if item is None:
                    exhausted = True
                else:
                    self._sort(item)
            elif held:
                sites = [self._sites[site] for site in held]
                await asyncio.wait(sites, return_when=asyncio.FIRST_COMPLETED)
                self._resolved.extend(site for site in held if self._sites[site].done())
            else:
                return

    def _sort(self, item: tuple[int, str]) -> None:
        """Make ``item`` ready, or hold it for its site's robots.txt (fetch it if new)."""
        found = _site(item[1])
        if found is None:
            self._ready.append(item)
            return
        site, robots_url = found
        task = self._sites.get(site)
        if task is None:
            task = self._sites[site] = self._group.create_task(self._fetch(site[1], robots_url))
            task.add_done_callback(functools.partial(_note, self._resolved, site))
        if site in self._held or not task.done():
            self._held.setdefault(site, []).append(item)  # behind the site's earlier ones
            self._count += 1
        else:
            self._ready.append(self._verdict(task.result(), item))

    def _release(self) -> None:
        """Make ready the items of the sites whose robots.txt became known."""
        while self._resolved:
            site = self._resolved.popleft()
            waiting = self._held.pop(site, None)
            if waiting is not None:
                self._count -= len(waiting)
                rules = self._sites[site].result()
                self._ready.extend(self._verdict(rules, item) for item in waiting)

    def _verdict(self, rules: _Rules, item: tuple[int, str]) -> tuple[int, str]:
        line, url = item
        reason = rules.refusal(self._agent, url)
        if reason is None:
            return item
        denied = RobotsDeniedURL(url)
        denied.reason = reason
        return line, denied

    async def _fetch(self, key: Hashable, robots_url: str) -> _Rules:
        """Fetch and read one site's robots.txt (RFC 9309 for what cannot be read)."""
        site = str(key)
        async with self._slots:
            read = await self._read(site, robots_url)
        if isinstance(read, _Rules):
            return read
        import urllib.robotparser  # noqa: PLC0415 - urllib.request's import: 6 ms of each start

        parser = urllib.robotparser.RobotFileParser(robots_url)
        parser.parse(read.decode("utf-8", "replace").splitlines())
        delay = _delay(parser.crawl_delay(self._agent))
        if delay is not None:
            self._slow_down(key, 1 / delay)
        return _Rules(site, parser)

    async def _read(self, site: str, robots_url: str) -> bytes | _Rules:
        """Return the body of a 2xx robots.txt, or the rules of any other answer."""
        chunks: list[bytes] = []
        size = 0

        def keep(chunk: bytes) -> None:
            nonlocal size
            chunks.append(chunk[: MAX_ROBOTS_BYTES - size])
            size += len(chunk)
            if size >= MAX_ROBOTS_BYTES:
                raise _Enough

        try:
            reply = await self._client.request("GET", robots_url, body=keep)
        except _Enough:
            return b"".join(chunks)
        except TooManyRedirectsError:
            return _Rules(site)  # RFC 9309: unavailable, all allowed
        except Exception as exc:  # any failure: unreachable, said in the records
            why = f"{exc.kind}: {exc}" if isinstance(exc, HTTPClientError) else error_text(exc)
            return _Rules(site, denied=_unreachable(site, why))
        status = reply.status
        if status == 429 or status >= 500:
            return _Rules(site, denied=_unreachable(site, f"status {status}"))
        if not 200 <= status < 300:
            return _Rules(site)  # RFC 9309: unavailable (4xx), all allowed
        return b"".join(chunks)

    def _slow_down(self, key: Hashable, rate: float) -> None:
        """Give ``key`` this rate, unless --per-host-rate or an earlier one is slower."""
        slowest = min(rate, self._rate or math.inf, self._rates.get(key, math.inf))
        self._rates[key] = slowest
        if self._keys is not None:
            self._keys.set_rate(key, slowest)


def _note(resolved: deque[_Site], site: _Site, _: object) -> None:
    resolved.append(site)


def _unreachable(site: str, why: str) -> str:
    return (
        f"the robots.txt of {site} could not be read ({why}): RFC 9309 disallows "
        f"the whole site then"
    )


def _delay(value: str | float | None) -> float | None:
    """Return a usable Crawl-delay in seconds (None for none, 0 or nonsense)."""
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        seconds = float(value)
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    return None


def _site(url: str) -> tuple[_Site, str] | None:
    """Return the site of an http(s) URL (scheme, host key) and its robots.txt URL."""
    if type(url) is not str:
        return None  # a marked URL: its record says what is wrong
    try:
        parts = urllib.parse.urlsplit(url)
        key = host_of(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.hostname:
        return None
    robots = urllib.parse.urlunsplit((scheme, parts.netloc, "/robots.txt", "", ""))
    return (scheme, key), robots


def _puller(
    source: Iterable[tuple[int, str]] | AsyncIterator[tuple[int, str]],
) -> Callable[[], Awaitable[tuple[int, str] | None]]:
    """Return an async function giving ``source``'s next item, or None at its end."""
    if isinstance(source, AsyncIterator):
        iterator = source

        async def pull_async() -> tuple[int, str] | None:
            return await anext(iterator, None)

        return pull_async
    items = iter(source)

    async def pull() -> tuple[int, str] | None:
        return next(items, None)

    return pull
