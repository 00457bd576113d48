"""``parallelize fetch``: GET (or any method) every URL of a file, one JSON line each.

One client of :mod:`parallelize.http` for the whole run (``--client``, default the
fastest installed), its connection pool as large as ``--workers``. The action
returns the finished JSON line of a success, so that a journal stores, and a
rerun replays, exactly what was written. Every failure (an HTTP status >= 400
included) is raised, so that parallelize retries it when it should, counts it as
failed and, with a journal, runs it again on the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from parallelize import (
    MissingDependencyError,
)
from parallelize.http import (
    BACKENDS,
    Client,
    InvalidURLError,
    backends,
    check_client_options,
    open_client,
)

from ._attempt import make_exchange
from ._crawl import check_crawl_options, saved_cookies, sitemap_items
from ._errors import UsageError
from ._execution import execute, wants_progress
from ._fetch_failures import final_failure, make_failure_line, retryable
from ._fetch_remote import child_client, exchange
from ._fields import TRACED
from ._files import check_distinct_files, check_journal
from ._input import NotUTF8, count_items, open_input, read_items
from ._job import Job, retry_of
from ._loop import run_loop
from ._output import open_output
from ._per_key import host_key, per_key_of
from ._request import RequestShape, request_shape
from ._request_lines import RequestLine, parse_request
from ._robots import MarkedURL, RobotsGate, agent_token
from ._shared_run import check_queue_options
from ._unique import UniqueKeys

if TYPE_CHECKING:
    import argparse

    from ._saving import Saving

__all__ = ("fetch_command", "parse_header")

# The breaker's default (--host-failures; 0 turns it off).
HOST_FAILURES = 10


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` as ``("Name", "value")``; ValueError if it has no name."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c.isspace() for c in name):
        raise ValueError(f"expected 'Name: value', got {text!r}")
    return name, value.strip()


class _BadURL(MarkedURL):
    """A URL line that cannot be a URL: its record is an ``invalid_url`` failure."""

    __slots__ = ()

    def error(self) -> Exception:
        """Return the :class:`InvalidURLError` saying why."""
        return InvalidURLError(self.reason)


# Blanks inside a line: "http://h/echo<TAB>extra" is no URL (a second column, say).
_BLANK = re.compile(r"\s").search


def _parse_line(number: int, text: str) -> tuple[int, str] | None:
    url = text.strip()
    if not url or url.startswith("#"):
        return None
    return _url_line(number, text, url)


def _parse_request_line(number: int, text: str) -> tuple[int, str] | None:
    """Parse a line of ``--requests``: a JSON object is a request, any other a URL."""
    url = text.strip()
    if not url or url.startswith("#"):
        return None
    if url.startswith("{") and type(text) is not NotUTF8:
        return number, parse_request(url)
    return _url_line(number, text, url)


def _url_line(number: int, text: str, url: str) -> tuple[int, str]:
    if type(text) is NotUTF8:
        bad = _BadURL(url)
        bad.reason = text.reason
        return number, bad
    blank = _BLANK(url)
    if blank is not None:
        bad = _BadURL(url)
        bad.reason = (
            f"the line has a blank ({blank.group()!r}) at column {blank.start() + 1}: one "
            f"URL a line, with spaces written %20"
        )
        return number, bad
    return number, url


def _url_of(item: tuple[int, str]) -> str:
    """Return the journal's key of an item: its URL (so that lines may move between runs).

    A request line's: its ``key``, or the whole request (a POST's body included).
    """
    url = item[1]
    return url.journal_key if type(url) is RequestLine else url


def _line_parser(
    options: argparse.Namespace, unique: UniqueKeys | None = None
) -> Callable[[int, str], tuple[int, str] | None]:
    """Return how a line becomes an item; with ``--unique``, a repeated key becomes none."""
    parse = _parse_request_line if options.requests else _parse_line
    if unique is None:
        return parse
    seen = unique.seen

    def parse_once(number: int, text: str) -> tuple[int, str] | None:
        item = parse(number, text)
        return None if item is None or seen(_url_of(item)) else item

    return parse_once


def fetch_command(options: argparse.Namespace, argv: list[str]) -> int:
    """Run ``parallelize fetch`` with its parsed ``options``; return the exit code.

    Raises:
        UsageError: The HTTP client is missing, or the input, the output or the
            save directory cannot be used (checked before any request).
    """
    options.client = _client_name(options.client)
    _check_tls_and_proxy(options)
    options.shape = request_shape(options)
    if options.http2 and options.client != "pyreqwest":
        raise UsageError("--http2 needs --client pyreqwest: aiohttp speaks HTTP/1.1 only")
    if options.retry_on is not None and not options.retries:
        raise UsageError("--retry-on says what --retries tries again: give --retries N too")
    options.method = options.shape.method
    if options.robots and options.run_name is not None:
        raise UsageError(
            "--robots does not go with --run: the workers of a shared run take their "
            "URLs from Redis, past this process's robots.txt check"
        )
    options.keyed = per_key_of(
        options,
        host_key,
        "host",
        needed=options.robots,
        failures=HOST_FAILURES,
        breaker_alone=True,
    )
    check_journal(options.journal)
    check_crawl_options(options)
    if options.sitemap:
        _check_sitemap(options)
    check_queue_options(options, options.urls or (options.sitemap or [None])[0], "URLS")
    with open_input(options.urls, "the URLS file") as stream:
        check_distinct_files(
            stream,
            "the URLS file",
            output=options.output,
            journal=options.journal,
            save_dir=options.save_dir,
        )
        if options.save_dir is not None:
            try:
                Path(options.save_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot make the --save-dir directory {options.save_dir!r}: "
                    f"{exc.strerror or exc}"
                ) from exc
        total = None
        if wants_progress(options.progress, options.quiet):
            # The same filter's decisions on the same lines: the count is exact.
            total = count_items(
                stream, _line_parser(options, UniqueKeys() if options.unique else None)
            )
        return run_loop(_fetch(options, stream, argv, total), options.uvloop)


def _check_sitemap(options: argparse.Namespace) -> None:
    """Refuse what does not go with ``--sitemap``: it is the input."""
    if options.urls is not None:
        raise UsageError("--sitemap is the input: give URLS or --sitemap, not both")
    for flag, value in (("--requests", options.requests), ("--run", options.run_name)):
        if value:
            raise UsageError(f"--sitemap does not go with {flag}: save its URLs to a file first")


def outcome_settings(options: argparse.Namespace) -> dict[str, Any]:
    """Return what shapes a URL's outcome besides the URL, for the journal to compare.

    Header values and the proxy are stored as a short hash (an Authorization
    header, a proxy's password are no business of the journal file), so a change
    says which one, not its value. The client certificate is who asks: a reply
    may depend on it. ``--cacert`` and ``-k`` are left out: they only turn a
    ``tls`` failure into a reply, and failures are run again anyway.
    """
    shape: RequestShape = options.shape
    settings = {
        "method": shape.method,
        "headers": [
            [name, _short_hash(value)] for name, value in [*options.headers, *shape.headers]
        ],
        "save_dir": _absolute(options.save_dir),
        "max_body": options.max_body,
        "proxy": None if options.proxy is None else _short_hash(options.proxy),
        "client_cert": _absolute(options.cert),
    }
    if shape.content is not None:  # only then: a journal of a body-less fetch is unchanged
        settings["body"] = "sha256:" + hashlib.sha256(shape.content).hexdigest()[:16]
    if options.save_as != "hash":  # the same: only when it names files otherwise
        settings["save_as"] = options.save_as
    if options.content_disposition:
        settings["content_disposition"] = True
    return settings


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)  # noqa: PTH100 - a str, stored


def _short_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


# open_client's parameters, and the options that set them.
_OPTION_OF = (
    ("ca_file", "--cacert"),
    ("client_cert", "--cert"),
    ("client_key", "--key"),
    ("proxy", "--proxy"),
    ("resolve", "--resolve"),
)


def _check_tls_and_proxy(options: argparse.Namespace) -> None:
    """Refuse what the HTTP client would refuse, before anything is opened.

    --proxy, --cacert, --cert, --key, and the environment's proxy variables.
    """
    if options.key is not None and options.cert is None:
        raise UsageError(
            "--key needs --cert: pass the certificate file too (or one file with both as --cert)"
        )
    try:
        check_client_options(
            proxy=options.proxy,
            ca_file=options.cacert,
            client_cert=options.cert,
            client_key=options.key,
            name=options.client,
            resolve=dict(options.resolve),
        )
    except ValueError as exc:
        message = str(exc)
        for parameter, option in _OPTION_OF:
            if message.startswith((f"{parameter}:", f"{parameter} ")):
                message = option + message[len(parameter) :]
                break
        else:  # a proxy variable of the environment
            message += "; unset it, or pass --proxy URL (--proxy '' for none)"
        raise UsageError(message) from None


def _client_name(asked: str | None) -> str:
    """Return the backend to use: the one asked for, or the fastest installed."""
    installed = backends()
    if asked is None:
        if not installed:
            error = MissingDependencyError("this command", "http", "aiohttp")
            raise UsageError(f'{error} (or "parallelize[fast]" for pyreqwest)')
        return installed[0]
    if asked not in installed:
        module, extra = BACKENDS[asked]
        raise UsageError(str(MissingDependencyError(f"--client {asked}", extra, module)))
    return asked


def _client_settings(options: argparse.Namespace) -> dict[str, Any]:
    """Return open_client's arguments for this fetch (a child's too: plain data)."""
    # --timeout is the client's, not the run's: see parallelize.http on cancellation.
    return {
        "name": options.client,
        "connections": options.workers,
        "headers": options.headers,
        "timeout": options.timeout or None,
        "proxy": options.proxy,
        "ca_file": options.cacert,
        "verify": not options.insecure,
        "client_cert": options.cert,
        "client_key": options.key,
        "connect_timeout": options.connect_timeout,
        "resolve": dict(options.resolve),
        "limit_rate": _limit_rate(options),
        "http2": options.http2,
        "trace": not TRACED.isdisjoint(options.fields),
        "cookies": options.cookie_jar_object,
    }


def _limit_rate(options: argparse.Namespace) -> float | None:
    """Return a client's share of --limit-rate: all of it, or a child's (--processes)."""
    rate: int | None = options.limit_rate
    if not rate:  # none, or 0: no limit, as curl's --limit-rate 0
        return None
    processes = options.processes
    if processes is None:
        return float(rate)
    if processes == "auto":
        processes = len(os.sched_getaffinity(0))
    return max(1.0, rate / int(processes))


async def _fetch(
    options: argparse.Namespace,
    stream: IO[bytes] | None,
    argv: list[str],
    total: int | None,
) -> int:
    """Fetch, on the event loop: the client, the action, the run.

    The output is opened last, once the first ``--sitemap`` is read.
    """
    settings = _client_settings(options)
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(saved_cookies(options))  # written once the client is closed
        remote = None
        if options.processes is not None:
            from parallelize import open_processes  # noqa: PLC0415 - 10 ms, when asked for

            setup = functools.partial(
                child_client,
                settings,
                options.shape,
                options.saving,
                options.max_body,
                options.fields,
                options.recrawl,
            )
            remote = await stack.enter_async_context(
                open_processes(exchange, options.processes, setup=setup)
            )
        client = None
        if remote is None or options.robots or options.sitemap:
            client = await stack.enter_async_context(open_client(**settings))
        sitemap = None
        if options.sitemap:
            assert client is not None
            unique = UniqueKeys() if options.unique else None
            options.unique_filter = unique
            sitemap = await sitemap_items(
                client,
                options.sitemap,
                _line_parser(options, unique),
                quiet=options.quiet,
                headers=[
                    (name, value)
                    for name, value in options.shape.headers
                    if name.lower() in {"authorization", "cookie"}
                ],
            )
        robots = None
        if options.robots:
            assert client is not None
            robots = await stack.enter_async_context(
                RobotsGate(
                    client,
                    agent_token(options.headers),
                    fetches=options.workers,
                    rate=options.per_key_rate,
                )
            )
        job = _job(client, remote, robots, options, stream, total, sitemap)
        sink = stack.enter_context(open_output(options.output))
        sink.render = options.render
        return await execute(job, options, sink, argv)


def _job(  # noqa: PLR0917 - the parts of one fetch
    client: Client | None,
    remote: Callable[..., Awaitable[Any]] | None,
    robots: RobotsGate | None,
    options: argparse.Namespace,
    stream: IO[bytes] | None,
    total: int | None,
    sitemap: AsyncIterator[tuple[int, str]] | None = None,
) -> Job:
    """Return the fetch's job: the action, its items (through ``--robots``' gate)."""
    loop = asyncio.get_running_loop()
    starts: dict[int, float] = {}  # line -> clock time of its item's first attempt
    tries: dict[int, int] = {}  # line -> attempts so far
    if remote is None:
        assert client is not None
        clock = loop.time
        action = _make_fetch(
            client,
            shape=options.shape,
            saving=options.saving,
            max_body=options.max_body,
            starts=starts,
            tries=tries,
            fields=options.fields,
            recrawl=options.recrawl,
        )
        note = f"client {client.name}"
    else:
        clock = time.monotonic  # the children's clock too
        action = _remote_fetch(remote, starts, tries)
        processes = options.processes
        if processes == "auto":
            processes = len(os.sched_getaffinity(0))
        note = f"client {options.client}, {processes} processes"
    if sitemap is None:
        unique = UniqueKeys() if options.unique else None
        items = read_items(stream, _line_parser(options, unique))
    else:
        unique, items = options.unique_filter, sitemap
    return Job(
        action=action,
        items=items if robots is None else robots.items(items),
        failure_line=make_failure_line(
            clock, starts, tries, options.timeout, options.connect_timeout
        ),
        noun="URLs",
        reads_stdin=options.urls == "-",
        retry=retry_of(options, retryable(options.retry_on)),
        key=_url_of,
        total=total,
        summary_note=note if unique is None else _with_dropped(note, unique),
        timeout_in_action=True,
        settings=outcome_settings(options),
        per_key=options.keyed,
        on_run=None if robots is None else robots.bind,
        final=final_failure(options.retry_on),
    )


def _with_dropped(note: str, unique: UniqueKeys) -> Callable[[], str]:
    """Return the summary's note with the lines --unique dropped, counted at the end."""
    return lambda: f"{note}; {unique.dropped:,} repeated lines dropped (--unique)"


def _remote_fetch(
    remote: Callable[..., Awaitable[Any]], starts: dict[int, float], tries: dict[int, int]
) -> Callable[[int, str], Awaitable[str]]:
    """Return the action of ``--processes``: the attempt made by a child process."""
    clock = time.monotonic

    async def fetch(line: int, url: str) -> str:
        if type(url) is not str and isinstance(url, MarkedURL):
            raise url.error()  # a bad line, or a URL that robots.txt disallows
        first = starts.setdefault(line, clock())
        attempt = tries[line] = tries.get(line, 0) + 1
        record: str = await remote(line, url, first, attempt)
        del starts[line], tries[line]
        return record

    return fetch


def _make_fetch(
    client: Client,
    *,
    shape: RequestShape,
    saving: Saving | None,
    max_body: int | None,
    starts: dict[int, float],
    tries: dict[int, int],
    fields: tuple[str, ...] = (),
    recrawl: str | None = None,
) -> Callable[[int, str], Awaitable[str]]:
    """Return the action: one request, its body drained or saved, its JSON line.

    ``starts`` and ``tries`` keep, per line, the first attempt's time and the
    attempts made, for the record of an item that was retried.
    """
    clock = asyncio.get_running_loop().time
    exchange = make_exchange(
        client.request, shape, saving, max_body, clock, fields=fields, recrawl=recrawl
    )

    async def fetch(line: int, url: str) -> str:
        if type(url) is not str and isinstance(url, MarkedURL):
            raise url.error()  # a bad line, or a URL that robots.txt disallows
        first = starts.setdefault(line, clock())
        attempt = tries[line] = tries.get(line, 0) + 1
        record = await exchange(line, url, first, attempt)
        del starts[line], tries[line]
        return record

    return fetch
