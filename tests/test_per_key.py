"""Limits per key (``per_key=PerKey(...)``): no head-of-line blocking, each key its own."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallelize import (
    AdaptiveLimit,
    Failure,
    KeyBreakers,
    KeyDownError,
    PerKey,
    Retry,
    SQLiteJournal,
    down_of,
    host_of,
    parallelize,
)
from parallelize._limits import KeyedLimits
from parallelize._policies import ItemState
from parallelize.http import open_client
from parallelize.testing import ServerStats, local_server


def _key(item: str) -> str:
    return item.split(":", maxsplit=1)[0]


class Meter:
    """Counts each key's attempts in flight and their peak; stamps each start."""

    def __init__(self) -> None:
        self.now: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        self.starts: dict[str, list[float]] = collections.defaultdict(list)
        self.ends: dict[str, list[float]] = collections.defaultdict(list)

    def action(self, seconds: dict[str, float]) -> Any:
        async def act(item: str) -> str:
            key = _key(item)
            self.now[key] += 1
            self.peak[key] = max(self.peak[key], self.now[key])
            self.starts[key].append(time.monotonic())
            try:
                await asyncio.sleep(seconds.get(key, 0))
            finally:
                self.now[key] -= 1
                self.ends[key].append(time.monotonic())
            return item

        return act


# -- the options -------------------------------------------------------------------------


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="limits nothing"):
        PerKey(_key)
    with pytest.raises(TypeError, match=r"PerKey\.key"):
        PerKey("host", concurrency=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"PerKey\.concurrency"):
        PerKey(_key, concurrency=0)
    with pytest.raises(ValueError, match=r"PerKey\.rate"):
        PerKey(_key, rate=-1)
    with pytest.raises(ValueError, match=r"PerKey\.rate must be finite"):
        PerKey(_key, rate=float("inf"))
    with pytest.raises(ValueError, match=r"PerKey\.failures"):
        PerKey(_key, failures=0)
    with pytest.raises(ValueError, match="max_cooldown"):
        PerKey(_key, failures=2, cooldown=10, max_cooldown=5)
    with pytest.raises(ValueError, match=r"PerKey\.set_aside"):
        PerKey(_key, concurrency=1, set_aside=0)

    async def act(item: str) -> str:
        return item

    with pytest.raises(TypeError, match="per_key must be a PerKey"):
        parallelize(act, ["a"], 2, per_key=2)  # type: ignore[call-overload]


def test_host_of() -> None:
    assert host_of("https://Example.com/a?b#c") == "example.com:443"
    assert host_of("https://example.com:443/") == "example.com:443"
    assert host_of("http://example.com") == "example.com:80"
    assert host_of("http://user:pw@example.com:8080/x") == "example.com:8080"
    assert host_of("http://[::1]:81/") == "[::1]:81"
    assert host_of("http://[::1]/") == "[::1]:80"
    with pytest.raises(ValueError, match="no scheme"):
        host_of("example.com/a")
    with pytest.raises(ValueError, match="no host"):
        host_of("http:///a")
    with pytest.raises(TypeError):
        host_of(3)


def test_down_of() -> None:
    assert down_of(TimeoutError())
    assert down_of(ConnectionRefusedError())
    assert not down_of(ValueError())
    assert not down_of(503)
    assert not down_of(KeyboardInterrupt())


# -- no head-of-line blocking --------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_slow_key_does_not_hold_the_others(run: Any) -> None:
    """A slow key's items, first in the input, wait aside; the fast key's all run."""
    meter = Meter()
    items = [f"slow:{i}" for i in range(40)] + [f"fast:{i}" for i in range(400)]

    async def main() -> list[str]:
        run_ = parallelize(
            meter.action({"slow": 0.2}), items, 20, per_key=PerKey(_key, concurrency=2)
        )
        return [item async for item in run_]

    done = run(main())
    assert sorted(done) == sorted(items)
    assert meter.peak == {"slow": 2, "fast": 2}
    # Every fast item finished while the slow key still had most of its items left.
    last_fast = max(meter.ends["fast"])
    assert sum(end < last_fast for end in meter.ends["slow"]) < 20


@pytest.mark.timeout(30)
def test_set_aside_is_bounded_and_said(run: Any) -> None:
    """At the bound the input is read no further; the statistics say how often."""
    meter = Meter()
    pulled = 0

    def items() -> Any:
        nonlocal pulled
        for i in range(300):
            pulled += 1
            yield f"one:{i}"

    peak_aside = 0
    peak_read_ahead = 0

    async def main() -> Any:
        nonlocal peak_aside, peak_read_ahead
        run_ = parallelize(
            meter.action({"one": 0.001}),
            items(),
            8,
            per_key=PerKey(_key, concurrency=1, set_aside=10),
            stats=True,
        )
        count = 0
        async for _ in run_:
            count += 1
            stats = run_.statistics()
            peak_aside = max(peak_aside, stats.set_aside)
            peak_read_ahead = max(peak_read_ahead, pulled - count)
        return run_.statistics(), count

    stats, count = run(main())
    assert count == 300
    assert meter.peak["one"] == 1
    assert 0 < peak_aside <= 10
    # Read ahead: at most what is set aside, in flight (1) and buffered.
    assert peak_read_ahead <= 10 + 8 + 8
    assert stats.keys is not None
    assert stats.keys.held > 0
    assert stats.keys.set_aside_limit == 10
    assert stats.set_aside == 0
    assert stats.undone == 0


@pytest.mark.timeout(30)
def test_a_key_with_many_items_does_not_starve_one_with_few(run: Any) -> None:
    """A thousand items of one key set aside, then ten of another: served side by side."""
    meter = Meter()
    items = [f"big:{i}" for i in range(1000)] + [f"small:{i}" for i in range(10)]

    async def main() -> None:
        run_ = parallelize(
            meter.action({"big": 0.001, "small": 0.001}),
            items,
            4,
            per_key=PerKey(_key, concurrency=1, set_aside=2000),
        )
        async for _ in run_:
            pass

    run(main())
    last_small = max(meter.ends["small"])
    assert sum(end < last_small for end in meter.ends["big"]) < 100


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=2, max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_keys_waiting_are_served_round_robin(counts: list[int], order: Any) -> None:
    """Between two turns of a key that has items waiting, no other key gets two."""
    keyed = KeyedLimits(PerKey(_key, concurrency=1), numworkers=100)
    states = [
        ItemState(index, f"k{key}:{n}", 0.0, None)
        for index, (key, n) in enumerate(
            (key, n) for key, count in enumerate(counts) for n in range(count)
        )
    ]
    order.shuffle(states)
    # Every key's first item goes, the rest wait aside.
    running = [state for state in states if keyed.route(state, 0.0)]
    assert len(running) == len(counts)
    served: list[str] = []
    while running:
        state = running.pop(0)
        state.permit.release(None)
        nxt = keyed.ready(0.0)
        while nxt is not None:
            served.append(_key(nxt.item))
            running.append(nxt)
            nxt = keyed.ready(0.0)
    assert keyed.set_aside == 0
    assert collections.Counter(served) == {f"k{k}": c - 1 for k, c in enumerate(counts) if c > 1}
    for key in set(served):
        turns = [i for i, each in enumerate(served) if each == key]
        for a, b in itertools.pairwise(turns):
            between = collections.Counter(served[a + 1 : b])
            assert max(between.values(), default=0) <= 1, (served, key)


# -- rate ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_each_key_has_its_own_rate(run: Any) -> None:
    """20 per second per key, burst 2: spaced by 50 ms, each key apart, side by side."""
    meter = Meter()
    items = [f"{key}:{i}" for i in range(12) for key in "abc"]

    async def main() -> None:
        run_ = parallelize(meter.action({}), items, 10, per_key=PerKey(_key, rate=20, burst=2))
        async for _ in run_:
            pass

    run(main())
    for key in "abc":
        starts = meter.starts[key]
        assert len(starts) == 12
        # GCRA with burst 2: n starts span at least n - 2 intervals of 50 ms.
        for first, third in zip(starts, starts[2:], strict=False):
            assert third - first >= 0.05 - 0.003
        assert starts[-1] - starts[0] >= 0.5 - 0.003
    # Side by side: the three keys took about as long as one (12 at 20/s: 0.5 s).
    span = max(max(s) for s in meter.starts.values()) - min(min(s) for s in meter.starts.values())
    assert span < 1.5


# -- pauses, breakers, adaptive: against real local servers ------------------------------------


def _three_hosts() -> Any:
    return (local_server(ServerStats()), local_server(ServerStats()), local_server(ServerStats()))


@pytest.mark.timeout(60)
def test_a_retry_after_pauses_its_host_alone(run: Any) -> None:
    """A 429 with Retry-After: 1 from one host pauses it; the other host goes on."""

    async def main() -> tuple[list[int], float, list[float], list[float]]:
        async with (
            local_server() as a,
            local_server() as b,
            open_client("aiohttp", connections=20, timeout=10) as client,
        ):
            starts: dict[str, list[float]] = collections.defaultdict(list)
            answered_429 = 0.0

            async def get(url: str) -> Any:
                nonlocal answered_429
                starts[host_of(url)].append(time.monotonic())
                reply = await client.request("GET", url)
                if reply.status == 429:
                    answered_429 = time.monotonic()
                return reply

            urls = [f"{a}/flaky/x?fail=1&status=429&retry_after=1"]
            urls += [f"{a}/page/{i}" for i in range(5)]
            urls += [f"{b}/page/{i}" for i in range(60)]
            retry: Retry[Any] = Retry(on=ConnectionError, if_result=lambda r: r.status == 429)
            run_ = parallelize(get, urls, 10, retry=retry, per_key=PerKey(host_of, concurrency=2))
            replies = [r.status async for r in run_]
            return replies, answered_429, starts[host_of(a)], starts[host_of(b)]

    statuses, answered, host_a, host_b = run(main())
    assert statuses == [200] * 66
    assert answered
    # No request of host a started in the second after its 429 (one may have been
    # in flight already: concurrency 2).
    assert not [t for t in host_a if answered < t < answered + 0.95]
    assert len(host_a) == 7  # the 429's item once more, and five pages
    # The other host went on meanwhile.
    assert sum(answered < t < answered + 0.9 for t in host_b) >= 30


@pytest.mark.timeout(60)
def test_a_dead_host_fails_fast_and_a_probe_closes_the_breaker(run: Any) -> None:
    """Three timeouts open the breaker: the rest fail at once; after the cool-down
    a probe goes, and once the host answers again its items run."""
    stats = ServerStats()

    async def main() -> tuple[list[Any], list[Any]]:
        async with (
            local_server(stats) as base,
            local_server() as other,
            open_client("aiohttp", connections=20, timeout=0.2) as client,
        ):

            async def get(url: str) -> int:
                return (await client.request("GET", url)).status

            polite = PerKey(host_of, concurrency=2, failures=3, cooldown=0.5)
            urls = [f"{base}/hang"] * 30 + [f"{other}/page/{i}" for i in range(50)]
            first = [o async for o in parallelize(get, urls, 10, on_error="yield", per_key=polite)]
            # Same PerKey, a new run: its own keys (nothing shared between runs).
            again = [
                o
                async for o in parallelize(
                    get, [f"{base}/page/{i}" for i in range(5)], 5, per_key=polite
                )
            ]
            return first, again

    first, again = run(main())
    failures = [o for o in first if isinstance(o, Failure)]
    assert len(failures) == 30
    timeouts = [f for f in failures if not isinstance(f.exception, KeyDownError)]
    down = [f.exception for f in failures if isinstance(f.exception, KeyDownError)]
    assert 3 <= len(timeouts) <= 4  # concurrency 2: one may be in flight as it opens
    assert len(down) >= 26
    assert down[0].failures >= 3
    assert isinstance(down[0].__cause__, TimeoutError)
    assert sum(1 for o in first if o == 200) == 50
    assert again == [200] * 5


@pytest.mark.timeout(60)
def test_a_half_open_breaker_lets_one_probe_through(run: Any) -> None:
    """Once the cool-down is over a single attempt goes; its failure reopens for longer."""
    attempts: list[float] = []

    async def main() -> list[Any]:
        async def act(item: str) -> str:
            if item.startswith("dead"):
                attempts.append(time.monotonic())
                await asyncio.sleep(0.01)
                raise ConnectionRefusedError("refused")
            await asyncio.sleep(0.01)
            return item

        def items() -> Any:
            for i in range(60):
                yield f"dead:{i}"
                yield f"live:{i}"

        polite = PerKey(_key, failures=2, cooldown=0.1, max_cooldown=0.4)
        return [o async for o in parallelize(act, items(), 4, on_error="yield", per_key=polite)]

    outcomes = run(main())
    assert sum(1 for o in outcomes if isinstance(o, str)) == 60
    # Two to open; then a single probe at a time, each after a longer cool-down.
    assert 3 <= len(attempts) <= 2 + 5
    gaps = [b - a for a, b in itertools.pairwise(attempts[2:])]
    assert all(gap >= 0.09 for gap in gaps)


# -- a breaker alone (KeyBreakers: around the action, the fastest path kept) ---------------


@pytest.mark.timeout(30)
def test_a_breaker_alone_keeps_the_fastest_path_and_fails_a_down_key_at_once(run: Any) -> None:
    """failures= alone, no other policy: the hand-inlined worker, the action guarded.

    The down key's items past its K failures fail at once (no call); the other key's
    all succeed; only the key with failures has state; set_rate is refused.
    """
    calls: collections.Counter[str] = collections.Counter()

    async def act(item: str) -> str:
        calls[_key(item)] += 1
        await asyncio.sleep(0.001)
        if item.startswith("dead"):
            raise ConnectionRefusedError("refused")
        return item

    async def main() -> tuple[list[Any], Any]:
        items = [f"{k}:{i}" for i in range(50) for k in ("dead", "live")]
        run_ = parallelize(
            act, items, 2, on_error="yield", per_key=PerKey(_key, failures=3), stats=True
        )
        outcomes = [o async for o in run_]
        assert run_._items is None  # the hot path: no item source
        keys = run_.keys
        assert isinstance(keys, KeyBreakers)
        with pytest.raises(ValueError, match="breaker alone"):
            keys.set_rate("dead", 1.0)
        return outcomes, run_.statistics()

    outcomes, stats = run(main())
    assert sum(1 for o in outcomes if isinstance(o, str)) == 50
    down = [o.exception for o in outcomes if isinstance(o, Failure)]
    assert len(down) == 50
    assert 3 <= calls["dead"] <= 4  # K, and one in flight as it opened
    assert sum(isinstance(e, KeyDownError) for e in down) == 50 - calls["dead"]
    refusal = next(e for e in down if isinstance(e, KeyDownError))
    assert refusal.key == "dead"
    assert isinstance(refusal.__cause__, ConnectionRefusedError)
    assert stats.keys is not None
    assert not stats.keys.limited
    assert (stats.keys.keys, stats.keys.open, stats.keys.down) == (1, 1, 50 - calls["dead"])
    assert "keys: 1 with failures, 1 down (breaker open)" in stats.summary()


@pytest.mark.timeout(30)
def test_a_breaker_alone_probes_once_and_a_reply_closes_it(run: Any) -> None:
    """After the cool-down one probe goes (the key's others fail at once meanwhile);
    a reply closes the breaker and forgets the key; a down probe doubles the wait."""
    state = {"down": True}
    probes: list[float] = []

    async def act(item: str) -> str:
        if state["down"]:
            probes.append(time.monotonic())
            await asyncio.sleep(0.02)
            raise TimeoutError
        await asyncio.sleep(0.02)
        return item

    async def main() -> list[Any]:
        polite = PerKey(_key, failures=1, cooldown=0.1, max_cooldown=0.2)
        run_ = parallelize(act, _paced("h", 60, 0.01, state), 4, on_error="yield", per_key=polite)
        outcomes = [o async for o in run_]
        keys = run_.keys
        assert isinstance(keys, KeyBreakers)
        assert keys.statistics().keys == 0  # closed again with no failure: forgotten
        return outcomes

    outcomes = run(main())
    # One opens it; then one probe per cool-down (0.1 s, then 0.2 s twice at most).
    assert 2 <= len(probes) <= 4, probes
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(probes[1:]))
    assert all(isinstance(o, str) for o in outcomes[-5:])  # closed by a reply


async def _paced(key: str, n: int, every: float, state: dict[str, bool]) -> Any:
    """``n`` items of ``key``, one per ``every`` s; the key comes back up at 0.4 s."""
    started = time.monotonic()
    for i in range(n):
        if time.monotonic() - started > 0.4:
            state["down"] = False
        yield f"{key}:{i}"
        await asyncio.sleep(every)


def test_a_breaker_alone_unpacks_items_as_the_workers_do(run: Any) -> None:
    """Tuples and lists are spread (a bad spread explained), other items passed whole;
    the key function gets the item itself, and one that raises fails that item alone."""
    seen: list[Any] = []

    async def add(a: int, b: int) -> int:
        return a + b

    async def whole(item: Any) -> Any:
        return item

    def key(item: Any) -> Any:
        seen.append(item)
        if item == (0, 0):
            raise LookupError("no key")
        return str(item)

    async def take(*args: Any) -> list[Any]:
        return [o async for o in parallelize(*args, on_error="yield", per_key=breaker)]

    breaker = PerKey(key, failures=2)
    out = run(take(add, [(1, 2), [3, 4], (0, 0)], 1))
    assert out[:2] == [3, 7]
    assert isinstance(out[2], Failure)
    assert isinstance(out[2].exception, LookupError)
    assert seen == [(1, 2), [3, 4], (0, 0)]  # the items themselves
    assert run(take(whole, [5, "ab"], 1)) == [5, "ab"]
    (spread,) = run(take(add, [(1, 2, 3)], 1))
    assert isinstance(spread, Failure)
    assert "(1, 2, 3)" in str(spread.exception)  # explained as the workers do


@pytest.mark.timeout(30)
def test_a_breaker_alone_keeps_only_failing_keys_up_to_keys(run: Any) -> None:
    """10,000 keys that fail once each (below K): at most PerKey.keys kept."""

    async def act(item: int) -> int:
        if item % 2:
            raise ConnectionResetError
        return item

    async def main() -> int:
        polite = PerKey(lambda i: i // 2, failures=5, keys=100)
        run_ = parallelize(act, range(20_000), 8, on_error="yield", per_key=polite)
        async for _ in run_:
            pass
        keys = run_.keys
        assert keys is not None
        return keys.statistics().keys

    assert run(main()) <= 101


def _probing(entry: Any) -> bool:
    return bool(entry.probing)


@pytest.mark.timeout(30)
def test_a_cancelled_probe_gives_its_place_back(run: Any) -> None:
    """The run is closed while its probe hangs: nothing learnt, the probe's place freed."""

    async def hang(item: str) -> str:
        if item.endswith(":0"):
            raise ConnectionRefusedError
        await asyncio.sleep(3600)
        return item

    async def main() -> Any:
        polite = PerKey(_key, failures=1, cooldown=0.0)
        run_ = parallelize(hang, ["h:0", "h:1", "h:2"], 1, on_error="yield", per_key=polite)
        async with run_:
            results = aiter(run_)
            first = await anext(results)
            await asyncio.sleep(0.05)  # h:1, the probe, hangs
            keys = run_.keys
            assert isinstance(keys, KeyBreakers)
            entry = keys._entries["h"]
            assert _probing(entry)
        assert not _probing(entry)
        assert entry.breaker == 2  # still half open: the next item probes
        return first

    assert isinstance(run(main()), Failure)


@pytest.mark.timeout(60)
def test_each_host_adapts_on_its_own(run: Any) -> None:
    """One host answers 503 to half its calls: its own limit falls, the other's does not."""

    async def main() -> tuple[Any, list[int]]:
        async with (
            local_server() as bad,
            local_server() as good,
            open_client("aiohttp", connections=50, timeout=10) as client,
        ):

            async def get(url: str) -> Any:
                return await client.request("GET", url)  # a 503 reply is an overload

            urls = []
            for i in range(300):
                urls.append(f"{bad}/status/503?i={i}" if i % 2 else f"{bad}/slow/5?i={i}")
                urls.append(f"{good}/slow/5?i={i}")
            run_ = parallelize(
                get,
                urls,
                20,
                per_key=PerKey(host_of, concurrency=16, adaptive=True),
                adaptive=AdaptiveLimit(min_limit=20),
            )
            statuses = [r.status async for r in run_]
            policy = run_._policy  # the run's own keys
            assert policy is not None
            assert policy.keyed is not None
            entries = policy.keyed._entries
            limits = {}
            for url in (bad, good):
                estimator = entries[host_of(url)].estimator
                assert estimator is not None
                limits[host_of(url)] = estimator.gate
            return limits, statuses

    limits, statuses = run(main())
    assert len(statuses) == 600
    bad_limit, good_limit = limits.values()
    assert bad_limit < good_limit


@pytest.mark.timeout(60)
def test_the_global_adaptive_limit_does_not_rise_while_keys_are_paused(run: Any) -> None:
    """29 keys paused by a Retry-After, one key going on alone: the run's adaptive
    limit, never filled meanwhile, does not grow for the paused keys (Crawlee 1437)."""
    limits: list[int] = []
    in_flight = 0
    peak = 0

    async def main() -> None:
        async def act(item: str) -> Any:
            nonlocal in_flight, peak
            if item.endswith(":0") and item != "live:0":
                return _Reply(429, retry_after=1)  # each other key pauses at its first item
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await asyncio.sleep(0.005)
            finally:
                in_flight -= 1
            if item.startswith("live"):
                limits.append(limit.limit)
            return _Reply(200)

        limit = AdaptiveLimit(initial=4)
        items = [f"k{k}:{i}" for k in range(29) for i in range(3)]
        items += [f"live:{i}" for i in range(100)]
        run_ = parallelize(act, items, 64, adaptive=limit, per_key=PerKey(_key, concurrency=1))
        async for _ in run_:
            pass

    run(main())
    assert len(limits) == 100
    assert max(limits) <= 4
    assert peak <= 30  # the paused keys came back one attempt each, no burst


class _Reply:
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        self.status = status
        self.headers = {} if retry_after is None else {"Retry-After": str(int(retry_after))}


# -- the rest of the run: errors, order, journal, async input, cancel -------------------------


@pytest.mark.timeout(30)
def test_a_key_function_that_raises_fails_that_item_alone(run: Any) -> None:
    def key(item: int) -> int:
        if item == 3:
            raise LookupError("no key for 3")
        return item % 2

    async def act(item: int) -> int:
        return item

    async def main() -> list[Any]:
        run_ = parallelize(act, range(10), 3, on_error="yield", per_key=PerKey(key, concurrency=1))
        return [o async for o in run_]

    outcomes = run(main())
    failures = [o for o in outcomes if isinstance(o, Failure)]
    assert [f.item for f in failures] == [3]
    assert isinstance(failures[0].exception, LookupError)
    assert sorted(o for o in outcomes if not isinstance(o, Failure)) == [0, 1, 2, 4, 5, 6, 7, 8, 9]


@pytest.mark.timeout(30)
def test_ordered_with_keys_set_aside(run: Any) -> None:
    meter = Meter()
    items = [f"{'ab'[i % 7 == 0]}:{i}" for i in range(300)]

    async def main() -> list[str]:
        run_ = parallelize(
            meter.action({"b": 0.005}),
            items,
            10,
            ordered=True,
            per_key=PerKey(_key, concurrency=1),
        )
        return [item async for item in run_]

    assert run(main()) == items
    assert meter.peak == {"a": 1, "b": 1}


@pytest.mark.timeout(30)
def test_an_async_input_and_retries(run: Any) -> None:
    tries: collections.Counter[str] = collections.Counter()

    async def items() -> Any:
        for i in range(100):
            yield f"{'xyz'[i % 3]}:{i}"
            await asyncio.sleep(0)

    async def act(item: str) -> str:
        tries[item] += 1
        if tries[item] == 1 and item.endswith("5"):
            raise ConnectionResetError("once")
        await asyncio.sleep(0.001)
        return item

    async def main() -> list[str]:
        run_ = parallelize(
            act,
            items(),
            6,
            retry=Retry(on=ConnectionError, backoff=_fast_backoff()),
            per_key=PerKey(_key, concurrency=2),
        )
        return [item async for item in run_]

    done = run(main())
    assert len(done) == 100
    assert len(set(done)) == 100


def _fast_backoff() -> Any:
    from parallelize import Backoff  # noqa: PLC0415

    return Backoff(initial=0.005, maximum=0.01)


@pytest.mark.timeout(30)
def test_a_journal_resumes_with_keys(run: Any, tmp_path: Any) -> None:
    path = tmp_path / "keys.db"
    items = [f"{'pq'[i % 2]}:{i}" for i in range(60)]
    calls: collections.Counter[str] = collections.Counter()

    async def act(item: str) -> str:
        calls[item] += 1
        await asyncio.sleep(0.001)
        return item.upper()

    async def first() -> int:
        got = 0
        async with parallelize(
            act, items, 5, journal=SQLiteJournal(path), per_key=PerKey(_key, concurrency=1)
        ) as run_:
            async for _ in run_:
                got += 1
                if got == 20:
                    break
        return got

    async def second() -> list[str]:
        run_ = parallelize(
            act, items, 5, journal=SQLiteJournal(path), per_key=PerKey(_key, concurrency=1)
        )
        return [r async for r in run_]

    assert run(first()) == 20
    results = run(second())
    # The rest: the first 19 were recorded (the 20th is recorded when the consumer
    # asks for the next result, which it never did).
    assert len(results) in {40, 41}
    assert all(calls[item] >= 1 for item in items)
    assert max(calls.values()) <= 2  # in flight at the break: run again


@pytest.mark.timeout(30)
def test_cancelled_with_items_set_aside_ends_promptly(run: Any) -> None:
    """A run stopped with items set aside and actions that swallow cancellation ends."""

    async def act(item: str) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return item  # swallowed
        return item

    async def main() -> Any:
        run_ = parallelize(
            act,
            [f"{k}:{i}" for i in range(50) for k in "ab"],
            10,
            per_key=PerKey(_key, concurrency=2),
            stats=True,
            timeout=None,
        )
        task = asyncio.ensure_future(run_.__aiter__().__anext__())
        await asyncio.sleep(0.05)
        stats = run_.statistics()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await run_.aclose()
        return stats, run_.statistics()

    began = time.monotonic()
    during, after = run(main())
    assert time.monotonic() - began < 5
    assert during.in_flight == 4
    assert during.set_aside > 0
    assert after.finished
    assert after.undone >= during.set_aside


@pytest.mark.timeout(30)
def test_a_key_gets_a_rate_of_its_own_while_the_run_goes_on(run: Any) -> None:
    """``run.keys.set_rate()``: a Crawl-delay learnt from one site slows that site alone."""
    meter = Meter()
    items = [f"{key}:{i}" for i in range(10) for key in "ab"]

    async def main() -> Any:
        run_ = parallelize(meter.action({}), items, 4, per_key=PerKey(_key, concurrency=4))
        assert run_.keys is not None
        run_.keys.set_rate("a", 20)
        with pytest.raises(ValueError, match="rate"):
            run_.keys.set_rate("a", 0)
        async for _ in run_:
            pass
        return run_.keys.statistics()

    stats = run(main())
    a, b = meter.starts["a"], meter.starts["b"]
    assert a[-1] - a[0] >= 9 * 0.05 - 0.003
    assert b[-1] - b[0] < 0.2
    assert stats.keys == 2


class _Fleet:
    """A SharedKeys in memory: at most ``most`` attempts of a key in flight, all runs."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.held: collections.Counter[Any] = collections.Counter()
        self.asked = 0
        self.refused = 0

    async def acquire(self, key: Any) -> float | None:
        self.asked += 1
        await asyncio.sleep(0)  # a round trip
        if self.held[key] >= self.most:
            self.refused += 1
            return 0.005
        self.held[key] += 1
        return None

    def release(self, key: Any, outcome: object) -> None:
        self.held[key] -= 1


@pytest.mark.timeout(30)
def test_shared_limits_hold_a_key_across_runs(run: Any) -> None:
    """Two runs (two processes of a fleet) with per-key 2 each, the fleet's 2 in all."""
    meter = Meter()
    fleet = _Fleet(2)
    polite = PerKey(_key, concurrency=2, shared=fleet)

    async def one(tag: str) -> list[str]:
        items = [f"{key}:{tag}{i}" for i in range(30) for key in "ab"]
        run_ = parallelize(meter.action({"a": 0.01, "b": 0.002}), items, 8, per_key=polite)
        return [item async for item in run_]

    async def main() -> tuple[list[str], list[str]]:
        return await asyncio.gather(one("x"), one("y"))

    first, second = run(main())
    assert len(first) == len(second) == 60
    assert meter.peak == {"a": 2, "b": 2}
    assert fleet.refused > 0
    assert not +fleet.held  # every place given back


def test_shared_must_be_shared_keys() -> None:
    with pytest.raises(TypeError, match="acquire"):
        PerKey(_key, concurrency=2, shared=object())  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_workers_read_on_when_the_set_aside_bound_frees(run: Any) -> None:
    """Workers asleep at the bound wake once it frees: the next keys get every worker."""
    meter = Meter()
    items = [f"slow:{i}" for i in range(12)] + [f"f{i % 8}:{i}" for i in range(400)]

    async def main() -> None:
        run_ = parallelize(
            meter.action({"slow": 0.05, **{f"f{k}": 0.005 for k in range(8)}}),
            items,
            9,
            per_key=PerKey(_key, concurrency=1, set_aside=4),
        )
        async for _ in run_:
            pass

    run(main())
    # The eight fast keys ran side by side once the slow key's backlog was read.
    overlap = 0
    ends = sorted(end for key, each in meter.ends.items() if key != "slow" for end in each)
    starts = sorted(start for key, each in meter.starts.items() if key != "slow" for start in each)
    for start in starts:
        overlap = max(overlap, sum(s <= start for s in starts) - sum(e <= start for e in ends))
    assert overlap >= 6


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 5), min_size=1, max_size=60),
    fails=st.sets(st.integers(0, 59)),
    concurrency=st.sampled_from([None, 1, 2]),
    rate=st.sampled_from([None, 500.0]),
    failures=st.sampled_from([None, 1, 3]),
    ordered=st.booleans(),
    set_aside=st.integers(1, 8),
    numworkers=st.integers(1, 6),
)
def test_every_item_ends_exactly_once(  # noqa: PLR0917 - the drawn settings
    keys: list[int],
    fails: set[int],
    concurrency: int | None,
    rate: float | None,
    failures: int | None,
    ordered: bool,
    set_aside: int,
    numworkers: int,
) -> None:
    """Whatever the limits, retries and breakers: one outcome per item, none lost."""
    if concurrency is None and rate is None and failures is None:
        concurrency = 1
    tried: collections.Counter[int] = collections.Counter()
    in_flight: collections.Counter[int] = collections.Counter()
    peak: collections.Counter[int] = collections.Counter()

    async def act(index: int, key: int) -> int:
        tried[index] += 1
        in_flight[key] += 1
        peak[key] = max(peak[key], in_flight[key])
        try:
            await asyncio.sleep(0)
            if index in fails and tried[index] == 1:
                raise ConnectionResetError(f"{index} fails once")
            return index
        finally:
            in_flight[key] -= 1

    async def main() -> list[Any]:
        run_ = parallelize(
            act,
            [(index, key) for index, key in enumerate(keys)],
            numworkers,
            ordered=ordered,
            on_error="yield",
            retry=Retry(on=ConnectionError, attempts=2, backoff=_fast_backoff()),
            per_key=PerKey(
                lambda item: item[1],
                concurrency=concurrency,
                rate=rate,
                failures=failures,
                cooldown=0.01,
                set_aside=set_aside,
            ),
        )
        return [o async for o in run_]

    outcomes = asyncio.run(main())
    ended = sorted(o.item[0] if isinstance(o, Failure) else o for o in outcomes)
    assert ended == list(range(len(keys)))
    if ordered:
        assert [o.item[0] if isinstance(o, Failure) else o for o in outcomes] == ended
    if concurrency is not None:
        assert max(peak.values(), default=0) <= concurrency
    for outcome in outcomes:
        if isinstance(outcome, Failure):
            assert isinstance(outcome.exception, KeyDownError | ConnectionError)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "limits",
    [{"rate": 10.0}, {"failures": 5}, {"concurrency": 1}],
    ids=["rate", "breaker", "concurrency"],
)
def test_idle_keys_are_forgotten_past_the_bound(run: Any, limits: dict[str, Any]) -> None:
    """20,000 keys, keys=100: the state kept stays at 100, whatever the limits."""

    async def act(item: int) -> int:
        if "failures" in limits:
            raise ConnectionRefusedError(item)
        return item

    async def main() -> int:
        run_ = parallelize(
            act,
            range(20_000),
            100,
            on_error="yield",
            per_key=PerKey(lambda i: i, keys=100, **limits),
        )
        async for _ in run_:
            pass
        assert run_.keys is not None
        return run_.keys.statistics().keys

    assert run(main()) <= 100
