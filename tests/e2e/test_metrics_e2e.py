"""/metrics on the real server: what clients' calls leave there, with one worker and several."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.scrape import scrape

ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


def policy(base_url: str) -> str:
    return one_backend_policy(
        base_url, timeout_s=10, models={"qwen/qwen3-32b": {"input_price": 1.0, "output_price": 2.0}}
    )


def test_calls_are_counted_under_config_labels_only(start_gateway, upstream, openai_client):
    gw = start_gateway(policy(upstream.base_url))
    client = openai_client(gw)
    client.chat.completions.create(**ASK)
    list(client.chat.completions.create(**ASK, stream=True))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(**{**ASK, "model": 'attacker/{label="x"}-123'})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="auto", messages="not a list")

    m = scrape(gw.url)
    assert m.value("gateway_requests_total", route="auto", model="qwen/qwen3-32b", backend="up", status="200") == 2
    assert m.value("gateway_requests_total", route="", model="unknown", backend="", status="404") == 1
    assert m.value("gateway_requests_total", route="", model="unknown", backend="", status="400") == 1
    assert m.value("gateway_tokens_total", model="qwen/qwen3-32b", backend="up", type="prompt") == 22
    assert m.value("gateway_tokens_total", model="qwen/qwen3-32b", backend="up", type="completion") == 14
    assert m.value("gateway_cost_usd_total", model="qwen/qwen3-32b", backend="up") == pytest.approx(
        2 * (11 * 1.0 + 7 * 2.0) / 1e6
    )
    assert m.value("gateway_ttft_seconds_count", model="qwen/qwen3-32b", backend="up") == 1
    assert m.value("gateway_overhead_seconds_count", route="auto") == 2
    assert m.value("gateway_inflight_requests", backend="up") == 0
    assert m.value("gateway_backend_circuit_state", backend="up", model="qwen/qwen3-32b") == 0
    assert m.label_values("gateway_requests_total", "model") == {"qwen/qwen3-32b", "unknown"}
    assert "attacker" not in m.text


def test_a_client_leaving_mid_call_is_counted_and_leaves_nothing_in_flight(start_gateway, upstream):
    upstream.reset(delay_s=8)  # answers only after the gateway's client has gone
    gw = start_gateway(policy(upstream.base_url))
    body = orjson.dumps(ASK)
    with socket.create_connection(("127.0.0.1", gw.port)) as client:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        poll(lambda: upstream.received, what="the call to reach the upstream")  # then leave, mid-attempt
    m = poll(
        lambda: (
            (s := scrape(gw.url)).value(
                "gateway_requests_total", route="auto", model="qwen/qwen3-32b", backend="up", status="499"
            )
            and s
        ),
        what="the abandoned call to be counted as 499",
        context=lambda: scrape(gw.url).text,
    )
    assert m.value("gateway_inflight_requests", backend="up") == 0
    assert m.value("gateway_backend_attempts_total", backend="up", model="qwen/qwen3-32b", result="cancelled") == 1


def test_config_reloads_are_counted(start_gateway, upstream):
    gw = start_gateway(policy(upstream.base_url))
    gw.write_config(
        one_backend_policy(upstream.base_url, routes={"auto": ["qwen/qwen3-32b"], "second": ["qwen/qwen3-32b"]})
    )
    poll(
        lambda: scrape(gw.url).value("gateway_config_reloads_total", result="success") == 1,
        what="a counted reload",
        context=gw.log,
    )
    assert scrape(gw.url).value("gateway_config_last_reload_successful") == 1
    gw.write_config("routes: [this is not a mapping]\n")
    poll(
        lambda: scrape(gw.url).value("gateway_config_reloads_total", result="failure") == 1,
        what="a counted rejection",
        context=gw.log,
    )
    assert scrape(gw.url).value("gateway_config_last_reload_successful") == 0  # what the alert reads


def _per_worker_requests(directory: Path) -> dict[str, float]:
    """gateway_requests_total as each worker process wrote it into the shared directory."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        families = MultiProcessCollector.merge([str(path)])
        counts[path.stem] = sum(s.value for f in families for s in f.samples if s.name == "gateway_requests_total")
    return counts


def test_several_workers_report_one_correct_total(start_gateway, upstream, tmp_path):
    """Whichever worker answers the scrape, it reports every worker's calls."""
    shared = tmp_path / "metrics"
    gw = start_gateway(policy(upstream.base_url), workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(shared)})
    upstream.reset(delay_s=0.05)
    sent = 0

    def both_workers_served() -> bool:
        nonlocal sent
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: (
                        httpx.post(
                            gw.url + "/v1/chat/completions", json=ASK, headers={"connection": "close"}, timeout=10
                        ).status_code
                    ),
                    range(16),
                )
            )
        assert statuses == [200] * 16
        sent += 16
        return sum(1 for n in _per_worker_requests(shared).values() if n > 0) >= 2

    poll(both_workers_served, what="the kernel to hand a connection to the second worker", timeout=60, interval=0)
    assert sum(_per_worker_requests(shared).values()) == sent
    for _ in range(6):  # each scrape on a new connection: either worker may answer
        assert (
            scrape(gw.url).value(
                "gateway_requests_total", route="auto", model="qwen/qwen3-32b", backend="up", status="200"
            )
            == sent
        )


def test_usage_events_the_recorder_drops_are_counted(start_gateway, upstream):
    """The usage recorder's drop hook is wired to gateway_usage_events_dropped_total."""
    from tests.support.ports import free_port

    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # the usage store cannot be reached
    gw = start_gateway(
        policy(upstream.base_url),
        env={
            "GATEWAY_REDIS_URL": dead_redis,
            "GATEWAY_USAGE_BUFFER_MAX": "2",
            "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5",
            # A static key: with the key store (this Redis) unreachable, keyless requests get 503.
            "GATEWAY_API_KEYS": "t:sk-t",
        },
    )
    for _ in range(5):
        r = httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers={"authorization": "Bearer sk-t"})
        assert r.status_code == 200
    poll(
        lambda: scrape(gw.url).value("gateway_usage_events_dropped_total") >= 3,
        what="3 dropped usage events",
        context=gw.log,
    )
    poll(
        lambda: scrape(gw.url).value("gateway_usage_write_failures_total") >= 1,
        what="a failed usage write",
        context=gw.log,
    )


@pytest.mark.redis
def test_failed_syncs_of_shared_routing_stats_are_counted(start_gateway, upstream, redis_server):
    """A Redis outage fails every round of sharing routing stats; the log says so once, and once
    more with the count when Redis is back. /metrics holds that same count: the failures were
    invisible to alerts and dashboards before."""
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    gw = start_gateway(policy(upstream.base_url), env=env)
    assert scrape(gw.url).value("gateway_routing_stats_sync_failures_total") == 0
    redis_server.stop()
    poll(
        lambda: scrape(gw.url).value("gateway_routing_stats_sync_failures_total") >= 2,
        what="two failed syncs counted",
        context=gw.log,
    )
    redis_server.start()
    back = poll(
        lambda: re.search(r"routing stats shared through Redis again after (\d+) failed syncs", gw.log()),
        what="the sync to succeed again",
        context=gw.log,
    )
    assert scrape(gw.url).value("gateway_routing_stats_sync_failures_total") == int(back.group(1))
    assert gw.log().count("cannot share routing stats through Redis") == 1
