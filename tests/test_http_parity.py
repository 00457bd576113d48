"""The two HTTP clients agree: the same request on the wire, the same replies and errors,
the same proxies and TLS settings. Every table runs on both clients, on 127.0.0.1 only."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

import parallelize
from nettools import PROXY_VARIABLES, Certificates, certificates, forward_proxy, https_server
from parallelize.http import (
    ConnectTimeoutError,
    HTTPClientError,
    InvalidURLError,
    RedirectError,
    TLSError,
    TooManyRedirectsError,
    backends,
    check_client_options,
    open_client,
)
from parallelize.testing import local_server

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=backends())
def client_name(request: pytest.FixtureRequest) -> str:
    """The name of an installed HTTP client; each test runs once per client."""
    name: str = request.param
    return name


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or certificate variable of the machine's leaks into a test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class _NoHandshakeNoise(logging.Filter):
    """Drop the server's log of a handshake that a client refused, as tested."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            ("Error on transport creation", "SSL handshake failed")
        )


@pytest.fixture(autouse=True)
def no_handshake_noise() -> Iterator[None]:
    """A refused TLS handshake is what some tests expect; asyncio logs it as an error."""
    noise = _NoHandshakeNoise()
    logger = logging.getLogger("asyncio")
    logger.addFilter(noise)
    yield
    logger.removeFilter(noise)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return certificates(tmp_path_factory.mktemp("certs"))


# What each URL (after the server's base) puts on the request line: the WHATWG URL
# standard's form, as browsers and curl send it.
WIRE_FORMS = [
    ("/target/q?q=a b", "/target/q?q=a%20b"),  # a space is %20, never +
    ("/target/q?q=a+b&r=%7E~%41", "/target/q?q=a+b&r=%7E~%41"),  # kept as written
    ("/target/a b/caf\u00e9?q=caf\u00e9", "/target/a%20b/caf%C3%A9?q=caf%C3%A9"),
    ("/target/q?q=\"<>'", "/target/q?q=%22%3C%3E%27"),
    ("/target/p{}`|^", "/target/p%7B%7D%60|^"),
    ("/target/a/../b/./c", "/target/b/c"),
    ("/target/a\\b", "/target/a/b"),
    ("/target/f?x=1#fragment", "/target/f?x=1"),
    ("/target/%7e%2f%zz?%zz", "/target/%7e%2f%zz?%zz"),
]


def test_the_request_target_is_the_same_on_both_clients(run: Any, client_name: str) -> None:
    """A URL is sent as browsers send it: a space as %20, UTF-8 percent-encoded, %XX kept."""

    async def main() -> list[tuple[str, str]]:
        async with local_server() as base, open_client(client_name, timeout=5) as client:
            sent = []
            for path, _ in WIRE_FORMS:
                reply = await client.request("GET", f"{base}{path}")
                sent.append((path, json.loads(reply.body)["target"]))
            upper = await client.request("GET", f"HTTP://{base[7:]}/target/up")
            sent.append(("upper", json.loads(upper.body)["target"]))
            return sent

    assert run(main()) == [*WIRE_FORMS, ("upper", "/target/up")]


def test_a_redirect_to_a_url_we_cannot_fetch_is_a_redirect_error(
    run: Any, client_name: str
) -> None:
    """A redirect to ftp:// is kind "redirect", saying where; not "invalid_url", not "too many"."""

    async def main() -> list[tuple[type[HTTPClientError], str, str]]:
        async with local_server() as base, open_client(client_name, timeout=5) as client:
            caught = []
            for location in ("ftp://example.com/file", "http://:80/"):
                with pytest.raises(HTTPClientError) as error:
                    await client.request("GET", f"{base}/goto/302?url={location}")
                caught.append((type(error.value), error.value.kind, str(error.value)))
            with pytest.raises(TooManyRedirectsError, match=r"^more than 10 redirects$"):
                await client.request("GET", f"{base}/redirect/11")
            return caught

    assert run(main()) == [
        (
            RedirectError,
            "redirect",
            "a redirect to 'ftp://example.com/file': not an http:// or https:// URL",
        ),
        (RedirectError, "redirect", "a redirect to 'http://:80/': the URL has no host"),
    ]
    assert issubclass(TooManyRedirectsError, RedirectError)


def test_a_long_url_is_sent_and_the_servers_414_is_the_reply(run: Any, client_name: str) -> None:
    """Up to 65,534 characters a URL is sent (the server says 414); past that, invalid_url."""

    async def main() -> None:
        async with local_server() as base, open_client(client_name, timeout=5) as client:
            prefix = f"{base}/target/long?max=8190&q="
            for length in (9000, 65534):
                reply = await client.request("GET", prefix + "a" * (length - len(prefix)))
                # The phrase is the server's Python's: "URI Too Long" from 3.13 on.
                assert (reply.status, reply.reason) == (414, HTTPStatus(414).phrase), length
            cases = [
                (prefix + "a" * (200_000 - len(prefix)), 200_000),
                # Short enough as written, too long once each é is %C3%A9.
                (prefix + "\u00e9" * 30_000, len(prefix) + 6 * 30_000),
            ]
            for url, encoded in cases:
                with pytest.raises(InvalidURLError) as caught:
                    await client.request("GET", url)
                assert caught.value.kind == "invalid_url"
                assert str(caught.value) == (
                    f"the URL is {encoded:,} characters long, percent-encoded; "
                    "the most an HTTP client here can send is 65,534"
                )

    run(main())


# -- proxies ---------------------------------------------------------------------------

# (environment, proxy=, the variable whose proxy must be used: None for straight)
PROXY_CASES: list[tuple[dict[str, str], str | None, str | None]] = [
    ({}, None, None),
    ({"HTTP_PROXY": "{good}"}, None, "HTTP_PROXY"),
    ({"http_proxy": "{good}"}, None, "http_proxy"),
    ({"ALL_PROXY": "{good}"}, None, "ALL_PROXY"),
    ({"all_proxy": "{good}"}, None, "all_proxy"),
    ({"http_proxy": "{good}", "HTTP_PROXY": "{dead}"}, None, "http_proxy"),  # lower first
    ({"http_proxy": "{good}", "ALL_PROXY": "{dead}"}, None, "http_proxy"),  # scheme's first
    ({"https_proxy": "{dead}"}, None, None),  # for https:// URLs only
    ({"HTTP_PROXY": "{dead}", "REQUEST_METHOD": "GET"}, None, None),  # CGI: httpoxy
    ({"HTTP_PROXY": "{good}", "NO_PROXY": "127.0.0.1"}, None, None),
    ({"HTTP_PROXY": "{good}", "NO_PROXY": "example.com, 127.0.0.0/8"}, None, None),
    ({"HTTP_PROXY": "{good}", "no_proxy": "*"}, None, None),
    ({"HTTP_PROXY": "{good}", "NO_PROXY": "localhost,10.0.0.0/8"}, None, "HTTP_PROXY"),
    ({"HTTP_PROXY": "{dead}"}, "{good}", "proxy="),  # proxy= wins over the environment
    ({"HTTP_PROXY": "{dead}"}, "", None),  # proxy="": none, whatever the environment
    ({"NO_PROXY": "127.0.0.1"}, "{good}", None),  # NO_PROXY applies to proxy= too
]


@pytest.mark.parametrize("case", PROXY_CASES)
def test_proxies_from_the_environment_and_proxy_are_the_same_on_both_clients(
    run: Any,
    client_name: str,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[dict[str, str], str | None, str | None],
) -> None:
    """One precedence on both clients: proxy=, then http_proxy, HTTP_PROXY, all_proxy,
    ALL_PROXY; NO_PROXY by host, suffix, IP or CIDR; "" for none."""
    environment, proxy, used = case

    async def main() -> tuple[int, list[str]]:
        async with forward_proxy() as good, local_server() as base:
            dead = "http://127.0.0.1:9"  # nothing listens: a request through it fails

            def filled(text: str) -> str:
                return text.format(good=good.url, dead=dead)

            for name, value in environment.items():
                monkeypatch.setenv(name, filled(value))
            given = None if proxy is None else filled(proxy)
            async with open_client(client_name, timeout=5, proxy=given) as client:
                reply = await client.request("GET", f"{base}/target/p?q=1")
            return reply.status, [seen.target for seen in good.seen]

    status, proxied = run(main())
    assert status == 200
    assert bool(proxied) == (used is not None)
    if used is not None:
        assert proxied == [proxied[0]]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/target/p\?q=1", proxied[0])


def test_a_proxy_gets_its_credentials_and_https_goes_through_connect(
    run: Any, client_name: str, certs: Certificates
) -> None:
    """user:password in the proxy URL reach it; an https:// URL is tunnelled by CONNECT."""

    async def main() -> tuple[list[Any], int, int]:
        async with (
            forward_proxy(user="ann:s3cret") as proxy,
            local_server() as base,
            https_server(certs.server_context()) as secure,
            open_client(client_name, timeout=5, proxy=proxy.url, ca_file=certs.ca_file) as client,
        ):
            plain = await client.request("GET", f"{base}/target/x")
            tunnelled = await client.request("GET", f"{secure}/page/1")
            return proxy.seen, plain.status, tunnelled.status

    seen, plain, tunnelled = run(main())
    assert (plain, tunnelled) == (200, 200)
    assert [(s.method, s.credentials) for s in seen] == [
        ("GET", "ann:s3cret"),
        ("CONNECT", "ann:s3cret"),
    ]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", seen[1].target)


def test_a_proxy_that_is_not_http_is_refused_before_any_request(
    run: Any, client_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        with pytest.raises(
            ValueError,
            match=r"^proxy must be an http:// proxy URL, such as http://proxy\.example:3128 "
            r"\(socks and https:// proxies are not supported\), got 'socks5://127\.0\.0\.1:1080'$",
        ):
            async with open_client(client_name, proxy="socks5://127.0.0.1:1080"):
                pass
        monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
        with pytest.raises(ValueError, match=r"^the environment's ALL_PROXY must be an http://"):
            async with open_client(client_name):
                pass
        async with open_client(client_name, proxy=""):  # the environment is not read
            pass

    run(main())


# -- TLS -------------------------------------------------------------------------------


def test_tls_options_on_both_clients(run: Any, client_name: str, certs: Certificates) -> None:
    """A self-signed server is a tls error; ca_file or verify=False reach it."""

    async def main() -> None:
        async with https_server(certs.server_context()) as secure:
            async with open_client(client_name, timeout=5) as client:
                with pytest.raises(TLSError) as caught:
                    await client.request("GET", f"{secure}/page/1")
                assert caught.value.kind == "tls"
            for options in ({"ca_file": certs.ca_file}, {"verify": False}):
                async with open_client(client_name, timeout=5, **options) as client:
                    reply = await client.request("GET", f"{secure}/page/1")
                    assert (reply.status, reply.body) == (200, b"page 1\n"), options

    run(main())


def test_ssl_cert_file_is_honoured_by_both_clients(
    run: Any, client_name: str, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE names the certificates to trust, on both clients."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_file))

    async def main() -> int:
        async with (
            https_server(certs.server_context()) as secure,
            open_client(client_name, timeout=5) as client,
        ):
            return (await client.request("GET", f"{secure}/page/1")).status

    assert run(main()) == 200


def test_mutual_tls_with_a_client_certificate(
    run: Any, client_name: str, certs: Certificates
) -> None:
    """A server that asks for a client certificate gets it, from two files or one;
    without one the request fails with kind tls or connection, never a reply."""

    async def main() -> None:
        async with https_server(certs.server_context(ask_client=True)) as secure:
            pairs: list[tuple[Path, Path | None]] = [
                (certs.client_cert, certs.client_key),
                (certs.client_both, None),
            ]
            for cert, key in pairs:
                async with open_client(
                    client_name, timeout=5, ca_file=certs.ca_file, client_cert=cert, client_key=key
                ) as client:
                    reply = await client.request("GET", f"{secure}/client")
                    assert reply.body == b"{'email': 'client@example.com'}", cert
            async with open_client(client_name, timeout=5, ca_file=certs.ca_file) as client:
                with pytest.raises(HTTPClientError) as caught:
                    await client.request("GET", f"{secure}/client")
                assert caught.value.kind in ("tls", "connection")

    run(main())


def test_bad_tls_options_are_refused_before_any_request(
    run: Any, client_name: str, certs: Certificates, tmp_path: Path
) -> None:
    """A missing or non-PEM file, or a key without its certificate: ValueError, saying what."""
    missing = tmp_path / "missing.pem"
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ca_file": missing}, rf"^ca_file: cannot read '{missing}': No such file or directory$"),
        ({"ca_file": text}, rf"^ca_file: '{text}' holds no PEM certificate \(-----BEGIN \.\.\.\)$"),
        (
            {"client_key": certs.client_key},
            (
                r"^client_key needs client_cert: pass the certificate file too "
                r"\(or one file with both as client_cert\)$"
            ),
        ),
        (
            {"client_cert": certs.client_cert},
            rf"^client_cert: '{certs.client_cert}' holds no PEM private key \(-----BEGIN \.\.\.\)$",
        ),
    ]

    async def main() -> None:
        for options, message in cases:
            with pytest.raises(ValueError, match=message):
                check_client_options(**options)
            with pytest.raises(ValueError, match=message):
                async with open_client(client_name, **options):
                    pass
        with pytest.raises(TypeError, match=r"^verify must be True or False, got 'no'$"):
            check_client_options(verify="no")  # type: ignore[arg-type]

    run(main())


def _seen(reply: Any) -> dict[str, Any]:
    """The /echo route's account of a request: method, headers (lower-cased names), body."""
    echo = json.loads(reply.body)
    headers: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return {"method": echo["method"], "headers": headers, "body": echo["body"]}


def test_request_bodies_and_headers_are_the_same_on_both_clients(
    run: Any, client_name: str
) -> None:
    """content= is sent with its length and no Content-Type of the client's own; a POST
    without one sends Content-Length: 0, a GET none; a request's own headers replace
    the client's (a name may repeat); the default User-Agent names parallelize."""

    async def main() -> list[dict[str, Any]]:
        async with (
            local_server() as base,
            open_client(client_name, timeout=5, headers=[("X-Client", "c")]) as client,
        ):
            url = f"{base}/echo"
            return [
                _seen(await client.request("POST", url, content=b'{"a": 1}')),
                _seen(await client.request("POST", url)),
                _seen(await client.request("PUT", url, content=b"")),
                _seen(await client.request("DELETE", url)),
                _seen(await client.request("GET", url)),
                _seen(
                    await client.request(
                        "PATCH",
                        url,
                        content="caf\u00e9".encode(),
                        headers=[
                            ("Content-Type", "text/plain"),
                            ("X-Client", "r"),
                            ("X-Two", "1"),
                            ("X-Two", "2"),
                        ],
                    )
                ),
            ]

    posted, empty, put, delete, get, patch = run(main())
    agent = f"parallelize/{parallelize.__version__}"
    assert posted["body"] == '{"a": 1}'
    assert posted["headers"]["content-length"] == ["8"]
    assert "content-type" not in posted["headers"]
    assert posted["headers"]["user-agent"] == [agent]
    assert posted["headers"]["x-client"] == ["c"]
    for seen in (empty, put, delete):
        assert seen["headers"]["content-length"] == ["0"], seen
        assert seen["body"] == ""
    assert "content-length" not in get["headers"]
    assert "transfer-encoding" not in get["headers"]
    assert patch["method"] == "PATCH"
    assert patch["body"] == "caf\u00e9"
    assert patch["headers"]["content-length"] == ["5"]
    assert patch["headers"]["content-type"] == ["text/plain"]
    assert patch["headers"]["x-client"] == ["r"]
    assert patch["headers"]["x-two"] == ["1", "2"]


def test_the_user_agent_is_the_callers_when_given(run: Any, client_name: str) -> None:
    async def main() -> dict[str, Any]:
        async with (
            local_server() as base,
            open_client(client_name, timeout=5, headers={"user-agent": "MyBot/2"}) as client,
        ):
            return _seen(await client.request("GET", f"{base}/echo"))

    assert run(main())["headers"]["user-agent"] == ["MyBot/2"]


@pytest.mark.parametrize(
    ("status", "method", "body"),
    [
        (303, "GET", ""),  # see other: a GET, the body dropped
        (302, "GET", ""),  # after a POST, as browsers and curl do
        (301, "GET", ""),
        (307, "POST", "data"),  # the same method and body
        (308, "POST", "data"),
    ],
)
def test_a_redirect_keeps_or_drops_the_body_by_its_status(
    run: Any, client_name: str, status: int, method: str, body: str
) -> None:
    async def main() -> dict[str, Any]:
        async with local_server() as base, open_client(client_name, timeout=5) as client:
            reply = await client.request(
                "POST",
                f"{base}/goto/{status}?url=/echo",
                content=b"data",
                headers=[("Content-Type", "text/plain"), ("Authorization", "Basic eDp5")],
            )
            return _seen(reply)

    seen = run(main())
    assert (seen["method"], seen["body"]) == (method, body)
    # Same origin: the credentials go on; the body's own headers go with the body.
    assert seen["headers"]["authorization"] == ["Basic eDp5"]
    if body:
        assert seen["headers"]["content-type"] == ["text/plain"]
        assert seen["headers"]["content-length"] == ["4"]
    else:
        assert "content-type" not in seen["headers"]
        assert "content-length" not in seen["headers"]


def test_a_redirect_to_another_origin_drops_the_credentials(run: Any, client_name: str) -> None:
    """Authorization and Cookie of the request are not sent to another host:port."""

    async def main() -> dict[str, Any]:
        async with (
            local_server() as base,
            local_server() as other,
            open_client(client_name, timeout=5) as client,
        ):
            reply = await client.request(
                "GET",
                f"{base}/goto/302?url={other}/echo",
                headers=[("Authorization", "Basic eDp5"), ("Cookie", "a=b"), ("X-Kept", "1")],
            )
            return _seen(reply)

    seen = run(main())
    assert "authorization" not in seen["headers"]
    assert "cookie" not in seen["headers"]
    assert seen["headers"]["x-kept"] == ["1"]


def test_resolve_sends_a_host_to_the_given_address(run: Any, client_name: str) -> None:
    """resolve= (curl's --resolve): the connection goes there, the Host header stays."""

    async def main() -> dict[str, Any]:
        async with local_server() as base:
            port = int(base.rsplit(":", 1)[1])
            pins = {("pinned.example", port): "127.0.0.1"}
            async with open_client(client_name, timeout=5, resolve=pins) as client:
                reply = await client.request("GET", f"http://pinned.example:{port}/echo")
                return _seen(reply)

    seen = run(main())
    assert seen["headers"]["host"] == [seen["headers"]["host"][0]]
    assert seen["headers"]["host"][0].startswith("pinned.example:")


def test_bad_resolve_entries_are_refused(run: Any, client_name: str) -> None:
    async def main(pins: Any) -> None:
        async with open_client(client_name, resolve=pins):
            pass

    with pytest.raises(ValueError, match=r"resolve: h:80 -> 'nowhere' is not an IP address"):
        run(main({("h", 80): "nowhere"}))
    with pytest.raises(ValueError, match=r"resolve: expected \(host, port\) keys, got 'h'"):
        run(main({"h": "127.0.0.1"}))


def test_connect_timeout_ends_a_connection_that_does_not_open(run: Any, client_name: str) -> None:
    """A listener whose backlog is full drops new SYNs: the connect hangs, then times out."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue (never accepted)
        filler = socket.socket()
        filler.setblocking(False)  # noqa: FBT003
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)

    async def main() -> tuple[BaseException | None, float]:
        async with open_client(client_name, timeout=10, connect_timeout=0.3) as client:
            started = time.monotonic()
            try:
                await client.request("GET", f"http://127.0.0.1:{port}/")
            except HTTPClientError as exc:
                return exc, time.monotonic() - started
            return None, time.monotonic() - started

    try:
        error, took = run(main())
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert isinstance(error, ConnectTimeoutError), repr(error)
    assert error.kind == "timeout"
    assert took < 5


def test_http2_is_refused_by_a_client_that_speaks_only_http1(run: Any) -> None:
    pytest.importorskip("aiohttp")

    async def main() -> None:
        async with open_client("aiohttp", http2=True):
            pass

    with pytest.raises(ValueError, match=r"http2: the aiohttp client speaks HTTP/1\.1 only"):
        run(main())
