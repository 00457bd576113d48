"""A local HTTP server with routes named by behaviour, for tests, benchmarks and demos.

Routes:
    ``/page/{n}``        200, a small text body naming the page.
    ``/status/{code}``   that status, with a short body.
    ``/slow/{ms}``       200 after sleeping ``ms`` milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
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

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"page {request.match_info['n']}\n")

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}\n")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return web.Response(text="slow\n")

    app = web.Application(middlewares=[count])
    app.router.add_get("/page/{n}", page)
    app.router.add_get("/status/{code:\\d+}", status)
    app.router.add_get("/slow/{ms:\\d+}", slow)
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
