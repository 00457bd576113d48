"""``fetch --fields``: more of the response in each record, by name.

``content_type`` (the ``Content-Type`` header, or null), ``headers`` (every
response header: lower-case names, each a list of its values in order, so that a
repeated ``Set-Cookie`` stays whole), ``header:NAME`` (one header's first value, or
null, as the field ``header:name``), and what the client traced (the client is
opened with ``trace=True`` for them): ``timing`` (``dns``, ``connect``,
``first_byte``, ``total``: seconds, null where the client does not tell),
``remote_address`` (``"address:port"``, or null), ``redirects`` (each redirect
followed: ``{"url", "status"}``). Added at the end of the record, in the order
given; failures with a response (status >= 400) get them too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from parallelize.http import Trace

__all__ = ("TRACED", "parse_fields", "response_fields")

# The fields the client's trace gives (Reply.trace).
TRACED = frozenset({"timing", "remote_address", "redirects"})
_NAMES = ("content_type", "headers", "header:NAME", "timing", "remote_address", "redirects")


def parse_fields(text: str) -> tuple[str, ...]:
    """``"content_type,header:ETag"`` as ``("content_type", "header:etag")``."""
    fields = []
    for raw in text.split(","):
        word = raw.strip()
        name = word.lower()
        one_header = name.startswith("header:") and name[7:] and " " not in name
        if name not in {"content_type", "headers", *TRACED} and not one_header:
            raise ValueError(f"{word!r} is not a field: give {', '.join(_NAMES)}")
        fields.append(name)
    return tuple(dict.fromkeys(fields))  # each once, in the order given


def response_fields(
    fields: tuple[str, ...], headers: Mapping[str, str], trace: Trace | None = None
) -> dict[str, Any]:
    """Return the values of ``fields`` for a response with these ``headers``, ``trace``."""
    values: dict[str, Any] = {}
    traced = None if trace is None else trace.as_dict()
    for field in fields:
        if field in TRACED:
            values[field] = None if traced is None else traced[field]
        elif field == "content_type":
            values[field] = headers.get("content-type")
        elif field == "headers":
            grouped: dict[str, list[str]] = {}
            for name, value in headers.items():
                grouped.setdefault(name.lower(), []).append(value)
            values[field] = grouped
        else:
            values[field] = headers.get(field[7:])
    return values


def fragment(values: dict[str, Any]) -> str:
    """Return ``values`` as the tail of a JSON object: ``, "name": value, ...``."""
    return "".join(f", {json.dumps(name)}: {json.dumps(value)}" for name, value in values.items())
