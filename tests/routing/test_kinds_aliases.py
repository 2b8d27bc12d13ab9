"""Routing by endpoint kind (embedding offers only for `/v1/embeddings`) and by alias."""

from __future__ import annotations

import pytest

from gateway.protocol.errors import GatewayError
from gateway.routing.explain import explanation, render_text
from gateway.routing.pipeline import decide, plan
from gateway.routing.resolve import MAX_REMEMBERED_ALIASED, resolve
from tests.routing.support import chat, snapshot_from

SNAP = snapshot_from(
    """
    backends:
      local:
        type: openai
        base_url: http://127.0.0.1:9/v1
        models:
          qwen/qwen3-8b: {input_price: 0.1}
          baai/bge-m3: {kind: embedding, input_price: 0.02}
          openai/text-embedding-3-small: {kind: embedding, input_price: 0.01}
      remote:
        type: openai
        base_url: http://127.0.0.1:10/v1
        models:
          baai/bge-m3: {kind: embedding, input_price: 0.05}
          moonshotai/kimi-k2.5: {input_price: 0.6}
    routes:
      auto: {models: [qwen/qwen3-8b, moonshotai/kimi-k2.5]}
      code: {models: [moonshotai/kimi-k2.5]}
      embed: {models: [baai/bge-m3, openai/text-embedding-3-small]}
    aliases:
      "claude-haiku-*": auto
      "claude-*": code
      "gpt-5*": auto
      "text-embedding-*": embed
      "kimi?": moonshotai/kimi-k2.5
    """
)


def tried(decision):
    return [(o.backend, o.model) for o in decision.candidates]


def test_embeddings_route_to_embedding_offers_cheapest_first_as_their_own_task():
    decision = decide(chat(model="embed"), {}, SNAP, endpoint="embeddings")
    assert tried(decision) == [
        ("local", "openai/text-embedding-3-small"),
        ("local", "baai/bge-m3"),
        ("remote", "baai/bge-m3"),
    ]
    assert (decision.task, decision.task_reason, decision.endpoint) == (
        "embeddings",
        "embeddings endpoint",
        "embeddings",
    )


def test_an_embeddings_call_never_reaches_a_chat_model_in_a_models_array():
    decision = decide(
        chat(model="baai/bge-m3", models=["baai/bge-m3", "qwen/qwen3-8b"]), {}, SNAP, endpoint="embeddings"
    )
    assert tried(decision) == [("local", "baai/bge-m3"), ("remote", "baai/bge-m3")]
    decision = decide(chat(model="qwen/qwen3-8b", models=["qwen/qwen3-8b", "baai/bge-m3"]), {}, SNAP)
    assert tried(decision) == [("local", "qwen/qwen3-8b")]


@pytest.mark.parametrize("endpoint", ["chat", "messages", "responses", "completions"])
def test_chat_endpoints_refuse_an_embedding_model_naming_the_right_endpoint(endpoint):
    with pytest.raises(GatewayError) as caught:
        decide(chat(model="embed"), {}, SNAP, endpoint=endpoint)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "model_not_supported", "model")
    assert (
        error.message
        == f"`embed` is an embedding model: call POST /v1/embeddings with it, not the {endpoint} endpoint."
    )


def test_the_embeddings_endpoint_refuses_a_chat_model():
    with pytest.raises(GatewayError) as caught:
        decide(chat(model="auto"), {}, SNAP, endpoint="embeddings")
    assert (caught.value.status, caught.value.code) == (400, "model_not_supported")
    assert "is not an embedding model" in caught.value.message


def test_an_agents_built_in_names_reach_routes_through_aliases_first_match_wins():
    # `claude-haiku-*` is listed before `claude-*`: the first pattern in YAML order wins.
    assert (
        resolve("claude-haiku-4-5-20251001", SNAP).route_name,
        resolve("claude-haiku-4-5-20251001", SNAP).alias,
    ) == (
        "auto",
        "claude-haiku-*",
    )
    target = resolve("claude-sonnet-4-5-20250929", SNAP)
    assert (target.route_name, target.alias, target.requested) == ("code", "claude-*", "claude-sonnet-4-5-20250929")
    target = resolve("kimi2", SNAP)
    assert (target.model, target.route_name, target.alias) == ("moonshotai/kimi-k2.5", None, "kimi?")


def test_a_configured_name_is_never_aliased_and_unmatched_names_are_still_404():
    assert resolve("auto", SNAP).alias is None
    with pytest.raises(GatewayError) as caught:
        resolve("llama-3", SNAP)
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    with pytest.raises(GatewayError):
        resolve("Claude-sonnet", SNAP)  # globs are case-sensitive, as model ids are


def test_the_decision_and_its_explanation_name_the_alias():
    decision = plan(chat(model="gpt-5-codex"), {}, SNAP, explore=False)
    assert (decision.alias, decision.route, decision.requested) == ("gpt-5*", "auto", "gpt-5-codex")
    doc = explanation(decision)
    assert (doc["alias"], doc["requested"], doc["route"], doc["endpoint"]) == ("gpt-5*", "gpt-5-codex", "auto", "chat")
    assert render_text(doc).splitlines()[0].startswith("model 'gpt-5-codex' (alias 'gpt-5*') -> route auto,")
    embedded = explanation(plan(chat(model="text-embedding-3-large"), {}, SNAP, explore=False, endpoint="embeddings"))
    assert (embedded["alias"], embedded["route"], embedded["task"]) == ("text-embedding-*", "embed", "embeddings")


def test_aliased_names_remembered_are_bounded():
    snap = snapshot_from(
        """
        backends: {b: {type: mock, models: {m/x: {}}}}
        routes: {auto: {models: [m/x]}}
        aliases: {"*": auto}
        """
    )
    for i in range(MAX_REMEMBERED_ALIASED + 500):
        assert resolve(f"client-name-{i}", snap).route_name == "auto"
    assert len(snap.memo) <= MAX_REMEMBERED_ALIASED + 5


def test_a_long_aliased_name_is_resolved_but_not_remembered():
    """Counted alone, 1,024 names of megabytes each (one glob matches any length) were held."""
    snap = snapshot_from(
        """
        backends: {b: {type: mock, models: {m/x: {}}}}
        routes: {auto: {models: [m/x]}}
        aliases: {"claude-*": auto}
        """
    )
    long_names = [f"claude-{i}-" + "x" * 100_000 for i in range(20)]
    assert {resolve(name, snap).route_name for name in long_names} == {"auto"}
    assert resolve("claude-haiku-4-5", snap).alias == "claude-*"
    remembered = [key[1] for key in snap.memo if isinstance(key, tuple) and key[0] == "resolve"]
    assert remembered == ["claude-haiku-4-5"]


NATIVE = snapshot_from(
    """
    backends:
      vllm: {type: vllm, models: {qwen/qwen3-coder: {input_price: 0.5}}}
      deepseek:
        type: deepseek
        api_key: sk-d
        models:
          deepseek/deepseek-v3.2: {input_price: 0.2}
          qwen/qwen3-coder: {input_price: 0.1}
      bare:
        type: openai
        base_url: http://127.0.0.1:9/v1
        apis: [chat]
        models: {baai/bge-m3: {kind: embedding}}
    routes:
      coder: {models: [qwen/qwen3-coder]}
      chatty: {models: [deepseek/deepseek-v3.2]}
    """
)


def test_completions_go_only_to_backends_that_serve_them_natively():
    # deepseek is cheaper but serves chat only (its registry default): vLLM answers completions.
    assert tried(decide(chat(model="coder"), {}, NATIVE, endpoint="completions")) == [("vllm", "qwen/qwen3-coder")]
    assert tried(decide(chat(model="coder"), {}, NATIVE)) == [
        ("deepseek", "qwen/qwen3-coder"),
        ("vllm", "qwen/qwen3-coder"),
    ]
    # Messages and Responses are translated through chat: every chat offer can answer.
    assert len(decide(chat(model="coder"), {}, NATIVE, endpoint="messages").candidates) == 2


@pytest.mark.parametrize(("model", "endpoint"), [("chatty", "completions"), ("baai/bge-m3", "embeddings")])
def test_a_target_without_the_native_api_is_a_400_naming_it(model, endpoint):
    with pytest.raises(GatewayError) as caught:
        decide(chat(model=model), {}, NATIVE, endpoint=endpoint)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "endpoint_not_supported", "model")
    assert error.message.startswith(f"No backend of `{model}` serves POST /v1/{endpoint}: it has no translation")
    doc = explanation(plan(chat(model=model), {}, NATIVE, explore=False, endpoint=endpoint))
    assert (doc["error_status"], doc["error"]["code"], doc["candidates"]) == (400, "endpoint_not_supported", [])
