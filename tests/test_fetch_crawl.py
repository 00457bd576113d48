"""``fetch``'s crawl options on both clients, against the local test server: --fields
timing/remote_address/redirects, --format, cookies (-b/-c), --save-as and
--content-disposition, -C/--continue, --recrawl, --sitemap; and their bad cases,
each a usage error or a clear record, never a traceback."""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clitools import cli, records, write_lines
from parallelize._cli._saving import parse_save_as
from parallelize.http import backends, open_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=backends())
def client(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _fetch(client: str, urls: list[str], *args: str) -> Any:
    lines = "".join(f"{url}\n" for url in urls)
    return cli("fetch", "--client", client, "-", "-q", *args, stdin=lines)


def _file_bytes(name: str, size: int) -> bytes:
    """What the server's /file/{name}?size= sends."""
    pattern = name.encode()
    return bytes(pattern[i % len(pattern)] for i in range(size))


# -- richer records ---------------------------------------------------------------------


def test_fields_timing_remote_address_and_redirects(client: str, server: str) -> None:
    url = f"{server}/redirect/2"
    result = _fetch(client, [url], "--fields", "timing,remote_address,redirects")
    assert result.returncode == 0, result.stderr
    (record,) = records(result.stdout)
    assert [hop["status"] for hop in record["redirects"]] == [302, 302]
    assert record["redirects"][0]["url"] == url
    assert record["redirects"][1]["url"] == f"{server}/redirect/1"
    timing = record["timing"]
    assert set(timing) == {"dns", "connect", "first_byte", "total"}
    assert 0 < timing["first_byte"] <= timing["total"] < 10
    port = urllib.parse.urlsplit(server).port
    if client == "aiohttp":  # it tells the server's address and its connection time
        assert record["remote_address"] == f"127.0.0.1:{port}"
        assert timing["connect"] is not None
        assert timing["connect"] >= 0
    else:  # reqwest tells neither: null, not a guess
        assert record["remote_address"] is None
        assert timing["connect"] is None
    assert timing["dns"] is None  # an IP address: no name to resolve


def test_a_final_3xx_without_location_is_no_redirect(client: str, server: str) -> None:
    result = _fetch(client, [f"{server}/status/302"], "--fields", "redirects")
    (record,) = records(result.stdout)
    assert (record["status"], record["redirects"]) == (302, [])


def test_trace_of_the_library_client(client: str, server: str, run: Any) -> None:
    async def main() -> None:
        async with open_client(client, trace=True) as http:
            reply = await http.request("GET", f"{server}/redirect/1")
            assert reply.trace is not None
            assert reply.trace.redirects == [(f"{server}/redirect/1", 302)]
            assert reply.trace.total >= reply.trace.first_byte > 0
        async with open_client(client) as http:  # off by default
            assert (await http.request("GET", f"{server}/page/1")).trace is None

    run(main())


# -- --format ----------------------------------------------------------------------------


def test_format_writes_lines_of_your_own(client: str, server: str) -> None:
    ok, missing = f"{server}/page/1", f"{server}/status/404"
    template = r"%{status}\t%{url}\t%{error.kind}\t%{header:content-type}%%\n"
    result = _fetch(client, [ok, missing], "--format", template)
    assert result.returncode == 4, result.stderr  # a 404 is final
    lines = sorted(result.stdout.splitlines())
    assert lines == [
        f"200\t{ok}\t\ttext/plain; charset=utf-8%",
        f"404\t{missing}\thttp\ttext/plain; charset=utf-8%",
    ]


def test_format_json_is_the_record_and_the_journal_keeps_json(
    client: str, server: str, tmp_path: Path
) -> None:
    url = f"{server}/page/2"
    journal = str(tmp_path / "j.db")
    first = _fetch(client, [url], "--journal", journal, "--format", "%{status} %{bytes}")
    assert first.stdout == "200 7\n"
    again = _fetch(client, [url], "--journal", journal, "--format", "%{json}")  # replayed
    (record,) = records(again.stdout)
    assert (record["url"], record["status"]) == (url, 200)


@pytest.mark.parametrize(
    ("template", "words"),
    [("%{nope}", "is not a field"), ("50%", "a lone %"), ("%{status", "a lone %")],
)
def test_a_bad_format_is_a_usage_error(server: str, template: str, words: str) -> None:
    result = cli("fetch", "-", "--format", template, stdin=f"{server}/page/1\n")
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


# -- cookies -----------------------------------------------------------------------------


def _cookies_sent(record: dict[str, Any]) -> list[str]:
    echo = json.loads(Path(record["file"]).read_text())
    return [value for name, value in echo["headers"] if name.lower() == "cookie"]


def test_a_cookie_set_on_a_redirect_is_sent_on_and_saved_with_c(
    client: str, server: str, tmp_path: Path
) -> None:
    jar = tmp_path / "cookies.txt"
    pages = tmp_path / "pages"
    result = _fetch(
        client,
        [f"{server}/cookie/set/sid/abc?next=/echo"],
        "-c",
        str(jar),
        "--save-dir",
        str(pages),
    )
    assert result.returncode == 0, result.stderr
    (record,) = records(result.stdout)
    assert _cookies_sent(record) == ["sid=abc"]  # the redirect's hop sent it
    text = jar.read_text()
    assert text.startswith("# Netscape HTTP Cookie File")
    assert "\tsid\tabc" in text
    assert "\tFALSE\t0\tsid\tabc" in text  # a session cookie's expiry is 0, as curl writes
    again = _fetch(client, [f"{server}/echo"], "-b", str(jar), "--save-dir", str(pages))
    assert _cookies_sent(records(again.stdout)[0]) == ["sid=abc"]  # our jar, read back


def test_b_loads_a_cookie_file_and_b_text_is_sent_as_is(
    client: str, server: str, tmp_path: Path
) -> None:
    host = urllib.parse.urlsplit(server).hostname
    jar = tmp_path / "cookies.txt"
    jar.write_text(f"# Netscape HTTP Cookie File\n{host}\tFALSE\t/\tFALSE\t0\tsid\tfromfile\n")
    pages = tmp_path / "pages"
    loaded = _fetch(client, [f"{server}/echo"], "-b", str(jar), "--save-dir", str(pages))
    assert loaded.returncode == 0, loaded.stderr
    assert _cookies_sent(records(loaded.stdout)[0]) == ["sid=fromfile"]
    given = _fetch(client, [f"{server}/echo"], "-b", "a=1; b=2", "--save-dir", str(pages))
    assert _cookies_sent(records(given.stdout)[0]) == ["a=1; b=2"]


def test_a_cookie_of_one_host_is_not_sent_to_another(
    client: str, server: str, tmp_path: Path
) -> None:
    port = urllib.parse.urlsplit(server).port
    other = f"http://localhost:{port}"  # the same server, another host to the jar
    pages = tmp_path / "pages"
    result = _fetch(
        client,
        [f"{server}/cookie/set/sid/abc?next={other}/echo"],
        "-c",
        str(tmp_path / "jar.txt"),
        "--save-dir",
        str(pages),
    )
    assert result.returncode == 0, result.stderr
    assert _cookies_sent(records(result.stdout)[0]) == []


def test_library_cookies_are_off_by_default_and_shared_with_a_jar(
    client: str, server: str, run: Any
) -> None:
    async def main() -> None:
        jar = http.cookiejar.CookieJar()
        async with open_client(client, cookies=jar) as http_client:
            await http_client.request("GET", f"{server}/cookie/set/k/v?next=")
            reply = await http_client.request("GET", f"{server}/echo")
        echo = json.loads(reply.body)
        assert ["Cookie", "k=v"] in echo["headers"]
        async with open_client(client) as http_client:
            await http_client.request("GET", f"{server}/cookie/set/k/v?next=")
            reply = await http_client.request("GET", f"{server}/echo")
        assert not [h for h in json.loads(reply.body)["headers"] if h[0] == "Cookie"]

    run(main())


def test_bad_cookie_options_are_usage_errors(server: str, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is no cookie file\n")
    url = f"{server}/page/1\n"
    cases = [
        (["-b", str(garbage)], "does not look like a Netscape format cookies file"),
        (["-b", str(tmp_path / "none.txt")], "cannot load the cookie file"),
        (["-c", str(tmp_path / "no" / "dir" / "jar.txt")], "cannot write into"),
        (["-c", str(tmp_path)], "is a directory"),
        (["-b", "a=1", "-H", "Cookie: b=2"], "both give cookies"),
        (["-b", "a=1", "--processes", "2"], "--processes"),
    ]
    for args, words in cases:
        result = cli("fetch", "-", "-o", str(tmp_path / "out.jsonl"), *args, stdin=url)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "out.jsonl").exists()  # refused before the output is opened


# -- --save-as and --content-disposition -------------------------------------------------


def test_save_as_path_names_files_by_host_and_path(
    client: str, server: str, tmp_path: Path
) -> None:
    host = urllib.parse.urlsplit(server).netloc
    pages = tmp_path / "pages"
    urls = [
        f"{server}/file/a?size=5",
        f"{server}/page/7",
        f"{server}/file/x%2F..%2Fy",  # an encoded slash stays in its segment
    ]
    result = _fetch(client, urls, "--save-dir", str(pages), "--save-as", "path")
    assert result.returncode == 0, result.stderr
    files = {r["url"]: r["file"] for r in records(result.stdout)}
    assert files[urls[0]] == f"{pages}/{host}/file/a?size=5"
    assert files[urls[1]] == f"{pages}/{host}/page/7"
    assert files[urls[2]] == f"{pages}/{host}/file/x%2F..%2Fy"
    assert Path(files[urls[0]]).read_bytes() == b"aaaaa"
    for file in files.values():
        assert Path(file).resolve().is_relative_to(pages.resolve())


def test_save_as_template_and_content_disposition(client: str, server: str, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    named = f"{server}/file/n?size=3&cd=" + urllib.parse.quote(
        'attachment; filename="../../evil.txt"'
    )
    utf8 = f"{server}/file/u?size=2&cd=" + urllib.parse.quote(
        "attachment; filename*=UTF-8''na%C3%AFve.txt"
    )
    plain = f"{server}/file/p?size=4"
    result = _fetch(
        client,
        [named, utf8, plain],
        "--save-dir",
        str(pages),
        "--save-as",
        "{host}/{dir}{name}",
        "--content-disposition",
    )
    assert result.returncode == 0, result.stderr
    host = urllib.parse.urlsplit(server).netloc
    files = {r["url"]: r["file"] for r in records(result.stdout)}
    assert files[named] == f"{pages}/{host}/file/evil.txt"  # its last part only
    assert files[utf8] == f"{pages}/{host}/file/naïve.txt"
    assert files[plain] == f"{pages}/{host}/file/p"
    assert Path(files[named]).read_bytes() == b"nnn"
    assert not list(tmp_path.glob("evil.txt"))


def test_a_symlink_out_of_the_directory_is_a_save_failure(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    outside = tmp_path / "outside"
    outside.mkdir()
    host = urllib.parse.urlsplit(server).netloc
    (pages / host).mkdir(parents=True)
    (pages / host / "file").symlink_to(outside)
    result = _fetch(client, [f"{server}/file/z"], "--save-dir", str(pages), "--save-as", "path")
    (record,) = records(result.stdout)
    assert record["error"]["kind"] == "save"
    assert "outside --save-dir" in record["error"]["message"]
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("../{name}", "would write outside --save-dir"),
        ("/{name}", "would write outside --save-dir"),
        ("a/../../{name}", "would write outside --save-dir"),
        ("{name", "write a brace"),
        ("{nope}", "is not a field"),
        ("{name!r}", "is not a field"),
        ("fixed", "names every body alike"),
    ],
)
def test_a_template_that_would_escape_is_a_usage_error(
    server: str, tmp_path: Path, template: str, words: str
) -> None:
    result = cli(
        "fetch", "-", "--save-dir", str(tmp_path), "--save-as", template, stdin=f"{server}/x\n"
    )
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_save_options_need_save_dir(server: str) -> None:
    for args in (["--save-as", "path"], ["--content-disposition"], ["-C"]):
        result = cli("fetch", "-", *args, stdin=f"{server}/x\n")
        assert result.returncode == 2
        assert "give --save-dir DIR too" in result.stderr


_SEGMENT = st.text(st.characters(codec="utf-8"), max_size=30)


@given(
    segments=st.lists(
        st.one_of(_SEGMENT, st.sampled_from(["..", ".", "", "%2E%2E", "%2F", "%00"])), max_size=8
    ),
    query=st.one_of(st.just(""), _SEGMENT),
    template=st.sampled_from(["path", "{host}/{path}", "{dir}{name}", "x/{query}/{name}", "{key}"]),
)
@settings(max_examples=300, deadline=None)
def test_a_name_from_any_url_stays_in_the_directory(
    segments: list[str], query: str, template: str
) -> None:
    path = "/".join(urllib.parse.quote(s, safe="%") for s in segments)
    url = f"http://example.com/{path}" + (f"?{urllib.parse.quote(query)}" if query else "")
    name = parse_save_as(template)(url, url, "../../k")
    base = "/srv/pages"
    joined = os.path.normpath(f"{base}/{name}")
    assert joined.startswith(base + "/")
    assert not name.startswith("/")
    assert all(part not in {"", ".", ".."} for part in name.split("/"))
    assert all(len(part.encode("utf-8", "surrogateescape")) <= 240 for part in name.split("/"))
    assert "\x00" not in name


# -- -C/--continue -----------------------------------------------------------------------


def test_continue_resumes_a_cut_download(client: str, server: str, tmp_path: Path) -> None:
    """Cut at byte 100,000 of 300,000: the part is kept, the rerun asks for the rest."""
    pages = tmp_path / "pages"
    url = f"{server}/file/big?size=300000&cut=100000"
    target = pages / hashlib.sha256(url.encode()).hexdigest()
    part = Path(f"{target}.part")
    first = _fetch(client, [url], "--save-dir", str(pages), "-C")
    assert first.returncode == 1
    assert records(first.stdout)[0]["error"]["kind"] == "protocol"
    assert part.stat().st_size == 100_000  # every byte that came (reqwest read ahead 64 KiB)
    second = _fetch(client, [url], "--save-dir", str(pages), "-C")
    assert second.returncode == 0, second.stderr
    (record,) = records(second.stdout)
    assert (record["status"], record["resumed_from"], record["bytes"]) == (206, 100_000, 200_000)
    assert target.read_bytes() == _file_bytes("big", 300_000)
    assert not part.exists()


def test_without_continue_a_cut_download_leaves_nothing(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    result = _fetch(client, [f"{server}/file/big?size=300000&cut=100000"], "--save-dir", str(pages))
    assert result.returncode == 1
    assert list(pages.iterdir()) == []


def test_continue_finishes_a_whole_part_on_416_and_restarts_a_changed_file(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    whole = f"{server}/file/w?size=10"
    target = pages / hashlib.sha256(whole.encode()).hexdigest()
    Path(f"{target}.part").write_bytes(_file_bytes("w", 10))  # the whole file, not renamed
    done = _fetch(client, [whole], "--save-dir", str(pages), "-C")
    assert done.returncode == 0, done.stdout
    (record,) = records(done.stdout)
    assert (record["status"], record["resumed_from"], record["bytes"]) == (416, 10, 0)
    assert target.read_bytes() == _file_bytes("w", 10)

    changed = f"{server}/file/c?size=8&etag=new"
    target = pages / hashlib.sha256(changed.encode()).hexdigest()
    part = Path(f"{target}.part")
    part.write_bytes(b"OLD")
    os.setxattr(part, "user.parallelize.validator", b'"old"')  # If-Range: "old" fails
    again = _fetch(client, [changed], "--save-dir", str(pages), "-C")
    (record,) = records(again.stdout)
    assert (record["status"], record["bytes"]) == (200, 8)
    assert "resumed_from" not in record
    assert target.read_bytes() == _file_bytes("c", 8)


# -- --recrawl ---------------------------------------------------------------------------


def test_recrawl_moves_only_what_changed(client: str, server: str, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    same, other = f"{server}/file/s?size=5", f"{server}/page/4"
    urls = write_lines(tmp_path / "urls.txt", [same, other])
    first_journal, second_journal = tmp_path / "one.db", tmp_path / "two.db"
    common = ["--client", client, str(urls), "-q", "--save-dir", str(pages)]
    first = cli(
        "fetch", *common, "--journal", str(first_journal),
        "--fields", "header:etag,header:last-modified",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = {r["url"]: r for r in records(first.stdout)}
    assert before[same]["header:etag"] == '"s-5"'
    again = cli("fetch", *common, "--journal", str(second_journal), "--recrawl", str(first_journal))
    assert again.returncode == 0, again.stderr
    after = {r["url"]: r for r in records(again.stdout)}
    assert (after[same]["status"], after[same]["bytes"]) == (304, 0)
    assert after[same]["file"] == before[same]["file"]  # the earlier file, kept whole
    assert Path(after[same]["file"]).read_bytes() == b"sssss"
    assert after[other]["status"] == 200  # no validator: fetched again
    assert after[same]["header:etag"] == '"s-5"'  # kept for the next recrawl


def test_bad_recrawl_journals_are_usage_errors(server: str, tmp_path: Path) -> None:
    text = tmp_path / "text.db"
    text.write_text("not sqlite")
    journal = tmp_path / "j.db"
    url = f"{server}/page/1\n"
    for args, words in (
        (["--recrawl", str(tmp_path / "none.db")], "cannot read it as a parallelize journal"),
        (["--recrawl", str(text)], "cannot read it as a parallelize journal"),
    ):
        result = cli("fetch", "-", *args, stdin=url)
        assert result.returncode == 2
        assert words in result.stderr
    cli("fetch", "-", "--journal", str(journal), stdin=url)
    result = cli("fetch", "-", "--journal", str(journal), "--recrawl", str(journal), stdin=url)
    assert result.returncode == 2
    assert "the run's own --journal" in result.stderr


# -- --sitemap ---------------------------------------------------------------------------


def test_sitemap_index_is_the_input(client: str, server: str) -> None:
    result = cli(
        "fetch", "--client", client, "-q", "--sitemap", f"{server}/sitemap-index/3/2.xml",
        "--sitemap", f"{server}/sitemap/2.xml", "--unique", "--format", "%{url} %{status}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(
        f"{server}/page/{n} 200" for n in range(1, 7)
    )  # pages 1 and 2 of the second sitemap dropped by --unique


def test_an_unreadable_first_sitemap_is_a_usage_error_before_the_output(
    server: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = cli("fetch", "--sitemap", f"{server}/status/404", "-o", str(out))
    assert result.returncode == 2
    assert "cannot read the sitemap" in result.stderr
    assert "404" in result.stderr
    assert not out.exists()


def test_a_later_unreadable_sitemap_is_a_warning(server: str) -> None:
    result = cli(
        "fetch", "--sitemap", f"{server}/sitemap/1.xml", "--sitemap", f"{server}/page/1",
        "--format", "%{url}",
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == f"{server}/page/1\n"
    assert "warning: --sitemap: cannot read the sitemap" in result.stderr


def test_sitemap_does_not_go_with_urls_or_requests(server: str, tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "urls.txt", [f"{server}/page/1"])
    sitemap = f"{server}/sitemap/1.xml"
    for args, words in (
        ([str(urls), "--sitemap", sitemap], "not both"),
        (["--sitemap", sitemap, "--requests"], "--requests"),
    ):
        result = cli("fetch", *args)
        assert result.returncode == 2
        assert words in result.stderr


def test_sitemap_with_processes_fetches_in_the_children(server: str) -> None:
    result = cli(
        "fetch", "--sitemap", f"{server}/sitemap/5.xml", "--processes", "2", "-q",
        "--format", "%{status}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["200"] * 5


def test_nothing_is_left_running(server: str, tmp_path: Path) -> None:
    """A crawl with every option ends with its files whole and no process behind."""
    pages = tmp_path / "pages"
    proc = subprocess.run(  # noqa: S603 - our own CLI
        [
            sys.executable, "-m", "parallelize", "fetch", "-q",
            "--sitemap", f"{server}/sitemap/3.xml", "--save-dir", str(pages),
            "--save-as", "path", "-C", "-c", str(tmp_path / "jar.txt"),
            "--fields", "timing,redirects", "--format", "%{status} %{file}",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3
    assert (tmp_path / "jar.txt").exists()


# -- nginx, an independent witness of ranges and validators -------------------------------


def test_continue_and_if_range_against_nginx(client: str, tmp_path: Path) -> None:
    """nginx's own Range, If-Range and ETag: a download cut by --timeout resumes; a
    part of a file that changed since is not appended to, but fetched whole."""
    from nginxtools import nginx  # noqa: PLC0415

    body = os.urandom(3 << 20)
    # nginx sends 1 MiB a second after the first: --timeout cuts the body.
    with nginx(
        tmp_path / "nginx", {"/big.bin": body}, extra="limit_rate 1m; limit_rate_after 1m;"
    ) as base:
        url = f"{base}/big.bin"
        pages = tmp_path / "pages"
        target = pages / hashlib.sha256(url.encode()).hexdigest()
        part = Path(f"{target}.part")
        cut = _fetch(client, [url], "--save-dir", str(pages), "-C", "--timeout", "1.5")
        assert records(cut.stdout)[0]["error"]["kind"] == "timeout"
        kept = part.stat().st_size
        assert 0 < kept < len(body)
        assert part.read_bytes() == body[:kept]
        done = _fetch(client, [url], "--save-dir", str(pages), "-C")
        assert done.returncode == 0, done.stderr
        (record,) = records(done.stdout)
        assert (record["status"], record["resumed_from"]) == (206, kept)
        assert record["bytes"] == len(body) - kept
        assert target.read_bytes() == body

        # The file changes after a part of it was saved: If-Range fails, all of it comes.
        part.write_bytes(body[:1000])
        os.setxattr(part, "user.parallelize.validator", b'"not-its-etag"')
        changed = os.urandom(5000)
        (tmp_path / "nginx" / "www" / "big.bin").write_bytes(changed)
        again = _fetch(client, [url], "--save-dir", str(pages), "-C")
        (record,) = records(again.stdout)
        assert (record["status"], record["bytes"]) == (200, 5000)
        assert target.read_bytes() == changed


def test_recrawl_against_nginx(client: str, tmp_path: Path) -> None:
    """nginx answers If-None-Match with 304 while a file is the same, 200 once changed."""
    from nginxtools import nginx  # noqa: PLC0415

    with nginx(tmp_path / "nginx", {"/a.txt": b"aaa", "/b.txt": b"bbb"}) as base:
        urls = [f"{base}/a.txt", f"{base}/b.txt"]
        pages = tmp_path / "pages"
        first = _fetch(
            client, urls, "--save-dir", str(pages), "--journal", str(tmp_path / "1.db"),
            "--fields", "header:etag,header:last-modified",
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        www = tmp_path / "nginx" / "www"
        (www / "b.txt").write_bytes(b"a new b")
        os.utime(www / "b.txt", (1e9, 1e9))  # another mtime: another ETag
        second = _fetch(
            client, urls, "--save-dir", str(pages), "--journal", str(tmp_path / "2.db"),
            "--recrawl", str(tmp_path / "1.db"),
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        after = {r["url"]: r for r in records(second.stdout)}
        assert after[urls[0]]["status"] == 304
        assert Path(after[urls[0]]["file"]).read_bytes() == b"aaa"
        assert after[urls[1]]["status"] == 200
        assert Path(after[urls[1]]["file"]).read_bytes() == b"a new b"


# -- what a hostile or odd server must not do to the saved files (review findings) -------


def test_a_symlinked_part_is_never_written_through(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    url = f"{server}/file/s?size=10"
    target = pages / hashlib.sha256(url.encode()).hexdigest()
    Path(f"{target}.part").symlink_to(victim)
    result = _fetch(client, [url], "--save-dir", str(pages), "-C")
    (record,) = records(result.stdout)
    assert record["error"]["kind"] == "save"
    assert victim.read_text() == "keep me"


def test_a_content_disposition_name_never_takes_another_files_place(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    other = f"{server}/file/o?size=3"
    hashed = hashlib.sha256(other.encode()).hexdigest()
    urls = [
        other,
        f"{server}/file/h?size=4&cd=" + urllib.parse.quote(f'attachment; filename="{hashed}"'),
        f"{server}/file/p?size=5&cd=" + urllib.parse.quote('attachment; filename="x.part"'),
        f"{server}/file/a?size=6&cd=" + urllib.parse.quote('attachment; filename="same.txt"'),
        f"{server}/file/b?size=7&cd=" + urllib.parse.quote('attachment; filename="same.txt"'),
    ]
    result = _fetch(client, urls, "--save-dir", str(pages), "--content-disposition", "-w", "1")
    assert result.returncode == 0, result.stderr
    files = {r["url"]: r["file"] for r in records(result.stdout)}
    assert Path(files[other]).read_bytes() == b"ooo"  # not replaced by the 2nd's body
    assert files[urls[1]] == str(pages / hashlib.sha256(urls[1].encode()).hexdigest())
    assert files[urls[2]] == str(pages / hashlib.sha256(urls[2].encode()).hexdigest())
    assert sorted(Path(files[u]).name for u in urls[3:]) == ["same.txt", "same.txt.1"]


def test_the_same_url_twice_with_continue_never_shares_a_part(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    url = f"{server}/file/twice?size=200000"
    result = _fetch(client, [url] * 3, "--save-dir", str(pages), "-C", "-w", "3")
    assert result.returncode == 0, result.stderr
    (file,) = {r["file"] for r in records(result.stdout)}
    assert Path(file).read_bytes() == _file_bytes("twice", 200_000)
    assert [p.name for p in pages.iterdir()] == [Path(file).name]


def test_a_206_that_ends_early_keeps_the_part_until_the_rest_comes(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    url = f"{server}/file/steps?size=1000&step=300"
    target = pages / hashlib.sha256(url.encode()).hexdigest()
    pages.mkdir()
    Path(f"{target}.part").write_bytes(_file_bytes("steps", 1000)[:100])
    first = _fetch(client, [url], "--save-dir", str(pages), "-C")
    (record,) = records(first.stdout)
    assert record["error"]["kind"] == "save"
    assert "not the whole rest" in record["error"]["message"]
    assert Path(f"{target}.part").stat().st_size == 400
    for _ in range(3):
        last = _fetch(client, [url], "--save-dir", str(pages), "-C")
    assert records(last.stdout)[0]["error"] is None
    assert target.read_bytes() == _file_bytes("steps", 1000)


def test_a_416_of_another_length_starts_the_part_over(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    url = f"{server}/file/shrunk?size=10"
    target = pages / hashlib.sha256(url.encode()).hexdigest()
    Path(f"{target}.part").write_bytes(b"x" * 20)  # longer than the file is now
    first = _fetch(client, [url], "--save-dir", str(pages), "-C")
    assert records(first.stdout)[0]["status"] == 416
    assert not Path(f"{target}.part").exists()
    again = _fetch(client, [url], "--save-dir", str(pages), "-C")
    assert records(again.stdout)[0]["status"] == 200
    assert target.read_bytes() == _file_bytes("shrunk", 10)


def test_an_error_page_never_replaces_a_saved_body(
    client: str, server: str, tmp_path: Path
) -> None:
    pages = tmp_path / "pages"
    args = ["--save-dir", str(pages), "--save-as", "{host}"]  # every URL of a host: one name
    _fetch(client, [f"{server}/page/1"], *args)
    (saved,) = [p for p in pages.iterdir() if p.is_file()]
    failed = _fetch(client, [f"{server}/status/503"], *args)
    (record,) = records(failed.stdout)
    assert record["status"] == 503
    assert "file" not in record
    assert saved.read_text() == "page 1\n"


def test_recrawl_without_the_earlier_file_fetches_it_whole(
    client: str, server: str, tmp_path: Path
) -> None:
    url = f"{server}/file/gone?size=4"
    first_journal = tmp_path / "1.db"
    _fetch(
        client, [url], "--journal", str(first_journal), "--save-dir", str(tmp_path / "a"),
        "--fields", "header:etag",
    )  # fmt: skip
    shutil.rmtree(tmp_path / "a")
    again = _fetch(
        client, [url], "--journal", str(tmp_path / "2.db"), "--recrawl", str(first_journal),
        "--save-dir", str(tmp_path / "a"),
    )  # fmt: skip
    (record,) = records(again.stdout)
    assert (record["status"], record["bytes"]) == (200, 4)
    assert Path(record["file"]).read_bytes() == b"gone"


def test_names_that_do_not_encode_or_are_too_long(client: str, server: str, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    urls = [f"{server}/page/%FF", f"{server}/page/1?{'q' * 300}"]
    result = _fetch(
        client, urls, "--save-dir", str(pages), "--save-as", "path", "--format", "%{file}"
    )
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all(len(Path(line).name.encode()) <= 240 for line in lines if line)


def test_validator_beside_the_part_where_xattrs_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parallelize._cli import _saving  # noqa: PLC0415

    def refuse(*_args: object) -> None:
        raise OSError(95, "Operation not supported")

    part = tmp_path / "x.part"
    part.write_bytes(b"abc")
    monkeypatch.setattr(os, "setxattr", refuse)
    monkeypatch.setattr(os, "getxattr", refuse)
    _saving._store_validator(str(part), '"v1"')
    assert _saving._validator(str(part)) == '"v1"'
    _saving._store_validator(str(part), None)
    assert _saving._validator(str(part)) is None
    assert not Path(f"{part}.validator").exists()
