"""nginx on 127.0.0.1 for the tests where a fast, independent server is the witness.

Some races (a reply that comes back while its task is being cancelled) only show
against a server that answers in microseconds. ``scripts/test.sh`` installs nginx
(nginx-light) with apt-get where it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ("nginx",)


def _binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.fail(
            "nginx is not installed: 'apt-get install nginx-light' (scripts/test.sh does "
            "it), then run the tests again"
        )
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def nginx(
    root: Path, files: dict[str, bytes], *, tls: tuple[Path, Path] | None = None, extra: str = ""
) -> Iterator[str]:
    """Serve ``files`` (path -> body) from ``root``/www; yield the base URL.

    ``tls``: (certificate chain, key) PEM files: https, HTTP/2 offered by ALPN.
    ``extra``: more directives for the server block.
    """
    binary = _binary()
    www = root / "www"
    for path, body in files.items():
        target = www / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    temp = root / "temp"
    temp.mkdir(exist_ok=True)
    port = _free_port()
    built = subprocess.run(  # noqa: S603 - the system's nginx
        [binary, "-V"], capture_output=True, text=True, check=False
    ).stderr
    temp_paths = [f"client_body_temp_path {temp};"] + [
        f"{module}_temp_path {temp};"
        for module in ("proxy", "fastcgi", "uwsgi", "scgi")
        if f"--without-http_{module}_module" not in built
    ]
    listen = ""
    if tls is not None:
        # "listen ... ssl http2": nginx < 1.25.1 has no "http2 on;".
        listen = f" ssl http2; ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}"
    config = root / "nginx.conf"
    config.write_text(
        "\n".join(
            [
                # Root's workers would run as nobody, who cannot read pytest's
                # temporary directories (mode 0700): 403 for every file.
                "user root;" if os.geteuid() == 0 else "",
                "worker_processes 1;",
                "daemon off;",
                f"pid {root}/nginx.pid;",
                f"error_log {root}/error.log warn;",
                "events { worker_connections 4096; }",
                "http {",
                "    access_log off;",
                "    log_not_found off;",
                "    keepalive_requests 1000000;",
                *temp_paths,
                f"    server {{ listen 127.0.0.1:{port}{listen}; root {www}; {extra} }}",
                "}",
                "",
            ]
        )
    )
    process = subprocess.Popen(  # noqa: S603 - the system's nginx, our config
        [binary, "-c", str(config), "-e", str(root / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"nginx did not start: {stderr}")
            time.sleep(0.02)
        yield f"{'https' if tls is not None else 'http'}://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
