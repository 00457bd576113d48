"""The local HTTP server of W4/W5 and pipeline.py: a tiny aiohttp app on 127.0.0.1.

It binds an OS-chosen port, prints it on its first line of output, and serves
until its parent closes its stdin, it is terminated, or --max-seconds pass (so it
can never outlive a benchmark run for long):

- `GET /`: a small body (W4, W5).
- `GET /doc/{n}?kb=KB&ms=MS`: JSON document n, about KB KiB (default 100), sent
  after MS milliseconds (default 0: a remote service's latency, standing in for
  the network a loopback fetch does not have). Its body is `document(kb, n)`:
  one of DOC_VARIANTS seeded documents, built once and cached, with `"id": n` in
  front, so serving it costs a copy, not a `json.dumps`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import socket
import sys

from aiohttp import web

BODY = b"ok\n" * 8
DOC_VARIANTS = 16  # distinct documents; /doc/{n} serves variant n % DOC_VARIANTS
MAX_DOC_KB = 10_000


async def hello(_request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


@functools.cache
def document_tail(kb: int, variant: int) -> bytes:
    """A seeded document of about ``kb`` KiB, without its opening brace and id.

    Records of ~230 bytes (an id, a name, a price, three tags, 12-30 words of
    text from a 3,000-word vocabulary), compact JSON, as an API might send them.
    """
    rng = random.Random(kb * 1009 + variant)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(3000)]
    tags = [f"tag{i}" for i in range(40)]
    records: list[dict[str, object]] = []
    size = 0
    while size < kb * 1024:
        record = {
            "id": len(records),
            "name": f"item-{variant}-{len(records)}",
            "price": round(rng.uniform(1, 500), 2),
            "tags": rng.sample(tags, 3),
            "text": " ".join(rng.choices(vocabulary, k=rng.randint(12, 30))),
        }
        records.append(record)
        size += len(json.dumps(record, separators=(",", ":"))) + 1
    whole = json.dumps({"records": records}, separators=(",", ":")).encode()
    return whole[1:]  # without "{": the id goes in front


def document(kb: int, n: int) -> bytes:
    """The body of ``/doc/{n}?kb=KB``: ``{"id":n,"records":[...]}``."""
    return b'{"id":%d,' % n + document_tail(kb, n % DOC_VARIANTS)


async def doc(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    kb = int(request.query.get("kb", "100"))
    ms = float(request.query.get("ms", "0"))
    if not 1 <= kb <= MAX_DOC_KB:
        return web.Response(status=400, text=f"kb must be in 1..{MAX_DOC_KB}\n")
    if ms > 0:
        await asyncio.sleep(ms / 1000)
    return web.Response(body=document(kb, n), content_type="application/json")


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
    app.router.add_get("/doc/{n:\\d+}", doc)
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
