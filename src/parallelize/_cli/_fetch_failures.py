"""What a failure of ``fetch`` is: its kind, its record, whether to retry it, whether it is final.

``error_kind`` names every failure by a short, stable kind (``"timeout"``,
``"http"``...); ``make_failure_line`` writes its record; ``--retry-on``
(``parse_retry_on``) says which kinds and statuses ``--retries`` tries again
(``retryable``), and ``final_failure`` which recorded failures a rerun leaves alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from parallelize import DeadlineExceeded, Failure, KeyDownError, RetryWaitTooLong
from parallelize.http import ConnectTimeoutError, HTTPClientError

from ._attempt import HTTPStatusError
from ._errors import SaveError, error_text
from ._output import ENCODE
from ._request_lines import InvalidRequestError, RequestLine
from ._robots import RobotsError

__all__ = (
    "RETRY_KINDS",
    "RETRY_STATUSES",
    "error_kind",
    "final_failure",
    "make_failure_line",
    "parse_retry_on",
    "retryable",
)

# Statuses worth another attempt: rate limited, and the server errors that a
# retry can cure (not 501, 505...).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Error kinds worth another attempt (HTTPClientError.retryable's; dns is a kind of
# connection error, tls one that another attempt will not cure).
RETRY_KINDS = frozenset({"timeout", "connection", "dns", "protocol"})
# What --retry-on may name besides statuses.
_RETRY_ON_KINDS = (
    "timeout",
    "connection",
    "dns",
    "tls",
    "protocol",
    "redirect",
    "too_large",
    "save",
)


def parse_retry_on(text: str) -> tuple[frozenset[int], frozenset[str]]:
    """``--retry-on``: ``"default,408,5xx,tls"`` as the statuses and kinds to retry."""
    statuses: set[int] = set()
    kinds: set[str] = set()
    for raw in text.split(","):
        word = raw.strip().lower()
        if word == "default":
            statuses |= RETRY_STATUSES
            kinds |= RETRY_KINDS
        elif word in _RETRY_ON_KINDS:
            kinds.add(word)
        elif len(word) == 3 and word[0] in "45" and word[1:] == "xx":
            first = int(word[0]) * 100
            statuses.update(range(first, first + 100))
        elif word.isdigit() and 400 <= int(word) <= 599:
            statuses.add(int(word))
        else:
            raise ValueError(
                f"{raw.strip()!r} is not a status from 400 to 599, 4xx, 5xx, 'default' or "
                f"an error kind ({', '.join(_RETRY_ON_KINDS)})"
            )
    return frozenset(statuses), frozenset(kinds)


def retryable(
    retry_on: tuple[frozenset[int], frozenset[str]] | None,
) -> Callable[[Exception], bool]:
    """Return what ``--retries`` tries again: ``--retry-on``'s, or the default set."""
    statuses, kinds = retry_on or (RETRY_STATUSES, RETRY_KINDS)

    def retryable(error: Exception) -> bool:
        if isinstance(error, HTTPStatusError):
            return error.status in statuses
        if isinstance(error, HTTPClientError):
            return error.kind in kinds
        if isinstance(error, TimeoutError):  # --timeout
            return "timeout" in kinds
        return isinstance(error, SaveError) and "save" in kinds

    return retryable


# Failures that another attempt will not change: the request was answered, or
# could not be made. A 4xx but 408 (timeout) and 429 (too many requests).
_FINAL_KINDS = frozenset({"invalid_url", "invalid_request", "robots"})
_NOT_FINAL_4XX = frozenset({408, 429})


def final_failure(
    retry_on: tuple[frozenset[int], frozenset[str]] | None,
) -> Callable[[str], bool]:
    """Return what tells from a failure's record whether it is final.

    Final: a 4xx but 408 and 429, an invalid URL, a URL that robots.txt disallows;
    but a status that ``--retry-on`` names is tried again on a rerun too.
    """
    retried: frozenset[int] = frozenset() if retry_on is None else retry_on[0]

    def final(line: str) -> bool:
        record = json.loads(line)
        kind = record["error"]["kind"]
        if kind == "http":
            status = record.get("status")
            return (
                isinstance(status, int)
                and 400 <= status < 500
                and status not in _NOT_FINAL_4XX
                and status not in retried
            )
        return kind in _FINAL_KINDS

    return final


def error_kind(error: BaseException) -> str:  # noqa: PLR0911 - one kind a line
    """Return the short, stable name of a failure: ``"timeout"``, ``"http"``, ..."""
    if isinstance(error, KeyDownError):
        return "host_down"  # the breaker of --host-failures is open
    if isinstance(error, RobotsError):
        return "robots"
    if isinstance(error, InvalidRequestError):
        return "invalid_request"
    if isinstance(error, DeadlineExceeded):
        return "deadline"
    if isinstance(error, RetryWaitTooLong):
        return "retry_wait"
    if isinstance(error, HTTPClientError):
        return error.kind
    if isinstance(error, HTTPStatusError):
        return "http"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, SaveError):
        return "save"
    return "error"


# Failures whose message is whole as it is (no "TypeName: " before it).
_SAID_AS_IS = frozenset(
    {"http", "save", "deadline", "retry_wait", "host_down", "robots", "invalid_request"}
)


def _failure_message(
    error: BaseException, kind: str, timeout: float | None, connect_timeout: float | None
) -> str:
    """Return a failure record's message: the option that ended it, or the error's words."""
    if connect_timeout and isinstance(error, ConnectTimeoutError):
        return f"could not connect within --connect-timeout {connect_timeout:g} s"
    if kind == "timeout" and timeout:
        return f"no complete answer within --timeout {timeout:g} s"
    if kind in _SAID_AS_IS or isinstance(error, HTTPClientError):
        return str(error)
    return error_text(error)


def make_failure_line(
    clock: Callable[[], float],
    starts: dict[int, float],
    tries: dict[int, int],
    timeout: float | None,
    connect_timeout: float | None,
) -> Callable[[Failure], str]:
    def failure_line(failure: Failure) -> str:
        line, url = failure.item
        first = starts.pop(line, None)
        tries.pop(line, None)
        error = failure.exception
        kind = error_kind(error)
        message = _failure_message(error, kind, timeout, connect_timeout)
        if isinstance(error, DeadlineExceeded | RetryWaitTooLong) and isinstance(
            error.last, HTTPStatusError
        ):
            error = error.last  # the reply's status, size and file stay in the record
        record: dict[str, Any] = {
            "url": url,
            "final_url": None,
            "status": None,
            "bytes": None,
            "elapsed": None,
            "attempts": failure.attempts,
            "error": {"kind": kind, "message": message},
        }
        if isinstance(error, HTTPStatusError):
            record["final_url"] = error.final_url
            record["status"] = error.status
            record["bytes"] = error.size
            record["elapsed"] = error.elapsed
            if error.file is not None:
                record["file"] = error.file
        elif failure.elapsed is not None:
            record["elapsed"] = round(failure.elapsed, 6)
        elif first is not None:
            record["elapsed"] = round(clock() - first, 6)
        if type(url) is RequestLine and url.key is not None:
            record["key"] = url.key
        if isinstance(error, HTTPStatusError) and error.fields:
            record.update(error.fields)  # --fields
        return ENCODE(record)

    return failure_line
