"""A local HTTP server with routes named by behaviour, for tests, benchmarks and demos.

Routes (every one also takes ``?retry_after=S``, sent as a ``Retry-After`` header
on a response that is not a 200):

    ``/page/{n}``              200, a small text body naming the page.
    ``/status/{code}``         that status, with a short body.
    ``/slow/{ms}``             200 after sleeping ``ms`` milliseconds.
    ``/flaky/{key}?fail=N&status=S&ms=M``
                               the first N requests for ``key`` get status S (default
                               503) at once, the next ones 200 after M milliseconds
                               (default 0): a service that recovers.
    ``/random/{percent}?seed=K`` a 500 for about ``percent``% of requests (a seeded
                               draw per request number), else 200.
    ``/reset``                 closes the connection without answering.
    ``/hang``                  never answers (until the client gives up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from parallelize._errors import MissingDependencyError

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ("ServerStats", "local_server", "make_app", "page_urls")


def _require_aiohttp() -> None:
    try:
        import aiohttp  # noqa: F401, PLC0415 - an optional extra, imported where used
    except ImportError as exc:
        raise MissingDependencyError("the local test server", "http", "aiohttp") from exc


@dataclasses.dataclass(slots=True)
class ServerStats:
    """What the server has seen: requests by path prefix, and the peak served at once."""

    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    by_key: dict[str, int] = dataclasses.field(default_factory=dict)  # /flaky hits per key


class _Routes:
    """The handlers, sharing the server's counters."""

    def __init__(self, counters: ServerStats) -> None:
        self.counters = counters
        self.draws = random.Random()  # noqa: S311 - fault injection, not cryptography

    @staticmethod
    def answer(request: web.Request, code: int, text: str) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        headers = {}
        retry_after = request.query.get("retry_after")
        if retry_after is not None and code != HTTPStatus.OK:
            headers["Retry-After"] = retry_after
        return web.Response(status=code, text=text, headers=headers)

    async def page(self, request: web.Request) -> web.Response:
        return self.answer(request, HTTPStatus.OK, f"page {request.match_info['n']}\n")

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return self.answer(request, code, f"status {code}\n")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return self.answer(request, HTTPStatus.OK, "slow\n")

    async def flaky(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        by_key = self.counters.by_key
        seen = by_key[key] = by_key.get(key, 0) + 1
        if seen <= int(request.query.get("fail", "1")):
            code = int(request.query.get("status", "503"))
            return self.answer(request, code, f"flaky {key}: failure {seen}\n")
        await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
        return self.answer(request, HTTPStatus.OK, f"flaky {key}: ok after {seen - 1}\n")

    async def chance(self, request: web.Request) -> web.Response:
        self.draws.seed(f"{request.query.get('seed', '0')}/{self.counters.requests}")
        if self.draws.random() * 100 < float(request.match_info["percent"]):
            return self.answer(request, HTTPStatus.INTERNAL_SERVER_ERROR, "random failure\n")
        return self.answer(request, HTTPStatus.OK, "random success\n")

    async def reset(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()  # the client sees the connection reset, no response
        msg = "/reset closed the connection on purpose"
        raise ConnectionResetError(msg)

    async def hang(self, request: web.Request) -> web.Response:
        # Answer nothing until the client gives up and closes the connection (then
        # the server can shut down without waiting for this handler).
        transport = request.transport
        while transport is not None and not transport.is_closing():  # noqa: ASYNC110 - no event tells a disconnect
            await asyncio.sleep(0.02)
        raise ConnectionResetError("the client went away")


def make_app(stats: ServerStats | None = None) -> web.Application:
    """Build the aiohttp application; ``stats`` (if given) counts requests."""
    _require_aiohttp()
    from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

    counters = stats if stats is not None else ServerStats()

    @web.middleware
    async def count(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        counters.requests += 1
        counters.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
        try:
            return await handler(request)
        finally:
            counters.in_flight -= 1

    routes = _Routes(counters)
    app = web.Application(middlewares=[count])
    app.router.add_get("/page/{n}", routes.page)
    app.router.add_get("/status/{code:\\d+}", routes.status)
    app.router.add_get("/slow/{ms:\\d+}", routes.slow)
    app.router.add_get("/flaky/{key}", routes.flaky)
    app.router.add_get("/random/{percent}", routes.chance)
    app.router.add_get("/reset", routes.reset)
    app.router.add_get("/hang", routes.hang)
    return app


@contextlib.asynccontextmanager
async def local_server(
    stats: ServerStats | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve :func:`make_app` in this event loop; yield its base URL (no trailing /).

    Example:
        >>> async with local_server() as base:
        ...     urls = page_urls(base, 1000)
    """
    app = make_app(stats)
    from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

    # Bind the socket ourselves so that port 0 gives a free port we can read back.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, backlog=1024).start()
        yield f"http://{host}:{bound_port}"
    finally:
        await runner.cleanup()
        sock.close()


def page_urls(base: str, count: int) -> list[str]:
    """Return ``count`` distinct page URLs on the server at ``base``."""
    return [f"{base}/page/{n}" for n in range(count)]


async def _serve_forever(port: int) -> None:
    async with local_server(port=port) as base:
        sys.stdout.write(f"{base}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Run the server until interrupted, printing its base URL on the first line."""
    parser = argparse.ArgumentParser(prog="python -m parallelize.testing")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port))
