"""``fetch``'s request options, curl's way, on both clients: -d, --data-binary, --json,
-A, -u; and their bad cases, a usage error before any request."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

import parallelize
from clitools import cli, records
from parallelize.http import backends

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=backends())
def client(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _echo(client: str, server: str, tmp_path: Path, *args: str, path: str = "/echo") -> Any:
    """Fetch the server's /echo once with ``args``; return what it saw."""
    url = f"{server}{path}"
    pages = tmp_path / "pages"
    result = cli(
        "fetch", "--client", client, "-", "--save-dir", str(pages), *args, stdin=url + "\n"
    )
    assert result.returncode == 0, result.stderr
    echo = json.loads((pages / hashlib.sha256(url.encode()).hexdigest()).read_text())
    headers: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return echo["method"], headers, echo["body"]


def test_data_is_posted_as_a_form_like_curl(client: str, server: str, tmp_path: Path) -> None:
    """-d: POST unless -X says otherwise; repeated, joined with &; @file without line ends."""
    form = tmp_path / "form.txt"
    form.write_text("c=3\r\nd=4\n")
    method, headers, body = _echo(
        client, server, tmp_path, "-d", "a=1", "-d", "b=2", "-d", f"@{form}"
    )
    assert method == "POST"
    assert body == "a=1&b=2&c=3d=4"
    assert headers["content-type"] == ["application/x-www-form-urlencoded"]
    assert headers["content-length"] == [str(len(body))]
    assert headers["user-agent"] == [f"parallelize/{parallelize.__version__}"]


def test_data_binary_keeps_the_file_as_it_is_and_x_sets_the_method(
    client: str, server: str, tmp_path: Path
) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_bytes(b"line one\nline two\n")
    method, headers, body = _echo(
        client,
        server,
        tmp_path,
        "--data-binary",
        f"@{raw}",
        "-X",
        "PUT",
        "-H",
        "Content-Type: text/plain",
    )
    assert (method, body) == ("PUT", "line one\nline two\n")
    assert headers["content-type"] == ["text/plain"]  # -H's, not ours


def test_json_sets_its_types_unless_given(client: str, server: str, tmp_path: Path) -> None:
    method, headers, body = _echo(client, server, tmp_path, "--json", '{"q": "caf\u00e9"}')
    assert method == "POST"
    assert json.loads(body) == {"q": "caf\u00e9"}
    assert headers["content-type"] == ["application/json"]
    assert headers["accept"] == ["application/json"]
    _, headers, _ = _echo(client, server, tmp_path, "--json", "[]", "-H", "Accept: text/csv")
    assert headers["accept"] == ["text/csv"]


def test_a_post_without_a_body_sends_content_length_zero(
    client: str, server: str, tmp_path: Path
) -> None:
    """-X POST alone: Content-Length: 0 on both clients (servers answer 411 without it)."""
    method, headers, body = _echo(client, server, tmp_path, "-X", "POST")
    assert (method, body) == ("POST", "")
    assert headers["content-length"] == ["0"]
    assert "content-type" not in headers


def test_user_agent_and_basic_auth(client: str, server: str, tmp_path: Path) -> None:
    _, headers, _ = _echo(client, server, tmp_path, "-A", "MyBot/1.0", "-u", "ann:s3cr:et")
    assert headers["user-agent"] == ["MyBot/1.0"]
    assert headers["authorization"] == ["Basic " + base64.b64encode(b"ann:s3cr:et").decode()]
    # Followed within the same origin: the credentials go on.
    _, headers, _ = _echo(client, server, tmp_path, "-u", "ann:pw", path="/goto/302?url=/echo")
    assert headers["authorization"] == ["Basic " + base64.b64encode(b"ann:pw").decode()]


def test_a_post_redirected_by_303_becomes_a_get_without_its_body(
    client: str, server: str, tmp_path: Path
) -> None:
    method, headers, body = _echo(client, server, tmp_path, "-d", "a=1", path="/goto/303?url=/echo")
    assert (method, body) == ("GET", "")
    assert "content-type" not in headers
    method, _, body = _echo(client, server, tmp_path, "-d", "a=1", path="/goto/307?url=/echo")
    assert (method, body) == ("POST", "a=1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-d", "@missing.txt"],
            "-d @missing.txt: cannot read 'missing.txt': No such file or directory",
        ),
        (["--json", "@missing.json"], "--json @missing.json: cannot read 'missing.json'"),
        (["-d", "@-"], "-d @-: the body from stdin is not supported; write it to a file"),
        (["-d", "a", "--json", "{}"], "-d and --json both give the body: give one kind"),
        (["-A", "x", "-H", "user-agent: y"], "-A and -H 'User-Agent: ...' both set the user agent"),
        (["-u", "ann"], "-u ann: give USER:PASSWORD"),
        (["-u", "a:b", "-H", "Authorization: Bearer t"], "-u and -H 'Authorization: ...' both set"),
    ],
)
def test_bad_request_options_are_usage_errors_before_anything(
    server: str, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out.jsonl"
    result = cli("fetch", "-", "-o", str(out), *args, stdin=f"{server}/echo\n", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # nothing opened for writing


def test_a_changed_body_is_a_changed_setting_of_the_journal(server: str, tmp_path: Path) -> None:
    """A rerun with another body is refused: its outcomes were made with the old one."""
    journal = tmp_path / "j.sqlite"
    first = cli("fetch", "-", "--journal", str(journal), "-d", "a=1", stdin=f"{server}/echo\n")
    assert first.returncode == 0, first.stderr
    assert [r["status"] for r in records(first.stdout)] == [200]
    again = cli("fetch", "-", "--journal", str(journal), "-d", "a=2", stdin=f"{server}/echo\n")
    assert again.returncode == 2, again.stderr
    assert "body" in again.stderr
    same = cli("fetch", "-", "--journal", str(journal), "-d", "a=1", stdin=f"{server}/echo\n")
    assert same.returncode == 0, same.stderr


def test_credentials_do_not_follow_a_redirect_to_another_host(
    client: str, server: str, tmp_path: Path
) -> None:
    """-u, and Authorization or Cookie given with -H: not sent past another origin."""
    other = server.replace("127.0.0.1", "localhost")  # another host, the same server
    _, headers, _ = _echo(
        client,
        server,
        tmp_path,
        "-u",
        "ann:pw",
        "-H",
        "Cookie: a=b",
        "-H",
        "X-Kept: 1",
        path=f"/goto/302?url={other}/echo",
    )
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert headers["x-kept"] == ["1"]
    _, headers, _ = _echo(client, server, tmp_path, "-H", "Authorization: Bearer t")
    assert headers["authorization"] == ["Bearer t"]


@pytest.mark.parametrize(
    ("retry_on", "path", "attempts"),
    [
        (None, "/status/503", 3),  # the default set
        (None, "/status/408", 1),
        (None, "/status/404", 1),
        ("default,408", "/status/408", 3),
        ("default,408", "/status/503", 3),
        ("4xx", "/status/404", 3),
        ("timeout", "/status/503", 1),  # replaced, not added to
        ("500", "/status/503", 1),
    ],
)
def test_retry_on_names_what_is_tried_again(
    client: str, server: str, retry_on: str | None, path: str, attempts: int
) -> None:
    args = ["--retries", "2", "--client", client]
    if retry_on is not None:
        args += ["--retry-on", retry_on]
    result = cli("fetch", "-", *args, stdin=f"{server}{path}\n")
    # 4: the one failure is final (a 404 that --retry-on does not name), else 1.
    final = path == "/status/404" and retry_on is None
    assert result.returncode == (4 if final else 1), result.stderr
    [record] = records(result.stdout)
    assert record["attempts"] == attempts
    assert record["error"]["kind"] == "http"


def test_retry_on_error_kinds(client: str) -> None:
    """A refused connection is retried by default, not with --retry-on 5xx."""
    url = "http://127.0.0.1:9/"  # discard port: nothing listens
    for retry_on, attempts in ((None, 2), ("5xx", 1), ("connection", 2)):
        args = ["--retries", "1", "--client", client]
        if retry_on is not None:
            args += ["--retry-on", retry_on]
        result = cli("fetch", "-", *args, stdin=url + "\n")
        [record] = records(result.stdout)
        assert record["error"]["kind"] == "connection"
        assert record["attempts"] == attempts, retry_on


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retries", "1", "--retry-on", "999"], "'999' is not a status from 400 to 599"),
        (["--retries", "1", "--retry-on", "timeout,nope"], "'nope' is not a status"),
        (["--retry-on", "5xx"], "--retry-on says what --retries tries again: give --retries N"),
    ],
)
def test_bad_retry_on_is_a_usage_error(
    server: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli("fetch", "-", *args, stdin=f"{server}/echo\n", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_resolve_and_connect_timeout(client: str, server: str) -> None:
    """--resolve sends a made-up host to the server; --connect-timeout words its failure."""
    port = server.rsplit(":", 1)[1]
    url = f"http://pinned.test:{port}/page/1"
    resolve = f"pinned.test:{port}:127.0.0.1"
    result = cli("fetch", "-", "--client", client, "--resolve", resolve, stdin=url + "\n")
    assert result.returncode == 0, result.stderr
    assert records(result.stdout)[0]["status"] == 200
    # A listener whose accept queue is full drops new SYNs: the connection never opens.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    full = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)  # noqa: FBT003
        filler.connect_ex(("127.0.0.1", full))
        fillers.append(filler)
    try:
        args = ["--client", client, "--connect-timeout", "0.3"]
        stuck = cli("fetch", "-", *args, stdin=f"http://127.0.0.1:{full}/\n")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    [record] = records(stuck.stdout)
    assert record["error"] == {
        "kind": "timeout",
        "message": "could not connect within --connect-timeout 0.3 s",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--resolve", "h:80"],
            "expected HOST:PORT:ADDRESS (example.com:443:127.0.0.1), got 'h:80'",
        ),
        (["--resolve", "h:80:nowhere"], "'nowhere' is not an IP address"),
        (
            ["--client", "pyreqwest", "--resolve", "h:80:127.0.0.1", "--resolve", "h:81:127.0.0.2"],
            "pyreqwest sends a host to one address whatever the port",
        ),
        (["--connect-timeout", "soon"], "argument --connect-timeout: expected seconds"),
    ],
)
def test_bad_transport_options_are_usage_errors(
    server: str, tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli("fetch", "-", *args, stdin=f"{server}/echo\n", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_limit_rate_caps_the_bytes_a_second(client: str, server: str) -> None:
    """Four bodies of 256 KiB at 512 KiB/s take about 2 s, all of them together (the
    first second's budget is there at the start: at least 1 s)."""
    urls = "".join(f"{server}/big/262144?n={n}\n" for n in range(4))
    args = ["--client", client, "--limit-rate", "512K", "-w", "4"]
    started = time.monotonic()
    result = cli("fetch", "-", *args, stdin=urls)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert [record["bytes"] for record in records(result.stdout)] == [262144] * 4
    assert took >= 1.0, took


def test_a_body_paced_past_the_timeout_is_a_timeout(client: str, server: str) -> None:
    """--limit-rate's waits count in --timeout on both clients (reqwest's own timer no
    longer runs once it has read a local body into its buffers)."""
    result = cli(
        "fetch", "-", "--client", client, "--limit-rate", "256K", "--timeout", "1",
        stdin=f"{server}/big/1048576\n",
    )  # fmt: skip
    (record,) = records(result.stdout)
    assert record["error"]["kind"] == "timeout"
    assert 0.9 < record["elapsed"] < 3


def test_limit_rate_is_refused_below_one_byte(server: str) -> None:
    result = cli("fetch", "-", "--limit-rate", "abc", stdin=f"{server}/echo\n")
    assert result.returncode == 2
    assert "argument --limit-rate: expected bytes" in result.stderr


def test_http2_is_offered_by_alpn_with_pyreqwest(tmp_path: Path) -> None:
    """nginx (https, HTTP/2 by ALPN) answers with the protocol it spoke."""
    pytest.importorskip("pyreqwest")
    from nettools import certificates  # noqa: PLC0415
    from nginxtools import nginx  # noqa: PLC0415

    (tmp_path / "certs").mkdir()
    certs = certificates(tmp_path / "certs")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    certs.server.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in certs.server.cert_chain_pems))
    extra = "location = /protocol { default_type text/plain; return 200 $server_protocol; }"
    (tmp_path / "nginx").mkdir()
    with nginx(tmp_path / "nginx", {}, tls=(chain, key), extra=extra) as base:
        url = f"{base}/protocol\n"
        seen = {}
        for flags in ([], ["--http2"]):
            pages = tmp_path / f"pages{len(flags)}"
            args = [
                "--client",
                "pyreqwest",
                "--cacert",
                str(certs.ca_file),
                "--save-dir",
                str(pages),
            ]
            result = cli("fetch", "-", *args, *flags, stdin=url)
            assert result.returncode == 0, result.stderr
            [record] = records(result.stdout)
            seen[bool(flags)] = Path(record["file"]).read_text()
    assert seen == {False: "HTTP/1.1", True: "HTTP/2.0"}


def test_http2_with_aiohttp_is_a_usage_error(server: str) -> None:
    pytest.importorskip("aiohttp")
    result = cli("fetch", "-", "--client", "aiohttp", "--http2", stdin=f"{server}/echo\n")
    assert result.returncode == 2
    assert "--http2 needs --client pyreqwest" in result.stderr


def test_fields_add_the_response_headers_to_records(client: str, server: str) -> None:
    urls = f"{server}/page/1\n{server}/status/404\n"
    args = ["--client", client, "--fields", "content_type,header:Content-Length,headers"]
    result = cli("fetch", "-", *args, stdin=urls)
    got = {record["url"]: record for record in records(result.stdout)}
    page, missing = got[f"{server}/page/1"], got[f"{server}/status/404"]
    assert page["content_type"] == "text/plain; charset=utf-8"
    assert page["header:content-length"] == str(page["bytes"])
    assert page["headers"]["content-type"] == ["text/plain; charset=utf-8"]
    assert list(page)[-3:] == ["content_type", "header:content-length", "headers"]
    assert missing["status"] == 404
    assert "content_type" in missing  # a failure with a response has them too
    assert "headers" in missing


def test_fields_reach_the_records_of_child_processes(server: str) -> None:
    urls = "".join(f"{server}/page/{n}\n" for n in range(6)) + f"{server}/status/404\n"
    args = ["--processes", "2", "--fields", "content_type"]
    result = cli("fetch", "-", *args, stdin=urls)
    assert all("content_type" in record for record in records(result.stdout))


def test_an_unknown_field_is_a_usage_error(server: str) -> None:
    result = cli("fetch", "-", "--fields", "content_type,colour", stdin=f"{server}/echo\n")
    assert result.returncode == 2
    assert "'colour' is not a field: give content_type, headers, header:NAME" in result.stderr
