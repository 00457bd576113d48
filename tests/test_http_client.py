"""The HTTP client seam (``parallelize.http``): every backend, the same replies and errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from parallelize import Failure, MissingDependencyError, Retry, parallelize
from parallelize.http import (
    BodyTooLargeError,
    ConnectError,
    HTTPClientError,
    InvalidURLError,
    ProtocolError,
    RequestTimeoutError,
    TooManyRedirectsError,
    backends,
    open_client,
)
from parallelize.testing import ServerStats, local_server, page_urls


@pytest.fixture(params=backends())
def client_name(request: pytest.FixtureRequest) -> str:
    """The name of an installed HTTP client; each test runs once per client."""
    name: str = request.param
    return name


def test_both_backends_are_installed_for_the_tests() -> None:
    assert backends() == ["pyreqwest", "aiohttp"]  # fastest first


def test_replies_keep_discard_or_stream_the_body(run: Any, client_name: str) -> None:
    """body="keep" holds it, "discard" counts it, a function gets every chunk in order."""

    async def main() -> None:
        async with local_server() as base, open_client(client_name) as client:
            assert client.name == client_name
            kept = await client.request("GET", f"{base}/page/7")
            assert (kept.status, kept.reason, kept.body, kept.size) == (200, "OK", b"page 7\n", 7)
            assert kept.url == f"{base}/page/7"
            assert kept.headers["content-type"].startswith("text/plain")
            assert kept.headers.get("Content-Type") == kept.headers["content-type"]
            dropped = await client.request("GET", f"{base}/big/300000", body="discard")
            assert (dropped.size, dropped.body) == (300000, b"")
            chunks: list[bytes] = []
            streamed = await client.request("GET", f"{base}/big/300000", body=chunks.append)
            assert streamed.size == 300000 == sum(map(len, chunks))
            assert b"".join(chunks) == b"x" * 300000
            assert streamed.body == b""
            missing = await client.request("GET", f"{base}/status/404")
            assert (missing.status, missing.reason, missing.body) == (
                404,
                "Not Found",
                b"status 404\n",
            )

    run(main())


def test_headers_methods_and_redirects(run: Any, client_name: str) -> None:
    """Default headers are sent, a repeated name too; a 303 turns POST into GET, a 307
    keeps it."""

    async def main() -> None:
        async with (
            local_server() as base,
            open_client(
                client_name, headers=[("X-Token", "t1"), ("X-Tag", "a"), ("X-Tag", "b")]
            ) as client,
        ):
            echo = json.loads((await client.request("DELETE", f"{base}/echo")).body)
            assert echo["method"] == "DELETE"
            sent = [(name.lower(), value) for name, value in echo["headers"]]
            assert ("x-token", "t1") in sent
            assert [value for name, value in sent if name == "x-tag"] == ["a", "b"]
            seen = await client.request("POST", f"{base}/goto/303?url=/echo")
            assert json.loads(seen.body)["method"] == "GET"
            assert seen.url == f"{base}/echo"
            kept = await client.request("POST", f"{base}/goto/307?url={base}/echo")
            assert json.loads(kept.body)["method"] == "POST"
        async with open_client(client_name, max_redirects=0) as client:
            async with local_server() as base:
                reply = await client.request("GET", f"{base}/redirect/2")
            assert reply.status == 302
            assert reply.headers["Location"] == "/redirect/1"

    run(main())


def test_errors_are_ours_with_the_backends_as_cause(run: Any, client_name: str) -> None:
    async def main() -> None:
        async with local_server() as base, open_client(client_name) as client:
            cases: list[tuple[str, type[HTTPClientError], str]] = [
                (f"{base}/redirect/11", TooManyRedirectsError, "redirect"),
                (f"{base}/cut", ProtocolError, "protocol"),
                (f"{base}/reset", ConnectError, "connection"),
                ("http://127.0.0.1:9/", ConnectError, "connection"),
                ("ftp://example.com/", InvalidURLError, "invalid_url"),
                ("http://", InvalidURLError, "invalid_url"),
                ("http://host:99999/", InvalidURLError, "invalid_url"),
            ]
            for url, kind, name in cases:
                with pytest.raises(kind) as caught:
                    await client.request("GET", url)
                assert caught.value.kind == name, url
            with pytest.raises(BodyTooLargeError, match="larger than 10 bytes"):
                await client.request("GET", f"{base}/page/1234567890", max_body=10)
            # A refused connection is a ConnectionError: retried, and an overload signal.
            with pytest.raises(ConnectionError):
                await client.request("GET", "http://127.0.0.1:9/")

    run(main())


def test_a_cancelled_request_leaves_the_client_usable(run: Any, client_name: str) -> None:
    """A cancelled request frees its connection by the client's timeout at the latest:
    with 2 connections, 3 cancelled hanging requests do not block the next one."""

    async def main() -> None:
        async with (
            local_server() as base,
            open_client(client_name, connections=2, timeout=0.5) as client,
        ):
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await client.request("GET", f"{base}/hang")
            reply = await client.request("GET", f"{base}/page/1")
            assert reply.status == 200
            with pytest.raises(RequestTimeoutError) as caught:
                await client.request("GET", f"{base}/hang")
            assert caught.value.kind == "timeout"

    run(main())


def test_a_run_of_2000_urls_through_the_seam(run: Any, client_name: str) -> None:
    """One client shared by 50 workers, with retries and a timeout: each URL once."""
    stats = ServerStats()

    async def main() -> tuple[list[Any], str]:
        async with (
            local_server(stats) as base,
            open_client(client_name, connections=50, timeout=5) as client,
        ):

            async def get(url: str) -> tuple[str, int]:
                reply = await client.request("GET", url)
                return reply.url, reply.status

            urls = [*page_urls(base, 2000), f"{base}/hang"]
            retry = Retry(on=ConnectError, attempts=2)
            run_ = parallelize(get, urls, 50, retry=retry, on_error="yield")
            return [outcome async for outcome in run_], base

    outcomes, base = run(main())
    failures = [o for o in outcomes if isinstance(o, Failure)]
    assert [f.item for f in failures] == [f"{base}/hang"]
    assert isinstance(failures[0].exception, TimeoutError)
    assert sorted(o[0] for o in outcomes if not isinstance(o, Failure)) == sorted(
        page_urls(base, 2000)
    )
    assert stats.peak_in_flight <= 50


def test_bad_arguments_are_refused_before_any_request(run: Any) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="name must be one of 'pyreqwest', 'aiohttp'"):
            async with open_client("httpx"):
                pass
        with pytest.raises(TypeError, match="connections must be an int >= 1"):
            async with open_client(connections=2.5):  # type: ignore[arg-type]
                pass

    run(main())


def test_a_missing_backend_names_its_extra(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pyreqwest", None)

    async def main() -> None:
        with pytest.raises(MissingDependencyError, match=r'pip install "parallelize\[fast\]"'):
            async with open_client("pyreqwest"):
                pass

    run(main())


def test_a_reply_speaks_to_retry_and_adaptive(run: Any, client_name: str) -> None:
    """A Reply's Retry-After sets a retry's delay; its 503 is an overload signal."""
    from parallelize import overload_of, retry_after_of  # noqa: PLC0415

    async def main() -> None:
        async with local_server() as base, open_client(client_name) as client:
            busy = await client.request("GET", f"{base}/status/503?retry_after=3")
            fine = await client.request("GET", f"{base}/page/1")
        assert retry_after_of(busy) == 3.0
        assert overload_of(busy) is True
        assert overload_of(fine) is False

    run(main())


def test_an_error_of_your_body_function_comes_out_unchanged(run: Any, client_name: str) -> None:
    """A ValueError from body= is yours, not an invalid URL."""

    def refuse(_chunk: bytes) -> None:
        raise ValueError("no, thanks")

    async def main() -> None:
        async with local_server() as base, open_client(client_name) as client:
            with pytest.raises(ValueError, match="no, thanks") as caught:
                await client.request("GET", f"{base}/page/1", body=refuse)
            assert not isinstance(caught.value, HTTPClientError)

    run(main())


# A program that ends right after its requests, on the default event loop (where
# pyreqwest 0.15's runtime thread was last seen taking the GIL as the interpreter
# finalized: "Fatal Python error: PyGILState_Release", about one run in three).
_ENDS_RIGHT_AFTER = """
import asyncio, sys
from parallelize import parallelize
from parallelize.http import open_client

async def main(base):
    async with open_client("pyreqwest", connections=100, timeout=30) as client:
        async def get(url):
            return (await client.request("GET", url)).status
        urls = [f"{base}/page/{i}" for i in range(1000)]
        statuses = [s async for s in parallelize(get, urls, 100)]
    assert statuses == [200] * 1000, statuses

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.timeout(120)
def test_a_program_that_uses_pyreqwest_exits_cleanly(server: str, tmp_path: Path) -> None:
    """Twelve runs of a program that ends right after 1,000 requests: each exits with 0."""
    if "pyreqwest" not in backends():
        pytest.skip("pyreqwest is not installed")
    script = tmp_path / "ends.py"
    script.write_text(_ENDS_RIGHT_AFTER, encoding="utf-8")
    for _ in range(12):
        result = subprocess.run(  # noqa: S603 - our own program
            [sys.executable, str(script), server],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
