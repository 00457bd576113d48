"""``fetch``'s crawl options checked and resolved before anything is opened.

``--format`` (the sink's renderer, the fields it names), ``--save-as``,
``--content-disposition`` and ``--continue`` (``Saving``), ``--recrawl`` (the
earlier journal read), ``-b``/``-c`` (the cookie jar: loaded now, written at the
end). Every refusal is a usage error before the output is opened.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterator,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import UsageError

if TYPE_CHECKING:
    import argparse
    import http.cookiejar

    from parallelize.http import Client

__all__ = ("check_crawl_options", "saved_cookies", "sitemap_items")


def check_crawl_options(options: argparse.Namespace) -> None:
    """Resolve the crawl options onto ``options``; refuse what cannot work.

    Sets ``render``, ``saving``, ``cookie_jar_object`` and adds to ``fields``.

    Raises:
        UsageError: Saying which option and what to do.
    """
    fields = list(options.fields)
    options.render = None
    if options.format is not None:
        from ._format import parse_format  # noqa: PLC0415 - with --format only

        options.render, named = parse_format(options.format)
        fields += named
    _check_saving(options)
    if options.recrawl is not None:
        from ._recrawl import VALIDATOR_FIELDS, check_previous  # noqa: PLC0415 - sqlite3

        check_previous(options.recrawl, options.journal)
        fields += VALIDATOR_FIELDS
    options.fields = tuple(dict.fromkeys(fields))
    options.cookie_jar_object = _cookie_jar(options)


def _check_saving(options: argparse.Namespace) -> None:
    given = [
        flag
        for flag, value in (
            ("--save-as", options.save_as != "hash"),
            ("--content-disposition", options.content_disposition),
            ("-C/--continue", options.resume),
        )
        if value
    ]
    if options.save_dir is None:
        if given:
            raise UsageError(f"{given[0]} says how bodies are saved: give --save-dir DIR too")
        options.saving = None
        return
    from ._saving import Saving  # noqa: PLC0415 - with --save-dir only

    options.saving = Saving(
        options.save_dir, options.save_as, options.content_disposition, options.resume
    )


def _cookie_jar(options: argparse.Namespace) -> http.cookiejar.CookieJar | None:
    """Return the jar of ``-b``/``-c`` (a file of ``-b`` loaded), or None: no cookies.

    ``-b NAME=VALUE`` (text with ``=``) is sent as a ``Cookie`` header of each
    request, as curl does, and turns the jar on.
    """
    cookie, save_to = options.cookie, options.cookie_jar
    if cookie is None and save_to is None:
        return None
    if options.processes is not None:
        raise UsageError(
            "-b/-c keep one cookie jar, and --processes makes a client per process: "
            "drop --processes for a crawl with cookies"
        )
    import http.cookiejar  # noqa: PLC0415 - with -b/-c only (urllib.request with it)

    jar = http.cookiejar.MozillaCookieJar()
    if cookie is not None and "=" in cookie:
        if any(name.lower() == "cookie" for name, _ in options.shape.headers):
            raise UsageError("-b NAME=VALUE and -H 'Cookie: ...' both give cookies: give one")
        options.shape = _with_cookie_header(options, cookie)
    elif cookie is not None:
        try:
            _load(jar, cookie)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, http.cookiejar.LoadError):
                reason = (
                    f"{exc} (a cookie file in Netscape format starts with the line "
                    f"'# Netscape HTTP Cookie File', as curl -c and wget --save-cookies write it)"
                )
            raise UsageError(f"-b {cookie}: cannot load the cookie file: {reason}") from None
    if save_to is not None:
        _check_writable(save_to)
    return jar


def _load(jar: http.cookiejar.MozillaCookieJar, path: str) -> None:
    """Load a cookie file whose session cookies expire at 0, as curl and wget write them.

    Python's reader takes an expiry of 0 for 1970 and drops the cookie: it is read
    through a copy whose 0s are empty (a session cookie to Python).
    """
    import http.cookiejar  # noqa: PLC0415 - with -b FILE only
    import tempfile  # noqa: PLC0415 - with -b FILE only

    text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    lines = text.split("\n")
    for number, line in enumerate(lines):
        fields = line.split("\t")
        if len(fields) == 7 and fields[4] == "0":
            fields[4] = ""
            lines[number] = "\t".join(fields)
    with tempfile.NamedTemporaryFile(
        "w", suffix=".txt", encoding="utf-8", errors="surrogateescape"
    ) as copy:
        copy.write("\n".join(lines))
        copy.flush()
        try:
            jar.load(copy.name, ignore_discard=True, ignore_expires=False)
        except http.cookiejar.LoadError as exc:
            raise http.cookiejar.LoadError(str(exc).replace(repr(copy.name), repr(path))) from None


def _with_cookie_header(options: argparse.Namespace, cookie: str) -> object:
    import dataclasses  # noqa: PLC0415 - here only

    shape = options.shape
    return dataclasses.replace(shape, headers=(*shape.headers, ("Cookie", cookie)))


def _check_writable(path: str) -> None:
    """Refuse ``-c FILE`` whose directory cannot take it (written at the end)."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"-c {path}: is a directory: give a file name")
    directory = target.parent
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        raise UsageError(f"-c {path}: cannot write into {str(directory)!r}")


@contextlib.contextmanager
def saved_cookies(options: argparse.Namespace) -> Iterator[None]:
    """Write the cookie jar to ``-c FILE`` when the fetch ends, however it ends.

    Written to a temporary file renamed over FILE: an interrupted write never
    leaves half a jar.
    """
    try:
        yield
    finally:
        jar = options.cookie_jar_object
        if jar is not None and options.cookie_jar is not None:
            temporary = f"{options.cookie_jar}.tmp"
            try:
                jar.save(temporary, ignore_discard=True, ignore_expires=False)
                _session_expiry_zero(Path(temporary))
                Path(temporary).replace(options.cookie_jar)
            except OSError as exc:
                raise UsageError(
                    f"-c {options.cookie_jar}: cannot write the cookie jar: {exc.strerror or exc}"
                ) from exc


def _session_expiry_zero(path: Path) -> None:
    """Write a session cookie's expiry as 0, as curl and wget do (Python leaves it empty).

    curl reads a line of seven tab-separated fields; an empty one is no field to it.
    """
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines):
        fields = line.split("\t")
        if len(fields) == 7 and not fields[4]:
            fields[4] = "0"
            lines[number] = "\t".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")


async def sitemap_items(
    client: Client,
    roots: list[str],
    parse: Callable[[int, str], tuple[int, str] | None],
    *,
    quiet: bool,
    headers: Sequence[tuple[str, str]] = (),
) -> AsyncIterator[tuple[int, str]]:
    """Return the items of ``--sitemap``s, the first one read already.

    The first sitemap is read before the run starts: one that cannot be read is a
    usage error (exit 2), before the output is opened. A later one that cannot be
    read is a warning, as a sitemap of an index is: the others' URLs go on. The
    URLs are numbered in order, as lines would be.

    Raises:
        UsageError: The first sitemap cannot be read.
    """
    from ._sitemap import SitemapError, sitemap_urls  # noqa: PLC0415 - with --sitemap only

    warn = _warning if not quiet else _silent
    first = sitemap_urls(client, roots[0], warn=warn, headers=headers)
    try:
        head = [url async for url in _first_of(first)]
    except SitemapError as exc:
        await first.aclose()
        raise UsageError(f"--sitemap: {exc}") from None

    async def urls() -> AsyncIterator[str]:
        async with contextlib.aclosing(first):
            for url in head:
                yield url
            async for url in first:
                yield url
        for root in roots[1:]:
            try:
                found = sitemap_urls(client, root, warn=warn, headers=headers)
                async with contextlib.aclosing(found):
                    async for url in found:
                        yield url
            except SitemapError as exc:
                warn(f"--sitemap: {exc}; the other sitemaps are read")

    return _numbered(urls(), parse)


def _warning(message: str) -> None:
    sys.stderr.write(f"parallelize: warning: {message}\n")


def _silent(message: str) -> None:
    del message  # -q


async def _numbered(
    urls: AsyncIterator[str], parse: Callable[[int, str], tuple[int, str] | None]
) -> AsyncIterator[tuple[int, str]]:
    """Yield the items of ``urls``, numbered from 1 as lines would be."""
    number = 0
    async with contextlib.aclosing(urls):  # type: ignore[type-var]
        async for url in urls:
            number += 1
            item = parse(number, url)
            if item is not None:
                yield item


async def _first_of(urls: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """Yield the first URL of ``urls`` (none if it has none), leaving the rest in it."""
    with contextlib.suppress(StopAsyncIteration):
        yield await anext(urls)
