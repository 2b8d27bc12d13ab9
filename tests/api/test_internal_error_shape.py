"""A fault of the gateway's own before any backend was asked (a bug in parsing, routing or
limits) is answered like every other error of the ingress: in its API's own shape, with the
request's id, logged with its traceback and counted as a 500. Before, it escaped to the
front door, whose generic answer was OpenAI's shape on every path (the `anthropic` SDK
retried it as an unknown error, without the `request-id` header it reads). Driven in-process
with the routing decision made to fail."""

from __future__ import annotations

import logging

import orjson
import pytest

import gateway.api.ingress
import gateway.api.messages
import gateway.api.token_counts
from gateway.api.app import create_app
from gateway.settings import Settings
from tests.support.inprocess import MOCK_POLICY, lifespan, post


def _broken_decide(*args, **kwargs):
    raise RuntimeError("a bug in routing")


def _answer(sent: list[dict]) -> tuple[int, dict[bytes, bytes], dict]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), orjson.loads(body)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/messages", {"model": "auto", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"model": "auto", "input": "hi"}),
    ],
)
async def test_an_internal_error_before_routing_is_answered_in_the_ingress_own_shape(
    tmp_path, monkeypatch, caplog, path, body
):
    policy = tmp_path / "policy.yaml"
    policy.write_text(MOCK_POLICY)
    app = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_recording=False))
    monkeypatch.setattr(gateway.api.ingress, "decide", _broken_decide)
    caplog.set_level(logging.ERROR, logger="gateway.proxy")
    async with lifespan(app) as state:
        sent = await post(app, state, orjson.dumps(body), path=path)
        metrics = state["gateway_metrics"].render()[0].decode()

    status, headers, error = _answer(sent)
    assert status == 500
    request_id = headers[b"x-request-id"].decode()
    if path == "/v1/messages":
        assert error == {
            "type": "error",
            "error": {"type": "api_error", "message": "Internal gateway error."},
            "request_id": request_id,
        }
        assert headers[b"request-id"].decode() == request_id
    else:
        assert error["error"]["type"] == "server_error" and error["error"]["code"] == "internal_error"
    # Logged once, with the traceback and the request's id; counted as a 500.
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "a bug in routing" in str(logged[0].exc_info[1])
    assert 'status="500"' in metrics


async def test_an_internal_error_counting_tokens_is_answered_in_anthropics_shape(tmp_path, monkeypatch, caplog):
    """count_tokens is the Messages API's too: a fault of its own escaped to the front door,
    whose 500 was OpenAI's shape without the request's id."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(MOCK_POLICY)
    app = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_recording=False))
    monkeypatch.setattr(gateway.api.token_counts, "count_tokens", _broken_decide)
    caplog.set_level(logging.ERROR, logger="gateway.api")
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    async with lifespan(app) as state:
        sent = await post(app, state, orjson.dumps(body), path="/v1/messages/count_tokens")

    status, headers, error = _answer(sent)
    request_id = headers[b"x-request-id"].decode()
    assert (status, error) == (
        500,
        {
            "type": "error",
            "error": {"type": "api_error", "message": "Internal gateway error."},
            "request_id": request_id,
        },
    )
    assert headers[b"request-id"].decode() == request_id
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "a bug in routing" in str(logged[0].exc_info[1])
