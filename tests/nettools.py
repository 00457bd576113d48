"""Network helpers for the HTTP client's tests: a forward proxy, an HTTPS server, certificates.

All on 127.0.0.1, port 0. ``in_thread`` runs one of them on its own event loop for
the command line's tests, whose subject is a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import socket
import ssl
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import trustme
from aiohttp import web

from parallelize.testing import make_app

T = TypeVar("T")

PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request as the proxy received it."""

    method: str
    target: str  # absolute-form for http://, host:port for CONNECT
    credentials: str | None  # "user:password" from Proxy-Authorization, decoded


@dataclasses.dataclass
class ForwardProxy:
    """An HTTP forward proxy: absolute-form requests forwarded, CONNECT tunnelled."""

    url: str = ""
    seen: list[Seen] = dataclasses.field(default_factory=list)
    # The connections being served, and an event set when the last one ends.
    _writers: set[asyncio.StreamWriter] = dataclasses.field(default_factory=set)
    _idle: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._idle.clear()
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass  # a client or server that went away: the tests see it on their side
        finally:
            writer.close()
            self._writers.discard(writer)
            if not self._writers:
                self._idle.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines if line]
        credentials = next(
            (
                base64.b64decode(value.split()[-1]).decode()
                for name, value in headers
                if name.lower() == "proxy-authorization"
            ),
            None,
        )
        self.seen.append(Seen(method, target, credentials))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urllib.parse.urlsplit(target)
            upstream_reader, upstream_writer = await asyncio.open_connection(
                parts.hostname, parts.port or 80
            )
            origin = target[len(f"{parts.scheme}://{parts.netloc}") :] or "/"
            kept = [
                f"{name}: {value}\r\n"
                for name, value in headers
                if not name.lower().startswith("proxy-") and name.lower() != "connection"
            ]
            upstream_writer.write(
                f"{method} {origin} {version}\r\n{''.join(kept)}Connection: close\r\n\r\n".encode(
                    "latin-1"
                )
            )
        async with asyncio.TaskGroup() as group:
            group.create_task(_pipe(reader, upstream_writer))
            group.create_task(_pipe(upstream_reader, writer))

    async def close(self) -> None:
        """End every connection (a client may keep one open) and wait for its handler."""
        if not self._writers:
            return
        for writer in list(self._writers):
            writer.transport.abort()
        await self._idle.wait()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve an aiohttp ``app`` on 127.0.0.1 and a free port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()


@contextlib.asynccontextmanager
async def forward_proxy(user: str | None = None) -> AsyncIterator[ForwardProxy]:
    """Serve a :class:`ForwardProxy`; its ``url`` carries ``user`` ("name:password") if given."""
    proxy = ForwardProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy.url = f"http://{user + '@' if user else ''}127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        server.close()
        await proxy.close()
        await server.wait_closed()


@dataclasses.dataclass(frozen=True)
class Certificates:
    """A CA and a server certificate for 127.0.0.1, and a client's from another CA."""

    directory: Path
    authority: trustme.CA
    server: trustme.LeafCert
    client_authority: trustme.CA

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client-cert.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    @property
    def client_both(self) -> Path:
        return self.directory / "client.pem"

    def server_context(self, *, ask_client: bool = False) -> ssl.SSLContext:
        """The server's TLS context; ``ask_client``: mutual TLS, a client certificate required."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        if ask_client:
            context.verify_mode = ssl.CERT_REQUIRED
            self.client_authority.configure_trust(context)
        return context


def certificates(directory: Path) -> Certificates:
    """Issue the certificates and write the client's PEM files into ``directory``."""
    authority = trustme.CA()
    client_authority = trustme.CA()
    made = Certificates(
        directory, authority, authority.issue_cert("127.0.0.1", "localhost"), client_authority
    )
    authority.cert_pem.write_to_path(str(made.ca_file))
    client = client_authority.issue_cert("client@example.com")
    client.cert_chain_pems[0].write_to_path(str(made.client_cert))
    client.private_key_pem.write_to_path(str(made.client_key))
    client.private_key_and_cert_chain_pem.write_to_path(str(made.client_both))
    return made


@contextlib.asynccontextmanager
async def https_server(context: ssl.SSLContext) -> AsyncIterator[str]:
    """Serve :func:`parallelize.testing.make_app` over TLS; yield its base URL.

    ``/client`` answers the subject of the client's certificate (or "none").
    """
    app = make_app()

    async def client(request: web.Request) -> web.Response:
        transport = request.transport
        peer = None if transport is None else transport.get_extra_info("peercert")
        subject = "none" if not peer else str(dict(peer["subjectAltName"]))
        return web.Response(text=subject)

    app.router.add_get("/client", client)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, ssl_context=context).start()
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        sock.close()
        # A connection whose handshake the client refused may still be in its TLS
        # shutdown: on uvloop, closing the loop under it fails (EBUSY) and the
        # shutdown's last callback meets a closed loop. Let it finish first.
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def in_thread(factory: Callable[[], contextlib.AbstractAsyncContextManager[T]]) -> Iterator[T]:
    """Enter ``factory()`` on an event loop of its own thread; yield what it gives."""
    ready = threading.Event()
    entered: list[T] = []
    failed: list[BaseException] = []
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop_box.append((asyncio.get_running_loop(), stop))
        try:
            async with factory() as value:
                entered.append(value)
                ready.set()
                await stop.wait()
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        if failed:
            raise failed[0]
        yield entered[0]
    finally:
        if loop_box:
            loop, stop = loop_box[0]
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
