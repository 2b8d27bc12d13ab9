"""The dashboard and the alert rules against a real Prometheus scraping a real gateway.

Every query in deploy/grafana/dashboards/gateway.json must parse and return data, and
every rule in deploy/prometheus/alerts.yml must load, evaluate and have data behind its
threshold, while traffic of every kind flows: answers, streams, fallbacks, upstream
failures, rate-limited and unknown-model requests.
"""

from __future__ import annotations

import math
import re
import textwrap
import threading
import time

import httpx
import pytest

from tests.deploy.artifacts import ALERTS, alert_rules, concrete, dashboard_queries, signal_of
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import poll
from tests.support.prometheus import PrometheusServer
from tests.support.services import GatewayProcess

# The first test also pays for starting Prometheus and waiting for its first scrapes.
pytestmark = [pytest.mark.prometheus, pytest.mark.xdist_group("prometheus-e2e"), pytest.mark.timeout(240)]

CONFIG = """
backends:
  flaky:
    type: openai
    base_url: {flaky}
    api_key: sk-flaky
    models:
      qwen/qwen3-32b: {{input_price: 0.1, output_price: 0.2}}
      z-ai/glm-5: {{input_price: 1.0, output_price: 3.0}}
  good:
    type: openai
    base_url: {good}
    api_key: sk-good
    models:
      qwen/qwen3-32b: {{input_price: 1.0, output_price: 2.0}}
      deepseek/deepseek-v3.2: {{input_price: 0.27, output_price: 0.4}}
routes:
  auto: {{models: [qwen/qwen3-32b]}}
  broken: {{models: [z-ai/glm-5]}}
  limited: {{models: [deepseek/deepseek-v3.2]}}
rate_limits:
  routes: {{limited: 1}}
"""


def _traffic(url: str, stop: threading.Event, deadline: float) -> None:
    """Every kind of call the dashboard shows, in a loop, until stopped (bounded in time)."""
    messages = [{"role": "user", "content": "Say hello."}]
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set() and time.time() < deadline:
            for body in (
                {"model": "auto", "messages": messages},  # flaky fails, falls back to good
                {"model": "auto", "messages": messages, "stream": True, "stream_options": {"include_usage": True}},
                {"model": "broken", "messages": messages},  # 502: its only backend fails
                {"model": "limited", "messages": messages},  # 429 after the first
                {"model": "nobody/nothing", "messages": messages},  # 404, model="unknown"
            ):
                client.post("/v1/chat/completions", json=body)
            stop.wait(0.05)


def _watched(signal: str) -> str:
    absent = re.fullmatch(r"absent\((.*)\)", signal.strip())
    return absent.group(1) if absent else signal


def _has_finite_value(data: dict) -> bool:
    if data["resultType"] == "vector":
        return any(math.isfinite(float(sample["value"][1])) for sample in data["result"])
    if data["resultType"] == "scalar":
        return math.isfinite(float(data["result"][1]))
    return False


@pytest.fixture(scope="module")
def scraped_gateway():
    """One gateway under traffic and one Prometheus scraping it, shared by this module's tests."""
    good, flaky = FakeUpstream("good").start(), FakeUpstream("flaky").start()
    good.reset(chunk_delay_s=0.01)
    flaky.reset(status=500)
    gw = GatewayProcess(textwrap.dedent(CONFIG.format(flaky=flaky.base_url, good=good.base_url))).start()
    prometheus = None
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(gw.url, stop, time.time() + 240), daemon=True)
    try:
        prometheus = PrometheusServer([f"127.0.0.1:{gw.port}"], rule_files=[ALERTS]).start()
        traffic.start()
        yield prometheus
    finally:
        stop.set()
        if traffic.is_alive():
            traffic.join(15)
        if prometheus is not None:
            prometheus.stop()
        gw.stop()
        good.stop()
        flaky.stop()


def test_every_dashboard_query_and_alert_rule_returns_data(scraped_gateway):
    prometheus = scraped_gateway
    queries = {concrete(expr): title for title, expr in dashboard_queries()}
    # `absent(x)` has data only when x has none: what must have data is x, the series it watches.
    signals = {_watched(signal_of(rule["expr"])): rule["alert"] for rule in alert_rules()}
    pending = {**queries, **signals}

    def all_answered() -> bool:
        for expr in list(pending):
            if _has_finite_value(prometheus.query(expr)):  # raises if Prometheus cannot parse it
                del pending[expr]
        return not pending

    poll(
        all_answered,
        what="data behind every query",
        timeout=60,
        interval=0.5,
        context=lambda: "no data for:\n" + "\n".join(f"  {name}: {expr}" for expr, name in pending.items()),
    )

    # Every rule loaded and evaluated without error.
    def evaluated() -> dict | None:
        rules = {rule["name"]: rule for rule in prometheus.rules()}
        return rules if rules and all(r["health"] == "ok" for r in rules.values()) else None

    rules = poll(
        evaluated,
        what="every rule loaded and evaluated",
        timeout=30,
        interval=0.5,
        context=lambda: str({r["name"]: (r["health"], r.get("lastError")) for r in prometheus.rules()}),
    )
    assert set(rules) == {rule["alert"] for rule in alert_rules()}


def test_rate_limited_and_unknown_model_calls_are_counted_with_bounded_labels(scraped_gateway):
    prometheus = scraped_gateway

    def counted() -> list | None:
        limited = prometheus.query("sum(gateway_rate_limited_total)")["result"]
        unknown = prometheus.query('sum by (route, backend) (gateway_requests_total{model="unknown", status="404"})')[
            "result"
        ]
        return unknown if limited and float(limited[0]["value"][1]) > 0 and unknown else None

    unknown = poll(counted, what="rate-limited and unknown-model calls in Prometheus", timeout=30, interval=0.5)
    # The unknown model the client sent appears nowhere as a label value; the empty route
    # and backend labels are absent in Prometheus' answer.
    assert [s["metric"] for s in unknown] == [{}]
    models = {s["metric"]["model"] for s in prometheus.query("count by (model) (gateway_requests_total)")["result"]}
    assert models == {"qwen/qwen3-32b", "z-ai/glm-5", "deepseek/deepseek-v3.2", "unknown"}
    # 429s come before a model is chosen, under the route the client asked for.
    refused = prometheus.query('sum by (route, model) (gateway_requests_total{status="429"})')["result"]
    assert [s["metric"] for s in refused] == [{"route": "limited", "model": "unknown"}]
    routes = {
        s["metric"].get("route", "") for s in prometheus.query("count by (route) (gateway_requests_total)")["result"]
    }
    assert routes == {"auto", "broken", "limited", ""}


def test_provider_uptime_is_zero_for_the_failing_backend_and_one_for_the_one_that_answers(scraped_gateway):
    """The uptime panel on real traffic: every `flaky` attempt fails (500) and falls back to
    `good`, which answers every attempt it gets."""
    prometheus = scraped_gateway
    (expr,) = [e for title, e in dashboard_queries() if title == "Provider uptime by backend and model"]

    def measured() -> dict | None:
        result = prometheus.query(concrete(expr))["result"]
        found = {(s["metric"]["backend"], s["metric"]["model"]): float(s["value"][1]) for s in result}
        wanted = {("flaky", "qwen/qwen3-32b"), ("good", "qwen/qwen3-32b"), ("flaky", "z-ai/glm-5")}
        # NaN is 0/0: no attempt of that series in the 15 s window yet (a loaded machine runs
        # the traffic loop slowly, and an open circuit tries the broken route seldom).
        return found if wanted <= set(found) and not any(math.isnan(found[k]) for k in wanted) else None

    found = poll(measured, what="uptime of both backends", timeout=60, interval=0.5)
    assert found[("flaky", "qwen/qwen3-32b")] == 0.0 and found[("flaky", "z-ai/glm-5")] == 0.0
    assert found[("good", "qwen/qwen3-32b")] == 1.0
