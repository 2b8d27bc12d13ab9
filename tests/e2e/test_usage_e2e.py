"""The usage ledger as operators meet it: real gateway processes, the openai client, fake
upstreams, real redis-server, and the `gateway` CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import openai
import pytest

from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.usage.rankings import today_utc
from tests.e2e.usage_helpers import FIXTURE_CONFIG, gateway_cli, poll_rankings, rankings, write_fixture
from tests.support.poll import poll
from tests.support.services import RedisServer
from tests.usage.fixtures import EXPECTED, WEEK_END

LIVE_CONFIG = """
backends:
  up-a:
    type: openai
    base_url: {a}
    api_key: sk-a-123456
    timeout_s: 5
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, input_price: 1.0, output_price: 2.0}}
  up-b:
    type: openai
    base_url: {b}
    api_key: sk-b-123456
    timeout_s: 5
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, input_price: 3.0, output_price: 4.0}}
routes:
  auto:
    models: [qwen/qwen3-32b]
"""
# Rankings read fresh on every poll (not kept for their default 5 s): a test polls until its calls show.
FAST_FLUSH = {"GATEWAY_USAGE_FLUSH_S": "0.05", "GATEWAY_API_KEYS": "team-a:sk-test", "GATEWAY_RANKINGS_REFRESH_S": "0"}
MESSAGES = [{"role": "user", "content": "Say hello."}]
PER_CALL = 11 + 7  # the fake upstream's usage: 11 prompt + 7 completion tokens


def ask(client: openai.OpenAI, **extra):
    return client.chat.completions.create(model="auto", messages=MESSAGES, **extra)


def export_today(data_dir) -> list[dict]:
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_live_calls_are_ranked_with_their_tokens_and_cost(start_gateway, upstream, upstream_b, openai_client):
    gw = start_gateway(LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url), env=FAST_FLUSH)
    client = openai_client(gw)
    attributed = openai_client(gw, default_headers={"HTTP-Referer": "https://myapp.example", "X-Title": "My App"})

    assert ask(attributed).usage.total_tokens == PER_CALL  # 1: plain call, on up-a (cheapest)
    # A measurable generation time, for tokens/s: at least five 50 ms gaps after the first
    # token, of which the bound below needs three (a loaded machine may read the first token late).
    upstream.behaviour.chunk_delay_s = 0.05
    chunks = list(ask(client, stream=True))  # 2: stream; the gateway asks for usage and strips it again
    upstream.behaviour.chunk_delay_s = 0.0
    assert all(c.usage is None for c in chunks)
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
    last = list(ask(client, stream=True, stream_options={"include_usage": True}))[-1]  # 3: stream, usage asked
    assert last.usage.total_tokens == PER_CALL
    upstream.behaviour.send_usage = False  # 4: an upstream that reports no usage: estimated
    list(ask(client, stream=True))
    upstream.reset(status=503)  # 5: up-a fails, up-b answers: tokens counted once
    assert ask(client).usage.total_tokens == PER_CALL
    upstream_b.reset(status=503)  # 6: both fail: recorded with its status, no tokens (a 503: not asked twice)
    with pytest.raises(openai.InternalServerError):
        ask(client)

    estimated_prompt = estimate_prompt_tokens({"messages": MESSAGES})
    estimated_completion = 1 + len(["Hello", "from", "the", "fake", "upstream."]) + 1  # content events streamed
    estimated = estimated_prompt + estimated_completion
    body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 6, window="week")
    model = body["models"][0]
    assert model["model"] == "qwen/qwen3-32b" and model["requests"] == 6 and model["failed"] == 1
    assert model["tokens"] == 4 * PER_CALL + estimated
    assert model["prompt_tokens"] == 4 * 11 + estimated_prompt
    expected_cost = (
        3 * (11 * 1.0 + 7 * 2.0) / 1e6
        + (estimated_prompt * 1.0 + estimated_completion * 2.0) / 1e6
        + (11 * 3.0 + 7 * 4.0) / 1e6
    )
    assert model["cost"] == pytest.approx(expected_cost, abs=1e-9)
    offers = {t["backend"]: t for t in body["throughput"]}
    assert offers["up-a"]["requests"] == 4 and offers["up-b"]["requests"] == 2 and offers["up-b"]["failed"] == 1
    assert offers["up-a"]["input_price"] == 1.0 and offers["up-b"]["output_price"] == 4.0
    assert offers["up-a"]["median_latency_ms"] > 0
    apps = {a["app"]: a for a in body["apps"]["top"]}
    assert apps["https://myapp.example"]["title"] == "My App" and apps["https://myapp.example"]["tokens"] == PER_CALL
    assert apps["team-a"]["requests"] == 5  # no attribution headers: the API key's name

    rows = sorted(export_today(gw.dir / "data"), key=lambda e: (e["timestamp"], e["attempt"]))
    # Calls 5 and 6 fell back: their failed first attempts are rows of their own, before the final rows.
    attempt_rows = [e for e in rows if not e["final"]]
    assert [(e["backend"], e["status"], e["error"], e["attempt"], e["tokens"]) for e in attempt_rows] == [
        ("up-a", 503, "http_503", 1, 0),
        ("up-a", 503, "http_503", 1, 0),
    ]
    events = [e for e in rows if e["final"]]
    assert [e["call_id"] for e in attempt_rows] == [e["call_id"] for e in events[4:]]
    assert all(e["key"] == "team-a" and e["endpoint"] == "chat" for e in rows)
    assert [e["status"] for e in events] == [200, 200, 200, 200, 200, 502]
    assert [e["estimated"] for e in events] == [False, False, False, True, False, False]
    assert [e["attempts"] for e in events][-2:] == [2, 2]
    assert events[4]["backend"] == "up-b" and events[4]["tokens"] == PER_CALL
    assert events[5]["tokens"] == 0 and events[5]["cost"] == 0.0
    assert all(e["ttft_ms"] is not None and e["latency_ms"] >= e["ttft_ms"] for e in events[:5])
    assert 0 < events[1]["tokens_per_second"] < 7 / 0.15  # 7 tokens over more than the first token's wait


@pytest.mark.parametrize("writer", ["process", "inline"])
def test_sigterm_flushes_every_buffered_event(writer, start_gateway, upstream, upstream_b, openai_client):
    config = LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url)
    # Events would wait an hour for the next periodic write: only the shutdown flush can save them.
    gw = start_gateway(config, env={**FAST_FLUSH, "GATEWAY_USAGE_FLUSH_S": "3600", "GATEWAY_USAGE_WRITER": writer})
    client = openai_client(gw)
    for _ in range(3):
        ask(client)
    list(ask(client, stream=True))
    assert rankings(gw.url, window="week")["totals"]["requests"] == 0  # still buffered
    gw.signal(signal.SIGTERM)
    gw.proc.wait(20)  # uvicorn shuts down gracefully, then re-raises SIGTERM: the exit status says -15
    assert "4 events recorded, 0 dropped" in gw.log()
    assert "Application shutdown complete" in gw.log()
    assert ("written by a writer process" if writer == "process" else "written in this process") in gw.log()
    again = start_gateway(config, env=FAST_FLUSH, workdir=gw.dir)  # same data dir
    body = rankings(again.url, window="week")
    assert body["totals"]["requests"] == 4 and body["totals"]["tokens"] == 4 * PER_CALL


def writer_pids(gw) -> list[int]:
    """The gateway's child processes: its usage writer."""
    return [
        int(pid)
        for task in Path(f"/proc/{gw.proc.pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # not a zombie either


def test_a_killed_writer_process_is_replaced_and_no_call_is_lost(start_gateway, upstream, upstream_b, openai_client):
    gw = start_gateway(LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url), env=FAST_FLUSH)
    client = openai_client(gw)
    for _ in range(3):
        ask(client)
    poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 3, window="week")
    [writer] = writer_pids(gw)
    os.kill(writer, signal.SIGKILL)
    for _ in range(4):
        list(ask(client, stream=True))
    body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 7, window="week")
    assert body["totals"]["tokens"] == 7 * PER_CALL
    assert writer not in writer_pids(gw) and len(writer_pids(gw)) == 1
    assert "starting another" in gw.log()


def test_the_writer_process_ends_with_the_gateway_even_when_it_is_killed(
    start_gateway, upstream, upstream_b, openai_client
):
    gw = start_gateway(LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url), env=FAST_FLUSH)
    ask(openai_client(gw))
    poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 1, window="week")
    [writer] = writer_pids(gw)
    gw.proc.kill()  # no shutdown: the writer sees its pipe close
    gw.proc.wait(10)
    poll(lambda: not alive(writer), what="the orphaned writer process to exit", timeout=10)


@pytest.mark.redis
def test_a_redis_restart_or_outage_loses_no_event(start_gateway, upstream, upstream_b, openai_client):
    redis = RedisServer(persist=True).start()
    try:
        gw = start_gateway(
            LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url),
            # Every request reads the store (no answer kept), which is what this test is about.
            env={**FAST_FLUSH, "GATEWAY_REDIS_URL": redis.url, "GATEWAY_RANKINGS_REFRESH_S": "0"},
        )
        client = openai_client(gw)
        for _ in range(3):
            ask(client)
        poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 3, window="week")
        redis.restart()  # persisted events come back
        assert rankings(gw.url, window="week")["totals"]["requests"] == 3  # a stale pooled connection is retried
        redis.stop()  # an outage: the proxy keeps answering, the recorder buffers
        for _ in range(3):
            ask(client)
        list(ask(client, stream=True))
        assert httpx.get(gw.url + "/v1/rankings", headers={"authorization": "Bearer sk-test"}).status_code == 503
        redis.start()
        body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 7, window="week")
        assert body["totals"]["tokens"] == 7 * PER_CALL
        assert "usage store write failed" in gw.log()
    finally:
        redis.cleanup()


@pytest.mark.redis
def test_two_gateways_on_one_redis_agree_on_one_ranking(
    start_gateway, upstream, upstream_b, redis_server, openai_client
):
    config = LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url)
    env = {**FAST_FLUSH, "GATEWAY_REDIS_URL": redis_server.url}
    one, two = start_gateway(config, env=env), start_gateway(config, env=env)
    for _ in range(4):
        ask(openai_client(one, default_headers={"X-Title": "first"}))
    for _ in range(6):
        list(ask(openai_client(two, default_headers={"X-Title": "second"}), stream=True))
    first = poll_rankings(one.url, lambda b: b["totals"]["requests"] == 10, window="week")
    second = poll_rankings(two.url, lambda b: b["totals"]["requests"] == 10, window="week")
    assert first == second
    assert first["totals"]["tokens"] == 10 * PER_CALL
    assert {a["app"]: a["requests"] for a in first["apps"]["top"]} == {"second": 6, "first": 4}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_fixture_matches_in_the_api_and_the_cli(kind, start_gateway, tmp_path, request):
    store_env: dict[str, str] = {}
    if kind == "redis":
        store_env["GATEWAY_REDIS_URL"] = request.getfixturevalue("redis_server").url
    gw = start_gateway(FIXTURE_CONFIG, env={**store_env, "GATEWAY_API_KEYS": "team-a:sk-test"})
    cli_env = {**store_env, "GATEWAY_DATA_DIR": str(gw.dir / "data"), "GATEWAY_CONFIG": str(gw.config_path)}
    done = gateway_cli("usage", "import", str(write_fixture(tmp_path / "fixture.jsonl")), env=cli_env)
    assert done.returncode == 0, done.stderr
    assert b"14 imported, 0 already present, 0 bad lines" in done.stdout

    api = rankings(gw.url, window="week", end=WEEK_END, limit=3)
    throughput = api.pop("throughput")
    # The operator's static key (no admin key set) sees every tenant's traffic: said in `scope`.
    assert api.pop("scope") == {"key": None, "team": None, "all_visible": True}
    assert api == EXPECTED
    assert [(t["model"], t["backend"], t["input_price"]) for t in throughput] == [
        ("deepseek/deepseek-v3.2", "deepseek", 0.28),
        ("qwen/qwen3-32b", "groq", 0.29),
        ("moonshotai/kimi-k2.5", "openrouter", 0.6),
    ]

    as_json = gateway_cli("rankings", "--window", "week", "--end", WEEK_END, "--limit", "3", "--json", env=cli_env)
    assert as_json.returncode == 0, as_json.stderr
    # The API's answer, `scope` included: the CLI reads the whole store, as the operator's key sees it.
    assert json.loads(as_json.stdout) == {
        **api,
        "throughput": throughput,
        "scope": {"key": None, "team": None, "all_visible": True},
    }

    table = gateway_cli("rankings", "--window", "week", "--end", WEEK_END, "--limit", "3", env=cli_env)
    assert table.returncode == 0, table.stderr
    lines = [" ".join(line.split()) for line in table.stdout.decode().splitlines()]
    for expected in (
        "Rankings, week 2025-03-10 .. 2025-03-16 (previous 2025-03-03 .. 2025-03-09)",
        "1M tokens in 7 requests, $0.33, growth +25.0%",
        "1 ▲1 deepseek/deepseek-v3.2 600K 60.0% +100.0%",
        "2 ▼1 qwen/qwen3-32b 300K 30.0% -25.0%",
        "3 new moonshotai/kimi-k2.5 45K 4.5% -",
        "Others (2 models) 55K 5.5%",
        "3 = z-ai 55K 5.5% -45.0%",
        "1 deepseek/deepseek-v3.2 600K 93.0%",
        "1 Cline 645K 68.3% +545.0%",
        "2 SillyTavern 300K -200K",
    ):
        assert expected in lines, f"{expected!r} not in:\n" + "\n".join(lines)
    assert lines.index("Category: programming") < lines.index("Category: chat")

    again = gateway_cli("usage", "import", str(tmp_path / "fixture.jsonl"), env=cli_env)
    assert b"0 imported, 14 already present" in again.stdout
    assert rankings(gw.url, window="week", end=WEEK_END, limit=3)["totals"] == EXPECTED["totals"]


def test_import_reports_bad_lines_by_number_and_keeps_the_good_ones(tmp_path):
    from gateway.usage.jsonl import event_line
    from tests.usage.fixtures import EVENTS

    lines = [
        event_line(EVENTS[0]),
        b"{oops\n",
        event_line(EVENTS[1]),
        b'{"id": "x", "timestamp": "2025-03-10", "model": "a/b", "prompt_tokens": "lots", "completion_tokens": 1}\n',
    ]
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"".join(lines))
    env = {"GATEWAY_DATA_DIR": str(tmp_path / "data")}
    done = gateway_cli("usage", "import", str(path), env=env)
    assert done.returncode == 1
    store, *errors = done.stderr.decode().splitlines()
    assert (
        store
        == f"gateway usage import writes to SQLite {tmp_path / 'data' / 'usage.sqlite3'} (empty: nothing recorded there yet)"
    )
    assert errors[0].startswith(f"{path}:2: not valid JSON")
    assert errors[1].startswith(f"{path}:4: prompt_tokens:")
    assert b"2 imported, 0 already present, 2 bad lines" in done.stdout
    exported = gateway_cli("usage", "export", "--start", "2025-03-01", "--end", "2025-03-31", env=env)
    assert sorted(json.loads(line)["id"] for line in exported.stdout.splitlines()) == ["w1", "w2"]


def test_rankings_api_rejects_bad_parameters_in_openai_shape(start_gateway):
    gw = start_gateway(FIXTURE_CONFIG)
    for params, param in (({"window": "year"}, "window"), ({"end": "03/16/2025"}, "end"), ({"limit": "0"}, "limit")):
        response = httpx.get(gw.url + "/v1/rankings", params=params)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == param
    response = httpx.get(gw.url + "/v1/rankings/series", params={"granularity": "hour"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "granularity"
