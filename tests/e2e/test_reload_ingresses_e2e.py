"""Hot reload of the routing YAML while a legacy completions stream is in flight, with the
`openai` SDK as the client: a broken file changes nothing, the backend a new file removes
finishes the stream it is serving (and the ledger records it), and the new file's `aliases:`
and `kind:` apply to the next request, on /v1/completions and /v1/embeddings alike."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.test_embeddings_completions_e2e import export_today
from tests.support.poll import poll

BACKEND = """
  {name}:
    type: openai
    base_url: {url}
    api_key: sk-{name}-123456
    models:
      acme/embed: {{upstream_id: embed-v1, kind: embedding, input_price: {price}}}
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder, input_price: {price}, output_price: {price}}}"""
FLEX = "\n      acme/flex: {{upstream_id: flex-v1, kind: {kind}, input_price: 0.5}}"
ROUTES = """
routes:
  embed: {{models: [acme/embed]}}
  coder: {{models: [qwen/qwen3-coder]}}
aliases:
  "{alias}": {target}
"""
ENV = {"GATEWAY_USAGE_FLUSH_S": "0.05", "GATEWAY_API_KEYS": "team-a:sk-test"}


def policy(a: str | None, b: str, *, flex: str, alias: str, target: str) -> str:
    backends = "backends:"
    if a is not None:
        backends += BACKEND.format(name="up-a", url=a, price=1.0)
    backends += BACKEND.format(name="up-b", url=b, price=3.0) + FLEX.format(kind=flex)
    return backends + ROUTES.format(alias=alias, target=target)


def status(gw) -> dict:
    return httpx.get(gw.url + "/admin/status", headers={"authorization": "Bearer sk-test"}).json()["config"]


def reloads(gw) -> dict[str, float]:
    lines = httpx.get(gw.url + "/metrics").text.splitlines()
    return {
        result: float(line.rsplit(" ", 1)[1])
        for result in ("success", "failure")
        for line in lines
        if line.startswith(f'gateway_config_reloads_total{{result="{result}"}}')
    }


def test_a_reload_mid_stream_finishes_the_stream_and_applies_to_the_next_request(
    start_gateway, upstream, upstream_b, openai_client
):
    first = policy(upstream.base_url, upstream_b.base_url, flex="embedding", alias="text-embedding-*", target="embed")
    gw = start_gateway(first, env=ENV)
    client = openai_client(gw)
    upstream.reset(content="one two three four", hold_after_events=2)
    try:
        raw = client.completions.with_raw_response.create(model="coder", prompt="def f():", stream=True)
        assert raw.headers["x-gateway-backend"] == "up-a"
        chunks = iter(raw.parse())
        texts = [next(chunks).choices[0].text]  # the stream is under way, held by up-a

        gw.write_config("backends: [this is: not yaml")  # a broken edit: the old policy serves
        poll(lambda: status(gw)["last_reload_error"], what="the rejection", context=gw.log)
        assert reloads(gw) == {"success": 0.0, "failure": 1.0}
        assert "config reload rejected, still serving version" in gw.log()
        served = client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input="x", encoding_format="float"
        )
        assert served.headers["x-gateway-backend"] == "up-a"

        # up-a removed, the alias pointed elsewhere, acme/flex now a chat model.
        gw.write_config(policy(None, upstream_b.base_url, flex="chat", alias="gpt-*", target="coder"))
        poll(lambda: status(gw)["reloads_ok"] == 1, what="the reload", context=gw.log)
        assert status(gw)["last_reload_error"] is None and reloads(gw) == {"success": 1.0, "failure": 1.0}
    finally:
        upstream.behaviour.release.set()
    texts += [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == "one two three four "  # up-a, removed, finished what it was serving

    moved = client.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="def f():")
    assert (moved.headers["x-gateway-route"], moved.headers["x-gateway-backend"]) == ("coder", "up-b")
    assert (
        client.completions.with_raw_response.create(model="acme/flex", prompt="x").headers["x-gateway-backend"]
        == "up-b"
    )
    with pytest.raises(openai.NotFoundError):  # the old alias is gone
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError) as caught:  # no longer an embedding model
        client.embeddings.create(model="acme/flex", input="x")
    assert caught.value.code == "model_not_supported"
    assert (len(upstream.received), len(upstream_b.received)) == (2, 2)

    rows = poll(lambda: r if len(r := export_today(gw)) == 4 else None, what="four ledger rows")
    assert sorted((e["endpoint"], e["backend"], e["model"], e["status"], e["completion_tokens"]) for e in rows) == [
        ("completions", "up-a", "qwen/qwen3-coder", 200, 7),  # the stream across the reload
        ("completions", "up-b", "acme/flex", 200, 7),
        ("completions", "up-b", "qwen/qwen3-coder", 200, 7),
        ("embeddings", "up-a", "acme/embed", 200, 0),
    ]
