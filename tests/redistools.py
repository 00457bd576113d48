"""A real ``redis-server`` for the tests, on 127.0.0.1, in a temporary directory.

Started with persistence (``appendonly yes``, ``appendfsync always``), so that a
restart in the middle of a run keeps every acknowledged write, as a production
Redis configured for it does. ``scripts/test.sh`` installs redis-server with apt-get where
it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process: start, stop (with its data saved), restart, kill."""

    def __init__(self, directory: Path, *, password: str | None = None, tls: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: 'apt-get install redis-server' (scripts/test.sh "
                "does it), then run the tests again"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.ca_file: Path | None = None  # with tls: the certificate authority to trust
        if tls:
            import trustme  # noqa: PLC0415 - only the TLS test needs it

            authority = trustme.CA()
            certificate = authority.issue_cert("127.0.0.1")
            self.ca_file = directory / "ca.pem"
            authority.cert_pem.write_to_path(str(self.ca_file))
            certificate.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "redis" if self.ca_file is None else "rediss"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        port = ["--port", str(self.port)]
        if self.ca_file is not None:
            pem = str(self.directory / "server.pem")
            port = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", pem]
            port += ["--tls-key-file", pem, "--tls-auth-clients", "no"]
        command = [
            self.binary,
            *port,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                pytest.fail(f"redis-server exited at start ({self.process.returncode}): {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if self.ca_file is not None:
                        return  # listening (a TLS handshake is the client's job)
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        pytest.fail("redis-server did not answer within 10 s")

    def stop(self) -> None:
        """SIGTERM: Redis writes its data and exits."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@contextlib.contextmanager
def running(
    directory: Path, *, password: str | None = None, tls: bool = False
) -> Iterator[RedisServer]:
    """A started server in ``directory``, stopped at the end (for the fixtures)."""
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory, password=password, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def finish(worker: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Wait for a worker's end: its output; on a timeout, fail with its stacks and log.

    A worker that does not end is never left running (it would load the machine,
    and the next tests with it): it dumps its stacks (SIGUSR1) and is killed.
    """
    try:
        return worker.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        worker.kill()
        _out, err = worker.communicate()
        pytest.fail(f"the worker did not end within {timeout} s; its stderr:\n{err[-6000:]}")


def spawn_worker(
    url: str, run: str, *args: str, script: str = "redis_worker.py"
) -> subprocess.Popen[str]:
    """Start ``script`` (``redis_worker.py``) in its own process (its docstring: the args)."""
    # The caller's PYTHONPATH goes on after ours: the tests run against another
    # copy of the source that way.
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, str(HERE / script), url, run, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
