"""``Run.then()``: a run's next stage, and the overloads that type it.

A pipeline's stage is built by ``parallelize()``, which lives in the API layer above
the engine: it registers itself here when imported (``register_stage_factory``).
:class:`Stages` is the base of ``Run`` that holds ``then()``; the run itself checks
that it may feed a stage (``Run._take_stage``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Unpack, overload

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from parallelize._options import StageOptions
    from parallelize._outcomes import Failure

    from ._run import Run

__all__ = ("Stages", "register_stage_factory")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")

# parallelize(), as registered by the API layer (which this package must not import).
_stage_factory: Callable[..., Run[Any]] | None = None


def register_stage_factory(factory: Callable[..., Run[Any]]) -> None:
    """Let :meth:`Run.then` build its stages with ``factory`` (``parallelize``)."""
    global _stage_factory  # noqa: PLW0603 - set once, when the API layer is imported
    _stage_factory = factory


class Stages(Generic[T_co]):
    """The base of ``Run`` that adds stages: :meth:`then` and its overloads."""

    __slots__ = ()

    # A stage's action takes the result type of the stage before. The overloads on
    # Stages[T] come first, as a Run[X] also matches Stages[T | Failure] (covariance, T = X).
    # A Run[X | Failure] fails them when its action takes X and not Failure, and gets
    # the last four, whose results keep the failures that pass through.
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], Awaitable[U]],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], Awaitable[U]],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], AsyncIterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], AsyncIterator[U]],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], Iterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], Iterator[U]],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], U],
        numworkers: int,
        *,
        on_error: Literal["raise"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U]: ...
    @overload
    def then(
        self: Stages[T],
        action: Callable[[T], U],
        numworkers: int,
        *,
        on_error: Literal["yield"],
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Stages[T | Failure],
        action: Callable[[T], Awaitable[U]],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Stages[T | Failure],
        action: Callable[[T], AsyncIterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Stages[T | Failure],
        action: Callable[[T], Iterator[U]],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[list[U]]],
    ) -> Run[U | Failure]: ...
    @overload
    def then(
        self: Stages[T | Failure],
        action: Callable[[T], U],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = ...,
        **options: Unpack[StageOptions[U]],
    ) -> Run[U | Failure]: ...
    def then(
        self,
        action: Callable[..., Any],
        numworkers: int,
        *,
        on_error: Literal["raise", "yield"] = "raise",
        **options: Unpack[StageOptions[Any]],
    ) -> Run[Any]:
        """Add a stage: run ``action`` over this run's results, as they come.

        ``run.then(action, n, ...)`` is ``parallelize(action, run, n, ...)``: the
        same options, with this run as the input. The stages run at once, each with
        its own workers and policies, joined by their bounded buffers: the first
        results leave the last stage while the first is still reading its input, and
        a slow stage holds back the ones before it instead of filling memory::

            pages = (
                parallelize(fetch, urls, 100, retry=Retry(on=OSError))
                .then(parse, 2, executor="process")
                .then(store, 1)
            )
            async with pages:
                async for row in pages:
                    ...

        Each result is passed to the next stage's action whole, as its one
        argument: a result is a value, not an argument list, so a tuple or a list
        is never unpacked (unlike the items of a plain ``argslist``).

        Iterate the last stage only. Closing it (or an error in any stage) ends
        every stage and awaits all their tasks. An earlier stage's
        :class:`~parallelize.Failure` (with ``on_error="yield"``) passes through
        the later stages unchanged, without calling their actions, and names the
        stage that failed: after an ``on_error="yield"`` stage, every later stage's
        static type is ``Run[U | Failure]``, so check ``isinstance(result,
        Failure)``. ``action`` takes the previous stage's result type (the failures
        never reach it), which type checkers verify.
        """
        factory = _stage_factory
        assert factory is not None, "parallelize() registers itself on import"
        return self._take_stage(
            lambda: factory(action, self, numworkers, on_error=on_error, **options)
        )

    def _take_stage(self, make: Callable[[], Run[Any]]) -> Run[Any]:
        """Make the stage that this run feeds (``make()``), if it may feed one."""
        raise NotImplementedError  # Run's
