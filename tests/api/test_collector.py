"""The garbage collector's young threshold while the gateway serves: agent-sized requests in
flight (a thousand or more containers each, alive until answered) set off no collection, and
the process's own threshold is back once the app stops."""

from __future__ import annotations

import asyncio
import gc

import httpx
import orjson

from gateway.api.app import YOUNG_COLLECTION_THRESHOLD, create_app
from gateway.settings import Settings
from tests.support.inprocess import MOCK_POLICY, lifespan


def _tool(i: int) -> dict:
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Path relative to the repository root."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "options": {"type": "object", "properties": {"mode": {"type": "string", "enum": ["fast", f"v{i}"]}}},
        },
        "required": ["path"],
    }
    return {"type": "function", "function": {"name": f"tool_{i}", "description": "A tool.", "parameters": schema}}


def _agent_turn() -> dict:
    """A system prompt, 20 tools and 10 turns of tool calls and results."""
    messages: list[dict] = [{"role": "system", "content": "You are a coding agent. " * 100}]
    for turn in range(10):
        call = {"id": f"call_{turn}", "type": "function", "function": {"name": "tool_1", "arguments": "{}"}}
        messages.append({"role": "user", "content": [{"type": "text", "text": f"step {turn}"}]})
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "content": "ok\n" * 50})
    messages.append({"role": "user", "content": "Done?"})
    return {"model": "auto", "messages": messages, "tools": [_tool(i) for i in range(20)], "max_tokens": 16}


async def test_agent_requests_in_flight_set_off_no_young_collection(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(MOCK_POLICY)
    before = gc.get_threshold()
    app = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_recording=False))
    body = orjson.dumps(_agent_turn())
    young: list[int] = []

    def counted(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 0:
            young.append(1)

    async with lifespan(app):
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            gc.callbacks.append(counted)
            try:
                answers = await asyncio.gather(*(client.post("/v1/chat/completions", content=body) for _ in range(16)))
            finally:
                gc.callbacks.remove(counted)
    assert [a.status_code for a in answers] == [200] * 16
    assert answers[0].json()["object"] == "chat.completion"
    assert young == []  # at CPython's default threshold (700) these 16 calls set off collections
    assert gc.get_threshold() == before
