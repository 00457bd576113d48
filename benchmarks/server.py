"""The local HTTP server of W4/W5: a tiny aiohttp app on 127.0.0.1.

It binds an OS-chosen port, prints it on its first line of output, and serves
`GET /` with a small body until its parent closes its stdin, it is terminated,
or --max-seconds pass (so it can never outlive a benchmark run for long).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from aiohttp import web

BODY = b"ok\n" * 8


async def hello(_request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


def bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


async def stdin_closed() -> None:
    """Return when the parent closes our stdin (or dies): the pipe turns readable at EOF."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), readable.set)
    try:
        await readable.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())


async def serve(max_seconds: float) -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = bind_loopback()
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    try:
        await asyncio.wait_for(stdin_closed(), timeout=max_seconds)
    except TimeoutError:
        pass
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop (faster)")
    args = parser.parse_args()
    factory = None
    if args.uvloop:
        import uvloop  # noqa: PLC0415

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.max_seconds))


if __name__ == "__main__":
    main()
