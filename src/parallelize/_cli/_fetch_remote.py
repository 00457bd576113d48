"""``fetch --processes N``: the requests in child processes, the run in this one.

Each child opens its own client (``child_client``, the run's ``process_setup``)
and makes one attempt per call (``exchange``). What spans attempts stays in the
parent: the first attempt's time and the count of attempts per line (sent with
each call), retries, limits, the journal and the output. Times are
``time.monotonic()``, one clock for every process of the machine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from parallelize.http import open_client

from ._attempt import make_exchange
from ._request import RequestShape

if TYPE_CHECKING:
    from ._saving import Saving

__all__ = ("child_client", "exchange")

# This child's attempt at a URL, made by child_client() (None in the parent).
_EXCHANGE: Callable[[int, str, float, int], Awaitable[str]] | None = None


@contextlib.asynccontextmanager
async def child_client(  # noqa: PLR0917 - partial()'s arguments, in order
    client: dict[str, Any],
    shape: RequestShape,
    saving: Saving | None,
    max_body: int | None,
    fields: tuple[str, ...] = (),
    recrawl: str | None = None,
) -> AsyncIterator[None]:
    """Open this child's client (``client``: open_client's arguments) for its calls."""
    global _EXCHANGE  # noqa: PLW0603 - one client per process: the point of the module
    async with open_client(**client) as opened:
        _EXCHANGE = make_exchange(
            opened.request, shape, saving, max_body, time.monotonic, fields=fields, recrawl=recrawl
        )
        try:
            yield
        finally:
            _EXCHANGE = None


async def exchange(line: int, url: str, first: float, attempt: int) -> str:
    """Make one attempt at ``url`` with this child's client; its JSON line."""
    assert _EXCHANGE is not None, "child_client() opens the client first"
    return await _EXCHANGE(line, url, first, attempt)
