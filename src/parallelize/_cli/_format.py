r"""``fetch --format``: each record as a line of your own, curl's ``-w`` way.

``%{name}`` is a field of the record (``%{status}``, ``%{url}``), a dotted path
into one (``%{error.kind}``, ``%{timing.first_byte}``), or ``%{json}``: the
whole JSON record. ``\n``, ``\t`` and ``\\`` are escapes, ``%%`` is ``%``. A
value that is null or missing is written as nothing, a string as it is, a number
as JSON writes it, a list or object as JSON. One line per URL: a ``\n`` at the
end of the template is the line's own.

The journal keeps the JSON record, never the formatted line: a rerun writes the
replayed records with the format of the rerun.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ("FIELD_NAMES", "parse_format")

# What a record holds (fetch's), and the --fields that may be asked for by name.
_RECORD = ("url", "final_url", "status", "bytes", "elapsed", "attempts", "error", "file", "key")
_EXTRA = ("line", "resumed_from", "not_modified")
FIELD_NAMES = (
    "content_type",
    "headers",
    "timing",
    "remote_address",
    "redirects",
)
_PART = re.compile(r"%\{([^}]*)\}|%%|\\[nt\\]|%|[^%\\]+|\\")
_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\", "%%": "%"}


def parse_format(text: str) -> tuple[Callable[[str], str], tuple[str, ...]]:
    """Return how a record's JSON line becomes ``text``'s line, and the --fields it uses.

    Raises:
        ValueError: An unknown name, or a ``%`` that starts nothing (it says which).
    """
    text = text.removesuffix("\\n")
    parts: list[str | tuple[str, ...]] = []
    fields: list[str] = []
    for match in _PART.finditer(text):
        piece = match.group()
        name = match.group(1)
        if name is not None:
            path = _path(name.strip())
            parts.append(path)
            head = path[0]
            if head in FIELD_NAMES or head.startswith("header:"):
                fields.append(head)
        elif piece in _ESCAPES:
            parts.append(_ESCAPES[piece])
        elif piece == "%":
            raise ValueError("a lone % (write %% for the character, %{name} for a field)")
        else:
            parts.append(piece)
    template = tuple(parts)

    def render(line: str) -> str:
        record = json.loads(line)
        out = []
        for part in template:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(_value(line, record, part))
        text = "".join(out)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a byte of a URL that was no UTF-8: its escape
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text

    return render, tuple(dict.fromkeys(fields))


def _path(name: str) -> tuple[str, ...]:
    """Return ``"error.kind"`` as ``("error", "kind")``, its head checked."""
    if name == "json":
        return ("json",)
    if name.lower().startswith("header:") and len(name) > 7:
        return (name.lower(),)  # a header's name may hold dots
    path = tuple(name.split("."))
    if path[0] not in (*_RECORD, *_EXTRA, *FIELD_NAMES) or not all(path):
        raise ValueError(
            f"%{{{name}}} is not a field: give one of {', '.join(_RECORD)}, "
            f"{', '.join(FIELD_NAMES)}, header:NAME, a dotted path into one "
            f"(error.kind, timing.total), or json"
        )
    return path


def _value(line: str, record: dict[str, Any], path: tuple[str, ...]) -> str:
    if path == ("json",):
        return line
    value: Any = record
    for step in path:
        value = value.get(step) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)
