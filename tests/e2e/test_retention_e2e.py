"""Retention as operators meet it: in SQLite, history imported with the CLI (which never
deletes), then the running gateway's writer deletes what is past
GATEWAY_USAGE_EVENTS_RETENTION_DAYS; with Redis, the raw streams in GATEWAY_REDIS_EVENTS_URL."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from gateway.usage.events import UsageEvent
from gateway.usage.jsonl import event_line
from gateway.usage.rankings import today_utc
from tests.e2e.test_usage_e2e import FAST_FLUSH, LIVE_CONFIG, ask
from tests.e2e.usage_helpers import gateway_cli, poll_rankings
from tests.support.poll import poll
from tests.support.services import RedisServer


def ids_in(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM events")}


@pytest.mark.parametrize("writer", ["process", "inline"])
def test_the_gateway_deletes_raw_events_past_retention_and_the_cli_does_not(
    writer, start_gateway, upstream, upstream_b, openai_client, tmp_path
):
    env = {**FAST_FLUSH, "GATEWAY_USAGE_EVENTS_RETENTION_DAYS": "5", "GATEWAY_USAGE_WRITER": writer}
    gw = start_gateway(LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url), env=env)
    now = datetime.now(UTC)
    history = tmp_path / "history.jsonl"
    history.write_bytes(
        b"".join(
            event_line(UsageEvent(id=i, timestamp=when, model="qwen/qwen3-32b", prompt_tokens=1, completion_tokens=1))
            for i, when in (("six-days-old", now - timedelta(days=6)), ("four-days-old", now - timedelta(days=4)))
        )
    )
    data = gw.dir / "data"
    cli_env = {"GATEWAY_USAGE_EVENTS_RETENTION_DAYS": "5"}
    for _ in range(2):  # the CLI deletes nothing: the second import finds both
        done = gateway_cli("usage", "import", str(history), "--data-dir", str(data), env=cli_env)
        assert done.returncode == 0, done.stderr
    assert b"0 imported, 2 already present" in done.stdout
    path = data / "usage.sqlite3"
    assert ids_in(path) == {"six-days-old", "four-days-old"}

    ask(openai_client(gw))  # the gateway's first write starts its first retention delete

    def pruned() -> set[str] | None:
        ids = ids_in(path)
        return ids if "six-days-old" not in ids else None

    kept = poll(pruned, what="the retention delete")
    assert "four-days-old" in kept and len(kept) == 2  # and the new call's row
    assert "raw events past retention deleted" in gw.log()


@pytest.mark.redis
@pytest.mark.parametrize("writer", ["process", "inline"])
def test_raw_events_go_to_the_events_redis_and_counts_to_the_state_redis(
    writer, start_gateway, upstream, upstream_b, openai_client, redis_server
):
    import redis

    events_redis = RedisServer().start()
    gw = None
    try:
        env = {
            **FAST_FLUSH,
            "GATEWAY_REDIS_URL": redis_server.url,
            "GATEWAY_REDIS_EVENTS_URL": events_redis.url,
            "GATEWAY_USAGE_EVENTS_RETENTION_DAYS": "3",
            "GATEWAY_USAGE_WRITER": writer,
        }
        gw = start_gateway(LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url), env=env)
        client = openai_client(gw)
        ask(client)
        upstream.reset(status=503)  # the second call falls back to up-b: two rows
        ask(client)
        poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 2, window="day")

        day = today_utc().isoformat()
        state, raw = redis.Redis.from_url(redis_server.url), redis.Redis.from_url(events_redis.url)
        stream = f"{{usage:{day}}}:events"
        assert poll(lambda: raw.xlen(stream) == 3, what="three rows in the events Redis's stream")
        assert not state.exists(stream)  # the state Redis holds counts and markers, no raw copies
        assert state.exists(f"{{usage:{day}}}:model") and state.ttl(f"{{usage:{day}}}:model") == -1
        tomorrow = datetime.combine(today_utc() + timedelta(days=1), datetime.min.time(), UTC)
        assert raw.expiretime(stream) == int((tomorrow + timedelta(days=3)).timestamp())
        state.close()
        raw.close()

        done = gateway_cli(
            "usage", "export", "--start", day, "--end", day,
            env={"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_REDIS_EVENTS_URL": events_redis.url},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert sorted((r["backend"], r["final"]) for r in rows) == [("up-a", False), ("up-a", True), ("up-b", True)]
    finally:
        if gw is not None:
            gw.stop()  # before its events Redis, which its shutdown would wait for
        events_redis.cleanup()
