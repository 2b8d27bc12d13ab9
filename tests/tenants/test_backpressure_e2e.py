"""Backpressure on a running gateway: a backend at its bound of calls in flight is skipped like
one answering 429, and a client whose every candidate is full gets 503 with Retry-After at
once, instead of queueing; slots come back when answers (streamed or not) end."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.scrape import scrape

FIRST, SECOND = "qwen/qwen3-32b", "deepseek/deepseek-v3.2"
ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


def policy(a, b, a_inflight: int, b_inflight: int | None = None) -> str:
    b_bound = f"\n    max_inflight: {b_inflight}" if b_inflight else ""
    return f"""
backends:
  up-a:
    type: openai
    base_url: {a.base_url}
    api_key: sk-a
    max_inflight: {a_inflight}
    models: {{"{FIRST}": {{}}}}
  up-b:
    type: openai
    base_url: {b.base_url}
    api_key: sk-b{b_bound}
    models: {{"{SECOND}": {{}}}}
routes:
  auto:
    models: ["{FIRST}", "{SECOND}"]
    strategy: ordered
"""


def together(gw, n: int, body=ASK) -> list[tuple[httpx.Response, float]]:
    def one(_: int) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        answer = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)
        return answer, time.perf_counter() - started

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_a_full_backend_is_skipped_for_the_next_candidate(start_gateway, upstream, upstream_b):
    gw = start_gateway(policy(upstream, upstream_b, a_inflight=2))
    upstream.reset(delay_s=1.0)  # the first backend's calls stay in flight while the rest arrive
    answers = together(gw, 6)
    assert [r.status_code for r, _ in answers] == [200] * 6
    served = sorted(r.headers["x-gateway-backend"] for r, _ in answers)
    assert served == ["up-a"] * 2 + ["up-b"] * 4
    assert (len(upstream.received), len(upstream_b.received)) == (2, 4)
    assert scrape(gw.url).value("gateway_candidates_skipped_total", backend="up-a", reason="full") == 4


def test_every_candidate_full_is_a_503_with_retry_after_at_once(start_gateway, upstream, upstream_b):
    gw = start_gateway(policy(upstream, upstream_b, a_inflight=1, b_inflight=2))
    upstream.reset(delay_s=2.0)
    upstream_b.reset(delay_s=2.0)
    answers = together(gw, 6)
    codes = sorted(r.status_code for r, _ in answers)
    assert codes == [200] * 3 + [503] * 3
    refused = [(r, took) for r, took in answers if r.status_code == 503]
    for r, took in refused:
        assert took < 1.5  # answered at once, not after the busy calls
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "backends_full"
    assert (len(upstream.received), len(upstream_b.received)) == (1, 2)  # nothing queued upstream
    m = scrape(gw.url)
    assert m.value("gateway_candidates_skipped_total", backend="up-a", reason="full") == 5  # all but its one
    assert m.value("gateway_candidates_skipped_total", backend="up-b", reason="full") == 3


def test_slots_come_back_when_answers_end_streamed_or_not(start_gateway, upstream, upstream_b):
    gw = start_gateway(policy(upstream, upstream_b, a_inflight=1, b_inflight=1))
    for stream in (False, True) * 4:  # one slot each: a leaked slot would fail the next call
        answer = httpx.post(gw.url + "/v1/chat/completions", json={**ASK, "stream": stream}, timeout=30)
        assert answer.status_code == 200 and answer.headers["x-gateway-backend"] == "up-a"
    upstream.reset(status=503)  # failed attempts give their slot back too (503: moved on at once, no retry)
    for _ in range(3):
        assert httpx.post(gw.url + "/v1/chat/completions", json=ASK, timeout=30).headers["x-gateway-backend"] == "up-b"
    assert len(upstream.received) == 3 and len(upstream_b.received) == 3


def test_the_process_wide_bound_makes_every_backend_full(start_gateway, upstream, upstream_b):
    gw = start_gateway(policy(upstream, upstream_b, a_inflight=50), env={"GATEWAY_MAX_UPSTREAM_INFLIGHT": "2"})
    upstream.reset(delay_s=1.5)
    upstream_b.reset(delay_s=1.5)
    codes = sorted(r.status_code for r, _ in together(gw, 4))
    assert codes == [200, 200, 503, 503]
    assert len(upstream.received) + len(upstream_b.received) == 2
