"""A client's JSON nested deeper than the gateway can write again (orjson reads about 1,000
levels and writes 254) is the client's mistake: a 400 in the ingress API's own shape, the
upstream never called, no circuit counting it. Before, the encoder's TypeError in the
adapter failed each attempt as the backend's fault, so three such requests from one client
opened the circuit of a healthy backend for every other client (and a deep tool_use input
on /v1/messages was a 500 in OpenAI's shape)."""

from __future__ import annotations

import json
import sqlite3

import anthropic
import httpx
import openai
import pytest

from tests.support.poll import poll

CONFIG = """
backends:
  only:
    type: openai
    base_url: {a}
    circuit: {{failure_threshold: 2, cooldown_s: 30}}
    models: {{m/x: {{upstream_id: up-x}}}}
routes:
  auto: {{strategy: ordered, models: [m/x]}}
aliases:
  "claude-*": auto
"""

DEPTH = 300  # past orjson's write depth, well within its read depth


def deep(depth: int = DEPTH) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(CONFIG.format(a=upstream.base_url))


def statuses(gw, count: int) -> list[int]:
    def rows():
        with sqlite3.connect(gw.dir / "data" / "usage.sqlite3") as db:
            found = [r[0] for r in db.execute("SELECT status FROM events ORDER BY timestamp")]
        return found if len(found) >= count else None

    return poll(rows, what=f"{count} ledger rows", ignore=(sqlite3.OperationalError,))


def test_a_deep_tool_schema_is_a_400_that_never_reaches_the_upstream_nor_opens_its_circuit(gw, upstream):
    tool = {"type": "function", "function": {"name": "t", "parameters": {"type": "object", "properties": deep()}}}
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
    for stream in (False, True, False, True):  # twice the circuit's threshold
        r = httpx.post(gw.url + "/v1/chat/completions", json={**body, "stream": stream})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "request_not_encodable" and "nested too deeply" in error["message"]
        assert error["type"] == "invalid_request_error"
    assert upstream.received == []
    # The backend is as healthy as before: the next client is answered by it.
    ok = httpx.post(
        gw.url + "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert ok.status_code == 200 and ok.headers["x-gateway-backend"] == "only"
    assert len(upstream.received) == 1
    # Refused before routing, as any malformed request is: no attempt, so no ledger row.
    assert statuses(gw, 1) == [200]
    circuits = {(c["backend"], c["model"]): c["state"] for c in httpx.get(gw.url + "/admin/status").json()["circuits"]}
    assert circuits == {("only", "m/x"): "closed"}


def test_a_deep_tool_use_input_on_messages_is_an_anthropic_400(gw, upstream):
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    messages = [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": deep()}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}]},
    ]
    for call, kwargs in ((client.messages.create, {"max_tokens": 16}), (client.messages.count_tokens, {})):
        with pytest.raises(anthropic.BadRequestError) as raised:
            call(model="claude-sonnet-4-5", messages=messages, **kwargs)
        assert raised.value.body["type"] == "error"
        assert raised.value.body["error"]["type"] == "invalid_request_error"
        assert "nested too deeply" in raised.value.body["error"]["message"]
    assert upstream.received == []


def test_deep_function_call_arguments_on_responses_are_an_openai_400(gw, upstream):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    items = [
        {"role": "user", "content": "search"},
        {
            "type": "tool_search_call",
            "call_id": "c1",
            "arguments": deep(),
            "execution": "client",
            "status": "completed",
        },
        {
            "type": "tool_search_output",
            "call_id": "c1",
            "execution": "client",
            "tools": [],
        },  # answered, as OpenAI requires
        {"role": "user", "content": "go on"},
    ]
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="auto", input=items, store=False)
    assert raised.value.body["code"] == "request_not_encodable"
    assert upstream.received == []


# Past Python's own recursion limit too (about 1,000 frames), within orjson's read depth
# (1,024): such a value could not even be printed. Written as text: the SDKs' encoders would
# recurse as deep.
DEEPEST = 1000


def _deep_text(depth: int = DEEPEST) -> str:
    return '{"a":' * depth + "{}" + "}" * depth


def test_a_tool_schema_nested_past_pythons_recursion_limit_is_a_400_on_every_ingress(gw, upstream):
    schema = {"type": "object", "properties": "DEEP"}
    hi = [{"role": "user", "content": "hi"}]
    requests = {
        "/v1/chat/completions": {
            "model": "auto",
            "messages": hi,
            "tools": [{"type": "function", "function": {"name": "t", "parameters": schema}}],
        },
        "/v1/messages": {
            "model": "auto",
            "max_tokens": 16,
            "messages": hi,
            "tools": [{"name": "t", "input_schema": schema}],
        },
        "/v1/messages/count_tokens": {
            "model": "auto",
            "messages": hi,
            "tools": [{"name": "t", "input_schema": schema}],
        },
        "/v1/responses": {
            "model": "auto",
            "input": "hi",
            "tools": [{"type": "function", "name": "t", "parameters": schema}],
        },
    }
    bodies = {path: json.dumps(r).replace('"DEEP"', _deep_text()) for path, r in requests.items()}
    for path, body in bodies.items():
        r = httpx.post(gw.url + path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, r.status_code, r.text)
        if path.startswith("/v1/messages"):
            assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error", path
            assert "nested too deeply" in r.json()["error"]["message"]
            assert r.headers["request-id"] == r.headers["x-request-id"]
        else:
            assert r.json()["error"]["code"] == "request_not_encodable", path
    assert upstream.received == []
    # Refused as the client's mistake, not logged as the gateway's fault.
    assert "Traceback" not in gw.log()
