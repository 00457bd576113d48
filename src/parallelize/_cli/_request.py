"""``fetch``'s request options, curl's way: a body, the user agent, basic auth.

Resolved once, before anything is opened (a ``@file`` that cannot be read is a
usage error): ``-d``/``--data-binary``/``--json`` become the body sent with every
request and its ``Content-Type``; ``-X`` defaults to POST with a body, as in curl;
``-A`` is the client's ``User-Agent``; ``-u`` an ``Authorization`` header of each
request (not of the client: a redirect to another origin drops it, curl's rule),
as are ``Authorization`` and ``Cookie`` given with ``-H``.
"""

from __future__ import annotations

import argparse
import base64
from dataclasses import dataclass
from pathlib import Path

from ._errors import UsageError

__all__ = ("RequestShape", "request_shape")

_FORM = "application/x-www-form-urlencoded"  # curl's type for -d and --data-binary
_JSON = "application/json"
_CREDENTIALS = frozenset({"authorization", "cookie"})


@dataclass(frozen=True, slots=True)
class RequestShape:
    """What every request of a fetch sends besides its URL."""

    method: str
    content: bytes | None  # the body, or None
    headers: tuple[tuple[str, str], ...]  # each request's own (Content-Type, Authorization)
    method_given: bool = False  # -X was given (a request line's body keeps it)


def request_shape(options: argparse.Namespace) -> RequestShape:
    """Return the request of ``options``; add ``-A`` to the client's headers (``-H``).

    Raises:
        UsageError: A ``@file`` that cannot be read, two kinds of body, ``-A`` with
            a ``-H 'User-Agent: ...'``, ``-u`` without a password.
    """
    client_headers: list[tuple[str, str]] = options.headers
    given = {name.lower() for name, _ in client_headers}
    if options.user_agent is not None:
        if "user-agent" in given:
            raise UsageError("-A and -H 'User-Agent: ...' both set the user agent: give one")
        client_headers.append(("User-Agent", options.user_agent))
    # Credentials given with -H go with each request, not the client's defaults, so
    # that a redirect to another origin drops them on every client alike.
    own = [(name, value) for name, value in client_headers if name.lower() in _CREDENTIALS]
    client_headers[:] = [pair for pair in client_headers if pair[0].lower() not in _CREDENTIALS]
    content = _body(options)
    if content is not None:
        kind = _JSON if options.json is not None else _FORM
        if "content-type" not in given:
            own.append(("Content-Type", kind))
        if kind == _JSON and "accept" not in given:
            own.append(("Accept", _JSON))
    if options.user is not None:
        if "authorization" in given:
            raise UsageError("-u and -H 'Authorization: ...' both set the credentials: give one")
        own.append(("Authorization", _basic(options.user)))
    method = options.method or ("POST" if content is not None else "GET")
    return RequestShape(method, content, tuple(own), method_given=options.method is not None)


def _body(options: argparse.Namespace) -> bytes | None:
    """Return the body of ``-d``, ``--data-binary`` or ``--json`` (each repeatable)."""
    kinds = [
        (flag, values)
        for flag, values in (
            ("-d", options.data),
            ("--data-binary", options.data_binary),
            ("--json", options.json),
        )
        if values is not None
    ]
    if not kinds:
        return None
    if len(kinds) > 1:
        flags = " and ".join(flag for flag, _ in kinds)
        raise UsageError(f"{flags} both give the body: give one kind")
    flag, values = kinds[0]
    parts = [_read(flag, value) for value in values]
    if flag == "-d":  # curl: -d @file drops its line ends; several are joined with &
        parts = [
            part.replace(b"\r", b"").replace(b"\n", b"") if value.startswith("@") else part
            for part, value in zip(parts, values, strict=True)
        ]
        return b"&".join(parts)
    return b"".join(parts)  # --data-binary and --json: as they are, one after the other


def _read(flag: str, value: str) -> bytes:
    """Return ``value``'s bytes: the text itself, or ``@file``'s content."""
    if not value.startswith("@"):
        return value.encode("utf-8", "surrogateescape")
    name = value[1:]
    if name == "-":
        raise UsageError(f"{flag} @-: the body from stdin is not supported; write it to a file")
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag} {value}: cannot read {name!r}: {exc.strerror or exc}") from exc


def _basic(user: str) -> str:
    """Return the ``Authorization`` value of ``-u USER:PASSWORD``."""
    name, colon, password = user.partition(":")
    if not colon:
        raise UsageError(
            f"-u {name}: give USER:PASSWORD (parallelize asks for nothing on the terminal)"
        )
    token = base64.b64encode(f"{name}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
