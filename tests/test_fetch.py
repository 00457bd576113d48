"""``parallelize fetch``, run for real in subprocesses, on every installed HTTP client.

Each test runs ``python -m parallelize fetch ... --client NAME`` as a user would,
against the local fault-injection server (``python -m parallelize.testing``, one
per module), and checks what the user sees: the JSON lines, the stderr line, the
exit code. The records and error kinds must be the same whatever the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clitools import FIELDS, by_url, cli, interrupt, key, start, write_lines
from parallelize._cli._fetch import _make_fetch
from parallelize._cli._output import ENCODE
from parallelize._cli._request import RequestShape
from parallelize._cli._saving import Saver, Saving
from parallelize.http import Reply, backends


@pytest.fixture(params=backends())
def client(request: pytest.FixtureRequest) -> str:
    """The name of an installed HTTP client; each test runs once per client."""
    name: str = request.param
    return name


def test_fetch_writes_one_record_per_url(client: str, server: str, tmp_path: Path) -> None:
    """Every URL gets one JSON line on stdout with its status and size; exit 0."""
    urls = [f"{server}/page/{n}" for n in range(40)]
    result = cli(
        "fetch", "--client", client, str(write_lines(tmp_path / "urls.txt", urls)), "-w", "8"
    )
    assert result.returncode == 0, result.stderr
    got = by_url(result.stdout)
    assert sorted(got) == sorted(urls)
    for n, url in enumerate(urls):
        record = got[url]
        assert set(record) == FIELDS
        assert record["final_url"] == url
        assert record["status"] == 200
        assert record["bytes"] == len(f"page {n}\n")
        assert record["attempts"] == 1
        assert record["error"] is None
        assert isinstance(record["elapsed"], float)
        assert record["elapsed"] >= 0
    assert "40" in result.stderr  # the summary is on stderr, not in the output


def test_fetch_reads_stdin_and_skips_blank_and_comment_lines(client: str, server: str) -> None:
    """URLS ``-`` reads a pipe; blank lines and # comments are not URLs."""
    urls = [f"{server}/page/{n}" for n in range(5)]
    text = "# a comment\n\n" + "\n".join(urls) + "\n   \n"
    result = cli("fetch", "--client", client, "-", "--no-uvloop", "-q", stdin=text)
    assert result.returncode == 0, result.stderr
    assert sorted(by_url(result.stdout)) == sorted(urls)
    assert result.stderr == ""  # -q: no summary


def test_fetch_writes_to_the_output_file(client: str, server: str, tmp_path: Path) -> None:
    """-o FILE gets the lines; stdout stays empty."""
    urls = [f"{server}/page/{n}" for n in range(10)]
    out = tmp_path / "out.jsonl"
    result = cli(
        "fetch", "--client", client, str(write_lines(tmp_path / "urls.txt", urls)), "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(by_url(out.read_text())) == sorted(urls)


def test_fetch_saves_bodies_under_the_hash_of_the_url(
    client: str, server: str, tmp_path: Path
) -> None:
    """--save-dir DIR holds each body as DIR/<sha256 of the URL>, named in the record."""
    urls = [f"{server}/page/{n}" for n in range(6)] + [f"{server}/status/404"]
    pages = tmp_path / "pages"
    result = cli(
        "fetch",
        "--client",
        client,
        str(write_lines(tmp_path / "urls.txt", urls)),
        "--save-dir",
        str(pages),
    )
    assert result.returncode == 4, result.stderr  # the 404: a final failure
    got = by_url(result.stdout)
    for n, url in enumerate(urls[:-1]):
        file = pages / hashlib.sha256(url.encode()).hexdigest()
        assert got[url]["file"] == str(file)
        assert file.read_text() == f"page {n}\n"
    missing = got[urls[-1]]
    assert Path(missing["file"]).read_text() == "status 404\n"  # every body is kept
    assert sorted(p.name for p in pages.iterdir()) == sorted(
        hashlib.sha256(url.encode()).hexdigest() for url in urls
    )  # and no .part file is left


def test_fetch_failures_are_records_and_exit_1(client: str, server: str, tmp_path: Path) -> None:
    """A 404, a reset, a hang and malformed URLs become failure records, not a crash."""
    urls = [
        f"{server}/page/1",
        f"{server}/status/404",
        f"{server}/reset",
        f"{server}/hang",
        "not a url",
        "ftp://example.com/file",
    ]
    result = cli(
        "fetch",
        "--client",
        client,
        str(write_lines(tmp_path / "urls.txt", urls)),
        "--timeout",
        "0.5",
    )
    assert result.returncode == 1, result.stderr
    got = by_url(result.stdout)
    assert len(got) == len(urls)
    assert got[urls[0]]["error"] is None
    missing = got[f"{server}/status/404"]
    assert missing["status"] == 404
    assert missing["bytes"] == len("status 404\n")
    assert missing["error"] == {"kind": "http", "message": "404 Not Found"}
    assert got[f"{server}/reset"]["error"]["kind"] == "connection"
    assert got[f"{server}/reset"]["status"] is None
    assert got[f"{server}/hang"]["error"] == {
        "kind": "timeout",
        "message": "no complete answer within --timeout 0.5 s",
    }
    for url in urls[4:]:
        assert got[url]["error"]["kind"] == "invalid_url"
        assert set(got[url]) == FIELDS


def test_fetch_retries_what_may_recover(client: str, server: str, tmp_path: Path) -> None:
    """--retries N retries 503s (after Retry-After), not 404s; attempts are counted."""
    recovers, stays, waits = key(), key(), key()
    urls = [
        f"{server}/flaky/{recovers}?fail=2",
        f"{server}/flaky/{stays}?fail=9",
        f"{server}/flaky/{waits}?fail=1&retry_after=1",
        f"{server}/status/404",
    ]
    result = cli(
        "fetch", "--client", client, str(write_lines(tmp_path / "urls.txt", urls)), "--retries", "2"
    )
    assert result.returncode == 1, result.stderr
    got = by_url(result.stdout)
    assert got[urls[0]]["status"] == 200
    assert got[urls[0]]["attempts"] == 3
    assert got[urls[1]]["status"] == 503
    assert got[urls[1]]["attempts"] == 3
    assert got[urls[1]]["error"]["kind"] == "http"
    assert got[urls[2]]["status"] == 200
    assert got[urls[2]]["elapsed"] >= 0.9  # waited for the server's Retry-After: 1
    assert got[urls[3]]["attempts"] == 1


def test_rate_and_adaptive_limits_hold_on_every_client(
    client: str, server: str, tmp_path: Path
) -> None:
    """--rate, --adaptive and --retries together: 503s back the limit off, every URL
    recovers on its second attempt, and the rate holds (20 a second: 30 URLs, their
    30 retries, take three seconds; one URL waits 1.5 s between its attempts)."""
    urls = [f"{server}/flaky/{key()}?fail=1" for _ in range(30)]
    result = cli(
        "fetch",
        "--client",
        client,
        str(write_lines(tmp_path / "urls.txt", urls)),
        "--adaptive",
        "--rate",
        "20",
        "--retries",
        "2",
    )
    assert result.returncode == 0, result.stderr
    got = by_url(result.stdout)
    assert sorted(got) == sorted(urls)
    assert {(r["status"], r["attempts"]) for r in got.values()} == {(200, 2)}
    assert max(r["elapsed"] for r in got.values()) >= 1.4  # 1.5, less timer slack


def test_a_rerun_with_the_journal_replays_successes_and_redoes_failures(
    client: str, server: str, tmp_path: Path
) -> None:
    """With --journal the same command again writes every URL; only failures refetch."""
    flaky = f"{server}/flaky/{key()}?fail=1"
    urls = [f"{server}/page/{n}" for n in range(20)] + [flaky]
    args = ["fetch", "--client", client, "urls.txt", "--journal", "crawl.db", "-o", "out.jsonl"]
    write_lines(tmp_path / "urls.txt", urls)
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    first_lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert by_url("\n".join(first_lines))[flaky]["status"] == 503

    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    second_lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(by_url("\n".join(second_lines))) == sorted(urls)
    assert len(second_lines) == len(urls)
    assert by_url("\n".join(second_lines))[flaky]["status"] == 200
    # The successes were replayed from the journal byte for byte, not fetched again.
    successes = [line for line in first_lines if json.loads(line)["error"] is None]
    assert set(successes) <= set(second_lines)


def test_ctrl_c_stops_and_the_printed_command_resumes(
    client: str, server: str, tmp_path: Path
) -> None:
    """SIGINT: exit 130 and the command to resume; running it completes the output."""
    urls = [f"{server}/slow/300?n={n}" for n in range(100)]
    write_lines(tmp_path / "urls.txt", urls)
    args = [
        "fetch",
        "--client",
        client,
        "urls.txt",
        "--journal",
        "crawl.db",
        "-o",
        "out.jsonl",
        "-w",
        "10",
    ]
    proc = start(args, tmp_path)
    stderr = interrupt(proc, tmp_path / "out.jsonl", signal.SIGINT)
    assert proc.returncode == 130, stderr
    last = stderr.splitlines()[-1]
    assert last.startswith("parallelize: stopped by SIGINT after "), last
    hint = "to resume, run the same command: "
    assert hint in last
    command = shlex.split(last.split(hint, 1)[1])
    assert command[-len(args) :] == args
    assert command[-len(args) - 2 : -len(args)] == ["-m", "parallelize"]
    first_lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert 0 < len(first_lines) < len(urls)

    resumed = subprocess.run(  # noqa: S603 - the command our CLI printed
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=20,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["url"] for line in lines) == sorted(urls)  # once each
    assert set(first_lines) <= set(lines)  # replayed as written, not fetched again


def test_sigterm_without_a_journal_says_how_to_make_runs_resumable(
    client: str, server: str, tmp_path: Path
) -> None:
    """SIGTERM: exit 130; without --journal the line points to --journal."""
    write_lines(tmp_path / "urls.txt", [f"{server}/slow/300?n={n}" for n in range(100)])
    proc = start(["fetch", "--client", client, "urls.txt", "-o", "out.jsonl", "-w", "10"], tmp_path)
    stderr = interrupt(proc, tmp_path / "out.jsonl", signal.SIGTERM)
    assert proc.returncode == 130, stderr
    last = stderr.splitlines()[-1]
    assert last.startswith("parallelize: stopped by SIGTERM after "), last
    assert "with --journal FILE a rerun of the same command skips what is done" in last


def test_headers_and_method_reach_the_server(client: str, server: str, tmp_path: Path) -> None:
    """-H (a name may repeat) and -X, seen by the server (its /echo saved with --save-dir)."""
    url = f"{server}/echo"
    pages = tmp_path / "pages"
    args = ["-H", "X-Tag: a", "-H", "X-Tag: b", "-X", "put", "--save-dir", str(pages)]
    result = cli("fetch", "--client", client, "-", *args, stdin=url + "\n")
    assert result.returncode == 0, result.stderr
    echo = json.loads((pages / hashlib.sha256(url.encode()).hexdigest()).read_text())
    assert echo["method"] == "PUT"
    assert [value for name, value in echo["headers"] if name.lower() == "x-tag"] == ["a", "b"]


def test_redirects_are_followed_to_the_final_url(client: str, server: str, tmp_path: Path) -> None:
    """Up to 10 redirects are followed (final_url is where they led); 11 are a failure."""
    urls = [f"{server}/redirect/3", f"{server}/redirect/11"]
    result = cli("fetch", "--client", client, str(write_lines(tmp_path / "urls.txt", urls)))
    assert result.returncode == 1, result.stderr
    got = by_url(result.stdout)
    assert got[urls[0]]["final_url"] == f"{server}/redirect/0"
    assert got[urls[0]]["status"] == 200
    assert got[urls[0]]["bytes"] == len("redirected\n")
    assert got[urls[1]]["error"] == {"kind": "redirect", "message": "more than 10 redirects"}


def test_max_body_refuses_what_is_longer(client: str, server: str, tmp_path: Path) -> None:
    """--max-body: a longer body fails as too_large, by its length or as it is read."""
    urls = [
        f"{server}/big/100000",
        f"{server}/big/100001",  # Content-Length says so: refused before reading
        f"{server}/big/300000?chunked=1",  # no length: refused once past the cap
    ]
    result = cli(
        "fetch",
        "--client",
        client,
        str(write_lines(tmp_path / "u.txt", urls)),
        "--max-body",
        "100000",
    )
    assert result.returncode == 1, result.stderr
    got = by_url(result.stdout)
    assert got[urls[0]]["bytes"] == 100000
    for url in urls[1:]:
        assert got[url]["error"] == {
            "kind": "too_large",
            "message": "the body is larger than 100,000 bytes (max_body)",
        }
        assert got[url]["bytes"] is None


def test_error_kinds_are_the_same_on_every_client(client: str, server: str, tmp_path: Path) -> None:
    """A cut body, TLS spoken to a plain HTTP server, a refused connection, a bad host."""
    port = server.rsplit(":", 1)[1]
    urls = {
        f"{server}/cut": "protocol",
        f"https://127.0.0.1:{port}/page/1": "tls",
        "http://127.0.0.1:9/": "connection",  # the discard port: nothing listens
        "http://nonexistent.invalid/": "dns",  # .invalid never resolves (RFC 6761)
    }
    result = cli(
        "fetch", "--client", client, str(write_lines(tmp_path / "u.txt", list(urls))), "-q"
    )
    assert result.returncode == 1, result.stderr
    got = by_url(result.stdout)
    assert {url: got[url]["error"]["kind"] for url in urls} == urls
    for record in got.values():
        assert set(record) == FIELDS
        assert record["status"] is None
        assert record["error"]["message"]


BIG = 50 * 1024 * 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.timeout(90)
def test_memory_stays_bounded_with_50_mb_bodies(client: str, server: str, tmp_path: Path) -> None:
    """Eight 50 MB bodies, four at a time, saved: streamed to disk, never held whole."""
    urls = [f"{server}/big/{BIG}?n={n}" for n in range(8)]
    pages = tmp_path / "pages"
    peak = tmp_path / "peak"
    # VmHWM, the peak of this process image alone: ru_maxrss would keep pytest's own
    # peak across the fork and exec of the child.
    script = (
        "import atexit, re, sys; from parallelize._cli import main; "
        "hwm = lambda: re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]; "
        f"atexit.register(lambda: open({str(peak)!r}, 'w').write(hwm())); "
        "sys.exit(main(sys.argv[1:]))"
    )
    args = [str(write_lines(tmp_path / "u.txt", urls)), "-w", "4", "--save-dir", str(pages)]
    result = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-c", script, "fetch", "--client", client, *args, "-o", os.devnull],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.stat().st_size for p in pages.iterdir()) == [BIG] * 8
    peak_mb = int(peak.read_text()) / 1024
    # About 55-65 MB here: one body held whole would add 50 MB.
    # About 50-65 MB here: one body held whole would add 50 MB.
    assert peak_mb < 110, f"peak RSS {peak_mb:.0f} MB for 400 MB of bodies"


@pytest.mark.timeout(180)
def test_fifty_runs_in_a_row_all_exit_0(client: str, server: str, tmp_path: Path) -> None:
    """Every client is closed and given its moment: no abort at interpreter exit."""
    urls = write_lines(tmp_path / "u.txt", [f"{server}/page/{n}" for n in range(20)])
    codes = []
    for _ in range(50):
        result = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "parallelize", "fetch", "--client", client, str(urls), "-q"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        codes.append(result.returncode)
        assert result.stderr == "", result.stderr
        assert len(result.stdout.splitlines()) == 20
    assert codes == [0] * 50


@given(
    url=st.text(min_size=1),
    final=st.one_of(st.none(), st.text(min_size=1)),
    status=st.integers(100, 399),
    size=st.integers(0, 2**40),
    file=st.one_of(st.none(), st.text(min_size=1)),
)
@settings(max_examples=200, deadline=None)
def test_a_success_line_is_what_the_json_encoder_writes(
    url: str, final: str | None, status: int, size: int, file: str | None
) -> None:
    """fetch builds its line by hand, for speed: byte for byte json's own."""
    reply = Reply(status, "", final or url, {}, size, b"")

    class Client:
        name = "fake"

        async def request(self, *args: Any, **kwargs: Any) -> Reply:
            return reply

    async def call() -> str:
        saving = None if file is None else Saving("d")
        action = _make_fetch(
            Client(),
            shape=RequestShape("GET", None, ()),
            saving=saving,
            max_body=None,
            starts={},
            tries={},
        )
        if file is None:
            return await action(1, url)
        with (
            patch.object(Saver, "target", return_value=file),
            patch.object(Saver, "save", return_value=(reply, file, None)) as save,
        ):
            line = await action(1, url)
        assert save.call_count == 1
        return line

    line = asyncio.run(call())
    record = json.loads(line)
    assert line == ENCODE(record)
    assert record["url"] == url
    assert record["final_url"] == (final or url)
    assert (record["status"], record["bytes"], record["attempts"]) == (status, size, 1)
    assert record["error"] is None
    assert 0 <= record["elapsed"] < 1
    assert ("file" in record) == (file is not None)


# -- proxy and TLS options ---------------------------------------------------------------


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's subprocess inherits no proxy or certificate variable of the machine."""
    from nettools import PROXY_VARIABLES  # noqa: PLC0415 - only these tests use it

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_proxy_variables")
def test_fetch_through_a_proxy_with_a_client_certificate(
    client: str, server: str, tmp_path: Path
) -> None:
    """--proxy carries http:// and https:// URLs (CONNECT); --cacert, --cert and --key
    reach a server that asks for a client certificate."""
    from nettools import certificates, forward_proxy, https_server, in_thread  # noqa: PLC0415

    certs = certificates(tmp_path)
    with (
        in_thread(forward_proxy) as proxy,
        in_thread(lambda: https_server(certs.server_context(ask_client=True))) as secure,
    ):
        urls = [f"{server}/page/1", f"{secure}/client"]
        result = cli(
            "fetch", "--client", client, str(write_lines(tmp_path / "urls.txt", urls)),
            "--proxy", proxy.url, "--cacert", str(certs.ca_file),
            "--cert", str(certs.client_cert), "--key", str(certs.client_key),
        )  # fmt: skip
        seen = sorted(s.method for s in proxy.seen)
    assert result.returncode == 0, result.stderr
    got = by_url(result.stdout)
    assert [got[url]["status"] for url in urls] == [200, 200]
    assert got[urls[1]]["bytes"] == len("{'email': 'client@example.com'}")
    assert seen == ["CONNECT", "GET"]


@pytest.mark.usefixtures("no_proxy_variables")
def test_fetch_insecure_reaches_a_self_signed_server(client: str, tmp_path: Path) -> None:
    """Without --cacert a self-signed server is a tls failure; -k fetches it."""
    from nettools import certificates, https_server, in_thread  # noqa: PLC0415

    certs = certificates(tmp_path)
    with in_thread(lambda: https_server(certs.server_context())) as secure:
        urls = str(write_lines(tmp_path / "urls.txt", [f"{secure}/page/1"]))
        refused = cli("fetch", "--client", client, urls)
        insecure = cli("fetch", "--client", client, urls, "-k")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["kind"] == "tls"
    assert insecure.returncode == 0, insecure.stderr
    assert json.loads(insecure.stdout)["status"] == 200


@pytest.mark.usefixtures("no_proxy_variables")
def test_bad_proxy_and_tls_options_are_usage_errors(
    client: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing --cacert, --key without --cert, a socks proxy: exit 2, one line, no request."""
    urls = str(write_lines(tmp_path / "urls.txt", ["http://127.0.0.1:9/"]))
    missing = tmp_path / "missing.pem"
    cases = [
        (
            ["--cacert", str(missing)],
            f"--cacert: cannot read '{missing}': No such file or directory",
        ),
        (
            ["--key", str(missing)],
            "--key needs --cert: pass the certificate file too (or one file with both as --cert)",
        ),
        (
            ["--proxy", "socks5://127.0.0.1:1080"],
            (
                "--proxy must be an http:// proxy URL, such as http://proxy.example:3128 "
                "(socks and https:// proxies are not supported), got 'socks5://127.0.0.1:1080'"
            ),
        ),
    ]
    for options, message in cases:
        result = cli("fetch", "--client", client, urls, *options)
        assert (result.returncode, result.stdout) == (2, ""), options
        assert result.stderr == f"parallelize fetch: {message}\n"
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    result = cli("fetch", "--client", client, urls)
    assert result.returncode == 2
    assert result.stderr.endswith("; unset it, or pass --proxy URL (--proxy '' for none)\n")
    assert cli("fetch", "--client", client, urls, "--proxy", "").returncode == 1  # port 9: refused
