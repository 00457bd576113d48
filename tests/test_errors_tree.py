"""One exception tree: every public exception of parallelize is a ParallelizeError.

``except ParallelizeError`` must catch everything the library raises on its own
account, and the tree drawn in ``parallelize._errors``'s docstring must be the real
one: every public exception drawn, under its real parent, and nothing drawn that
does not exist.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from types import ModuleType

import pytest

import parallelize
import parallelize.http
from parallelize import ParallelizeError, _errors


def _public_modules() -> list[ModuleType]:
    modules = [parallelize, parallelize.http]
    # Without redis-py, parallelize.redis cannot be imported: its errors go unchecked.
    with contextlib.suppress(ImportError):
        modules.append(importlib.import_module("parallelize.redis"))
    return modules


def _public_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in _public_modules():
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, BaseException):
                assert found.get(name, value) is value, f"two public exceptions named {name}"
                found[name] = value
    return found


def _drawn_tree() -> list[tuple[int, str]]:
    """The docstring's tree as (depth, name), in drawing order."""
    doc = _errors.__doc__ or ""
    start = doc.index("    ParallelizeError\n")
    nodes: list[tuple[int, str]] = []
    for line in doc[start:].splitlines():
        if not line.strip():
            break
        # A class's line: its depth in 4-character steps, then its name. A
        # comment's second line ("│    also a TypeError)") starts lowercase.
        match = re.match(r"    ((?:[│ ]   )*(?:[├└]── )?)([A-Z]\w*)", line)
        if match is not None:
            nodes.append((len(match.group(1)) // 4, match.group(2)))
    return nodes


PUBLIC = _public_exceptions()


def test_there_are_public_exceptions_to_check() -> None:
    """The walk finds the errors of every public module (a guard on the walk itself)."""
    for name in ("ParallelizeError", "JournalError", "HTTPClientError", "InvalidURLError"):
        assert name in PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_exception_is_a_parallelize_error(name: str) -> None:
    """``except ParallelizeError`` catches each exception the library exports."""
    assert issubclass(PUBLIC[name], ParallelizeError), f"{name} is not a ParallelizeError"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_exception_is_drawn(name: str) -> None:
    """The tree in _errors.py's docstring names each public exception."""
    assert name in {drawn for _, drawn in _drawn_tree()}, f"{name} is not in the drawn tree"


def test_the_drawing_is_the_real_tree() -> None:
    """Each drawn class exists, under the parent it is drawn under."""
    nodes = _drawn_tree()
    assert nodes[0] == (0, "ParallelizeError")
    redis_names = {"QueueUnavailableError", "QueueInUseError"}
    parents: list[str] = []
    for depth, name in nodes:
        del parents[depth:]
        if name not in PUBLIC and name in redis_names:  # redis-py not installed
            parents.append(name)
            continue
        assert name in PUBLIC, f"{name} is drawn but is not a public exception"
        if parents:
            parent = PUBLIC.get(parents[-1])
            if parent is not None:
                assert parent in PUBLIC[name].__bases__, f"{name} is drawn under {parents[-1]}"
        parents.append(name)


def test_the_built_in_bases_are_kept() -> None:
    """Re-parented errors are still caught by the ``except`` clauses that caught them."""
    http = parallelize.http
    assert issubclass(http.ConnectError, ConnectionError)
    assert issubclass(http.DNSError, ConnectionError)
    assert issubclass(http.TLSError, ConnectionError)
    assert issubclass(http.RequestTimeoutError, TimeoutError)
    assert issubclass(http.InvalidURLError, ValueError)
    assert issubclass(parallelize.DeadlineExceeded, TimeoutError)
    assert issubclass(parallelize.ActionError, TypeError)
    assert issubclass(parallelize.MissingDependencyError, ImportError)


def test_public_names_and_reprs_are_unchanged() -> None:
    """The HTTP errors stay parallelize.http's, RecordedError parallelize's."""
    for name in parallelize.http.__all__:
        value = getattr(parallelize.http, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert value.__module__ == "parallelize.http"
    assert parallelize.RecordedError.__module__ == "parallelize"
    error = parallelize.http.DNSError("no such host")
    assert repr(error) == "DNSError('no such host')"
    assert (error.kind, error.retryable) == ("dns", True)
    recorded = parallelize.RecordedError("ValueError", "bad")
    assert (str(recorded), recorded.type_name, recorded.message) == (
        "ValueError: bad",
        "ValueError",
        "bad",
    )
