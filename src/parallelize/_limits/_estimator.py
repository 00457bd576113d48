"""The adaptive limit's arithmetic: find and track how many calls at once a service can take.

The algorithm (``docs/adaptive.md`` tells the story and the measurements) works in
*rounds* of about one round-trip time, like TCP congestion control, and watches two
signals:

* **Latency against the no-load latency** (Vegas, Netflix's Gradient2, Envoy's
  adaptive concurrency filter). ``min_rtt`` is the mean latency of calls that met
  no queue (in the start, and at every probe below); each round compares its own
  mean latency ``rtt`` with it. By Little's law a service that queues what it
  cannot serve has ``rtt / min_rtt`` close to ``limit / capacity`` once the limit
  passes its capacity, so the limit that puts the latency at ``tolerance *
  min_rtt`` is ``limit * tolerance * min_rtt / rtt``: the limit moves towards it:
  down by half the way in one round, up by at most ``sqrt(limit)`` (after a start
  that doubles it per round, TCP's slow start, until the latency rises). It grows
  only while the run really uses it (Gradient2's rule against growing an idle
  limit without bound). A latency over the tolerance counts as a queue only once
  it was seen to *follow the limit*: it rose with a step of the start, or fell
  with a test cut to half the limit (a queue's latency is proportional to the
  calls in flight; latency that the items bring, a mix of fast and slow calls or
  calls that get slower down the input, does not care). A test the latency
  ignores is undone at once, and that round's latency is the new baseline; so
  is a fall of the limit by half that the latency ignores, after which a rise
  over the tolerance is tested again (the queue seen before, a 503 or the
  client's own loop, is not what raises the latency now).
* **Overload** (loss, in TCP terms): a timeout, a connection error, a 429/503/504, or
  whatever the user's ``overload`` predicate says. The limit is cut by ``backoff`` at
  once, and only once for all the calls that were already in flight then (TCP
  NewReno's recovery point): a burst of 503s is one signal, not a hundred.

The no-load latency cannot be seen under load (every call waits in the same queue),
and a baseline measured once goes stale when the service itself gets slower or
faster. So every ``probe_interval`` seconds the limit *probes*: it drops for a few
calls to three quarters of the service's capacity, estimated by Little's law as
``limit * min_rtt / rtt``, where the service's queue empties while the service stays
nearly busy, and the mean latency of those calls is the new ``min_rtt`` (BBRv2's
ProbeRTT at half the bandwidth-delay product; Envoy's filter and BBRv1 drop to a
handful of calls instead, which halved the goodput for a quarter of a second). A
probe also comes at once, without waiting for the interval, when a round is faster
than ``min_rtt``: the service got faster, and the round still holds our queue. A
service (or items) that got slower needs no probe: the limit falls by half without
the latency following it (a queue's latency falls with the limit, Little's law),
and that round, with no queue of ours left, measured the new baseline.
Netflix's Gradient2 does without a baseline: it compares the latest latency with a
long-term average of it, which under sustained load becomes the loaded latency, so
the queue it keeps grows with the load (it decays the average only once it is twice
the latest latency). Simulated against 64 servers of 50 ms with a probe every 5 s,
a probe costs 0.3% of the goodput and at most 5% of any half second, where the
drop to three calls cost 4.4% and 45%.

:class:`Estimator` is that arithmetic, pure: samples in, limit out, time passed in
by the caller; :class:`~parallelize.AdaptiveLimit` is the async gate around it
that the workers go through (``_adaptive.py``).
"""

from __future__ import annotations

import enum
import math
from typing import final

__all__ = ("Estimator",)


class _Phase(enum.Enum):
    START = "start"  # double per round until the latency rises or overload
    STEADY = "steady"  # track tolerance * min_rtt
    PROBE = "probe"  # a few calls under the service's capacity, to measure min_rtt again


# A round at this many calls or fewer measures the no-load latency by itself.
_PROBE_LIMIT = 3
# A probe runs this share of the service's estimated capacity (BBRv2's ProbeRTT at
# half the bandwidth-delay product rather than BBRv1's four packets). Under 1 so
# that a min_rtt measured too high (a probe that still met a queue, a latency that
# grows smoothly with load) comes out lower at the next probe instead of ratcheting
# the limit up; near 1 so that the service stays nearly busy meanwhile.
_PROBE_GAIN = 0.75
# Calls whose mean latency makes a probe's measurement, at least.
_PROBE_CALLS = 10
# Rounds after a probe before a change of the latency may ask for another, so that
# a noisy service cannot keep the limit in probes.
_PROBE_GAP = 4
# A probe that moves min_rtt by more than this factor either way is checked by a
# second one: it ran at a level derived from the old min_rtt.
_PROBE_CHANGE = 1.2
# Samples that make a round at least.
_MIN_ROUND = 4
# A rise of the limit by this factor or more from one round to the next is a step
# whose effect on the latency tells a queue from latency that the items bring.
_STEP = 1.5


@final
class Estimator:
    """The limit's arithmetic: feed it samples, read ``limit``. No I/O, no clock.

    Each sample carries the sequence number of its call (calls are numbered as they
    take a place), so that samples of calls started before a change of the limit
    (which measure the old limit) are told apart from those after it.
    """

    __slots__ = (
        "backoff",
        "decline_limit",
        "decline_rtt",
        "decreases",
        "high",
        "last_limit",
        "last_rtt",
        "limit",
        "low",
        "min_rtt",
        "next_probe",
        "overloads",
        "phase",
        "probe_again",
        "probe_end",
        "probe_from",
        "probe_interval",
        "probe_seen",
        "probes",
        "queue_seen",
        "recovery_seq",
        "round_limit",
        "round_n",
        "round_peak",
        "round_start",
        "round_sum",
        "rounds",
        "rtt",
        "samples",
        "saved_limit",
        "start_held",
        "test_limit",
        "test_rtt",
        "tolerance",
    )

    def __init__(
        self,
        *,
        low: int,
        high: float,
        initial: int,
        tolerance: float,
        backoff: float,
        probe_interval: float,
        now: float,
    ) -> None:
        self.low = low
        self.high = high
        self.tolerance = tolerance
        self.backoff = backoff
        self.probe_interval = probe_interval
        self.limit = float(min(high, max(low, initial)))
        self.phase = _Phase.START
        self.min_rtt: float | None = None
        self.rtt: float | None = None
        self.next_probe = now + probe_interval
        self.probe_end = 0  # a probe measures the calls numbered below this
        self.probe_again = False  # the last probe asked for a second one
        self.probe_seen = 0  # calls of the probe that ended
        # The min_rtt the limit was set under, for the next probe to compare with.
        self.probe_from: float | None = None
        self.saved_limit = self.limit
        self.recovery_seq = 0  # overload of calls numbered below this is already handled
        self.round_start = 0  # samples of calls numbered below this are stale
        self.round_limit = self.gate  # the limit the current round measures
        self.round_n = 0
        self.round_sum = 0.0
        self.round_peak = 0
        self.rounds = 0  # rounds since the last probe
        # Where the limit's latest fall began (0: it is not falling), to tell a
        # queue (latency that follows the limit down) from a service that got
        # slower (latency that does not).
        self.decline_limit = 0
        self.decline_rtt = 0.0
        # The previous round's limit and latency, to see whether a step of the limit
        # moved the latency with it.
        self.last_limit = 0
        self.last_rtt = 0.0
        # Whether the latency was seen to follow the limit (a queue of ours): until
        # then a latency over the tolerance may be the items' own (a mix of slow and
        # fast calls, or calls that get slower down the input), and the first cut it
        # asks for is a test (below) rather than a step towards the floor.
        self.queue_seen = False
        # The start held its limit for a round, to judge its last step by the
        # next one (below).
        self.start_held = False
        # A test cut under way: the limit before it (0: none) and the latency then.
        self.test_limit = 0.0
        self.test_rtt = 0.0
        self.samples = 0
        self.overloads = 0
        self.decreases = 0
        self.probes = 0

    @property
    def gate(self) -> int:
        """The limit as a whole number of calls."""
        return max(self.low, int(self.limit))

    def _new_round(self, next_seq: int) -> None:
        self.rounds += 1
        self.round_start = next_seq
        self.round_limit = self.gate
        self.round_n = 0
        self.round_sum = 0.0
        self.round_peak = 0

    def overload(self, seq: int, next_seq: int) -> None:
        """Record that call ``seq`` met overload (``next_seq`` numbers the next call)."""
        self.overloads += 1
        if seq < self.recovery_seq:
            return  # started before the last cut: part of the same signal
        self.recovery_seq = next_seq
        self.decreases += 1
        if self.phase is _Phase.PROBE:  # give up the probe: cut the limit it saved
            self.limit = self.saved_limit
        self.limit = max(float(self.low), self.limit * self.backoff)
        self.phase = _Phase.STEADY
        self.decline_limit = 0  # a cut for overload says nothing about the latency
        self.test_limit = 0.0
        # A service that refuses has a capacity: past it, its latency is queueing.
        self.queue_seen = True
        self._new_round(next_seq)

    def started(self, running: int) -> None:
        """Record that a call started with ``running`` calls (itself included) running."""
        self.round_peak = max(self.round_peak, running)

    def sample(self, seq: int, rtt: float, next_seq: int, now: float) -> None:
        """Record that call ``seq`` succeeded in ``rtt`` seconds."""
        if seq < self.round_start:
            return  # it measured an older limit
        self.samples += 1
        if self.phase is _Phase.PROBE:
            if seq < self.probe_end:
                self._probe_done(rtt, next_seq, now)
            return
        self.round_n += 1
        self.round_sum += rtt
        if self.round_n < max(_MIN_ROUND, self.gate):
            return
        self._end_round(next_seq, now)

    def skip(self, seq: int, next_seq: int, now: float) -> None:
        """Record that call ``seq`` ended with no latency to learn from (an error)."""
        if self.phase is _Phase.PROBE and self.round_start <= seq < self.probe_end:
            self._probe_done(None, next_seq, now)

    def _update_min_rtt(self, rtt: float, now: float) -> float:
        """Take a round's latency into ``min_rtt``; return the round's ``rtt / min_rtt``."""
        old = self.min_rtt
        if old is None or rtt < old or self.round_peak <= _PROBE_LIMIT:
            # A round at a probe's concurrency is a probe: its latency *is* the
            # no-load latency, even above the old minimum. This also heals a minimum
            # dragged down by fast answers the overload predicate did not recognise
            # (a 503 returned as a bare int).
            if self.phase is _Phase.STEADY and old is not None and rtt * _PROBE_CHANGE < old:
                # The service got faster: this round's latency still holds our
                # queue, so measure the new no-load latency without one. The
                # limit (and so the probe's level) was set under the old minimum.
                self.next_probe = now
                if self.probe_from is None:
                    self.probe_from = old
            self.min_rtt = old = rtt
        return rtt / old if old > 0 else 1.0

    def _end_round(self, next_seq: int, now: float) -> None:
        rtt = self.rtt = self.round_sum / self.round_n
        ratio = self._update_min_rtt(rtt, now)
        last_limit, last_rtt = self.last_limit, self.last_rtt
        self.last_limit, self.last_rtt = self.round_limit, rtt
        if self._testing(rtt, ratio, last_rtt) or self._holding(ratio, last_limit, last_rtt):
            self._new_round(next_seq)
            return
        # Grow only a limit that the run fills: the latency of a half-idle limit
        # says nothing about a larger one.
        used = self.round_peak >= self.gate
        limit = self.limit
        capacity = limit / ratio  # Little's law: calls the service serves at once
        if self.phase is _Phase.START:
            ratio = self._start_ratio(rtt, ratio, last_limit, last_rtt)
            if ratio >= self.tolerance:
                self.phase = _Phase.STEADY
            elif ratio < (1 + self.tolerance) / 2:
                # Double while the latency is flat; a round between the midpoint and
                # the tolerance (noise, or the first sign of a queue) grows the
                # limit the steady way without leaving the start.
                self.limit = min(self.high, limit * 2 if used else limit)
                self._new_round(next_seq)
                return
        elif ratio > self.tolerance and (fell_from := self._latency_ignores_the_limit(rtt)):
            # No queue of ours is left: the service itself got slower, or the items
            # did (calls that get slower down the input). This round, at half the
            # limit or less, met no queue: its latency is the new no-load latency,
            # and the fall was a mistake, undone as a test is. The queue seen
            # before may have been the only one: the next rise is tested again.
            self.min_rtt = rtt
            self.queue_seen = False
            self.limit = min(self.high, max(self.limit, float(fell_from)))
            self.decline_limit = 0
            self.phase = _Phase.START  # no queue seen: double back up
            self._new_round(next_seq)
            return
        target = limit * self.tolerance / ratio
        if target < limit:
            # Halfway to the target (and never below half): one slow round (a
            # pause of the client's own process, say) costs little.
            limit = max((limit + target) / 2, limit / 2)
            if not self.decline_limit:
                self.decline_limit, self.decline_rtt = self.round_limit, rtt
        else:
            self.decline_limit = 0
            if used:
                limit = min(target, limit + max(1.0, math.sqrt(limit)))
        self.limit = min(self.high, max(float(self.low), limit))
        if self.phase is _Phase.STEADY and now >= self.next_probe and self.rounds > _PROBE_GAP:
            self._start_probe(now, next_seq, capacity)
        self._new_round(next_seq)

    def _start_ratio(self, rtt: float, ratio: float, last_limit: int, last_rtt: float) -> float:
        """Return the start's ``ratio``, or 1 if its rise did not come with the limit's.

        A round over the tolerance ends the start only if the latency rose with
        the start's last step of the limit: a queue's latency grows in proportion
        to the calls in flight (Little's law), the items' own does not care, and
        the geometric midpoint of the two tells them apart. If it did not, the
        baseline was too low (a round of a few fast calls) or the items got
        slower: this round met no queue and is the new ``min_rtt``. Without a step
        to judge by (the limit at its maximum, or not filled) the rise counts as a
        queue's, and the first cut it asks for is a test (:meth:`_start_test`).
        """
        if (
            ratio < self.tolerance
            or self.queue_seen
            or not 0 < _STEP * last_limit <= self.round_limit
        ):
            return ratio
        if rtt >= last_rtt * math.sqrt(self.round_limit / last_limit):
            self.queue_seen = True
            return ratio
        self.min_rtt = rtt
        return 1.0

    def _testing(self, rtt: float, ratio: float, last_rtt: float) -> bool:
        """Judge a test cut, or make one; True if this round's update is done.

        A test needs two rounds in a row over the tolerance, and takes the lower
        of the two as the latency before the cut: one slow round (a pause of the
        client's own process, a burst of new connections) is noise, and a test
        judged against it would take the latency of the next round for a queue's
        fall. The round between holds the limit.
        """
        if self.test_limit:
            return self._test_done(rtt)
        if (
            self.phase is _Phase.STEADY
            and ratio > self.tolerance
            and not self.queue_seen
            and self.gate > self.low
        ):
            before = min(rtt, last_rtt)
            if self.min_rtt is not None and before > self.tolerance * self.min_rtt:
                self._start_test(before)
            return True
        return False

    def _holding(self, ratio: float, last_limit: int, last_rtt: float) -> bool:
        """Hold the start's limit for a round after its first round over the tolerance.

        The next round judges the start's last step instead (:meth:`_start_ratio`):
        the first round at a higher limit pays for the new connections it opens,
        and one slow round may be a pause of the client's own process, while a
        queue's latency stays. True if this round's update is done.
        """
        if self.phase is not _Phase.START:
            return False
        if ratio >= self.tolerance and not self.queue_seen and not self.start_held:
            self.start_held = True
            self.last_limit, self.last_rtt = last_limit, last_rtt  # the step to judge
            return True
        self.start_held = False
        return False

    def _start_test(self, rtt: float) -> None:
        """Halve the limit for a round, to see whether the latency follows it.

        No latency has been seen to follow the limit yet, so a latency over the
        tolerance may be the items' own rather than a queue's. Halving tells: a
        queue's latency halves (or falls to the no-load latency), the items' stays.
        Half at once, rather than a step towards the target, so that the answer
        stands out of the noise of the round means.
        """
        self.test_limit, self.test_rtt = self.limit, rtt
        self.decline_limit = 0
        self.limit = max(float(self.low), self.limit / 2)

    def _test_done(self, rtt: float) -> bool:
        """Judge the test cut by this round's latency; True if it is undone.

        A queue predicts the latency before the cut, times the share of the limit
        left, but not under ``min_rtt``; no queue predicts the same latency as
        before. The geometric midpoint of the two decides.
        """
        before, test_rtt = self.test_limit, self.test_rtt
        self.test_limit = 0.0
        share = self.round_limit / max(1, int(before))
        queued = max(test_rtt * share, self.min_rtt or 0.0)
        if rtt <= math.sqrt(test_rtt * queued):
            self.queue_seen = True  # it followed: trust the gradient from now on
            return False
        # It did not follow: no queue of ours at either limit. This round's latency
        # is the service's no-load latency for the items of the moment, and the cut
        # was a mistake: undo it, and grow again as at the start.
        self.min_rtt = rtt
        self.limit = min(self.high, before)
        self.phase = _Phase.START
        return True

    def _latency_ignores_the_limit(self, rtt: float) -> int:
        """Return the limit the fall began at if the latency stayed up meanwhile, else 0.

        Asks only once the limit fell by half or more. A queue's latency is
        proportional to the calls in flight (Little's law), so halving the limit
        halves it; a service or items that got slower keep their latency. The
        geometric midpoint of the two tells them apart.
        """
        before, now = self.decline_limit, self.round_limit
        if not 0 < 2 * now <= before:
            return 0
        ignored = rtt > self.decline_rtt * math.sqrt(now / before)
        self.decline_limit, self.decline_rtt = now, rtt  # one signal per halving
        return before if ignored else 0

    def _start_probe(self, now: float, next_seq: int, capacity: float) -> None:
        """Hold the limit under the service's ``capacity`` for the next few calls.

        With fewer calls in flight than the service serves at once, its queue
        empties and the latency is the no-load latency, while the service stays
        nearly busy (Envoy and BBRv1 drop to a handful of calls instead, which
        halves the goodput for the probe's duration).
        """
        self.phase = _Phase.PROBE
        self.probes += 1
        self.saved_limit = self.limit
        level = max(_PROBE_LIMIT, int(_PROBE_GAIN * capacity))
        self.limit = float(max(self.low, min(self.gate, level)))
        # Half the probe's level, the first calls to start under it: none of them
        # has a queue before it, and the probe is over sooner than a full round.
        self.probe_end = next_seq + max(_PROBE_CALLS, self.gate // 2)
        self.probe_seen = 0
        self.decline_limit = 0
        self.next_probe = now + self.probe_interval
        if self.probe_from is None:
            self.probe_from = self.min_rtt

    def _probe_done(self, rtt: float | None, next_seq: int, now: float) -> None:
        """Count one call of the probe (``rtt`` None: it failed); end it after the last.

        The mean latency of a fixed set of calls, as a round's, not of the first to
        answer: those are the fastest, and a min_rtt below the rounds' typical
        latency by more than the tolerance would push the limit to its floor.
        """
        self.probe_seen += 1
        if rtt is not None:
            self.round_n += 1
            self.round_sum += rtt
        if self.probe_seen < self.probe_end - self.round_start:
            return
        old, self.probe_from = self.probe_from, None
        if self.round_n:
            self.min_rtt = self.rtt = self.round_sum / self.round_n
        self.limit = self.saved_limit
        self.phase = _Phase.STEADY
        self.rounds = 0
        measured = self.min_rtt
        changed = (
            old is not None
            and measured is not None
            and not old / _PROBE_CHANGE <= measured <= old * _PROBE_CHANGE
        )
        self.probe_again = changed and not self.probe_again
        if self.probe_again:
            self.next_probe = now  # check it after the gap
        self._new_round(next_seq)
