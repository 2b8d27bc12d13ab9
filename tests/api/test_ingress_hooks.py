"""The generic handler's hooks for stateful ingresses (`Ingress.prepare`, `Ingress.completed`),
driven in-process: the real app with its lifespan, the built-in mock backend, and a test
ingress (a chat ingress with hooks) mounted on its own path."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import orjson
import pytest

from gateway.api.app import create_app
from gateway.api.chat import ChatIngress
from gateway.api.fastpath import FastPathApp
from gateway.api.ingress import handle
from gateway.protocol.errors import GatewayError
from gateway.settings import Settings
from tests.support.inprocess import MOCK_POLICY, lifespan

POLICY = MOCK_POLICY


class Hooked(ChatIngress):
    """Chat, plus hooks that record when they ran and what they saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    async def prepare(self, request, principal, state):
        self.seen.append(("prepare", request.chat.payload["messages"][-1]["content"]))
        if request.chat.payload["messages"][-1]["content"] == "refuse":
            raise GatewayError(404, "no such stored thing", code="not_found")
        # What a stored conversation would add: routing and the backend see it.
        request.chat.payload["messages"].insert(0, {"role": "system", "content": "from the store"})
        return request

    async def completed(self, request, opened):
        self.seen.append(("completed", opened.offer.backend))
        if request.chat.payload["messages"][-1]["content"] == "fail to store":
            raise RuntimeError("the store is down")


@asynccontextmanager
async def running(tmp_path, ingress: Hooked):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    outer = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_recording=False))

    async def route(scope, receive, send):
        await handle(scope, receive, send, ingress)

    app = FastPathApp(outer.app, {"/v1/hooked": route})
    async with lifespan(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield client


def ask(content: str, stream: bool = False) -> bytes:
    return orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": content}], "stream": stream})


@pytest.mark.parametrize("stream", [False, True])
async def test_prepare_runs_before_routing_and_completed_before_the_answer_ends(tmp_path, stream):
    ingress = Hooked()
    async with running(tmp_path, ingress) as client:
        response = await client.post("/v1/hooked", content=ask("hi", stream))
    assert response.status_code == 200 and response.headers["x-gateway-backend"] == "mock"
    assert ingress.seen == [("prepare", "hi"), ("completed", "mock")]


async def test_a_gateway_error_in_prepare_is_the_clients_answer_and_nothing_is_called(tmp_path):
    ingress = Hooked()
    async with running(tmp_path, ingress) as client:
        response = await client.post("/v1/hooked", content=ask("refuse"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert ingress.seen == [("prepare", "refuse")]  # never routed, never completed


async def test_a_failing_completed_hook_still_delivers_the_answer(tmp_path, caplog):
    ingress = Hooked()
    async with running(tmp_path, ingress) as client:
        response = await client.post("/v1/hooked", content=ask("fail to store"))
    assert response.status_code == 200 and response.json()["choices"]
    assert ingress.seen == [("prepare", "fail to store"), ("completed", "mock")]
    assert "the completed hook failed" in caplog.text
