"""``fetch --requests``: an input line may be a whole request, as a JSON object.

``{"url": ..., "method": "POST", "headers": {...}, "body": "..." | "json": ...,
"key": "..."}``: only ``url`` is required; the others replace (method, body) or add
to (headers) the command's own. Plain URL lines may be mixed in. A line that starts
with ``{`` but is no such object is a failure of kind ``invalid_request`` (final).

A request travels as its URL, a ``str`` subclass carrying the rest: the plain URL
line stays a plain ``str``, so the main job pays one type test per item.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from ._robots import MarkedURL

__all__ = ("METHOD", "InvalidRequestError", "RequestLine", "parse_request")

METHOD: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELDS: Final = frozenset({"url", "method", "headers", "body", "json", "key"})


class InvalidRequestError(ValueError):
    """A request line that is not a request (record kind ``invalid_request``)."""


class RequestLine(str):
    """A request line's URL, with the rest of its request."""

    __slots__ = ("content", "headers", "journal_key", "json_body", "key", "method")
    method: str | None  # None: the command's (-X)
    headers: tuple[tuple[str, str], ...]
    content: bytes | None  # None: the command's body (-d, --json), if any
    json_body: bool  # the body came from "json": its Content-Type unless given
    key: str | None  # the line's "key", written in its record
    journal_key: str  # "key", or the request's own JSON: what the journal knows it by

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle it whole (``--processes`` sends it to a child)."""
        fields = (self.method, self.headers, self.content, self.json_body, self.key)
        return (_rebuild, (str(self), *fields, self.journal_key))


def _rebuild(url: str, *fields: Any) -> RequestLine:
    line = RequestLine(url)
    line.method, line.headers, line.content, line.json_body, line.key, line.journal_key = fields
    return line


class BadRequestLine(MarkedURL):
    """A line that starts with ``{`` but is not a request: its record says why."""

    __slots__ = ()

    def error(self) -> Exception:
        """Return the :class:`InvalidRequestError` saying why."""
        return InvalidRequestError(self.reason)


def parse_request(text: str) -> RequestLine | BadRequestLine:
    """Return the request of a JSON object line, or a marked line saying what is wrong."""
    try:
        value = json.loads(text)
        return _request(value)
    except (ValueError, TypeError) as exc:
        bad = BadRequestLine(text)
        bad.reason = f"not a request line: {exc}"
        return bad


def _request(value: Any) -> RequestLine:
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {unknown} (known: {', '.join(sorted(_FIELDS))})")
    url = value.get("url")
    if not isinstance(url, str) or not url:
        raise TypeError('"url" must be a non-empty string')
    method = value.get("method")
    if method is not None and (not isinstance(method, str) or not METHOD.fullmatch(method)):
        raise ValueError(f'"method" must be a method name such as POST, got {method!r}')
    if "body" in value and "json" in value:
        raise ValueError('give "body" or "json", not both')
    content = None
    json_body = "json" in value
    if json_body:
        content = json.dumps(value["json"], ensure_ascii=False).encode()
    elif "body" in value:
        if not isinstance(value["body"], str):
            raise TypeError('"body" must be a string (a JSON value goes in "json")')
        content = value["body"].encode()
    key = value.get("key")
    if key is not None and not isinstance(key, str):
        raise TypeError('"key" must be a string')
    line = RequestLine(url)
    line.method = None if method is None else method.upper()
    line.headers = _headers(value.get("headers"))
    line.content = content
    line.json_body = json_body
    line.key = key
    # Two lines that differ only in their body are two items: known by all of it.
    line.journal_key = (
        key if key is not None else json.dumps(value, sort_keys=True, ensure_ascii=False)
    )
    return line


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    pairs = value.items() if isinstance(value, dict) else value
    if not isinstance(pairs, list) and not isinstance(value, dict):
        raise TypeError('"headers" must be an object, or a list of [name, value] pairs')
    headers = []
    for pair in pairs:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(part, str) for part in pair)
            or not pair[0]
            or any(c.isspace() or c == ":" for c in pair[0])
        ):
            raise TypeError(f'"headers": expected a name and a string value, got {pair!r}')
        headers.append((pair[0], pair[1]))
    return tuple(headers)
