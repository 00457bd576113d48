"""``fetch``'s options for real crawls: the records' form, cookies, saved files, recrawls.

Their grammar only; what they do lives in ``_format``, ``_cookies``, ``_saving``,
``_recrawl`` and ``_sitemap``.
"""

from __future__ import annotations

import argparse

__all__ = ("add_crawl_options",)


def _format(text: str) -> str:
    from ._format import parse_format  # noqa: PLC0415 - with --format only

    try:
        parse_format(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _save_as(text: str) -> str:
    if text == "hash":  # the default, which argparse passes here too
        return text
    from ._saving import parse_save_as  # noqa: PLC0415 - with --save-as only

    try:
        parse_save_as(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_crawl_options(fetch: argparse.ArgumentParser) -> None:
    """Add the options of crawls to ``fetch``'s parser, in a group of their own."""
    group = fetch.add_argument_group(
        "crawling",
        "What users of curl, wget and aria2c rely on: records as lines of your own, "
        "cookies, files named by their URL, resumed downloads, recrawls that move only "
        "what changed, sitemaps as the input.",
    )
    group.add_argument(
        "--format",
        type=_format,
        metavar="TEMPLATE",
        help="write each record as TEMPLATE instead of JSON (curl's -w): %%{status}, "
        "%%{url}, %%{error.kind}, %%{timing.total}, %%{header:NAME}, %%{json} (the "
        "whole record); \\n \\t escapes; a field it names is added as --fields would; "
        "the journal keeps the JSON record",
    )
    group.add_argument(
        "-b",
        "--cookie",
        metavar="NAME=VALUE|FILE",
        help="send these cookies (text with '='), or load a cookie FILE (curl's and "
        "wget's Netscape format); either turns the cookie jar on: each response's "
        "Set-Cookie is kept and sent on to the URLs it names (off by default)",
    )
    group.add_argument(
        "-c",
        "--cookie-jar",
        metavar="FILE",
        help="write the cookie jar to FILE at the end (Netscape format; the jar is on)",
    )
    group.add_argument(
        "--save-as",
        type=_save_as,
        default="hash",
        metavar="hash|path|TEMPLATE",
        help="how --save-dir names a body: hash (the default: the URL's SHA-256), path "
        "(HOST/PATH, wget -x; a path ending in / is index.html), or a TEMPLATE of "
        "{host} {port} {path} {dir} {name} {query} {hash} {key} (aria2c's out=), "
        "such as '{host}/{name}'. Names are made safe: no .., no absolute path, "
        "nothing outside DIR",
    )
    group.add_argument(
        "--content-disposition",
        action="store_true",
        help="name a saved body by its Content-Disposition filename when it has one "
        "(wget's option), in the directory --save-as gives; only its last part, made safe",
    )
    group.add_argument(
        "-C",
        "--continue",
        dest="resume",
        action="store_true",
        help="keep a partly saved body (DIR/...part) when a download fails, and resume "
        "it on the next run with a Range request (curl -C -, wget -c); a server that "
        "ignores Range sends it whole again",
    )
    group.add_argument(
        "--recrawl",
        metavar="JOURNAL",
        help="fetch again what an earlier run's JOURNAL recorded, conditionally: "
        "If-None-Match and If-Modified-Since from its records' ETag and Last-Modified "
        "(wget -N, curl --etag-compare); a 304 is a success that keeps the saved "
        "file. Use a new --journal for the recrawl",
    )
    group.add_argument(
        "--sitemap",
        action="append",
        metavar="URL",
        help="take the URLs of this sitemap (XML, gzip or text; sitemap indexes "
        "followed) instead of a URLS file (repeatable)",
    )
