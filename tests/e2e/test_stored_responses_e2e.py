"""GET and DELETE /v1/responses/{id} on a real gateway, with the `openai` SDK: a stored
response is its owner's only, in the embedded store and in Redis, and a store that fails is
a counted 503. (Responses here are written with the store's own code, as POST /v1/responses
writes them; tests/e2e/test_responses_e2e.py creates them through the API.)"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from gateway.conversations.redis_store import RedisResponseStore
from gateway.conversations.sqlite_store import SqliteResponseStore
from gateway.conversations.store import ResponseStore, StoredResponse
from gateway.conversations.stores import FILE_NAME
from tests.support.poll import poll
from tests.support.scrape import scrape
from tests.tenants.support import bearer, cli, create_key

CONFIG = """
backends:
  up:
    type: openai
    base_url: {base_url}
    api_key: sk-upstream-secret-123456
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, context_length: 32768}}
"""
KEYS = {"GATEWAY_API_KEYS": "alice:sk-alice,bob:sk-bob"}


def _response(response_id: str) -> dict:
    text = {"type": "output_text", "text": "Stored hello.", "annotations": [], "logprobs": []}
    message = {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [text]}
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1764000000,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": "qwen/qwen3-32b",
        "output": [message],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "usage": None,
    }


def _put(store: ResponseStore, owner: str, response_id: str) -> None:
    async def put() -> None:
        try:
            await store.put(owner, StoredResponse(_response(response_id), []))
        finally:
            await store.aclose()

    asyncio.run(put())


@pytest.fixture(params=["sqlite", "redis"])
def gw_and_store(request, start_gateway, upstream):
    """A gateway with two keys, and a factory for a store client writing where it reads."""
    if request.param == "sqlite":
        gw = start_gateway(CONFIG.format(base_url=upstream.base_url), env=KEYS)
        return gw, lambda: SqliteResponseStore(gw.dir / "data" / FILE_NAME)
    from redis.asyncio import Redis

    server = request.getfixturevalue("redis_server")
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url), env={**KEYS, "GATEWAY_REDIS_URL": server.url})
    return gw, lambda: RedisResponseStore(Redis.from_url(server.url), owns_client=True)


def test_retrieve_and_delete_are_the_owners_only(gw_and_store, openai_client):
    gw, store = gw_and_store
    _put(store(), "alice", "resp_alice1")
    alice, bob = openai_client(gw, api_key="sk-alice"), openai_client(gw, api_key="sk-bob")

    got = alice.responses.retrieve("resp_alice1")
    assert (got.id, got.output_text, got.status) == ("resp_alice1", "Stored hello.", "completed")
    # Streaming a stored response: a clear 400, not a JSON body the SDK would read as no events.
    with pytest.raises(openai.BadRequestError) as refused:
        list(alice.responses.retrieve("resp_alice1", stream=True))
    assert refused.value.body["param"] == "stream" and "not supported" in refused.value.body["message"]

    with pytest.raises(openai.NotFoundError) as caught:
        bob.responses.retrieve("resp_alice1")
    assert caught.value.body["message"] == "Response with id 'resp_alice1' not found."
    assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete("resp_alice1")
    assert alice.responses.retrieve("resp_alice1").id == "resp_alice1"  # bob's delete removed nothing

    deleted = httpx.delete(gw.url + "/v1/responses/resp_alice1", headers={"authorization": "Bearer sk-alice"})
    assert deleted.status_code == 200
    assert deleted.json() == {"id": "resp_alice1", "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        alice.responses.retrieve("resp_alice1")
    with pytest.raises(openai.NotFoundError):
        alice.responses.delete("resp_alice1")


def test_unknown_ids_and_missing_keys(gw_and_store, openai_client):
    gw, _ = gw_and_store
    with pytest.raises(openai.NotFoundError):
        openai_client(gw, api_key="sk-alice").responses.retrieve("resp_never")
    with pytest.raises(openai.AuthenticationError):
        openai_client(gw, api_key="sk-wrong").responses.retrieve("resp_never")


def test_a_gateway_without_keys_has_one_owner(start_gateway, upstream, openai_client):
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url))
    _put(SqliteResponseStore(gw.dir / "data" / FILE_NAME), "", "resp_open")
    assert openai_client(gw, api_key="anything").responses.retrieve("resp_open").id == "resp_open"
    openai_client(gw, api_key="something-else").responses.delete("resp_open")
    with pytest.raises(openai.NotFoundError):
        openai_client(gw).responses.retrieve("resp_open")


def test_a_redis_that_is_down_is_a_counted_503(start_gateway, upstream, redis_server, openai_client):
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url), env={**KEYS, "GATEWAY_REDIS_URL": redis_server.url})
    redis_server.stop()
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(gw, api_key="sk-alice").responses.retrieve("resp_x")
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "response_store_unavailable"
    assert scrape(gw.url).value("gateway_response_store_errors_total", op="get") == 1
    assert "response store get failed" in gw.log()


def test_a_key_made_anew_under_an_old_name_reads_none_of_the_old_keys_responses(start_gateway, upstream, tmp_path):
    """A virtual key owns its stored responses by its name and creation: a rotation keeps
    them; a key made anew under the name (its key store lost, or restored from a backup
    older than the key) is another key. Records stored before, owned by the name alone, are
    read by the key that made them (created since it was) only."""
    data = tmp_path / "data"
    old = create_key("alice", data_dir=data)
    env = {"GATEWAY_DATA_DIR": str(data), "GATEWAY_KEYS_REFRESH_S": "0.2"}
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url), env=env)
    body = {"model": "qwen/qwen3-32b", "input": "The old key's secret."}
    made = httpx.post(gw.url + "/v1/responses", json=body, headers=bearer(old))
    assert made.status_code == 200, made.text
    first = made.json()
    rotated = json.loads(cli("keys", "rotate", "alice", "--json", data_dir=data).stdout)["key"]
    poll(
        lambda: httpx.get(gw.url + f"/v1/responses/{first['id']}", headers=bearer(rotated)).status_code == 200,
        what="the rotated key reading its response",
        timeout=15,
    )

    for path in data.glob("keys.sqlite3*"):  # the key store lost: alice made anew
        path.rename(tmp_path / path.name)
    new = create_key("alice", data_dir=data)
    poll(
        lambda: httpx.get(gw.url + "/v1/models", headers=bearer(new)).status_code == 200, what="the new key", timeout=15
    )
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=new, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first["id"])
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(first["id"])
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first["id"])
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="qwen/qwen3-32b", input="Go on.", previous_response_id=first["id"])
    assert refused.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="qwen/qwen3-32b", input=[{"type": "item_reference", "id": first["output"][0]["id"]}]
        )
    assert refused.value.body["param"] == "input"

    # Stored before owners were keys (by the name alone): read by the key created before them.
    made_after = {**_response("resp_legacy_new"), "created_at": int(time.time()) + 5}
    made_before = {**_response("resp_legacy_old"), "created_at": 1764000000}
    for response in (made_after, made_before):
        store = SqliteResponseStore(data / FILE_NAME)
        asyncio.run(_put_record(store, "alice", response))
    assert client.responses.retrieve("resp_legacy_new").id == "resp_legacy_new"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_legacy_old")
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_legacy_old")
    client.responses.delete("resp_legacy_new")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_legacy_new")
    assert len(upstream.received) == 1  # the first call only: every refusal before any backend


async def _put_record(store: ResponseStore, owner: str, response: dict) -> None:
    try:
        await store.put(owner, StoredResponse(response, []))
    finally:
        await store.aclose()
