"""Prometheus metrics for a run: ``parallelize(..., observers=[PrometheusExporter()])``.

Needs the ``metrics`` extra (``pip install "parallelize[metrics]"``, which brings
``prometheus-client``). The exporter reads :meth:`Run.statistics` when Prometheus
scrapes, so it costs nothing per item; a scrape is answered from a snapshot taken
on the run's event loop (never by reading the run's state from the server's
thread). After the run ends, the exporter keeps serving its final values.

Metrics (``namespace`` defaults to ``parallelize``; every one carries the
exporter's ``labels``, and a ``stage`` label on a pipeline, see below):

    parallelize_items_total{outcome}      counter: succeeded, failed, replayed, skipped,
                                          passed_on (an earlier stage's failures)
    parallelize_attempts_total            counter: calls of the action
    parallelize_retries_total             counter: attempts tried again
    parallelize_items_in_flight           gauge
    parallelize_items_waiting_retry       gauge
    parallelize_concurrency_limit         gauge: the adaptive limit, else numworkers
    parallelize_items_expected            gauge: the input's length, when known
    parallelize_action_duration_seconds   histogram of the actions' durations
    parallelize_run_finished              gauge: 1 once the run has ended

With limits per key (``per_key=PerKey(...)``), also:

    parallelize_keys{state}               gauge: keys known (their state kept), active
                                          (an attempt in flight), waiting (items set
                                          aside), paused (a Retry-After), open (breaker)
    parallelize_items_set_aside           gauge: items set aside until their key may go
    parallelize_set_aside_limit           gauge: the most items set aside at once
    parallelize_set_aside_held_total      counter: times reading stopped at that bound
    parallelize_key_down_items_total      counter: items failed at once, their key down
    parallelize_key_set_aside{key}        gauge: items set aside, of each top key
    parallelize_key_in_flight{key}        gauge: attempts in flight, of each top key

The two series by ``key`` are for the top keys alone, the ten with the most items
set aside now (``KeyStatistics.top``), and are made anew on each scrape: a key that
has left the top has no series any more. However many keys a run meets (a crawl of a
million hosts), it exports at most ten series of each, so the scraper's storage does
not grow with the keys.

One exporter may be given to several stages of a pipeline
(``parallelize(...).then(...)``, ``observers=[exporter]`` on each): every metric
then carries a ``stage`` label, the stage's ``name``, and each stage has its own
series. Two stages given the same exporter need different names (``name=``).

Example:
    >>> exporter = PrometheusExporter(port=9464)  # http://127.0.0.1:9464/metrics
    >>> async for page in parallelize(fetch, urls, 100, observers=[exporter]):
    ...     ...
    >>> exporter.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self

from ._errors import MissingDependencyError
from ._observe import Observer
from ._stats import Statistics

if TYPE_CHECKING:
    from ._engine import Run
    from ._limits import KeyStatistics

try:
    import prometheus_client
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
except ImportError as _exc:  # pragma: no cover - the extra is a test dependency
    raise MissingDependencyError("parallelize.prometheus", "metrics", "prometheus_client") from _exc

__all__ = ("DURATION_BUCKETS", "PrometheusExporter")

# Bucket bounds of the duration histogram, in seconds: powers of two from 61 us to
# 64 s, which are exact edges of the run's own latency histogram.
DURATION_BUCKETS = tuple(2.0**exponent for exponent in range(-14, 7))

# The keys of limits per key that have series of their own: the top ones by items set
# aside (KeyStatistics.top has no more), so that a run over a million keys does not
# make a million series.
_TOP_KEYS = 10

# A scrape waits this long for the run's loop to take a snapshot; then it answers
# with the last one.
_SNAPSHOT_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    stage: str | None  # the value of the stage label, None when there is none
    stats: Statistics


def _same_pipeline(run: Run[Any], other: Run[Any]) -> bool:
    return run in other.stages or other in run.stages


class PrometheusExporter(Observer):
    """Expose a run's statistics as Prometheus metrics, scraped over HTTP.

    Args:
        port: Serve ``/metrics`` on this port (0: any free port, see ``port``
            after construction). None (default): only register the metrics in
            ``registry``, for an HTTP server or push gateway of your own.
        addr: The address to listen on (default ``127.0.0.1``: this machine only;
            ``0.0.0.0`` for a scraper elsewhere).
        registry: The ``prometheus_client`` registry to register in (default:
            the global ``REGISTRY``).
        namespace: The metric names' prefix (default ``parallelize``).
        labels: Labels added to every metric, such as ``{"job": "crawl"}``.

    Attributes:
        port: The port serving ``/metrics``, or None.

    One exporter follows one run at a time, the last one it was given, or the
    stages of one pipeline that it was given (each with a ``stage`` label: its
    name). Close it with :meth:`close` (or use it as a context manager) to stop
    its server.

    Raises:
        ValueError: (from the run) when two stages that share the exporter have
            the same name, or ``labels`` has a ``stage`` label of its own.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        addr: str = "127.0.0.1",
        registry: Any = None,
        namespace: str = "parallelize",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Register the metrics, and start the HTTP server when given a port."""
        self._registry = prometheus_client.REGISTRY if registry is None else registry
        self._namespace = namespace
        self._labels = dict(labels or {})
        # The runs followed: one, or stages of one pipeline (then each is labelled
        # with its name: staged).
        self._runs: list[Run[Any]] = []
        self._staged = False
        self._running = 0  # followed runs that have not finished
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: list[_Snapshot] | None = None
        self._registry.register(self)
        self._server: Any = None
        self.port: int | None = None
        if port is not None:
            server, _thread = prometheus_client.start_http_server(
                port, addr=addr, registry=self._registry
            )
            self._server = server
            self.port = server.server_port

    def close(self) -> None:
        """Stop the HTTP server (if any) and unregister the metrics."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(KeyError):  # already closed
            self._registry.unregister(self)

    def __enter__(self) -> Self:
        """Return the exporter; :meth:`close` it on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the exporter."""
        self.close()

    # -- the run's side (on its loop) --------------------------------------------

    def run_started(self, run: Run[Any]) -> None:
        """Follow ``run`` from now on: alone, or with the other stages of its pipeline."""
        if not any(_same_pipeline(run, other) for other in self._runs):
            # Another run: it replaces the ones followed so far.
            self._runs = []
            self._running = 0
            # The last stage starts first (it starts the earlier ones): a stage that
            # has earlier ones is labelled, and so is every stage joining it.
            self._staged = len(run.stages) > 1
        else:
            self._staged = True
        if self._staged:
            if "stage" in self._labels:
                msg = (
                    f"PrometheusExporter(labels={self._labels!r}) follows the stages "
                    "of a pipeline, which it labels 'stage' (their names): give your "
                    "label another name"
                )
                raise ValueError(msg)
            for other in self._runs:
                if other.name == run.name:
                    msg = (
                        f"two stages named {run.name!r} share one PrometheusExporter, "
                        "which labels each stage with its name: give them different "
                        "names, e.g. .then(action, n, name='parse')"
                    )
                    raise ValueError(msg)
        self._runs.append(run)
        self._running += 1
        self._loop = asyncio.get_running_loop()
        self._last = self._snapshots()

    def run_finished(self, run: Run[Any], error: BaseException | None) -> None:  # noqa: ARG002
        """Keep the run's final values, to serve from now on."""
        if run not in self._runs:
            return  # replaced by another run meanwhile
        self._running -= 1
        self._last = self._snapshots()
        if not self._running:
            self._loop = None  # the final values are served from here on

    def _snapshots(self) -> list[_Snapshot]:
        snapshots = []
        for run in self._runs:
            stage = run.name if self._staged else None
            snapshots.append(_Snapshot(stage, run.statistics()))
        return snapshots

    # -- the scraper's side (any thread) -----------------------------------------

    def _current(self) -> list[_Snapshot] | None:
        """Take snapshots on the runs' loop, or fall back on the last ones."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return self._last
        future: concurrent.futures.Future[list[_Snapshot]] = concurrent.futures.Future()

        def take() -> None:
            if not future.cancelled():
                try:
                    future.set_result(self._snapshots())
                except Exception as exc:  # handed to the scraper
                    future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
            self._last = future.result(timeout=_SNAPSHOT_TIMEOUT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            future.cancel()  # the loop is closed or busy: serve the last values
        return self._last

    def describe(self) -> Iterator[Any]:
        """Nothing up front: the metrics exist once a run has started."""
        return iter(())

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by ``prometheus_client`` on a scrape)."""
        snapshots = self._current()
        if not snapshots:
            return
        staged = snapshots[0].stage is not None
        names = [*self._labels, "stage"] if staged else list(self._labels)
        prefix = self._namespace + "_"

        def labelled(snapshot: _Snapshot, *extra: str) -> list[str]:
            stage = () if snapshot.stage is None else (snapshot.stage,)
            return [*self._labels.values(), *stage, *extra]

        items = CounterMetricFamily(
            prefix + "items", "Items that have ended, by outcome.", labels=[*names, "outcome"]
        )
        for snapshot in snapshots:
            for outcome in ("succeeded", "failed", "replayed", "skipped", "passed_on"):
                items.add_metric(labelled(snapshot, outcome), getattr(snapshot.stats, outcome))
        yield items
        for name, help_text in (
            ("attempts", "Calls of the action."),
            ("retries", "Attempts that failed and were tried again."),
        ):
            counter = CounterMetricFamily(prefix + name, help_text, labels=names)
            for snapshot in snapshots:
                counter.add_metric(labelled(snapshot), getattr(snapshot.stats, name))
            yield counter
        yield from _gauges(prefix, names, snapshots, labelled)
        yield _durations(prefix, names, snapshots, labelled)
        keyed = [snapshot for snapshot in snapshots if snapshot.stats.keys is not None]
        if keyed:
            yield from _keys(prefix, names, keyed, labelled)


def _gauges(
    prefix: str,
    names: list[str],
    snapshots: list[_Snapshot],
    labelled: Callable[[_Snapshot], list[str]],
) -> Iterator[GaugeMetricFamily]:
    """Yield the gauges, a series for each snapshot (a run, or a stage)."""
    gauges: list[tuple[str, str, Callable[[Statistics], float | None]]] = [
        ("items_in_flight", "Items being worked on now.", lambda s: s.in_flight),
        (
            "items_waiting_retry",
            "Items waiting for their next attempt.",
            lambda s: s.waiting_retry,
        ),
        ("concurrency_limit", "The most items that may be in flight now.", lambda s: s.limit),
        ("items_expected", "How many items the input has.", lambda s: s.total),
        ("run_finished", "1 once every worker has ended.", lambda s: float(s.finished)),
    ]
    for name, help_text, value_of in gauges:
        gauge = GaugeMetricFamily(prefix + name, help_text, labels=names)
        for snapshot in snapshots:
            gauge_value = value_of(snapshot.stats)
            if gauge_value is not None:
                gauge.add_metric(labelled(snapshot), gauge_value)
        if gauge.samples:
            yield gauge


def _durations(
    prefix: str,
    names: list[str],
    snapshots: list[_Snapshot],
    labelled: Callable[[_Snapshot], list[str]],
) -> HistogramMetricFamily:
    """Return the duration histogram, a series for each snapshot (a run, or a stage)."""
    histogram = HistogramMetricFamily(
        prefix + "action_duration_seconds",
        "Durations of the actions' attempts (fast ones sampled).",
        labels=names,
    )
    for snapshot in snapshots:
        latency = snapshot.stats.latency
        measured = () if latency is None else latency.buckets
        # Exact: every bound is a power of two, an edge of the run's own buckets.
        buckets = [
            (_bound(bound), float(sum(n for upper, n in measured if upper <= bound)))
            for bound in DURATION_BUCKETS
        ]
        buckets.append(("+Inf", float(sum(n for _, n in measured))))
        total = 0.0 if latency is None else latency.total
        histogram.add_metric(labelled(snapshot), buckets, total)
    return histogram


_Family = GaugeMetricFamily | CounterMetricFamily


def _keys(
    prefix: str,
    names: list[str],
    snapshots: list[_Snapshot],
    labelled: Callable[..., list[str]],
) -> Iterator[_Family]:
    """Yield the metrics of limits per key, for the snapshots of runs that have them.

    The series by ``key`` are the top keys' alone (at most ``_TOP_KEYS``), made anew
    on each scrape: their number never grows with the keys a run meets.
    """
    states = GaugeMetricFamily(
        prefix + "keys", "Keys of the limits per key, by state.", labels=[*names, "state"]
    )
    families: list[tuple[_Family, Callable[[KeyStatistics], int]]] = [
        (
            GaugeMetricFamily(
                prefix + "items_set_aside",
                "Items set aside until their key may go.",
                labels=names,
            ),
            lambda keys: keys.set_aside,
        ),
        (
            GaugeMetricFamily(
                prefix + "set_aside_limit", "The most items set aside at once.", labels=names
            ),
            lambda keys: keys.set_aside_limit,
        ),
        (
            CounterMetricFamily(
                prefix + "set_aside_held",
                "Times reading the input stopped, the items set aside at their limit.",
                labels=names,
            ),
            lambda keys: keys.held,
        ),
        (
            CounterMetricFamily(
                prefix + "key_down_items",
                "Items failed at once, their key down (its breaker open).",
                labels=names,
            ),
            lambda keys: keys.down,
        ),
    ]
    by_key = [*names, "key"]
    top_set_aside = GaugeMetricFamily(
        prefix + "key_set_aside",
        f"Items set aside, of the {_TOP_KEYS} keys with the most.",
        labels=by_key,
    )
    top_in_flight = GaugeMetricFamily(
        prefix + "key_in_flight",
        f"Attempts in flight, of the {_TOP_KEYS} keys with the most items set aside.",
        labels=by_key,
    )
    for snapshot in snapshots:
        keys = snapshot.stats.keys
        assert keys is not None
        for state, count in (
            ("known", keys.keys),
            ("active", keys.active),
            ("waiting", keys.waiting),
            ("paused", keys.paused),
            ("open", keys.open),
        ):
            states.add_metric(labelled(snapshot, state), count)
        for family, value_of in families:
            family.add_metric(labelled(snapshot), value_of(keys))
        for key, set_aside, in_flight in keys.top[:_TOP_KEYS]:
            top_set_aside.add_metric(labelled(snapshot, str(key)), set_aside)
            top_in_flight.add_metric(labelled(snapshot, str(key)), in_flight)
    yield states
    for family, _ in families:
        yield family
    yield top_set_aside
    yield top_in_flight


def _bound(seconds: float) -> str:
    return repr(seconds)
