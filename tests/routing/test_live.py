from gateway.backends.errors import FirstByteTimeout, RateLimited, ServerError, UpstreamError
from gateway.proxy.outcome import Attempt, CallOutcome
from gateway.proxy.usage import Usage
from gateway.routing.health import CircuitState
from tests.routing.support import POLICY, Clock, answer, live_for, snapshot_from

SNAP = snapshot_from(
    POLICY.replace(
        "  pricey:\n    type: openai\n",
        "  pricey:\n    type: openai\n    circuit: {failure_threshold: 2, cooldown_s: 10}\n",
    )
)
OFFER = SNAP.offer("pricey", "big/long")


def failed(error, retry_after=None):
    """An attempt that failed with the error class that `error` labels."""
    if error == "rate_limited":
        exc: UpstreamError = RateLimited("slow down", 429, retry_after=retry_after)
    elif error == "timeout":
        exc = FirstByteTimeout("no answer")
    else:
        exc = ServerError("failed", int(error.removeprefix("http_")))
    return Attempt.failed(OFFER, exc, 0.1)


def test_success_feeds_ttft_and_failures_open_the_circuit():
    clock = Clock()
    live = live_for(SNAP, clock)
    live.attempt_started(OFFER)
    answer(live, OFFER, 0.25)
    assert live.observed(OFFER.key).ttft_s == 0.25
    live.attempt_finished(OFFER, failed("http_502"), None)
    assert live.admission(OFFER, clock()).admitted
    live.attempt_finished(OFFER, failed("timeout"), None)
    admission = live.admission(OFFER, clock())
    assert not admission.admitted and admission.state is CircuitState.OPEN
    clock.advance(10)
    assert live.admission(OFFER, clock()).state is CircuitState.HALF_OPEN


def test_rate_limit_is_not_a_failure_but_cools_the_candidate():
    clock = Clock()
    live = live_for(SNAP, clock)
    for _ in range(5):
        live.attempt_finished(OFFER, failed("rate_limited", retry_after=30), None)
    admission = live.admission(OFFER, clock())
    assert admission.admitted and admission.cooling_for_s == 30
    clock.advance(31)
    assert live.admission(OFFER, clock()).cooling_for_s == 0


def test_retry_after_is_capped():
    live = live_for(SNAP)
    live.attempt_finished(OFFER, failed("rate_limited", retry_after=86400), None)
    assert live.admission(OFFER, live.clock()).cooling_for_s == 60  # gateway.routing.retry_after_cap_s


def test_throughput_comes_from_finished_calls():
    live = live_for(SNAP)
    outcome = CallOutcome("r", "auto", stream=True, offer=OFFER, usage=Usage(10, 100), ttft_s=0.5)
    outcome.attempts.append(Attempt("pricey", "big/long", None, 200, 2.5))
    live.call_finished(outcome)
    assert live.observed(OFFER.key).tokens_per_s == 50.0
    failed_call = CallOutcome("r", "auto", stream=False, offer=OFFER, usage=Usage(10, 100), status=502)
    failed_call.attempts.append(Attempt("pricey", "big/long", "http_502", 502, 1.0, backend_fault=True))
    live.call_finished(failed_call)
    assert live.observed(OFFER.key).tps_samples == 1


def test_circuit_states_list_every_offer_and_show_health_down_as_open():
    clock = Clock()
    live = live_for(SNAP, clock)
    for _ in range(2):
        live.attempt_finished(OFFER, failed("http_500"), None)
    live.health.record("cheap", False, clock(), threshold=1, error="refused")
    states = {(c.backend, c.model): c.state for c in live.circuit_states()}
    assert states == {
        ("cheap", "big/long"): "open",
        ("cheap", "small/fast"): "open",
        ("pricey", "big/long"): "open",
        ("pricey", "code/coder"): "closed",
    }
    assert "health checks: refused" in live.admission(SNAP.offer("cheap", "small/fast"), clock()).reason


def test_observations_for_other_replicas_are_folded_per_offer():
    live = live_for(SNAP)
    assert live.take_pending() == {}  # nothing shares: nothing kept
    live.share_with_replicas()
    answer(live, OFFER, 0.2)
    live.attempt_finished(OFFER, failed("http_500"), None)
    live.attempt_finished(OFFER, failed("rate_limited", retry_after=5), None)
    share = live.take_pending()[OFFER.key]
    # The success came after no failure: nothing to reset, so nothing is sent for it.
    assert not share.reset and share.failures == 1 and share.threshold == 2
    assert share.ttft == [0.2] and share.ttft_count == 1 and share.blocked_until == live.clock() + 5
    answer(live, OFFER, 0.3)
    share = live.take_pending()[OFFER.key]
    assert share.reset and share.failures == 0 and share.ttft == [0.3]  # this one closes the shared breaker
    assert live.take_pending() == {}


def test_streams_feed_ttft_and_non_streamed_calls_feed_latency_apart():
    live = live_for(SNAP)
    live.share_with_replicas()
    answer(live, OFFER, 0.2)  # a stream: first token after 0.2 s
    answer(live, OFFER, stream=False, seconds=3.0)  # a whole answer after 3 s
    answer(live, OFFER, stream=False, seconds=5.0)
    seen = live.observed(OFFER.key)
    assert (seen.ttft_s, seen.samples) == (0.2, 1)  # not averaged with the whole answers
    assert (seen.latency_s, seen.latency_samples) == (4.0, 2)
    share = live.take_pending()[OFFER.key]
    assert share.ttft == [0.2] and share.latency == [3.0, 5.0] and share.latency_count == 2


def test_a_failed_call_feeds_no_timing():
    live = live_for(SNAP)
    outcome = CallOutcome("r", "auto", stream=False, offer=OFFER, status=502)
    outcome.attempts.append(failed("http_502"))
    live.call_finished(outcome)
    assert live.observed(OFFER.key) is None
