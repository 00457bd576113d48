"""The engine: input -> workers (one TaskGroup) -> bounded buffer -> the consumer.

Its modules, one job each (arrows point down this list, never up):

    _run        Run: the lifecycle (start, supervise, close), the public face
    _general    the general worker, assembled from the parts below
    _hot        the two hand-inlined workers: the measured hot path, and it counted
    _consumer   the async generators that hand the results to ``async for``
    _sources    where an item comes from: a due retry, the input, the reader task
    _sinks      where an outcome goes: the buffer, the journal's tag, a retry, the error
    _flow       credits, result buffers and wake-ups, shared by all of the above
"""

from ._run import Run as Run
from ._run import register_stage_factory as register_stage_factory

__all__ = ("Run", "register_stage_factory")
