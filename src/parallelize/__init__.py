"""parallelize: run an async action over huge numbers of inputs with a bounded pool.

Layers, each importing only the ones below it::

    _api        parallelize(): validate the arguments, build a Run
    _engine     Run: input -> workers (one TaskGroup) -> bounded buffer -> consumer
    _threads    plain-function actions in the run's thread pool
    _aio        asyncio plumbing          _outcomes   Failure, yielded for a failed item
    _errors     the exception tree        _util       argument validators
"""

from ._api import parallelize as parallelize
from ._engine import Run as Run
from ._errors import ActionError as ActionError
from ._errors import ParallelizeError as ParallelizeError
from ._outcomes import Failure as Failure

__all__ = ("ActionError", "Failure", "ParallelizeError", "Run", "parallelize")

__version__ = "0.1.0.dev0"

# Show public names in reprs and tracebacks, not private module paths.
for _obj in (parallelize, Run, Failure, ActionError, ParallelizeError):
    _obj.__module__ = "parallelize"
del _obj
