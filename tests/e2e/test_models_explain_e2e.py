"""GET /v1/models in OpenAI's and Anthropic's shapes, read by the real SDKs, and
POST /v1/route/explain for every endpoint's request shape, against a real gateway process."""

from __future__ import annotations

from datetime import UTC, datetime

import anthropic
import httpx
import openai
import pytest

POLICY = """
backends:
  mock:
    type: mock
    models:
      mock/small: {context_length: 8192, input_price: 0.05}
      mock/large: {context_length: 131072, max_output_tokens: 16384, input_price: 0.5, capabilities: [tools]}
      mock/embed: {kind: embedding, dimensions: 8, input_price: 0.01}
models:
  mock/large: {name: Mock Large}
routes:
  auto: {models: [mock/small, mock/large], tasks: {code: [mock/large]}}
  embed: {models: [mock/embed]}
aliases:
  "claude-*": auto
  "gpt-5*": auto
  "text-embedding-*": embed
"""


@pytest.fixture(scope="module")
def gw():
    from tests.support.services import GatewayProcess

    gateway = GatewayProcess(POLICY).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def claude(gw):
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    yield client
    client.close()


def test_openai_list_names_each_models_kind_and_endpoints(gw, openai_client):
    models = {m.id: m for m in openai_client(gw).models.list()}
    assert list(models) == ["auto", "embed", "mock/embed", "mock/large", "mock/small"]
    assert {m.object for m in models.values()} == {"model"}
    chat = ["chat", "messages", "responses", "completions"]  # the mock serves /completions natively
    assert {name: (m.kind, m.endpoints) for name, m in models.items()} == {
        "auto": ("chat", chat),
        "embed": ("embedding", ["embeddings"]),
        "mock/embed": ("embedding", ["embeddings"]),
        "mock/large": ("chat", chat),
        "mock/small": ("chat", chat),
    }
    one = openai_client(gw).models.retrieve("mock/embed")
    assert (one.id, one.owned_by, one.kind) == ("mock/embed", "mock", "embedding")
    # A name an alias maps answers as what it resolves to, under the name asked for.
    aliased = openai_client(gw).models.retrieve("gpt-5-codex")
    assert (aliased.id, aliased.alias, aliased.resolves_to, aliased.kind) == ("gpt-5-codex", "gpt-5*", "auto", "chat")
    with pytest.raises(openai.NotFoundError):
        openai_client(gw).models.retrieve("llama-3")


def test_anthropic_list_is_what_messages_can_serve_in_anthropics_shape(gw, claude):
    page = claude.models.list()
    assert [m.id for m in page.data] == ["auto", "mock/large", "mock/small"]  # no embedding models
    assert {m.type for m in page.data} == {"model"}
    # Every model the gateway routes can be called: `active`, a field the SDK's ModelInfo
    # requires (hostile testing found it missing, read as None).
    assert {m.lifecycle for m in page.data} == {"active"}
    assert claude.models.retrieve("auto").lifecycle == "active"
    large = next(m for m in page.data if m.id == "mock/large")
    assert large.display_name == "Mock Large" and large.max_input_tokens == 131072
    # Anthropic's `max_tokens`: the offer's cap where it has one (missing before), else unsaid.
    assert large.max_tokens == 16384 and claude.models.retrieve("mock/small").max_tokens is None
    # Anthropic's `created_at` is a model's release time, "an epoch value if the release date
    # is unknown" (its ModelInfo): the gateway knows none. A walkthrough found the config's
    # load time there, a "release" that moved with every reload and differed between replicas.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert {m.created_at for m in page.data} == {claude.models.retrieve("auto").created_at} == {epoch}
    raw = httpx.get(gw.url + "/v1/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert (raw["has_more"], raw["first_id"], raw["last_id"]) == (False, "auto", "mock/small")
    assert claude.models.retrieve("mock/small").display_name == "mock/small"
    # One model looked up as the list shows them: an embedding model is not one /v1/messages
    # serves (hostile testing found it answered in Anthropic's shape, then a 400 on use).
    with pytest.raises(anthropic.NotFoundError):
        claude.models.retrieve("mock/embed")


def test_anthropic_lookup_resolves_an_alias_to_the_model_id_it_stands_for(gw, claude):
    """Claude Code's own names reach the gateway through the `claude-*` alias. Anthropic's
    lookup resolves an alias to a model id ("resolve a model alias to a model ID":
    `claude-sonnet-4-0` answers as `claude-sonnet-4-20250514`); a walkthrough found the alias
    answered under its own name. A variant (`:nitro`) is no other model's: it keeps its name."""
    aliased = claude.models.retrieve("claude-opus-4-1")
    assert (aliased.id, aliased.display_name, aliased.type) == ("auto", "auto", "model")
    assert claude.models.retrieve("claude-x").id == "auto"
    assert claude.models.retrieve("mock/large:nitro").id == "mock/large:nitro"
    # OpenAI's lookup keeps the name asked for, with the gateway's `alias` and `resolves_to`.
    raw = httpx.get(gw.url + "/v1/models/claude-opus-4-1").json()
    assert (raw["id"], raw["alias"], raw["resolves_to"]) == ("claude-opus-4-1", "claude-*", "auto")


def test_anthropic_list_pages_by_limit_and_cursors(gw, claude):
    first = claude.models.list(limit=2)
    assert [m.id for m in first.data] == ["auto", "mock/large"] and first.has_more
    rest = claude.models.list(limit=2, after_id=first.last_id)
    assert [m.id for m in rest.data] == ["mock/small"] and not rest.has_more
    before = claude.models.list(limit=1, before_id="mock/small")
    assert [m.id for m in before.data] == ["mock/large"] and before.has_more
    # The SDK pages through the whole list itself.
    assert [m.id for m in claude.models.list(limit=1)] == ["auto", "mock/large", "mock/small"]


def test_anthropic_list_filters_by_lifecycle(gw, claude):
    """Hostile testing: `lifecycle` (Anthropic's filter; without it active and deprecated
    models are listed) was ignored, so asking for retired models listed every active one."""
    everything = ["auto", "mock/large", "mock/small"]
    assert [m.id for m in claude.models.list(lifecycle=["retired"])] == []
    assert [m.id for m in claude.models.list(lifecycle=["deprecated", "retired"])] == []
    assert [m.id for m in claude.models.list(lifecycle=["active", "retired"])] == everything
    plain = httpx.get(gw.url + "/v1/models?lifecycle=retired", headers={"anthropic-version": "2023-06-01"})
    assert plain.json() == {"data": [], "has_more": False, "first_id": None, "last_id": None}
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.models.list(lifecycle=["gone"])  # type: ignore[list-item]
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "lifecycle: `gone` is not one of active, deprecated, retired.",
        },
        "request_id": caught.value.response.headers["request-id"],
    }


def test_anthropic_errors_are_anthropic_shaped(gw, claude):
    """Each names its request as Anthropic's do, in the body's `request_id` and the `request-id`
    header (a walkthrough found the model lookup's without either, unlike /v1/messages')."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.models.list(limit=0)
    request_id = caught.value.response.headers["request-id"]
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "limit: must be an integer from 1 to 1000."},
        "request_id": request_id,
    }
    assert caught.value.request_id == caught.value.response.headers["x-request-id"] == request_id
    # Hostile testing: "²" passed the digit check and crashed int() (a plain-text 500);
    # other scripts' digits ("５") were read as numbers.
    for limit in ("²", "５", "+5", " 5"):
        answer = httpx.get(gw.url + "/v1/models", params={"limit": limit}, headers={"anthropic-version": "2023-06-01"})
        assert (answer.status_code, answer.json()["error"]["message"]) == (
            400,
            "limit: must be an integer from 1 to 1000.",
        )
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.models.retrieve("nobody/nothing")
    named = missing.value.response.headers["request-id"]
    assert missing.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The model `nobody/nothing` does not exist or is not routed by this gateway. "
            "GET /v1/models lists what is.",
        },
        "request_id": named,
    }
    assert missing.value.response.headers["x-request-id"] == named != request_id
    # An answer names its request too, where the SDK reads it (`_request_id`).
    found = claude.models.with_raw_response.retrieve("auto")
    assert found.headers["request-id"] == found.headers["x-request-id"] == found.request_id
    assert found.request_id not in (request_id, named)
    listed = claude.models.with_raw_response.list()
    assert listed.headers["request-id"] == listed.headers["x-request-id"] != found.request_id


def explain(gw, endpoint: str | None, body: dict) -> httpx.Response:
    params = {"endpoint": endpoint} if endpoint else None
    return httpx.post(gw.url + "/v1/route/explain", params=params, json=body, timeout=10)


def test_explain_takes_each_endpoints_request_shape(gw):
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}, {"name": "Edit", "input_schema": {"type": "object"}}]
    messages = {
        "model": "claude-haiku-4-5-20251001",
        "max_tokens": 512,
        "system": "You are Claude Code, Anthropic's official CLI for Claude.",
        "messages": [{"role": "user", "content": "say hi"}],
        "tools": tools,
    }
    doc = explain(gw, "messages", messages).json()
    assert (doc["endpoint"], doc["requested"], doc["alias"], doc["route"]) == (
        "messages",
        "claude-haiku-4-5-20251001",
        "claude-*",
        "auto",
    )
    assert (doc["task"], doc["task_reason"]) == ("code", "coding agent tools: bash, edit")
    assert doc["try_order"] == [{"backend": "mock", "model": "mock/large"}, {"backend": "mock", "model": "mock/small"}]

    responses = {"model": "gpt-5-codex", "instructions": "Be brief.", "input": "What is the capital of Peru?"}
    doc = explain(gw, "responses", responses).json()
    assert (doc["endpoint"], doc["alias"], doc["task"], doc["try_order"][0]["model"]) == (
        "responses",
        "gpt-5*",
        "chat",
        "mock/small",
    )

    doc = explain(gw, "embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}).json()
    assert (doc["route"], doc["task"], doc["try_order"]) == (
        "embed",
        "embeddings",
        [{"backend": "mock", "model": "mock/embed"}],
    )

    doc = explain(
        gw, "completions", {"model": "auto", "prompt": "def fib(n):", "suffix": "\n", "max_tokens": 64}
    ).json()
    # The prompt is code: a code-completion plugin's traffic goes to the route's code models.
    assert (doc["endpoint"], doc["completion_tokens_budget"], doc["task"], doc["try_order"][0]["model"]) == (
        "completions",
        64,
        "code",
        "mock/large",
    )

    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    assert explain(gw, None, chat).json()["endpoint"] == "chat"


def test_explain_for_messages_routes_claude_codes_max_tokens_as_the_endpoint_does(gw, claude):
    """Claude Code asks max_tokens 32000 of every model; /v1/messages takes it as a ceiling, not
    a demand, so mock/small (8,192 context) serves it. The explanation for the same body filtered
    mock/small out ("~8 prompt + 32,000 completion tokens exceed the context") and named mock/large."""
    body = {"model": "claude-code-model", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}]}
    served = claude.messages.with_raw_response.create(**body)
    doc = explain(gw, "messages", body).json()
    assert doc["try_order"][0]["model"] == served.headers["x-gateway-model"] == "mock/small"
    assert [c["eligible"] for c in doc["candidates"]] == [True, True]


def test_explain_refuses_an_unknown_endpoint_and_a_wrong_kind(gw):
    response = explain(gw, "images", {"model": "auto"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "endpoint"
    assert "chat, messages, responses, completions, embeddings" in response.json()["error"]["message"]
    doc = explain(gw, "chat", {"model": "embed", "messages": [{"role": "user", "content": "hi"}]}).json()
    assert (doc["error_status"], doc["error"]["code"]) == (400, "model_not_supported")
    bad = explain(gw, "embeddings", {"model": "embed", "input": []})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "input")


def test_explain_refuses_endpoint_given_twice_or_empty(gw):
    """`?endpoint=chat&endpoint=messages` was read as its last value, and explained a Messages
    request to a client that may have meant chat; `?endpoint=` as chat. Each is a 400 naming
    `endpoint` now, in OpenAI's shape."""
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    query = [("endpoint", "chat"), ("endpoint", "messages")]
    twice = httpx.post(gw.url + "/v1/route/explain", params=query, json=chat, timeout=10)
    assert twice.status_code == 400
    assert twice.json()["error"] == {
        "message": "`endpoint` was given 2 times; give it once.",
        "type": "invalid_request_error",
        "param": "endpoint",
        "code": None,
    }
    empty = httpx.post(gw.url + "/v1/route/explain?endpoint=", json=chat, timeout=10)
    assert (empty.status_code, empty.json()["error"]["param"]) == (400, "endpoint")
    assert empty.json()["error"]["message"] == (
        "`endpoint` must be one of chat, messages, responses, completions, embeddings; got ''."
    )
    once = httpx.post(gw.url + "/v1/route/explain", params=query[:1], json=chat, timeout=10)
    assert (once.status_code, once.json()["endpoint"]) == (200, "chat")


def test_an_agents_own_model_name_is_served_through_its_alias(gw, openai_client):
    raw = openai_client(gw).chat.completions.with_raw_response.create(
        model="gpt-5-codex", messages=[{"role": "user", "content": "hi"}]
    )
    assert (raw.headers["x-gateway-route"], raw.headers["x-gateway-model"]) == ("auto", "mock/small")
    assert raw.parse().choices[0].message.content.startswith("This is a synthetic reply")


def test_anthropic_clients_authenticate_with_x_api_key_and_get_anthropic_errors(start_gateway):
    keyed = start_gateway(POLICY, env={"GATEWAY_API_KEYS": "team-a:sk-good"})
    good = anthropic.Anthropic(base_url=keyed.url, api_key="sk-good", max_retries=0, timeout=30)
    bad = anthropic.Anthropic(base_url=keyed.url, api_key="sk-wrong", max_retries=0, timeout=30)
    try:
        assert [m.id for m in good.models.list()] == ["auto", "mock/large", "mock/small"]
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.models.list()
        assert caught.value.body["type"] == "error"
        assert caught.value.body["error"]["type"] == "authentication_error"
    finally:
        good.close()
        bad.close()
    # Without anthropic-version the same key gets OpenAI's shape.
    denied = httpx.get(keyed.url + "/v1/models", headers={"authorization": "Bearer sk-wrong"})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"


def test_explain_refuses_what_the_endpoint_refuses(gw, claude, openai_client):
    """Hostile testing: explain read each body with a view of its own, not the endpoint's
    parser, and explained (200, a try order) requests its endpoint refuses with a 400: a
    tool_result answering no tool_use on /v1/messages, Responses' stored `prompt` template,
    a `previous_response_id` that does not exist."""
    unpaired = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "4"}]}],
    }
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(**unpaired)
    explained = explain(gw, "messages", unpaired)
    assert explained.status_code == 400
    assert explained.json()["error"]["message"] == refused.value.body["error"]["message"]

    client = openai_client(gw)
    for body, param in [
        ({"model": "auto", "input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"model": "auto", "input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(**body)
        explained = explain(gw, "responses", body)
        assert (explained.status_code, explained.json()["error"]["param"]) == (400, param)
        assert explained.json()["error"]["code"] == caught.value.code


def test_explain_routes_a_responses_continuation_on_its_whole_conversation(gw, openai_client):
    """Hostile testing: explain routed a `previous_response_id` request on its new input
    alone, so a conversation past mock/small's 8,192-token context was explained as going to
    mock/small, while the endpoint, which routes on the whole conversation, filtered it out."""
    client = openai_client(gw)
    raw = client.responses.with_raw_response.create(
        model="auto", input="Summarise this. " + "lorem ipsum dolor " * 3000
    )
    first = raw.parse()
    assert raw.headers["x-gateway-model"] == "mock/large"
    body = {"model": "auto", "input": "And in one word?", "previous_response_id": first.id}
    served = client.responses.with_raw_response.create(**body)
    doc = explain(gw, "responses", body).json()
    assert [c["model"] for c in doc["try_order"]] == ["mock/large"] == [served.headers["x-gateway-model"]]
