"""``fetch --requests``: JSON object lines are whole requests, mixed with URL lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import cli, records, write_lines
from parallelize.http import backends

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=backends())
def client(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _echoes(result_stdout: str) -> dict[str, dict]:  # type: ignore[type-arg]
    """The /echo bodies saved under --save-dir, by each record's key."""
    got = {}
    for record in records(result_stdout):
        got[record.get("key", record["url"])] = json.loads(Path(record["file"]).read_text())
    return got


def test_request_lines_carry_their_own_method_body_and_headers(
    client: str, server: str, tmp_path: Path
) -> None:
    echo = f"{server}/echo"
    lines = [
        json.dumps({"url": echo, "json": {"q": 1}, "key": "a"}),
        json.dumps({"url": echo, "json": {"q": 2}, "key": "b"}),  # same URL, other body
        json.dumps({"url": echo, "method": "PUT", "body": "x=1", "key": "c"}),
        json.dumps({"url": echo, "headers": {"X-Tag": "t"}, "key": "d"}),
        json.dumps({"url": echo, "headers": [["X-Two", "1"], ["X-Two", "2"]], "key": "e"}),
        echo,  # a plain URL line, mixed in
    ]
    urls = write_lines(tmp_path / "in.txt", lines)
    pages = tmp_path / "pages"
    args = ["--client", client, "--requests", "--save-dir", str(pages), "-H", "X-All: 1"]
    result = cli("fetch", str(urls), *args)
    assert result.returncode == 0, result.stderr
    got = _echoes(result.stdout)
    assert got["a"]["method"] == "POST"
    assert json.loads(got["a"]["body"]) == {"q": 1}
    assert json.loads(got["b"]["body"]) == {"q": 2}
    assert ["Content-Type", "application/json"] in got["a"]["headers"]
    assert (got["c"]["method"], got["c"]["body"]) == ("PUT", "x=1")
    assert ["X-Tag", "t"] in got["d"]["headers"]
    assert got["d"]["method"] == "GET"
    assert [v for n, v in got["e"]["headers"] if n == "X-Two"] == ["1", "2"]
    assert ["X-All", "1"] in got["d"]["headers"]  # the command's -H too
    assert got[echo]["method"] == "GET"


def test_a_journal_knows_two_bodies_for_one_url_apart(server: str, tmp_path: Path) -> None:
    echo = f"{server}/echo"
    lines = [json.dumps({"url": echo, "json": n}) for n in range(5)]
    urls = write_lines(tmp_path / "in.txt", lines)
    journal = tmp_path / "j.sqlite"
    first = cli("fetch", str(urls), "--requests", "--journal", str(journal))
    assert first.returncode == 0, first.stderr
    assert len(records(first.stdout)) == 5
    again = cli("fetch", str(urls), "--requests", "--journal", str(journal))
    assert "5 replayed from the journal" in again.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"url": 1}', '"url" must be a non-empty string'),
        ("{not json", "not a request line: Expecting property name"),
        ('{"url": "http://h/", "body": "a", "json": 1}', 'give "body" or "json", not both'),
        ('{"url": "http://h/", "method": "GE T"}', '"method" must be a method name'),
        ('{"url": "http://h/", "headers": {"a b": "c"}}', '"headers": expected a name'),
        ('{"url": "http://h/", "colour": "red"}', "unknown fields ['colour']"),
        ('{"url": "http://h/", "body": 3}', '"body" must be a string'),
    ],
)
def test_a_malformed_request_line_is_a_final_failure_record(
    server: str, tmp_path: Path, line: str, message: str
) -> None:
    urls = write_lines(tmp_path / "in.txt", [line, f"{server}/page/1"])
    result = cli("fetch", str(urls), "--requests")
    assert result.returncode == 4, result.stderr  # the bad line fails for good
    bad = [r for r in records(result.stdout) if r["error"]]
    assert len(bad) == 1
    assert bad[0]["error"]["kind"] == "invalid_request"
    assert message in bad[0]["error"]["message"]
    assert "Traceback" not in result.stderr


def test_without_the_flag_a_json_line_is_an_invalid_url(tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "in.txt", ['{"url": "http://h/"}'])
    result = cli("fetch", str(urls))
    assert records(result.stdout)[0]["error"]["kind"] == "invalid_url"


def test_request_lines_in_child_processes(server: str, tmp_path: Path) -> None:
    echo = f"{server}/echo"
    lines = [json.dumps({"url": echo, "json": n, "key": str(n)}) for n in range(20)]
    urls = write_lines(tmp_path / "in.txt", lines)
    pages = tmp_path / "pages"
    result = cli("fetch", str(urls), "--requests", "--processes", "2", "--save-dir", str(pages))
    assert result.returncode == 0, result.stderr
    got = _echoes(result.stdout)
    assert sorted(int(k) for k in got) == list(range(20))
    assert all(json.loads(echoed["body"]) == int(k) for k, echoed in got.items())
