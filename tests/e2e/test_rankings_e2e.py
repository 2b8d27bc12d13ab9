"""/v1/rankings as a running gateway serves it: answers kept between refreshes, apps bounded per day."""

from __future__ import annotations

import json

import httpx

from gateway.usage.rankings import today_utc
from tests.e2e.usage_helpers import gateway_cli, poll_rankings, rankings
from tests.support.poll import poll

CONFIG = """
backends:
  up-a:
    type: openai
    base_url: {a}
    api_key: sk-a-123456
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, input_price: 1.0, output_price: 2.0}}
routes:
  auto:
    models: [qwen/qwen3-32b]
"""
ENV = {"GATEWAY_USAGE_FLUSH_S": "0.05", "GATEWAY_API_KEYS": "team-a:sk-test"}
PER_CALL = 11 + 7  # the fake upstream's usage


def ask(client) -> None:
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])


def recorded_today(gw) -> int:
    """Calls in the ledger, read by the CLI from the store itself (not through the rankings)."""
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(gw.dir / "data"))
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


def test_a_kept_answer_is_served_until_its_refresh_interval_passes(start_gateway, upstream, openai_client):
    gw = start_gateway(CONFIG.format(a=upstream.base_url), env={**ENV, "GATEWAY_RANKINGS_REFRESH_S": "3600"})
    client = openai_client(gw)
    ask(client)
    poll(lambda: recorded_today(gw) == 1, what="the call to be recorded")
    assert rankings(gw.url, window="week")["totals"]["requests"] == 1  # the week's first answer: computed
    ask(client)
    ask(client)
    poll(lambda: recorded_today(gw) == 3, what="the calls to be recorded")
    week = rankings(gw.url, window="week")  # kept for an hour: served without reading the store
    assert week["totals"]["requests"] == 1 and week["totals"]["tokens"] == PER_CALL
    assert rankings(gw.url, window="day")["totals"]["requests"] == 3  # another query's first answer


def test_apps_past_the_day_limit_are_ranked_as_others(start_gateway, upstream, openai_client):
    gw = start_gateway(
        CONFIG.format(a=upstream.base_url),
        env={**ENV, "GATEWAY_RANKINGS_REFRESH_S": "0", "GATEWAY_USAGE_MAX_APPS_PER_DAY": "2"},
    )
    for i in range(5):
        ask(openai_client(gw, default_headers={"HTTP-Referer": f"https://app-{i}.example", "X-Title": f"App {i}"}))
    body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 5, window="day")
    top = {row["app"]: (row["requests"], row["tokens"], row["title"]) for row in body["apps"]["top"]}
    # Which two apps were first depends on the order the writer stored them: two have rows.
    assert top.pop("others") == (3, 3 * PER_CALL, "Others")
    assert len(top) == 2 and all(requests == 1 and tokens == PER_CALL for requests, tokens, _ in top.values())
    assert all(title == f"App {app[len('https://app-') : -len('.example')]}" for app, (_, _, title) in top.items())
    assert body["totals"]["tokens"] == 5 * PER_CALL


def test_an_app_title_with_terminal_controls_reaches_no_ledger_nor_terminal(start_gateway, upstream):
    """Header bytes 0x80-0x9F arrive as the C1 control characters (ASGI decodes headers as
    Latin-1): U+009B is a terminal's CSI, so a title `\\x9b31m` coloured `gateway rankings`
    output, and U+0085 (NEL) broke its row. README: "control characters removed"."""
    gw = start_gateway(CONFIG.format(a=upstream.base_url), env={**ENV, "GATEWAY_RANKINGS_REFRESH_S": "0"})
    headers = {
        "authorization": "Bearer sk-test",
        "http-referer": b"https://evil.example/\x9b2J",
        "x-title": b"Evil\x9b31m\x85App\x9b0m",
    }
    answer = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 1, window="day")
    assert [(a["app"], a["title"]) for a in body["apps"]["top"]] == [("https://evil.example/2J", "Evil31mApp0m")]
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(gw.dir / "data"))
    assert done.returncode == 0, done.stderr
    [row] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["app"], row["app_title"]) == ("https://evil.example/2J", "Evil31mApp0m")
    shown = gateway_cli("rankings", "--window", "day", "--data-dir", str(gw.dir / "data"))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "Evil31mApp0m" in text
    assert not any("\x80" <= ch <= "\x9f" for ch in text)
