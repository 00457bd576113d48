"""AdaptiveLimit: the limit's arithmetic without a loop, then the gate inside real runs."""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallelize import (
    AdaptiveLimit,
    Backoff,
    RateLimit,
    Retry,
    overload_of,
    parallelize,
)
from parallelize._limits._estimator import Estimator as _Estimator
from spies import InFlightSpy

# -- the arithmetic, fed by a model service ------------------------------------------


def estimator(
    *, low: int = 1, high: float = 1000, initial: int = 4, probe_interval: float = 1e9
) -> _Estimator:
    return _Estimator(
        low=low,
        high=high,
        initial=initial,
        tolerance=1.5,
        backoff=0.7,
        probe_interval=probe_interval,
        now=0.0,
    )


@dataclasses.dataclass
class ModelService:
    """A service that serves ``k`` calls at once in ``s`` seconds and queues the rest.

    By Little's law its latency at ``n`` calls in flight is ``s * max(1, n / k)``.
    ``feed`` runs one round trip: the limit's worth of calls start together, then
    all of them finish.
    """

    k: float
    s: float = 0.02
    seq: int = 0
    now: float = 0.0

    def feed(self, e: _Estimator, running: int | None = None) -> None:
        n = e.gate if running is None else min(running, e.gate)
        first = self.seq
        self.seq += n
        for _ in range(n):
            e.started(n)
        rtt = self.s * max(1.0, n / self.k)
        self.now += rtt
        for seq in range(first, first + n):
            e.sample(seq, rtt, self.seq, self.now)

    def settle(self, e: _Estimator, trips: int) -> list[int]:
        limits = []
        for _ in range(trips):
            self.feed(e)
            limits.append(e.gate)
        return limits


def test_the_limit_doubles_from_the_start_then_settles_at_the_tolerated_latency() -> None:
    """Flat latency doubles the limit per round trip; past capacity it settles near 1.5 K."""
    e = estimator()
    limits = ModelService(k=64).settle(e, 40)
    assert limits[:5] == [8, 16, 32, 64, 128]
    assert e.phase.value == "steady"
    assert 0.85 * 96 <= limits[-1] <= 1.15 * 96
    assert e.min_rtt == pytest.approx(0.02)


def test_the_limit_follows_the_capacity_down_and_back_up() -> None:
    """When the capacity drops to a quarter and comes back, the limit follows both ways."""
    e = estimator()
    service = ModelService(k=64)
    service.settle(e, 40)
    service.k = 16
    down = service.settle(e, 10)
    assert 16 <= down[-1] <= 32
    assert down.index(next(x for x in down if x <= 32)) <= 4  # within five round trips
    service.k = 64
    up = service.settle(e, 40)
    assert 64 <= up[-1] <= 128


def test_the_limit_grows_to_its_maximum_while_the_latency_stays_flat() -> None:
    """A service that never slows down gets the maximum, and no more."""
    e = estimator(high=300)
    limits = ModelService(k=10**9).settle(e, 30)
    assert max(limits) == limits[-1] == 300


def test_a_limit_the_run_does_not_fill_does_not_grow() -> None:
    """With only 3 calls available at a time, a limit of 8 stays 8 however flat it is."""
    e = estimator(initial=8)
    service = ModelService(k=10**9)
    for _ in range(20):
        service.feed(e, running=3)
    assert e.gate == 8


def test_overload_cuts_the_limit_once_for_the_calls_already_in_flight() -> None:
    """Fifty 503s from calls started before the cut are one signal; a later one is another."""
    e = estimator(initial=100)
    for seq in range(50):
        e.overload(seq, next_seq=100)
    assert e.gate == 70
    assert (e.overloads, e.decreases) == (50, 1)
    e.overload(100, next_seq=150)  # a call started after the cut
    assert e.gate == 49
    assert e.decreases == 2


def test_overload_never_takes_the_limit_below_its_minimum() -> None:
    """However many overloads, min_limit calls stay allowed."""
    e = estimator(low=3, initial=50)
    for seq in range(100):
        e.overload(seq, next_seq=seq + 1)
    assert e.gate == 3


def test_the_no_load_latency_is_measured_again_under_the_capacity() -> None:
    """After probe_interval, a round under K (not near the floor) re-measures min_rtt."""
    e = estimator(initial=64, probe_interval=1.0)
    service = ModelService(k=64, s=0.02)
    while e.phase.value != "probe":
        service.feed(e)
    assert service.now >= 1.0
    assert e.probes == 1
    assert 32 <= e.gate <= 64  # the service stays at least half busy
    saved = e.saved_limit
    service.s = 0.05  # the service got slower meanwhile
    while e.phase.value == "probe":
        service.feed(e)
    assert e.min_rtt == pytest.approx(0.05)
    assert e.limit == saved


def test_a_probe_ends_even_if_its_calls_fail_without_a_latency() -> None:
    """Calls of a probe that raise (a 404, a bug) are skipped, not waited for."""
    e = estimator(initial=64, probe_interval=1.0)
    service = ModelService(k=64, s=0.02)
    while e.phase.value != "probe":
        service.feed(e)
    before = e.min_rtt
    for seq in range(service.seq, service.seq + e.gate):
        e.skip(seq, service.seq + e.gate, service.now)
    assert e.phase.value == "steady"
    assert e.min_rtt == before
    e.skip(0, service.seq, service.now)  # outside a probe: nothing to do
    assert e.phase.value == "steady"


def test_a_minimum_latency_dragged_down_by_fast_errors_heals_above_the_floor() -> None:
    """Unrecognised fast 503s set min_rtt far too low; it is measured again before the floor."""
    e = estimator(initial=64)
    service = ModelService(k=64, s=0.02)
    service.settle(e, 10)
    e.min_rtt = 0.002  # what 503s answered in 2 ms, counted as answers, would leave
    limits = service.settle(e, 30)
    # The latency does not follow the limit down: no queue of ours, so it is the
    # service's own latency, measured again at once (it used to fall to 3 first).
    assert min(limits) >= 8
    assert limits[-1] >= 64
    assert e.min_rtt == pytest.approx(0.02)


# -- the arithmetic against a simulated service, on a virtual clock ------------------


class SimulatedService:
    """A FIFO service of ``k`` servers taking ``s`` seconds per call, driven by the limit.

    A discrete-event simulation on a virtual clock (no loop, no sleeping): calls
    start whenever the limit has room, as :class:`AdaptiveLimit` admits them, wait
    in line when all ``k`` servers are busy, and report their latency to the
    estimator when they end. ``s`` may change between ``run`` calls; ``latency``, if
    given, is the service time of each call by its number instead (the items' own).
    """

    def __init__(
        self,
        e: _Estimator,
        k: int,
        s: float,
        latency: Callable[[int], float] | None = None,
        *,
        pauses: Sequence[tuple[float, float]] = (),
        connect: float = 0.0,
    ) -> None:
        self.e = e
        self.k = k
        self.s = s
        self.latency = latency
        # The client's own noise: calls that end in a pause of its loop, (start,
        # length) in time order, are seen at its end; a call that runs more calls
        # at once than ever before opens a connection, ``connect`` seconds more.
        self.pauses = pauses
        self.connect = connect
        self.most = 0
        self.extra: dict[int, float] = {}
        self.now = 0.0
        self.in_flight = 0
        self.next_seq = 0
        self.busy = 0
        self.line: deque[tuple[int, float]] = deque()  # (seq, started) waiting
        self.ends: list[tuple[float, int, float]] = []  # heap of (end, seq, started)
        self.served: list[tuple[float, float]] = []  # (service began, ended)

    def _serve(self, seq: int, started: float) -> None:
        self.busy += 1
        s = self.s if self.latency is None else self.latency(seq)
        s += self.extra.pop(seq, 0.0)
        self.served.append((self.now, self.now + s))
        heapq.heappush(self.ends, (self.now + s, seq, started))

    def _admit(self) -> None:
        while self.in_flight < self.e.gate:
            self.in_flight += 1
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            if self.in_flight > self.most:
                self.most = self.in_flight
                self.extra[seq] = self.connect
            self.e.started(self.in_flight)
            if self.busy < self.k:
                self._serve(seq, self.now)
            else:
                self.line.append((seq, self.now))

    def run(self, until: float) -> None:
        self._admit()
        while self.ends and self.ends[0][0] <= until:
            end, seq, started = heapq.heappop(self.ends)
            self.now = max(self.now, self._seen(end))
            self.busy -= 1
            if self.line:
                self._serve(*self.line.popleft())
            self.in_flight -= 1
            self.e.sample(seq, self.now - started, self.next_seq, self.now)
            self._admit()
        self.now = max(self.now, until)

    def _seen(self, end: float) -> float:
        for start, length in self.pauses:
            if start <= end < start + length:
                return start + length
            if start > end:
                break
        return end

    def goodput(self, start: float, end: float, window: float = 0.5) -> list[float]:
        """Work served in each window, as a share of what k servers can serve.

        Counted in service time rather than in calls ended, which come in bursts
        of k with a fixed service time and would alias with the windows.
        """
        shares = []
        for i in range(round((end - start) / window)):
            a = start + i * window
            b = a + window
            work = sum(max(0.0, min(f, b) - max(s, a)) for s, f in self.served if f > a)
            shares.append(work / (self.k * window))
        return shares


def test_re_measuring_the_no_load_latency_costs_no_visible_goodput() -> None:
    """K = 64 at 50 ms for 40 s with a probe every 5 s: no 0.5 s window under 90%, cost < 1%."""
    e = estimator(probe_interval=5.0)
    service = SimulatedService(e, k=64, s=0.05)
    service.run(40.0)
    shares = service.goodput(5.0, 40.0)  # the start is over by 5 s
    assert e.probes >= 6  # still measured again at every interval
    assert min(shares) >= 0.9, [round(x, 2) for x in shares]
    assert sum(shares) / len(shares) >= 0.99
    assert 64 <= e.gate <= 128
    assert e.min_rtt == pytest.approx(0.05)


@pytest.mark.parametrize("at", [8.0, 9.5, 10.0])
@pytest.mark.parametrize("new_s", [0.125, 0.02])
def test_the_no_load_latency_follows_a_service_that_got_slower_or_faster(
    new_s: float, at: float
) -> None:
    """The service's own latency moves for good from 50 ms: min_rtt follows within 2 s.

    Slower: the limit falls without the latency following it, which tells a slower
    service from a queue. Faster: a round faster than min_rtt calls for a probe,
    and a probe that moved min_rtt from the one the limit was set under (not from
    that round's) is checked by a second. Either way the service is busy again (and
    not overloaded) within 3 s, wherever the change falls in the limit's cycle.
    """
    e = estimator(probe_interval=30.0)  # the periodic probe is not what does it
    service = SimulatedService(e, k=64, s=0.05)
    service.run(at)
    service.s = new_s
    service.run(at + 2)
    assert e.min_rtt == pytest.approx(new_s, rel=0.1)
    service.run(at + 10)
    assert e.min_rtt == pytest.approx(new_s, rel=0.1)
    assert min(service.goodput(at + 3, at + 10)) >= 0.9
    assert 64 <= e.gate <= 128  # the 2 K where a service starts refusing


def rising(n: int) -> Callable[[int], float]:
    """Item i takes 10 + 40 i / n ms: latency that follows the input order (issue 25)."""
    return lambda i: (10 + min(i, n - 1) * 40 // n) / 1000


def test_latency_rising_with_the_input_is_not_taken_for_a_queue() -> None:
    """No capacity, 10 -> 49 ms down 5,000 items, at most 50: within 90% of a fixed 50."""
    e = estimator(high=50)
    service = SimulatedService(e, k=10**9, s=0.0, latency=rising(5000))
    fixed = sum(10 + i * 40 // 5000 for i in range(5000)) / 1000 / 50  # 2.95 s at 50
    service.run(fixed / 0.9)
    assert len(service.served) >= 5000 + 50  # every item ended (and the next 50 began)
    assert e.decreases == 0


def test_latency_rising_with_the_input_after_a_queue_was_seen_once_is_not_taken_for_one() -> None:
    """One 503 early, then no capacity and 10 -> 49 ms down 5,000 items: the limit comes back.

    The 503 says the service has a capacity, so the latency's rise is trusted as a
    queue's and the limit falls; once it has halved with the latency staying up,
    the fall is undone (it used to crawl back up from a probe: 60% of the items
    ended in the time a fixed 200 needs / 0.9, mean limit 60).
    """
    e = estimator(high=200)
    service = SimulatedService(e, k=10**9, s=0.0, latency=rising(5000))
    service.run(0.2)
    e.overload(service.next_seq - 1, service.next_seq)
    fixed = sum(10 + i * 40 // 5000 for i in range(5000)) / 1000 / 200  # 0.74 s at 200
    limits = []
    for step in range(1, round((fixed / 0.9 - 0.2) / 0.05) + 1):
        service.run(0.2 + step * 0.05)
        limits.append(e.gate)
    assert sum(limits) / len(limits) >= 100, limits
    assert sum(end <= service.now for _, end in service.served) >= 0.7 * 5000


class _Fixed:
    """An estimator that holds ``gate``: a fixed limit, for the same service to compare."""

    def __init__(self, gate: int) -> None:
        self.gate = gate

    def started(self, running: int) -> None:
        pass

    def sample(self, seq: int, rtt: float, next_seq: int, now: float) -> None:
        pass


def _time_to_end(service: SimulatedService, n: int) -> float:
    """Run ``service`` in 50 ms steps until its first ``n`` calls ended; return when."""
    t = 0.0
    while sum(end <= service.now for _, end in service.served) < n:
        t += 0.05
        service.run(t)
    return t


@pytest.mark.parametrize("seed", range(4))
def test_the_clients_own_noise_does_not_pass_for_a_queue(seed: int) -> None:
    """No capacity, 10 -> 49 ms down 30,000 items at most 200, with the client's noise.

    A pause of 30 ms of the client's loop every 0.5 s on average (the calls that
    end in it are seen at its end) and 8 ms more for each new connection: the run
    still takes at most 1 / 0.9 of a fixed 200's time on the same service. One
    slow round used to start a test judged against it, and the first round at a
    doubled limit (all new connections) to end the start as a queue would: 74-86%
    of fixed 200 on the real benchmark, 79-92% here.
    """
    n = 30_000
    draws = random.Random(seed)
    pauses, t = [], 0.0
    while t < 20.0:
        t += draws.expovariate(2.0)
        pauses.append((t, 0.030))

    def service(e: Any) -> SimulatedService:
        return SimulatedService(e, k=10**9, s=0.0, latency=rising(n), pauses=pauses, connect=0.008)

    fixed = _time_to_end(service(_Fixed(200)), n)
    e = estimator(high=200)
    adaptive = _time_to_end(service(e), n)
    assert fixed / adaptive >= 0.9, (fixed, adaptive, e.gate)
    assert e.decreases == 0


def test_latency_that_varies_randomly_by_item_is_not_taken_for_a_queue() -> None:
    """No capacity, 10-49 ms at random per item, at most 200: the limit stays near 200."""
    draws = random.Random(25)
    times = [draws.uniform(0.010, 0.049) for _ in range(10**5)]
    e = estimator(high=200, initial=200)
    e.min_rtt = 0.012  # a baseline from a few lucky calls (the start's small rounds)
    service = SimulatedService(e, k=10**9, s=0.0, latency=times.__getitem__)
    service.run(3.0)
    assert e.gate >= 180
    assert len(service.served) >= 0.9 * 3.0 * 200 / 0.0295


@pytest.mark.parametrize("kind", ["rising", "random"])
def test_a_real_queue_under_latency_that_varies_by_item_still_stops_the_limit(kind: str) -> None:
    """64 servers, each item 10-49 ms: the limit still settles in [K, 2K], never at the max."""
    draws = random.Random(25)
    times = [draws.uniform(0.010, 0.049) for _ in range(10**6)]
    latency = rising(200_000) if kind == "rising" else times.__getitem__
    e = estimator(high=1000)
    service = SimulatedService(e, k=64, s=0.0, latency=latency)
    limits = []
    for step in range(1, 101):
        service.run(step * 0.1)
        limits.append(e.gate)
    settled = limits[20:]
    assert max(settled) <= 128
    assert sum(64 <= x <= 128 for x in settled) >= 0.8 * len(settled), settled


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(1, 10),
    span=st.integers(0, 200),
    events=st.lists(
        st.tuples(
            st.sampled_from(["sample", "overload", "skip"]),
            st.floats(0.001, 1.0),
            st.integers(1, 300),
        ),
        max_size=300,
    ),
)
def test_the_limit_stays_within_its_bounds(
    low: int, span: int, events: list[tuple[str, float, int]]
) -> None:
    """Whatever the samples, overloads and failed calls, min_limit <= limit <= max_limit."""
    high = low + span
    e = estimator(low=low, high=high, probe_interval=0.5)
    now = 0.0
    for seq, (kind, rtt, running) in enumerate(events):
        now += rtt / 10
        e.started(running)
        if kind == "overload":
            e.overload(seq, seq + 1)
        elif kind == "skip":
            e.skip(seq, seq + 1, now)
        else:
            e.sample(seq, rtt, seq + 1, now)
        assert low <= e.gate <= high


# -- what counts as overload ------------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: int


def test_overload_of_knows_timeouts_connection_errors_and_busy_statuses() -> None:
    """Timeouts, refused/reset connections and 429/503/504, from aiohttp and httpx alike."""
    request = httpx.Request("GET", "http://127.0.0.1/")
    busy = httpx.Response(503, request=request)
    overloads: list[object] = [
        TimeoutError(),
        ConnectionResetError(),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ServerTimeoutError(),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.PoolTimeout("busy"),
        httpx.RemoteProtocolError("closed"),
        httpx.HTTPStatusError("busy", request=request, response=busy),
        busy,
        Response(429),
        Response(504),
    ]
    fine: list[object] = [
        ValueError("bug"),
        httpx.Response(404, request=request),
        Response(200),
        Response(500),
        503,  # a plain number is not a response
        None,
    ]
    assert [overload_of(x) for x in overloads] == [True] * len(overloads)
    assert [overload_of(x) for x in fine] == [False] * len(fine)


# -- the gate, inside real runs --------------------------------------------------------


class Service:
    """An action whose calls answer 503 when ``busy`` says so, after a short sleep.

    It records, at every call's start, how many calls were running and the limit.
    """

    def __init__(self, limit: AdaptiveLimit, busy: Any = lambda _item: False) -> None:
        self.limit = limit
        self.busy = busy
        self.running = 0
        self.starts: list[tuple[int, int]] = []
        self.calls: list[Any] = []

    async def __call__(self, item: Any) -> Response:
        self.calls.append(item)
        self.running += 1
        self.starts.append((self.running, self.limit.limit))
        try:
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            self.running -= 1
        return Response(503 if self.busy(item) else 200)


def test_true_means_the_defaults_capped_at_numworkers(run: Any) -> None:
    """adaptive=True adapts between 1 and numworkers: a flat service gets numworkers."""
    spy = InFlightSpy()

    run_ = parallelize(spy, range(2000), 16, adaptive=True)

    async def main() -> list[int]:
        return [x async for x in run_]

    assert sorted(run(main())) == list(range(2000))
    assert spy.peak == 16
    assert run_.adaptive is not None
    assert 1 <= run_.adaptive.limit <= 16  # a no-op's latency is all noise
    assert parallelize(spy, [], 1).adaptive is None


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    numworkers=st.integers(1, 40),
    max_limit=st.integers(1, 40),
    ordered=st.booleans(),
)
def test_calls_never_exceed_the_limit_and_every_item_ends_once(
    run: Any, seed: int, numworkers: int, max_limit: int, ordered: bool
) -> None:
    """With random overloads moving the limit, no call starts above it; one outcome per item."""
    draws = random.Random(seed)
    busy = {i for i in range(300) if draws.random() < 0.2}
    max_limit = min(max_limit, numworkers)
    limit = AdaptiveLimit(max_limit=max_limit)
    service = Service(limit, busy.__contains__)

    async def main() -> list[Response]:
        run_ = parallelize(service, range(300), numworkers, adaptive=limit, ordered=ordered)
        return [r async for r in run_]

    results = run(main())
    assert len(results) == 300
    assert sorted(service.calls) == list(range(300))
    assert all(running <= allowed <= max_limit for running, allowed in service.starts)
    assert limit.statistics().in_flight == 0


def test_after_a_cut_no_new_call_starts_above_the_new_limit(run: Any) -> None:
    """Ten calls at once answer 503: the limit drops to 7 (once) and new calls respect it."""
    limit = AdaptiveLimit(initial=10, max_limit=10)
    first_ten = asyncio.Event()
    service = Service(limit, lambda item: item < 10)

    async def action(item: int) -> Response:
        if item < 10:
            if item == 9:
                first_ten.set()
            await first_ten.wait()
        return await service(item)

    async def main() -> int:
        return len([r async for r in parallelize(action, range(100), 10, adaptive=limit)])

    assert run(main()) == 100
    assert max(running for running, _ in service.starts[:10]) == 10
    after = service.starts[10:]
    assert {allowed for _, allowed in after[:4]} == {7}
    assert all(running <= allowed for running, allowed in after)


def test_the_minimum_stays_in_flight_when_everything_is_overloaded(run: Any) -> None:
    """Every call answering 503 drives the limit to min_limit, never to zero: no stall."""
    limit = AdaptiveLimit(min_limit=3, initial=20)
    service = Service(limit, lambda _item: True)

    async def main() -> int:
        return len([r async for r in parallelize(service, range(500), 20, adaptive=limit)])

    assert run(main()) == 500
    assert limit.limit == 3
    assert max(running for running, _ in service.starts[-100:]) == 3


def test_overloads_retried_with_backoff_and_a_rate_limit_all_end_in_order(run: Any) -> None:
    """Adaptive, retry on the 503 result, a rate limit and ordered=True compose."""
    limit = AdaptiveLimit()
    seen: dict[int, int] = {}

    def busy(item: int) -> bool:
        seen[item] = seen.get(item, 0) + 1
        return item % 3 == 0 and seen[item] == 1  # every third item: one 503 first

    service = Service(limit, busy)
    retry: Retry[Response] = Retry(
        on=TimeoutError,
        attempts=3,
        backoff=Backoff(0.001),
        if_result=lambda r: r.status == 503,
    )

    async def main() -> list[int]:
        run_ = parallelize(
            service,
            range(200),
            20,
            adaptive=limit,
            retry=retry,
            rate_limit=RateLimit(5000, burst=50),
            ordered=True,
        )
        return [r.status async for r in run_]

    assert run(main()) == [200] * 200
    assert sorted(seen) == list(range(200))
    assert limit.statistics().overloads == 67


def test_one_limit_shared_by_two_runs_bounds_both_together(run: Any) -> None:
    """Two runs through one AdaptiveLimit never have more calls running than its limit."""
    limit = AdaptiveLimit(max_limit=6)
    service = Service(limit)

    async def one(items: range) -> int:
        return len([r async for r in parallelize(service, items, 10, adaptive=limit)])

    async def main() -> list[int]:
        return list(await asyncio.gather(one(range(300)), one(range(300, 600))))

    assert run(main()) == [300, 300]
    assert max(running for running, _ in service.starts) <= 6
    assert limit.statistics().in_flight == 0


def test_leaving_early_gives_every_place_back(run: Any) -> None:
    """A break while calls run and others wait for a place leaves the limit empty."""
    limit = AdaptiveLimit(initial=4, max_limit=4)
    spy = InFlightSpy(gated=True)

    async def open_gate() -> None:
        await spy.wait_for_calls(4)  # four running, forty-six waiting for a place
        spy.gate.set()

    async def main() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(open_gate())
            async with parallelize(spy, range(100), 50, adaptive=limit) as results:
                async for _ in results:
                    break
        assert limit.statistics().in_flight == 0

    run(main())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"adaptive": AdaptiveLimit(min_limit=20)},
            (
                r"^AdaptiveLimit.min_limit \(20\) is above numworkers \(10\): a run never "
                r"has more than numworkers actions in flight; raise numworkers or lower min_limit$"
            ),
        ),
        (
            {"adaptive": AdaptiveLimit(max_limit=11)},
            r"^AdaptiveLimit.max_limit \(11\) is above numworkers \(10\)",
        ),
    ],
)
def test_bounds_above_numworkers_are_refused(options: dict[str, Any], message: str) -> None:
    """An AdaptiveLimit that could never be reached says which bound to change."""
    with pytest.raises(ValueError, match=message):
        parallelize(InFlightSpy(), range(3), 10, **options)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"min_limit": 0}, ValueError, r"^min_limit must be >= 1, got 0$"),
        ({"max_limit": 2, "min_limit": 3}, ValueError, r"^max_limit \(2\) must be >= min_limit"),
        ({"tolerance": 1.0}, ValueError, r"^tolerance must be > 1, got 1.0$"),
        ({"tolerance": float("inf")}, ValueError, r"^tolerance must be > 1, got inf$"),
        ({"backoff": 1}, ValueError, r"^backoff must be between 0 and 1 \(exclusive\), got 1$"),
        ({"probe_interval": 0}, ValueError, r"^probe_interval must be > 0 seconds, got 0$"),
        ({"initial": 2.5}, TypeError, r"^initial must be an int >= 1, got 2.5$"),
        ({"overload": 503}, TypeError, r"^overload must be a function of an outcome"),
    ],
)
def test_bad_settings_are_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each setting is checked on construction, naming it and the value."""
    with pytest.raises(error, match=message):
        AdaptiveLimit(**kwargs)


def test_adaptive_must_be_a_bool_or_a_limit() -> None:
    """adaptive='yes' is a TypeError that shows the right spellings."""
    with pytest.raises(TypeError, match=r"^adaptive must be True, False or an AdaptiveLimit"):
        parallelize(InFlightSpy(), range(3), 10, adaptive="yes")  # type: ignore[call-overload]
