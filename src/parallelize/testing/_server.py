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
    ``/redirect/{n}``          302 to ``/redirect/{n-1}``; ``/redirect/0`` is a page.
    ``/big/{bytes}?chunked=1`` a body of that many bytes, streamed in 64 KiB writes,
                               with its Content-Length (or chunked, without it).
    ``/echo``                  any method: a JSON object of the request's method, path,
                               headers (``[name, value]`` pairs, in order) and body
                               (as UTF-8 text, ``"body"``).
    ``/goto/{status}?url=U``   a redirect of that status (301, 302, 303, 307, 308) to U.
    ``/target/...?max=N``      any method: a JSON object of the request target exactly as
                               sent (``"target"``, not decoded) and the Host header; 414
                               URI Too Long when the target is longer than N bytes (as a
                               server limit would). Request lines up to 1 MiB are read.
    ``/cut``                   promises 1000 bytes, sends 10, closes: a cut body.
    ``/capacity/{n}``          a service with a hidden capacity (see :class:`Capacity`):
                               up to ``k`` requests are served at once in ``ms``
                               milliseconds, the next ``k`` queue for their turn, and
                               beyond ``2 * k`` in the service the answer is 503 at once.
    ``/capacity/set?k=K&ms=M`` changes the capacity while the server runs.
    ``/cookie/set/{name}/{value}?path=P&next=U``
                               sets that cookie (``Path=P``, default ``/``) and
                               redirects (302) to U (default ``/echo``); ``next=``
                               empty: a 200 instead.
    ``/file/{name}?size=N&cd=F&cut=K&etag=E``
                               a file of N bytes (default 1000; byte i is
                               ``name[i % len(name)]``) with an ``ETag`` (``"E"``,
                               default ``"name-N"``) and a ``Last-Modified``: a
                               matching ``If-None-Match`` or ``If-Modified-Since`` gets
                               304; ``Range: bytes=A-`` a 206 from A (416 past the
                               end; a 200 with an ``If-Range`` that does not match);
                               ``cd=F`` a ``Content-Disposition`` naming F (sent as
                               it is given); ``cut=K`` closes the connection once
                               the body reaches byte K of the file; ``step=S`` a
                               206 of at most S bytes.
    ``/sitemap/{n}.xml?first=F``  a sitemap of ``/page/F`` .. ``/page/F+n-1`` (F default 1).
    ``/sitemap-index/{k}/{n}.xml`` a sitemap index of k sitemaps of n pages each, in order.
    ``/sitemap.xml``           ``/sitemap-index/2/3.xml``: a site's sitemap, for the docs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from parallelize._errors import MissingDependencyError
from parallelize._util import check_int

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ("Capacity", "ServerStats", "local_server", "make_app", "page_urls")

_SITEMAPS = "http://www.sitemaps.org/schemas/sitemap/0.9"


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


@dataclasses.dataclass(slots=True)
class Capacity:
    """A service that can take ``k`` requests at once, for adaptive concurrency.

    Up to ``k`` requests are served in parallel, each in ``ms`` milliseconds; the
    next ``k`` wait in line (first come, first served), so latency grows with the
    queue; a request arriving while ``2 * k`` are in the service gets a 503 at once.
    Change ``k`` or ``ms`` at any time (directly, or with ``GET /capacity/set?k=16``):
    waiting requests start as soon as the new ``k`` lets them.

    Attributes:
        k: Requests served at once (>= 1).
        ms: Milliseconds to serve one request.
        served: Requests answered 200 so far.
        rejected: Requests answered 503 so far.
    """

    k: int = 64
    ms: float = 20.0
    served: int = 0
    rejected: int = 0
    _busy: int = dataclasses.field(default=0, init=False, repr=False)
    _queue: deque[asyncio.Future[None]] = dataclasses.field(
        default_factory=deque, init=False, repr=False
    )

    @property
    def in_service(self) -> int:
        """Requests being served or waiting in line."""
        return self._busy + len(self._queue)

    def resize(self, k: int | None = None, ms: float | None = None) -> None:
        """Change the capacity (and the service time) now."""
        if k is not None:
            self.k = check_int("k", k, 1)
        if ms is not None:
            self.ms = ms
        self._admit()

    def _admit(self) -> None:
        while self._queue and self._busy < self.k:
            waiter = self._queue.popleft()
            if not waiter.done():
                self._busy += 1
                waiter.set_result(None)

    async def serve(self) -> bool:
        """Serve one request; return False if it was turned away (503)."""
        if self.in_service >= 2 * self.k:
            self.rejected += 1
            return False
        if self._busy < self.k and not self._queue:
            self._busy += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._queue.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._busy -= 1  # admitted, then cancelled: give the place back
                    self._admit()
                raise
        try:
            await asyncio.sleep(self.ms / 1000)
        finally:
            self._busy -= 1
            self._admit()
        self.served += 1
        return True


class _Routes:
    """The handlers, sharing the server's counters."""

    def __init__(self, counters: ServerStats, capacity: Capacity) -> None:
        self.counters = counters
        self.capacity = capacity
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

    async def limited(self, request: web.Request) -> web.Response:
        if await self.capacity.serve():
            return self.answer(request, HTTPStatus.OK, f"served {request.match_info['n']}\n")
        return self.answer(request, HTTPStatus.SERVICE_UNAVAILABLE, "over capacity\n")

    async def resize(self, request: web.Request) -> web.Response:
        k = request.query.get("k")
        ms = request.query.get("ms")
        self.capacity.resize(None if k is None else int(k), None if ms is None else float(ms))
        return self.answer(request, HTTPStatus.OK, f"k={self.capacity.k} ms={self.capacity.ms}\n")

    async def reset(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()  # the client sees the connection reset, no response
        msg = "/reset closed the connection on purpose"
        raise ConnectionResetError(msg)

    async def redirect(self, request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        n = int(request.match_info["n"])
        if n <= 0:
            return self.answer(request, HTTPStatus.OK, "redirected\n")
        raise web.HTTPFound(f"/redirect/{n - 1}")

    @staticmethod
    async def big(request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        size = int(request.match_info["size"])
        response = web.StreamResponse()
        if request.query.get("chunked") == "1":
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        block = b"x" * 65536
        while size > 0:
            await response.write(block[:size])
            size -= len(block)
        await response.write_eof()
        return response

    @staticmethod
    async def echo(request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        data = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": [[name, value] for name, value in request.headers.items()],
                "body": data.decode("utf-8", "replace"),
            }
        )

    @staticmethod
    async def goto(request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        status = int(request.match_info["status"])
        return web.Response(status=status, headers={"Location": request.query["url"]})

    @staticmethod
    async def target(request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        raw = request.raw_path  # the request line's target, as the client wrote it
        most = request.query.get("max")
        if most is not None and len(raw) > int(most):
            return web.Response(status=HTTPStatus.REQUEST_URI_TOO_LONG, text="URI too long\n")
        return web.json_response({"target": raw, "host": request.headers.get("Host")})

    @staticmethod
    async def cut(request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"0123456789")
        transport = request.transport
        if transport is not None:
            transport.close()  # the client sees the body end 990 bytes early
        return response

    @staticmethod
    async def set_cookie(request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        name, value = request.match_info["name"], request.match_info["value"]
        cookie = f"{name}={value}; Path={request.query.get('path', '/')}"
        following = request.query.get("next", "/echo")
        if not following:
            return web.Response(text="set\n", headers={"Set-Cookie": cookie})
        return web.Response(status=302, headers={"Set-Cookie": cookie, "Location": following})

    @staticmethod
    async def file(request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        name = request.match_info["name"]
        size = int(request.query.get("size", "1000"))
        etag = '"{}"'.format(request.query.get("etag", f"{name}-{size}"))
        modified = "Wed, 01 Jan 2025 00:00:00 GMT"
        headers = {"ETag": etag, "Last-Modified": modified, "Accept-Ranges": "bytes"}
        if "cd" in request.query:
            headers["Content-Disposition"] = request.query["cd"]
        if request.headers.get("If-None-Match") == etag or (
            "If-None-Match" not in request.headers
            and request.headers.get("If-Modified-Since") == modified
        ):
            return web.Response(status=304, headers=headers)
        start = 0
        ranged = request.headers.get("Range", "")
        partial = ranged.startswith("bytes=") and ranged.endswith("-") and ranged[6:-1].isdigit()
        if request.headers.get("If-Range", etag) not in {etag, modified}:
            partial = False  # the file changed since the part was written: all of it
        if partial:
            start = int(ranged[6:-1])
            if start >= size:
                headers["Content-Range"] = f"bytes */{size}"
                return web.Response(status=416, headers=headers)
            step = int(request.query.get("step", str(size)))
            end = min(size, start + step)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            size = end  # a server that sends a range in steps: the rest on the next request
        response = web.StreamResponse(status=206 if partial else 200, headers=headers)
        response.content_length = size - start
        await response.prepare(request)
        pattern = name.encode() or b"x"
        cut = int(request.query.get("cut", str(size)))
        position = start
        while position < size:
            end = min(size, position + 65536, cut if cut > position else size)
            await response.write(bytes(pattern[i % len(pattern)] for i in range(position, end)))
            position = end
            if position == cut and cut < size:
                await asyncio.sleep(0.05)  # the bytes so far reach the client first
                if request.transport is not None:
                    request.transport.close()
                return response
        await response.write_eof()
        return response

    @staticmethod
    async def sitemap(request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        count = int(request.match_info["n"])
        first = int(request.query.get("first", "1"))
        base = f"{request.scheme}://{request.host}"
        locs = "".join(
            f"<url><loc>{base}/page/{n}</loc></url>" for n in range(first, first + count)
        )
        text = f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="{_SITEMAPS}">{locs}</urlset>'
        return web.Response(text=text, content_type="application/xml")

    @staticmethod
    async def sitemap_index(request: web.Request) -> web.Response:
        from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

        parts = int(request.match_info.get("k", "2"))
        count = int(request.match_info.get("n", "3"))
        base = f"{request.scheme}://{request.host}"
        locs = "".join(
            f"<sitemap><loc>{base}/sitemap/{count}.xml?first={1 + part * count}</loc></sitemap>"
            for part in range(parts)
        )
        text = f'<?xml version="1.0"?><sitemapindex xmlns="{_SITEMAPS}">{locs}</sitemapindex>'
        return web.Response(text=text, content_type="application/xml")

    async def hang(self, request: web.Request) -> web.Response:
        # Answer nothing until the client gives up and closes the connection (then
        # the server can shut down without waiting for this handler).
        transport = request.transport
        while transport is not None and not transport.is_closing():  # noqa: ASYNC110 - no event tells a disconnect
            await asyncio.sleep(0.02)
        raise ConnectionResetError("the client went away")


def make_app(stats: ServerStats | None = None, capacity: Capacity | None = None) -> web.Application:
    """Build the aiohttp application; ``stats`` (if given) counts requests.

    ``capacity`` is the hidden capacity behind ``/capacity/{n}`` (default: a new
    :class:`Capacity`, 64 at once in 20 ms).
    """
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

    routes = _Routes(counters, capacity if capacity is not None else Capacity())
    app = web.Application(middlewares=[count])
    app.router.add_get("/page/{n}", routes.page)
    app.router.add_get("/status/{code:\\d+}", routes.status)
    app.router.add_get("/slow/{ms:\\d+}", routes.slow)
    app.router.add_get("/flaky/{key}", routes.flaky)
    app.router.add_get("/random/{percent}", routes.chance)
    app.router.add_get("/capacity/set", routes.resize)
    app.router.add_get("/capacity/{n}", routes.limited)
    app.router.add_get("/reset", routes.reset)
    app.router.add_get("/hang", routes.hang)
    app.router.add_get("/redirect/{n:\\d+}", routes.redirect)
    app.router.add_get("/big/{size:\\d+}", routes.big)
    app.router.add_get("/cut", routes.cut)
    app.router.add_route("*", "/echo", routes.echo)
    app.router.add_route("*", "/goto/{status:\\d+}", routes.goto)
    app.router.add_route("*", "/target", routes.target)
    app.router.add_route("*", "/target/{tail:.*}", routes.target)
    app.router.add_get("/cookie/set/{name}/{value}", routes.set_cookie)
    app.router.add_get("/file/{name}", routes.file)
    app.router.add_get("/sitemap/{n:\\d+}.xml", routes.sitemap)
    app.router.add_get("/sitemap-index/{k:\\d+}/{n:\\d+}.xml", routes.sitemap_index)
    app.router.add_get("/sitemap.xml", routes.sitemap_index)  # k=2, n=3 by default
    return app


@contextlib.asynccontextmanager
async def local_server(
    stats: ServerStats | None = None,
    *,
    capacity: Capacity | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[str]:
    """Serve :func:`make_app` in this event loop; yield its base URL (no trailing /).

    Example:
        >>> async with local_server() as base:
        ...     urls = page_urls(base, 1000)
    """
    app = make_app(stats, capacity)
    from aiohttp import web  # noqa: PLC0415 - an optional extra, imported where used

    # Bind the socket ourselves so that port 0 gives a free port we can read back.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    # Long request lines are read (aiohttp's limit is 8190 bytes): /target answers
    # 414 itself, as a server's own limit would.
    runner = web.AppRunner(app, access_log=None, max_line_size=1 << 20)
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


async def _serve_forever(port: int, capacity: Capacity) -> None:
    async with local_server(port=port, capacity=capacity) as base:
        sys.stdout.write(f"{base}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Run the server until interrupted, printing its base URL on the first line."""
    parser = argparse.ArgumentParser(prog="python -m parallelize.testing")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument(
        "--capacity", type=int, default=64, help="/capacity/{n}: requests served at once"
    )
    parser.add_argument(
        "--ms", type=float, default=20.0, help="/capacity/{n}: milliseconds per request"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, Capacity(args.capacity, args.ms)))
