"""gateway/metrics.py: what each call and hook counts, under which bounded labels."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.backends.pool import BackendPool
from gateway.config.loader import parse_config
from gateway.config.snapshot import ConfigSnapshot
from gateway.metrics import UNKNOWN_MODEL, CircuitState, Metrics
from gateway.protocol.chat import parse_chat_request
from gateway.proxy.attempts import open_answer
from gateway.proxy.outcome import Attempt, CallOutcome, Observers, price_usd
from gateway.proxy.usage import Usage
from gateway.routing.pipeline import decide
from tests.support.poll import apoll
from tests.support.services import REPO

CONFIG = """
backends:
  fast:
    type: mock
    models:
      qwen/qwen3-32b: {input_price: 1.0, output_price: 2.0}
  slow:
    type: mock
    delay_ms: 60000
    models:
      qwen/qwen3-32b: {input_price: 0.5, output_price: 0.5}
      z-ai/glm-5: {}
routes:
  auto: {models: [qwen/qwen3-32b]}
"""


def snapshot(text: str = CONFIG) -> ConfigSnapshot:
    return ConfigSnapshot.build(parse_config(textwrap.dedent(text))[0])


def samples(metrics: Metrics) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, from the rendered exposition."""
    text, _ = metrics.render()
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def outcome(snap: ConfigSnapshot, backend: str = "fast", **kwargs) -> CallOutcome:
    offer = snap.offer(backend, "qwen/qwen3-32b")
    defaults = dict(
        request_id="r",
        requested_model="auto",
        stream=False,
        route="auto",
        offer=offer,
        usage=Usage(10, 20),
        cost_usd=0.25,
        latency_s=1.5,
        overhead_s=0.0004,
        attempts=[Attempt(backend, "qwen/qwen3-32b", None, 200, 1.4)],
    )
    return CallOutcome(**{**defaults, **kwargs})


def test_a_finished_call_counts_request_tokens_cost_and_latency():
    m, snap = Metrics(), snapshot()
    m.call_finished(outcome(snap))
    labels = dict(route="auto", model="qwen/qwen3-32b", backend="fast")
    assert value(m, "gateway_requests_total", **labels, status="200") == 1
    assert value(m, "gateway_tokens_total", model="qwen/qwen3-32b", backend="fast", type="prompt") == 10
    assert value(m, "gateway_tokens_total", model="qwen/qwen3-32b", backend="fast", type="completion") == 20
    assert value(m, "gateway_cost_usd_total", model="qwen/qwen3-32b", backend="fast") == 0.25
    assert value(m, "gateway_request_duration_seconds_count", **labels, stream="false") == 1
    assert value(m, "gateway_request_duration_seconds_bucket", **labels, stream="false", le="1.0") == 0
    assert value(m, "gateway_request_duration_seconds_bucket", **labels, stream="false", le="2.5") == 1
    assert value(m, "gateway_request_duration_seconds_count", **labels, stream="true") == 0
    assert value(m, "gateway_overhead_seconds_bucket", route="auto", le="0.0005") == 1
    assert (
        value(m, "gateway_route_decisions_total", route="auto", task="chat", model="qwen/qwen3-32b", backend="fast")
        == 1
    )
    # A non-streamed answer has no TTFT apart from its whole time.
    assert value(m, "gateway_ttft_seconds_count", model="qwen/qwen3-32b", backend="fast") == 0


def test_streams_measure_ttft_and_generation_speed_of_the_answering_attempt():
    m, snap = Metrics(), snapshot()
    attempts = [
        Attempt("slow", "qwen/qwen3-32b", "timeout", None, 5.0),
        Attempt("fast", "qwen/qwen3-32b", None, 200, 2.2),
    ]
    m.call_finished(outcome(snap, stream=True, ttft_s=0.2, latency_s=7.3, attempts=attempts, usage=Usage(10, 100)))
    assert value(m, "gateway_ttft_seconds_sum", model="qwen/qwen3-32b", backend="fast") == pytest.approx(0.2)
    # 100 tokens over the 2.0 s after the first token, not over the failed attempt's time too.
    assert value(
        m, "gateway_completion_tokens_per_second_sum", model="qwen/qwen3-32b", backend="fast"
    ) == pytest.approx(50.0)
    assert value(m, "gateway_fallbacks_total", route="auto", from_backend="slow", reason="timeout") == 1
    # Its whole time counts as a stream's: an answer's length, which the latency alert leaves out.
    labels = dict(route="auto", model="qwen/qwen3-32b", backend="fast")
    assert value(m, "gateway_request_duration_seconds_sum", **labels, stream="true") == pytest.approx(7.3)
    assert value(m, "gateway_request_duration_seconds_count", **labels, stream="false") == 0
    # The routing decision is the first candidate chosen, not the one that answered.
    assert (
        value(m, "gateway_route_decisions_total", route="auto", task="chat", model="qwen/qwen3-32b", backend="slow")
        == 1
    )


def test_the_last_failed_attempt_is_not_a_fallback_and_reasons_are_bounded():
    m, snap = Metrics(), snapshot()
    attempts = [
        Attempt("fast", "qwen/qwen3-32b", "Weird Reason: <html>", 500, 0.1),
        Attempt("slow", "qwen/qwen3-32b", "http_503", 503, 0.1),
    ]
    m.call_finished(
        outcome(snap, backend="slow", status=502, error="upstream_error", attempts=attempts, usage=None, cost_usd=0.0)
    )
    assert value(m, "gateway_fallbacks_total", route="auto", from_backend="fast", reason="other") == 1
    assert not any(
        name == "gateway_fallbacks_total" and ("from_backend", "slow") in labels for name, labels in samples(m)
    )
    assert value(m, "gateway_requests_total", route="auto", model="qwen/qwen3-32b", backend="slow", status="502") == 1


def test_a_hedges_loser_and_an_attempt_called_off_are_not_fallbacks():
    """Hostile testing: every hedged call counted its loser as a fallback (`hedge_lost`), and a
    client leaving during a race counted one (`cancelled`), though the call moved on from neither."""
    m, snap = Metrics(), snapshot()
    attempts = [
        Attempt("slow", "qwen/qwen3-32b", "hedge_lost", None, 0.5),
        Attempt("fast", "qwen/qwen3-32b", None, 200, 0.2),
    ]
    m.call_finished(outcome(snap, backend="fast", attempts=attempts, usage=Usage(10, 10)))
    cancelled = [
        Attempt("fast", "qwen/qwen3-32b", "cancelled", None, 0.5),
        Attempt("slow", "qwen/qwen3-32b", "cancelled", None, 0.5),
    ]
    m.call_finished(outcome(snap, backend="slow", status=499, error="client_disconnected", attempts=cancelled))
    assert not any(name == "gateway_fallbacks_total" for name, _ in samples(m))


def test_each_backend_counts_its_own_tokens_and_cost_when_a_stream_is_continued_or_a_hedge_loses():
    """A stream that broke on `slow` after 4 tokens and was continued on `fast`: every token
    and all the bill's cost were counted on `fast` (the 4 at `slow`'s prices among them), and
    `slow`, which served the prompt and those 4, counted nothing; a losing hedge's prompt
    neither. Each backend counts what it served, at its own prices."""
    m, snap = Metrics(), snapshot()
    slow = snap.offer("slow", "qwen/qwen3-32b")
    broken = Attempt("slow", "qwen/qwen3-32b", "stream_broken", 200, 0.5)
    broken.usage = Usage(10, 4, estimated=True)
    broken.cost_usd = price_usd(slow, broken.usage)
    # Its prompt: the original and the prefill. Its first token (0.2 s): the broken stream's.
    call = outcome(snap, backend="fast", stream=True, usage=Usage(14, 6), ttft_s=0.2)
    call.attempts.insert(0, broken)
    call.carry(broken.usage, slow)
    call.bill()
    assert call.cost_usd == pytest.approx((10 * 0.5 + 4 * 0.5 + 6 * 2.0) / 1e6)  # the key's bill, unchanged
    m.call_finished(call)

    lost = Attempt("slow", "qwen/qwen3-32b", "hedge_lost", None, 0.5)
    lost.usage = Usage(100, 0, estimated=True)
    lost.cost_usd = price_usd(slow, lost.usage)
    m.call_finished(outcome(snap, backend="fast", attempts=[lost, Attempt("fast", "qwen/qwen3-32b", None, 200, 0.2)]))

    def tokens(backend: str, kind: str) -> float | None:
        return value(m, "gateway_tokens_total", model="qwen/qwen3-32b", backend=backend, type=kind)

    assert (tokens("slow", "prompt"), tokens("slow", "completion")) == (110, 4)
    assert (tokens("fast", "prompt"), tokens("fast", "completion")) == (14 + 10, 6 + 20)
    cost = value(m, "gateway_cost_usd_total", model="qwen/qwen3-32b", backend="slow")
    assert cost == pytest.approx((110 * 0.5 + 4 * 0.5) / 1e6)
    cost = value(m, "gateway_cost_usd_total", model="qwen/qwen3-32b", backend="fast")
    assert cost == pytest.approx((14 * 1.0 + 6 * 2.0) / 1e6 + 0.25)  # its own tokens; then the plain call's
    # The continuing backend has no first token or speed of its own to show for the call.
    assert value(m, "gateway_ttft_seconds_count", model="qwen/qwen3-32b", backend="fast") == 0
    assert value(m, "gateway_completion_tokens_per_second_count", model="qwen/qwen3-32b", backend="fast") == 0


def test_a_broken_stream_no_candidate_continued_counts_what_its_backend_served():
    """Review: the broken attempt, moved last when no candidate continued it, holds the tokens
    its backend served, while the call's own usage stays unset: its backend counted the bill
    as cost and no tokens."""
    m, snap = Metrics(), snapshot()
    slow = snap.offer("slow", "qwen/qwen3-32b")
    refused = Attempt("fast", "qwen/qwen3-32b", "http_400", 400, 0.1)
    broken = Attempt("slow", "qwen/qwen3-32b", "protocol", 200, 0.5)
    broken.usage = Usage(10, 4, estimated=True)
    broken.cost_usd = price_usd(slow, broken.usage)
    call = outcome(snap, backend="slow", stream=True, status=502, error="protocol", usage=None)
    call.attempts[:] = [refused, broken]
    call.carry(broken.usage, slow)
    call.bill()
    m.call_finished(call)
    assert value(m, "gateway_tokens_total", model="qwen/qwen3-32b", backend="slow", type="prompt") == 10
    assert value(m, "gateway_tokens_total", model="qwen/qwen3-32b", backend="slow", type="completion") == 4
    cost = value(m, "gateway_cost_usd_total", model="qwen/qwen3-32b", backend="slow")
    assert cost == pytest.approx((10 * 0.5 + 4 * 0.5) / 1e6)
    assert value(m, "gateway_tokens_total", model="qwen/qwen3-32b", backend="fast", type="prompt") is None


def test_calls_without_a_chosen_model_are_unknown_whatever_the_client_sent():
    m, snap = Metrics(), snapshot()
    m.request_rejected(404)
    m.request_rejected(429, route="auto")
    m.call_finished(
        outcome(snap, requested_model='evil/"model"{}', route=None, offer=None, status=503, attempts=[], usage=None)
    )
    assert value(m, "gateway_requests_total", route="", model=UNKNOWN_MODEL, backend="", status="404") == 1
    assert value(m, "gateway_requests_total", route="auto", model=UNKNOWN_MODEL, backend="", status="429") == 1
    assert value(m, "gateway_requests_total", route="", model=UNKNOWN_MODEL, backend="", status="503") == 1
    assert b"evil" not in m.render()[0]
    # No token or cost series for a call no backend answered.
    assert not any(
        labels and ("model", UNKNOWN_MODEL) in labels
        for name, labels in samples(m)
        if name.startswith("gateway_tokens")
    )


def test_hooks_for_circuit_state_usage_drops_reloads_and_rate_limits():
    m, snap = Metrics(), snapshot()
    m.track_offers(snap)
    assert value(m, "gateway_backend_circuit_state", backend="slow", model="z-ai/glm-5") == CircuitState.CLOSED
    m.set_circuit_state("slow", "z-ai/glm-5", CircuitState.OPEN)
    m.track_offers(snap)  # a reload keeps the state routing reported
    assert value(m, "gateway_backend_circuit_state", backend="slow", model="z-ai/glm-5") == 2
    m.track_offers(snapshot(CONFIG.replace("      z-ai/glm-5: {}\n", "")))
    assert value(m, "gateway_backend_circuit_state", backend="slow", model="z-ai/glm-5") is None
    m.usage_events_dropped(3)
    assert value(m, "gateway_config_last_reload_successful") == 1  # none tried yet: the file is served
    m.config_reload("success")
    m.config_reload("failure")
    assert value(m, "gateway_config_last_reload_successful") == 0
    m.config_reload("failure")
    m.rate_limit_hit()
    assert value(m, "gateway_usage_events_dropped_total") == 3
    assert value(m, "gateway_config_reloads_total", result="success") == 1
    assert value(m, "gateway_config_reloads_total", result="failure") == 2
    assert value(m, "gateway_config_last_reload_successful") == 0
    m.config_reload("success")  # the file, rewritten whole, applied: what the alert reads
    assert value(m, "gateway_config_last_reload_successful") == 1
    assert value(m, "gateway_rate_limited_total") == 1


def test_two_metrics_objects_share_nothing():
    a, b = Metrics(), Metrics()
    a.rate_limit_hit()
    assert value(a, "gateway_rate_limited_total") == 1
    assert value(b, "gateway_rate_limited_total") == 0


async def test_in_flight_returns_to_zero_when_the_call_is_cancelled_mid_attempt():
    """The fallback loop reports a cancelled attempt (client gone, shutdown deadline), so the
    in-flight gauge and anything else pairing attempt_started/attempt_finished stays true."""
    snap = snapshot()
    pool = BackendPool()
    pool.apply(snap)
    m = Metrics()
    chat = parse_chat_request(b'{"model": "z-ai/glm-5", "messages": [{"role": "user", "content": "hi"}]}')
    decision = decide(chat, {}, snap)
    call = CallOutcome("r", chat.model, False)
    task = asyncio.create_task(open_answer(chat, decision, pool, Observers([m]), call, {}))
    await apoll(lambda: value(m, "gateway_inflight_requests", backend="slow") == 1, what="the attempt to be in flight")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value(m, "gateway_inflight_requests", backend="slow") == 0
    assert value(m, "gateway_backend_attempts_total", backend="slow", model="z-ai/glm-5", result="cancelled") == 1
    assert [a.error for a in call.attempts] == ["cancelled"]
    await pool.aclose()


_WORKER = """
import os, sys
from gateway.metrics import Metrics
m = Metrics()
m.process_started()
m.rate_limit_hit()
m.inflight.labels("fast").inc()
if sys.argv[1] == "crash":
    os._exit(0)  # like SIGKILL: no goodbye
m.process_stopping()
"""

_READER = """
from gateway.metrics import Metrics
m = Metrics()
m.process_started()
print(m.render()[0].decode())
"""


def test_multiprocess_mode_sums_workers_and_forgets_the_live_gauges_of_dead_ones(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for how in ("crash", "clean", "crash"):
        subprocess.run([sys.executable, "-c", _WORKER, how], env=env, check=True, timeout=30)
    text = subprocess.run(
        [sys.executable, "-c", _READER], env=env, check=True, timeout=30, capture_output=True, text=True
    ).stdout
    found = {
        (s.name, tuple(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert found[("gateway_rate_limited_total", ())] == 3  # counters of every worker, dead or alive
    assert found.get(("gateway_inflight_requests", (("backend", "fast"),)), 0) == 0  # no live worker holds one


def test_the_readme_metrics_table_lists_every_metric_the_gateway_exports():
    """Operators read the README's table (Operations, Metrics) to write their own queries: a
    metric exported but missing there is one they do not know to watch."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n### Metrics\n", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `(gateway_[a-z0-9_]+)` \|", section, re.M))
    suffixes = {"counter": "_total", "gauge": "", "histogram": ""}
    exported = {f.name + suffixes[f.type] for f in Metrics().registry.collect()}
    assert listed == exported


_RELOADING_WORKER = """
from tests.test_metrics import CONFIG, snapshot
from gateway.metrics import CircuitState, Metrics
m = Metrics()
m.process_started()
m.track_offers(snapshot())
m.set_circuit_state("slow", "z-ai/glm-5", CircuitState.OPEN)
m.track_offers(snapshot(CONFIG.replace("      z-ai/glm-5: {}\\n", "")))  # a reload removes the offer
print(m.render()[0].decode())
"""


def test_with_several_workers_an_offer_a_reload_removed_is_no_longer_reported_open(tmp_path):
    """Hostile testing: with `--workers N` the circuit series of an offer a reload removed
    cannot be deleted (prometheus-client's multiprocess files), and it kept the last state
    routing reported: an offer removed while its circuit was open showed open until a
    restart, and the circuit-open alert fired for a backend no longer configured."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    text = subprocess.run(
        [sys.executable, "-c", _RELOADING_WORKER], env=env, check=True, timeout=30, capture_output=True, text=True
    ).stdout
    states = {
        (s.labels["backend"], s.labels["model"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gateway_backend_circuit_state"
    }
    assert states[("slow", "z-ai/glm-5")] == CircuitState.CLOSED


def test_the_gateways_histogram_observer_exposes_what_prometheus_clients_observe_does():
    """`metric_values.observer` adds to a single-process histogram's values in line: the same
    buckets (a value on a bound falls in that bound's bucket), sum and count as
    `Histogram.observe`, a NaN in the sum and in no bucket."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from gateway.metric_values import observer

    amounts = [0.0001, 0.25, 1.0, 1.5, 1000.0, float("nan"), 0.0]
    exposed = []
    for ours in (True, False):
        registry = CollectorRegistry()
        child = Histogram("h", "h", ["route"], buckets=(0.1, 0.25, 1.0, 2.5), registry=registry).labels("r")
        observe = observer(child) if ours else child.observe
        for amount in amounts:
            observe(amount)
        text = generate_latest(registry).decode()
        exposed.append("\n".join(line for line in text.splitlines() if "_created" not in line))
    assert exposed[0] == exposed[1]
    assert 'h_bucket{le="0.25",route="r"} 3.0' in exposed[0]
    assert 'h_bucket{le="+Inf",route="r"} 6.0' in exposed[0]
    assert 'h_sum{route="r"} NaN' in exposed[0]
