"""Reading an async input by hand, to know whether its next item must wait.

A journaled run looks its input up a batch at a time, and a queue's producer adds it
a batch at a time; neither may hold a batch back while a slow input (an idle pipe,
``tail -f``) waits for its next item. So both start ``__anext__()`` by hand
(:func:`start_next`): a ready item comes back at once, and only a waiting one is
awaited (:func:`resume`), after the batch so far was handed on. A step left waiting
when the run closes is ended with :func:`cancel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Generator
from typing import Any

__all__ = ("END", "cancel", "resume", "start_next")

END: Any = object()
"""What :func:`start_next` and :func:`resume` give at the end of the input."""


def start_next(items: AsyncIterator[Any]) -> tuple[Any, Any, Any]:
    """Start ``items.__anext__()`` by hand, to see whether it must wait.

    Returns ``(item, None, None)`` when the item was ready, ``(END, None, None)``
    at the end of the input, and ``(None, step, waiting_on)`` when ``step`` (the
    started ``__anext__``) yielded ``waiting_on`` to wait for: ``await
    resume(step, waiting_on)`` then finishes it.
    """
    step: Any = anext(items)
    try:
        waiting_on = step.send(None)
    except StopIteration as ready:
        return ready.value, None, None
    except StopAsyncIteration:
        return END, None, None
    return None, step, waiting_on


@types.coroutine
def resume(step: Any, waiting_on: Any) -> Generator[Any, Any, Any]:
    """Await ``step``, an awaitable already started by hand that yielded ``waiting_on``.

    What ``await`` does after a first ``send(None)``: hand each yielded future to
    the task, send its results (or throw its exceptions, cancellation included)
    back, and return the awaitable's value; :data:`END` at the end of the input.
    """
    while True:
        try:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # thrown in by the task: pass it on
                waiting_on = step.throw(exc)
            else:
                waiting_on = step.send(sent)
        except StopIteration as done:
            return done.value
        except StopAsyncIteration:
            return END


@types.coroutine
def cancel(step: Any) -> Generator[Any, Any, None]:
    """Cancel ``step``, a started ``__anext__``, as cancelling its task would.

    ``CancelledError`` is thrown in where it waits, and whatever its clean-up awaits
    is awaited, until it ends. (Its ``close()`` would leave an async generator
    marked as running, which then refuses ``aclose()``.)
    """
    try:
        waiting_on = step.throw(asyncio.CancelledError())
    except BaseException:  # ended: cancelled, finished or failed
        return
    with contextlib.suppress(BaseException):  # however its clean-up ends
        yield from resume(step, waiting_on)
