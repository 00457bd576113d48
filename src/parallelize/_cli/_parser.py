"""The command line's grammar and its help texts (argparse)."""

from __future__ import annotations

import argparse
import ipaddress
import math
from typing import NoReturn

from parallelize.http import BACKENDS

from ._crawl_options import add_crawl_options
from ._errors import UsageError
from ._fetch import parse_header
from ._fetch_failures import parse_retry_on
from ._fields import parse_fields
from ._halt import HALT_JUDGED_FROM, Halt
from ._queue import add_queue_parser
from ._request_lines import METHOD
from ._shared_run import add_queue_options

__all__ = ("build_parser",)

EXIT_CODES = """\
exit codes:
  0    every item succeeded
  1    some items failed (their records say why; the others are written too),
       and some of those may succeed on a rerun (a timeout, a 503)
  2    usage error: a bad option, an input or output file that cannot be opened,
       a MODULE:FUNCTION that cannot be imported, a journal that cannot be used
  3    stopped by --halt-after: too many failures (what was done is recorded)
  4    some items failed, every failure final (a 404, an invalid URL): a rerun
       with the journal would not change them (--retry-failed runs them anyway)
  74   the output could not be written (a full disk): one line on stderr; the
       lines already written are whole JSON lines
  130  interrupted by Ctrl-C (SIGINT) or SIGTERM after a graceful stop
  141  stdout was closed early (| head), as SIGPIPE would"""

MAIN_DESCRIPTION = """\
Run many I/O-bound jobs at once with a bounded pool of asyncio workers, and write
one JSON line per job. Every command takes -w/--workers, --timeout, --retries,
--rate, --adaptive, --journal and -o; see 'parallelize COMMAND --help'."""

MAIN_EPILOG = f"""\
examples:
  parallelize fetch urls.txt -o results.jsonl
  parallelize run mymodule:handle --input args.jsonl -w 20
  parallelize fetch urls.txt --run crawl      # one run over many machines (Redis)
  parallelize queue status --run crawl

{EXIT_CODES}

Full documentation: docs/cli.md"""

FETCH_DESCRIPTION = """\
Fetch every URL of URLS (a file, or - for stdin: one URL a line; blank lines and
lines starting with # are skipped) and write one JSON line per URL, in the order
they finish:

  {"url": ..., "final_url": ..., "status": 200, "bytes": 5120, "elapsed": 0.031,
   "attempts": 1, "error": null}

A failure has "error": {"kind": ..., "message": ...}, with kind one of http
(status >= 400; the status is kept), timeout, connection, dns, tls, redirect,
protocol, invalid_url, too_large, save, error: the same with every --client;
host_down (the breaker of --host-failures: no request) and robots (--robots:
disallowed, no request). A summary goes to stderr."""

FETCH_EPILOG = f"""\
examples:
  parallelize fetch urls.txt -o results.jsonl
  cut -f2 sites.tsv | parallelize fetch - -w 50 --retries 3 --timeout 10
  parallelize fetch urls.txt --journal crawl.db -o crawl.jsonl --save-dir pages
      (Ctrl-C it, run the same command again: it goes on where it stopped)
  jq -r 'select(.error) | .url' results.jsonl     # the URLs that failed
  parallelize fetch crawl.txt --per-host 2 --per-host-rate 1 --robots
      (many sites: 2 at once and 1 a second to each, robots.txt obeyed)

one run over many machines (Redis; PARALLELIZE_REDIS=redis://host:6379/0):
  parallelize fetch urls.txt --run crawl -o a.jsonl    # machine A: adds, fetches
  parallelize fetch --run crawl -o b.jsonl             # machines B, C...: fetch
  parallelize queue status --run crawl                 # from anywhere

with --journal, a rerun of the same command writes every URL again: the ones
done are replayed from the journal without a request, the failed and the
missing ones are fetched. Run it until it exits 0.

{EXIT_CODES}"""

RUN_DESCRIPTION = """\
Call FUNCTION (an async def, or a plain function, run in threads) once per line
of --input, and write one JSON line per call, in the order they finish:

  {"line": 3, "args": [1, 2], "ok": true, "result": 3}
  {"line": 4, "args": {"x": 1}, "ok": false, "error": {"kind": "exception",
   "message": "ValueError: ..."}}

Each input line is one JSON value: an array is the positional arguments, an
object the keyword arguments, anything else the single argument (wrap an array
meant as one argument: [[1, 2]]). Blank lines are skipped. A line that is not
JSON is a failure record (kind invalid_json). A result that JSON cannot hold is
written as its repr() string. MODULE is imported from the current directory or
PYTHONPATH."""

RUN_EPILOG = f"""\
examples:
  parallelize run tasks:resize --input images.jsonl -o done.jsonl -w 8
  seq 1 1000 | parallelize run mymodule:check --input - --retries 2 --timeout 5
  parallelize run api:call --input jobs.jsonl --per-key-field tenant --per-key 4
      (at most 4 calls at once for each value of the lines' "tenant" member)

error kinds: invalid_json, timeout (--timeout), exception (FUNCTION raised),
key_down (the breaker of --key-failures: not called).

with --journal, a rerun of the same command writes every line again: the calls
that succeeded are replayed from the journal without calling FUNCTION, the
failed and the missing ones are called. Run it until it exits 0.

{EXIT_CODES}"""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, not usage text (exit 2)."""

    def error(self, message: str) -> NoReturn:
        """Raise a one-line :class:`UsageError` instead of printing the usage."""
        raise UsageError(f"{message} (see '{self.prog} --help')", prog=self.prog)


def _processes(text: str) -> int | str:
    """Parse ``--processes``: a whole number >= 1, or ``auto``."""
    if text == "auto":
        return text
    return _int_at_least(1)(text)


def _halt_after(text: str) -> Halt:
    share = text.endswith("%")
    number = text[:-1] if share else text
    try:
        value = float(number) if share else int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of failures (10) or a share of them (5%), got {text!r}"
        ) from None
    if share and not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"a share is more than 0% and at most 100%, got {text!r}")
    if not share and value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 failure, got {text!r}")
    return Halt(text, None if share else int(value), value / 100 if share else None)


def _int_at_least(low: int) -> type[int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse  # type: ignore[return-value]  # argparse only calls it


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds (0: no limit), got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected calls per second, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 per second, got {text!r}")
    return value


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text: str) -> int:
    number, unit = text.strip(), ""
    if number[-1:].upper() in _UNITS:
        number, unit = number[:-1], number[-1].upper()
    try:
        value = int(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected bytes, such as 5000000 or 5M (K, M, G: KiB, MiB, GiB), got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 bytes, got {text!r}")
    return value


# RFC 9110's token: the characters a method's name may have.


def _method(text: str) -> str:
    if METHOD.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(
            f"expected a method name such as GET or POST (letters, digits and "
            f"!#$%&'*+-.^_`|~, no spaces), got {text!r}"
        )
    return text.upper()


def _retry_on(text: str) -> tuple[frozenset[int], frozenset[str]]:
    try:
        return parse_retry_on(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fields(text: str) -> tuple[str, ...]:
    try:
        return parse_fields(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _resolve(text: str) -> tuple[tuple[str, int], str]:
    host, _, rest = text.partition(":")
    port, _, address = rest.partition(":")
    address = address.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or not address:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT:ADDRESS (example.com:443:127.0.0.1), got {text!r}"
        )
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{address!r} is not an IP address (in HOST:PORT:ADDRESS, {text!r})"
        ) from None
    return (host.lower(), int(port)), address


def _header(text: str) -> tuple[str, str]:
    try:
        return parse_header(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_common(parser: argparse.ArgumentParser, *, timeout: float | None, retried: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the JSON lines to FILE (replaced) instead of stdout",
    )
    parser.add_argument(
        "-w",
        "--workers",
        type=_int_at_least(1),
        default=100,
        metavar="N",
        help="at most N at once (default 100; the ceiling with --adaptive)",
    )
    default = "no limit" if timeout is None else f"{timeout:g}"
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=timeout,
        metavar="SECONDS",
        help=f"give up an attempt after SECONDS (default {default}; 0: no limit)",
    )
    parser.add_argument(
        "--retries",
        type=_int_at_least(0),
        default=0,
        metavar="N",
        help=f"try again up to N more times, after a backoff, {retried} (default 0)",
    )
    parser.add_argument(
        "--max-retry-wait",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="fail an item at once (kind retry_wait) rather than wait longer than "
        "SECONDS before its next attempt, whatever a Retry-After asks (default 300; "
        "0: no limit)",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="on a rerun with --journal, run every stored failure again (default: "
        "only those that may succeed; a final one, such as a 404 or a line that is "
        "not valid, is written again as it was)",
    )
    parser.add_argument(
        "--halt-after",
        type=_halt_after,
        metavar="N|P%",
        help="stop when it is hopeless: after N failed items, or once P%% of the "
        f"items that ran failed (judged from the {HALT_JUDGED_FROM}th on): no new "
        "item is started, those in flight finish and are written, then exit 3 "
        "(with --journal a rerun goes on from there)",
    )
    parser.add_argument(
        "--deadline",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="give up an item (kind deadline) SECONDS after its first attempt "
        "started, retries and their waits included (default 0: no limit)",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        metavar="PER_SECOND",
        help="start at most PER_SECOND attempts a second, retries included (with "
        "--run: for the whole run, all its workers on all machines together)",
    )
    parser.add_argument(
        "--adaptive",
        action="store_true",
        help="find how many at once the service takes (up to --workers), and back "
        "off on timeouts, connection errors and 429/503/504",
    )
    parser.add_argument(
        "--journal",
        metavar="FILE",
        help="record every outcome in FILE (SQLite); the same command run again "
        "replays what succeeded and redoes only the rest (a rerun with other "
        "options that shape the outcomes is refused)",
    )
    parser.add_argument(
        "--reuse-journal",
        action="store_true",
        help="rerun with a --journal written with other options (method, headers, "
        "save dir, function...): replay its outcomes anyway, and record these options",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no summary and no progress bar on stderr"
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=int,
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the "
        "run goes on (needs prometheus-client: the metrics extra)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also log each failure on stderr (with the traceback of unexpected ones)",
    )
    parser.add_argument(
        "--no-uvloop",
        dest="uvloop",
        action="store_false",
        help="use asyncio's own event loop even when uvloop is installed",
    )


def _add_per_key(
    parser: argparse.ArgumentParser, noun: str, *, failures: str, why: str
) -> argparse._ArgumentGroup:
    """Add the limits per key: ``--per-host``... on fetch, ``--per-key``... on run.

    The ``dest`` names are the same on both (``per_key``, ``key_failures``...), so
    that one function makes the run's PerKey (``_per_key.per_key_of``).
    """
    each = f"each {noun}" if noun == "host" else "each key"
    group = parser.add_argument_group(f"limits per {noun}", why)
    group.add_argument(
        f"--per-{noun}",
        dest="per_key",
        type=_int_at_least(1),
        metavar="N",
        help=f"at most N at once to {each} (the others' workers go on meanwhile)",
    )
    group.add_argument(
        f"--per-{noun}-rate",
        dest="per_key_rate",
        type=_rate,
        metavar="PER_SECOND",
        help=f"start at most PER_SECOND attempts a second to {each}, evenly spaced "
        "(retries included)",
    )
    group.add_argument(
        f"--per-{noun}-burst",
        dest="per_key_burst",
        type=_int_at_least(1),
        metavar="B",
        help=f"with --per-{noun}-rate: let B attempts go at once after a quiet spell (default 1)",
    )
    group.add_argument(
        f"--per-{noun}-adaptive",
        dest="per_key_adaptive",
        action="store_true",
        help=f"give {each} its own adaptive limit (as --adaptive), fed by its own "
        f"latency and overloads (up to --per-{noun}, else --workers)",
    )
    group.add_argument(
        f"--{noun}-failures",
        dest="key_failures",
        type=_int_at_least(0),
        metavar="K",
        help=f"the breaker: K connection errors or timeouts in a row of one {noun} "
        f"make its items fail at once (kind {noun}_down) until a probe after the "
        f"cool-down succeeds (default: {failures}; 0: off)",
    )
    group.add_argument(
        f"--{noun}-cooldown",
        dest="key_cooldown",
        type=_seconds,
        metavar="SECONDS",
        help=f"how long a {noun}'s breaker stays open before its probe (default 10; "
        f"doubled each time the probe fails, up to 300)",
    )
    return group


def build_parser() -> Parser:
    """Return the ``parallelize`` command's parser, with ``fetch`` and ``run``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="parallelize",
        description=MAIN_DESCRIPTION,
        epilog=MAIN_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    fetch = commands.add_parser(
        "fetch",
        help="fetch URLs, one JSON line per URL",
        description=FETCH_DESCRIPTION,
        epilog=FETCH_EPILOG,
        formatter_class=formatter,
    )
    fetch.add_argument(
        "urls",
        metavar="URLS",
        nargs="?",
        help="a file of URLs, one a line; - for stdin (optional with --run)",
    )
    _add_common(
        fetch,
        timeout=30.0,
        retried="on what --retry-on names: by default a timeout, a connection or "
        "protocol error, a status 429, 500, 502, 503, 504 (a Retry-After header sets "
        "the delay)",
    )
    fetch.add_argument(
        "--retry-on",
        type=_retry_on,
        metavar="LIST",
        help="what --retries tries again, comma-separated: statuses (408, 5xx), "
        "error kinds (timeout, connection, dns, tls, protocol, redirect, too_large, "
        "save), and 'default' for the default set; replaces it (--retry-on "
        "default,408 adds 408)",
    )
    fetch.add_argument(
        "-X",
        "--method",
        type=_method,
        help="the HTTP method (default GET; POST with a body)",
    )
    fetch.add_argument(
        "--fields",
        type=_fields,
        default=(),
        metavar="LIST",
        help="add to each record (and to a failure's with a response), comma-"
        "separated: content_type; headers (every response header: lower-case names, "
        "each a list of its values); header:NAME (one header's first value); timing "
        "(dns, connect, first_byte, total seconds: null where the client does not "
        "tell); remote_address; redirects (each one followed: url, status)",
    )
    fetch.add_argument(
        "--unique",
        action="store_true",
        help="drop a line whose URL (--requests: key) came earlier in the input: a "
        "Bloom filter, about 3 bytes per URL, that may drop at most 1 line in 100,000 "
        "that was not a repeat; the summary counts the lines dropped",
    )
    fetch.add_argument(
        "--requests",
        action="store_true",
        help='a line that is a JSON object is a whole request: {"url": ..., "method": '
        '"POST", "headers": {...}, "body": "..." or "json": ..., "key": "..."} (only url '
        "is needed; method and body replace the command's, headers add to them); plain "
        "URL lines may be mixed in",
    )
    fetch.add_argument(
        "-d",
        "--data",
        action="append",
        metavar="DATA|@FILE",
        help="send this body with every request (curl's -d): the text, or @FILE's "
        "content without its line ends; repeated, joined with &. Content-Type "
        "application/x-www-form-urlencoded unless -H gives one",
    )
    fetch.add_argument(
        "--data-binary",
        action="append",
        metavar="DATA|@FILE",
        help="as -d, but @FILE is sent as it is (line ends kept); repeated, concatenated",
    )
    fetch.add_argument(
        "--json",
        action="append",
        metavar="JSON|@FILE",
        help="send this JSON body with every request, as it is (curl's --json): "
        "Content-Type and Accept application/json unless -H gives them",
    )
    fetch.add_argument(
        "-A",
        "--user-agent",
        metavar="AGENT",
        help="the User-Agent header (default: parallelize/VERSION, the same on every client)",
    )
    fetch.add_argument(
        "-u",
        "--user",
        metavar="USER:PASSWORD",
        help="basic authentication, sent with each request and not past a redirect "
        "to another host (scheme, host and port), as curl does",
    )
    fetch.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header with every request (repeatable)",
    )
    fetch.add_argument(
        "--processes",
        type=_processes,
        metavar="N|auto",
        help="make the requests in N child processes (auto: one per core), each with "
        "its own client and event loop, for when one core is the limit; the run, its "
        "limits, output and journal stay in this process",
    )
    fetch.add_argument(
        "--client",
        choices=tuple(BACKENDS),
        help="the HTTP client: pyreqwest (the fast extra) or aiohttp (default: the "
        "fastest installed; the summary names it)",
    )
    fetch.add_argument(
        "--max-body",
        type=_size,
        metavar="BYTES",
        help="read no more than BYTES of a body (5M: 5 MiB); a longer one is a "
        "failure of kind too_large, refused by its Content-Length when it has one",
    )
    fetch.add_argument(
        "--save-dir",
        metavar="DIR",
        help='save each body under DIR (the record\'s "file"): by default '
        "DIR/<sha256 of the URL, in hex>, other names with --save-as; streamed, never "
        "held in memory",
    )
    fetch.add_argument(
        "--connect-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up a connection that has not opened (TCP and TLS) within SECONDS, "
        "a failure of kind timeout (default: only --timeout)",
    )
    fetch.add_argument(
        "--http2",
        action="store_true",
        help="offer HTTP/2 to https:// servers (by ALPN: they choose); pyreqwest only",
    )
    fetch.add_argument(
        "--limit-rate",
        type=_size,
        metavar="BYTES",
        help="read bodies at most BYTES a second, all requests together (curl's "
        "--limit-rate; 500K, 2M: powers of 1024); with --processes N, each child "
        "a share",
    )
    fetch.add_argument(
        "--resolve",
        action="append",
        type=_resolve,
        default=[],
        metavar="HOST:PORT:ADDRESS",
        help="connect to ADDRESS for HOST:PORT instead of what DNS says (curl's "
        "--resolve; an IPv6 address in [brackets]); the URL's host stays the TLS "
        "name and the Host header (repeatable)",
    )
    fetch.add_argument(
        "--proxy",
        metavar="URL",
        help="send every request through this http:// proxy (https:// URLs by "
        "CONNECT; user:password@ in URL are sent to it); --proxy '' for none. "
        "Default: the environment's http_proxy, https_proxy, all_proxy; NO_PROXY "
        "applies either way",
    )
    fetch.add_argument(
        "--cacert",
        metavar="FILE",
        help="also trust the certificates of this PEM file (a private CA)",
    )
    fetch.add_argument(
        "-k",
        "--insecure",
        action="store_true",
        help="check neither the server's certificate nor its name (only for servers you know)",
    )
    fetch.add_argument(
        "--cert",
        metavar="FILE",
        help="the client certificate (PEM) for servers that ask for one (mutual "
        "TLS); its key too, unless --key",
    )
    fetch.add_argument(
        "--key",
        metavar="FILE",
        help="the private key of --cert (PEM, not encrypted)",
    )
    add_crawl_options(fetch)
    hosts = _add_per_key(
        fetch,
        "host",
        failures="10 with any other option of this group, else off",
        why="Each host (host:port of the URL) gets its own limits; a URL whose host is "
        "at its limit waits aside and its worker takes another host's URL, so one "
        "slow or dead host never holds the others. With limits per host the breaker "
        "is on by default: a host that stopped answering (10 connection errors or "
        "timeouts in a row, no reply between) would otherwise cost each of its URLs "
        "a --timeout and its retries, while a reply of any status, even 500, resets "
        "it, so a host that answers is never cut off. Without them it is off unless "
        "asked for: alone it would cost a plain fetch of one host 15-30% of its speed.",
    )
    hosts.add_argument(
        "--robots",
        action="store_true",
        help="fetch each site's /robots.txt once, before any of its URLs; skip the "
        "URLs it disallows (kind robots, no request) and take its Crawl-delay as "
        "the site's rate. Matched as the -H 'User-Agent' product token, else "
        "'parallelize'. RFC 9309: a 4xx robots.txt allows all; 429, 5xx or none "
        "reachable disallows the whole site for this run",
    )
    add_queue_options(fetch, "URLs")

    run = commands.add_parser(
        "run",
        help="call a Python function once per JSON line of arguments",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=formatter,
    )
    run.add_argument(
        "function",
        metavar="MODULE:FUNCTION",
        help="the function to call, such as mypackage.tasks:handle",
    )
    run.add_argument(
        "-i",
        "--input",
        metavar="FILE",
        help="JSON lines of arguments, one call per line; - for stdin (optional with --run)",
    )
    _add_common(run, timeout=None, retried="on any exception of FUNCTION or a timeout")
    run.add_argument(
        "--processes",
        type=_processes,
        metavar="N|auto",
        help="call FUNCTION in N child processes (auto: one per core), each importing "
        "it and running many calls at once (a plain FUNCTION in up to --workers "
        "threads each), for work that fills one core; the run, its limits, output "
        "and journal stay in this process",
    )
    keys = _add_per_key(
        run,
        "key",
        failures="off",
        why="With --per-key-field NAME, each call's key is the NAME member of its "
        "JSON object line (or, NAME a number, that element of its array line); lines "
        "without it share the key null. Each key gets its own limits; a call whose "
        "key is at its limit waits aside and its worker takes another key's. The "
        "breaker is off unless --key-failures is given: FUNCTION is anything, and "
        "its TimeoutError or ConnectionError may say nothing about its key.",
    )
    keys.add_argument(
        "--per-key-field",
        metavar="NAME",
        help="the member (or array index) of each input line that is its key",
    )
    add_queue_options(run, "calls")
    add_queue_parser(commands, formatter)
    return parser


def _version() -> str:
    import parallelize  # noqa: PLC0415 - only for --version

    return f"parallelize {parallelize.__version__}"
