"""A command's job: the action, its items, and what a journal keys and compares them by.

:mod:`._fetch` and :mod:`._run` each build one :class:`Job`; :func:`~._execution.execute`
runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from parallelize import Failure, PerKey, Retry, Run

__all__ = ("Job", "retry_of")


def retry_of(options: Any, retryable: Callable[[Exception], bool]) -> Retry[Any] | None:
    """Return ``--retries N`` (and ``--max-retry-wait``) as a Retry, or None for 0.

    ``retryable`` tells the errors worth another attempt; each command knows its own.
    """
    if not options.retries:
        return None
    return Retry(
        on=(),
        attempts=options.retries + 1,
        if_exception=retryable,
        max_wait=options.max_retry_wait or None,
    )


@dataclasses.dataclass(slots=True)
class Job:
    """One command's work, ready for :func:`execute`.

    Attributes:
        action: What runs per item; returns the item's JSON line (so that a journal
            stores, and replays, exactly what was written).
        items: The items, from :func:`read_items`.
        failure_line: Turns a :class:`~parallelize.Failure` into its JSON line.
        noun: What the items are, plural, for messages ("URLs").
        retry: The retry policy, or None.
        key: With a journal, the function naming an item across runs, or None for
            its position in the input.
        reads_stdin: Whether the items come from stdin (said in the resume hint).
        total: How many items there are, for the progress bar, or None.
        summary_note: Said at the end of the summary line ("client aiohttp"), or a
            function that says it when the run has ended.
        timeout_in_action: The action enforces --timeout itself (the run does not).
        settings: What shapes an outcome besides the item (the request's method and
            headers, the function): a journal stores them and refuses a rerun
            whose settings differ (``--reuse-journal`` adopts them instead).
        per_key: The limits per key (``--per-host``, ``--per-key``...), or None.
        on_run: Called with the run once it is made, before its first item (so
            that ``--robots`` can set a site's rate on ``run.keys``).
        final: Tells from a failure's line whether the failure is final (a 404, an
            invalid line): a rerun with the journal writes it again instead of
            running its item, and the exit code says whether any failure may yet
            succeed (1) or none (4). None: every failure may.
    """

    action: Callable[..., Any]
    items: Iterable[Any] | AsyncIterator[Any]
    failure_line: Callable[[Failure], str]
    noun: str
    reads_stdin: bool = False
    retry: Retry[Any] | None = None
    key: Callable[[Any], int | str] | None = None
    total: int | None = None
    summary_note: str | Callable[[], str] | None = None
    timeout_in_action: bool = False
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_key: PerKey | None = None
    on_run: Callable[[Run[Any]], None] | None = None
    final: Callable[[str], bool] | None = None
