"""The Prometheus exporter, scraped for real over HTTP while a run goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from parallelize import Failure, PerKey, parallelize  # noqa: E402
from parallelize.prometheus import PrometheusExporter  # noqa: E402
from spies import KeyStates, key_of, settle  # noqa: E402


def parse_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(session: aiohttp.ClientSession, port: int) -> dict[Any, float]:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return parse_samples(await response.text())


def test_metrics_are_scraped_over_http_during_and_after_a_run(run: Any) -> None:
    registry = prometheus_client.CollectorRegistry()
    exporter = PrometheusExporter(port=0, registry=registry, labels={"job": "test"})
    assert exporter.port
    job = (("job", "test"),)

    async def slow(x: int) -> int:
        await asyncio.sleep(0.02)
        if x % 10 == 0:
            raise ValueError(x)
        return x

    async def main() -> tuple[dict[Any, float], dict[Any, float]]:
        async with aiohttp.ClientSession() as session:
            results = parallelize(slow, range(200), 10, observers=[exporter], on_error="yield")
            during: dict[Any, float] = {}
            failures = 0
            async for outcome in results:
                failures += isinstance(outcome, Failure)
                if failures == 5 and not during:
                    assert exporter.port is not None
                    during = await scrape(session, exporter.port)
            assert exporter.port is not None
            return during, await scrape(session, exporter.port)

    try:
        during, after = run(main())
    finally:
        exporter.close()
    assert during[("parallelize_items_in_flight", job)] > 0
    assert during[("parallelize_run_finished", job)] == 0
    assert during[("parallelize_concurrency_limit", job)] == 10
    assert during[("parallelize_items_expected", job)] == 200
    assert 0 < during[("parallelize_items_total", (*job, ("outcome", "succeeded")))] < 180

    assert after[("parallelize_run_finished", job)] == 1
    assert after[("parallelize_items_in_flight", job)] == 0
    assert after[("parallelize_items_total", (*job, ("outcome", "succeeded")))] == 180
    assert after[("parallelize_items_total", (*job, ("outcome", "failed")))] == 20
    assert after[("parallelize_attempts_total", job)] == 200
    assert after[("parallelize_action_duration_seconds_count", job)] == 200
    total = after[("parallelize_action_duration_seconds_sum", job)]
    assert 200 * 0.02 <= total < 200 * 0.2
    # Every action took 20+ ms: none in the buckets up to 2**-6 s (15.6 ms), all by 1 s.
    le = "parallelize_action_duration_seconds_bucket"
    assert after[(le, (*job, ("le", repr(2.0**-6))))] == 0
    assert after[(le, (*job, ("le", "1.0")))] == 200
    assert after[(le, (*job, ("le", "+Inf")))] == 200


def test_an_exporter_without_a_run_exports_nothing_and_closes_twice() -> None:
    registry = prometheus_client.CollectorRegistry()
    exporter = PrometheusExporter(registry=registry)
    assert exporter.port is None
    assert prometheus_client.generate_latest(registry) == b""
    exporter.close()
    exporter.close()


def test_one_exporter_on_two_stages_counts_each_stage_under_its_name(run: Any) -> None:
    """Each stage of a pipeline that shares the exporter has its own series, labelled
    with the stage's name (one run's values under no stage label no longer hide them)."""
    registry = prometheus_client.CollectorRegistry()
    exporter = PrometheusExporter(registry=registry, labels={"job": "test"})

    async def parse(x: int) -> int:
        await asyncio.sleep(0)
        if x % 10 == 0:
            raise ValueError(x)
        return x

    async def store(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def main() -> list[Any]:
        results = parallelize(parse, range(150), 10, observers=[exporter], on_error="yield").then(
            store, 5, observers=[exporter]
        )
        async with results:
            return [outcome async for outcome in results]

    try:
        outcomes = run(main())
        after = parse_samples(prometheus_client.generate_latest(registry).decode())
    finally:
        exporter.close()
    assert len(outcomes) == 150
    parse_stage, store_stage = (
        (("job", "test"), ("stage", "parse")),
        (
            ("job", "test"),
            ("stage", "store"),
        ),
    )

    def items(stage: tuple[tuple[str, str], ...], outcome: str) -> float:
        return after[("parallelize_items_total", tuple(sorted((*stage, ("outcome", outcome)))))]

    assert (items(parse_stage, "succeeded"), items(parse_stage, "failed")) == (135, 15)
    assert (items(store_stage, "succeeded"), items(store_stage, "passed_on")) == (135, 15)
    assert items(store_stage, "failed") == 0
    for stage in (parse_stage, store_stage):
        assert after[("parallelize_run_finished", stage)] == 1
        assert after[("parallelize_items_expected", stage)] == 150
    assert after[("parallelize_attempts_total", parse_stage)] == 150
    assert after[("parallelize_attempts_total", store_stage)] == 135
    assert after[("parallelize_concurrency_limit", store_stage)] == 5


def test_two_stages_of_one_name_sharing_an_exporter_are_refused(run: Any) -> None:
    """Their series could not be told apart: the pipeline fails, saying what to do."""
    registry = prometheus_client.CollectorRegistry()
    exporter = PrometheusExporter(registry=registry)

    async def double(x: int) -> int:
        return 2 * x

    async def main() -> None:
        results = parallelize(double, range(10), 2, observers=[exporter]).then(
            double, 2, observers=[exporter]
        )
        async with results:
            async for _ in results:
                pass

    try:
        with pytest.raises(
            ValueError,
            match=r"^two stages named 'double' share one PrometheusExporter, which labels "
            r"each stage with its name: give them different names, "
            r"e\.g\. \.then\(action, n, name='parse'\)$",
        ):
            run(main())
    finally:
        exporter.close()


def test_a_stage_label_of_ones_own_is_refused_on_a_pipeline(run: Any) -> None:
    """The exporter's ``stage`` label would clash with the user's."""
    registry = prometheus_client.CollectorRegistry()
    exporter = PrometheusExporter(registry=registry, labels={"stage": "mine"})

    async def double(x: int) -> int:
        return 2 * x

    async def main() -> None:
        results = parallelize(double, range(10), 2).then(double, 2, observers=[exporter])
        async with results:
            async for _ in results:
                pass

    try:
        with pytest.raises(ValueError, match=r"^PrometheusExporter\(labels=\{'stage': 'mine'\}\)"):
            run(main())
    finally:
        exporter.close()


def per_key_series(samples: dict[Any, float]) -> dict[str, dict[str, float]]:
    """The series by key of each per-key family: {name: {key: value}}."""
    found: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        key = dict(labels).get("key")
        if key is not None:
            found.setdefault(name, {})[key] = value
    return found


async def scrape_registry(registry: Any) -> dict[Any, float]:
    """Scrape from another thread, as a Prometheus server's request would."""
    text = await asyncio.to_thread(prometheus_client.generate_latest, registry)
    return parse_samples(text.decode())


@pytest.mark.timeout(30)
def test_limits_per_key_export_their_keys_and_items_set_aside(run: Any) -> None:
    """The keys by state, the items set aside and their bound, the items failed as
    their key was down, and the top key's own series; none without per_key."""
    registry = prometheus_client.CollectorRegistry()
    exporter = PrometheusExporter(registry=registry, labels={"job": "test"})
    job = (("job", "test"),)
    act = KeyStates()

    async def main() -> tuple[dict[Any, float], dict[Any, float], dict[Any, float]]:
        items = ["dead:0", "dead:1", "slow:0", *(f"busy:{i}" for i in range(10))]
        keyed = PerKey(key_of, concurrency=1, failures=1, set_aside=3)
        results = parallelize(
            act, iter(items), 8, per_key=keyed, observers=[exporter], on_error="yield"
        )
        async with results:
            iterator = aiter(results)
            for _ in range(3):  # dead:0, dead:1 (its key down) and slow:0 fail
                assert isinstance(await anext(iterator), Failure)
            await settle(100)  # the run reads on until its set-aside items are at the bound
            during = await scrape_registry(registry)
            act.gate.set()
            assert len([outcome async for outcome in iterator]) == 10
        after = await scrape_registry(registry)
        async for _ in parallelize(act, ["busy:0"], 1, observers=[exporter]):
            pass
        return during, after, await scrape_registry(registry)

    try:
        during, after, plain = run(main())
    finally:
        exporter.close()

    def keys(samples: dict[Any, float], state: str) -> float:
        return samples[("parallelize_keys", (*job, ("state", state)))]

    assert [keys(during, state) for state in ("known", "active", "waiting", "paused", "open")] == [
        3,
        1,
        1,
        1,
        1,
    ]
    assert during[("parallelize_items_set_aside", job)] == 3
    assert during[("parallelize_set_aside_limit", job)] == 3
    assert during[("parallelize_set_aside_held_total", job)] >= 1
    assert during[("parallelize_key_down_items_total", job)] == 1
    assert per_key_series(during) == {
        "parallelize_key_set_aside": {"busy": 3},
        "parallelize_key_in_flight": {"busy": 1},
    }
    # Once the run is over: nothing set aside, no key in the top.
    assert after[("parallelize_items_set_aside", job)] == 0
    assert keys(after, "active") == 0
    assert after[("parallelize_key_down_items_total", job)] == 1
    assert per_key_series(after) == {}
    # A run without limits per key has no series of keys.
    assert plain[("parallelize_run_finished", job)] == 1
    assert not [name for name, _ in plain if "key" in name or "set_aside" in name]


@pytest.mark.timeout(60)
def test_a_run_over_a_thousand_keys_exports_ten_series_per_key_at_most(run: Any) -> None:
    """However many keys, each per-key family has the top ten keys' series at most,
    made anew on each scrape: keys that left the top are gone, none pile up."""
    registry = prometheus_client.CollectorRegistry()
    exporter = PrometheusExporter(registry=registry)

    async def act(item: str) -> str:
        await asyncio.sleep(0)
        return item

    def items() -> Any:
        # 1,000 keys, in runs of ten items of one key: most of each run waits aside.
        for i in range(10_000):
            yield f"k{(i // 10) % 1000}:{i}"

    async def main() -> tuple[list[dict[str, dict[str, float]]], dict[Any, float]]:
        keyed = PerKey(key_of, concurrency=1)
        scrapes = []
        count = 0
        async for _ in parallelize(act, items(), 100, per_key=keyed, observers=[exporter]):
            count += 1
            if count % 250 == 0:
                scrapes.append(per_key_series(await scrape_registry(registry)))
        return scrapes, await scrape_registry(registry)

    try:
        scrapes, after = run(main())
    finally:
        exporter.close()
    assert len(scrapes) == 40
    seen: set[str] = set()
    for series in scrapes:
        assert set(series) <= {"parallelize_key_set_aside", "parallelize_key_in_flight"}
        for by_key in series.values():
            assert len(by_key) <= 10
            seen.update(by_key)
    assert len(seen) > 10  # the top changed as the run went on
    assert per_key_series(after) == {}
    assert after[("parallelize_keys", (("state", "known"),))] <= 1000
