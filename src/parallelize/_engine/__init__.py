"""The engine: input -> workers (one TaskGroup) -> bounded buffer -> the consumer.

Its modules, one job each (arrows point down this list, never up):

    _run         Run: the lifecycle (start, results, close), the public face
    _stages      Stages, Run's base: then() and its overloads
    _snapshot    statistics(): the counters and clocks made a Statistics
    _grace       handle_signals: stop taking items, the grace period, cancel
    _supervisor  the workers' task group, and what the run releases after it
    _assemble    which worker a run takes, and the parts it is wired from
    _general     the general worker, assembled from the parts below
    _hot         the two hand-inlined workers: the measured hot path, and it counted
    _consumer    the async generators that hand the results to ``async for``
    _sources     where an item comes from: the input under a credit, a due retry
    _sinks       where an outcome goes: the buffer, the journal's tag, a retry, the error
    _flow        credits, result buffers and wake-ups, shared by all of the above
"""

from ._run import Run as Run
from ._stages import register_stage_factory as register_stage_factory

__all__ = ("Run", "register_stage_factory")
