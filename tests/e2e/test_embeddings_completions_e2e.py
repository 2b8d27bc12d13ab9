"""POST /v1/embeddings and POST /v1/completions through real gateway processes, with the
official `openai` SDK as the client and fake OpenAI upstreams over HTTP: bodies passed through
untouched, fallback with exact attempt counts, the ledger's rows and the rankings' category."""

from __future__ import annotations

import base64
import json
import struct
import time

import httpx
import openai
import pytest

from gateway.usage.rankings import today_utc
from tests.e2e.usage_helpers import gateway_cli, poll_rankings
from tests.support.fake_endpoints import vector
from tests.support.poll import poll

CONFIG = """
backends:
  up-a:
    type: openai
    base_url: {a}
    api_key: sk-a-123456
    timeout_s: 5
    models:
      acme/embed: {{upstream_id: acme-embed-v1, kind: embedding, input_price: 0.1}}
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder, input_price: 1.0, output_price: 2.0}}
  up-b:
    type: openai
    base_url: {b}
    api_key: sk-b-123456
    timeout_s: 5
    models:
      acme/embed: {{upstream_id: acme-embed-v1, kind: embedding, input_price: 0.3}}
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder, input_price: 3.0, output_price: 4.0}}
  chat-only:
    type: deepseek                   # serves chat completions only (the vendor registry's default)
    base_url: {a}
    api_key: sk-d-123456
    models:
      deepseek/deepseek-v3.2: {{input_price: 0.2}}
routes:
  embed: {{models: [acme/embed]}}
  coder: {{models: [qwen/qwen3-coder]}}
  chatty: {{models: [deepseek/deepseek-v3.2]}}
aliases:
  "text-embedding-*": embed
"""
ENV = {"GATEWAY_USAGE_FLUSH_S": "0.05", "GATEWAY_API_KEYS": "team-a:sk-test"}
FIM_PROMPT = "def add(a, b):\n    "
FIM_SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture
def gw(start_gateway, upstream, upstream_b):
    return start_gateway(CONFIG.format(a=upstream.base_url, b=upstream_b.base_url), env=ENV)


def export_today(gw) -> list[dict]:
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(gw.dir / "data"))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_embeddings_pass_through_float_and_base64_with_fallback_ledger_and_category(
    gw, upstream, upstream_b, openai_client
):
    client = openai_client(gw)
    floats = client.embeddings.create(model="text-embedding-3-small", input=["a cat", "a dog"], encoding_format="float")
    assert [d.embedding for d in floats.data] == [vector(0, 3), vector(1, 3)]
    assert (floats.model, floats.usage.prompt_tokens) == ("acme-embed-v1", 11)
    # The cheaper backend, asked with its own model id and the client's fields untouched.
    assert upstream.received[-1].body == {
        "model": "acme-embed-v1",
        "input": ["a cat", "a dog"],
        "encoding_format": "float",
    }

    # The SDK asks for base64 by default and decodes it: the upstream's bytes reached it as sent.
    raw = client.embeddings.with_raw_response.create(model="embed", input="a cat", dimensions=5)
    assert upstream.received[-1].body == {
        "model": "acme-embed-v1",
        "input": "a cat",
        "dimensions": 5,
        "encoding_format": "base64",
    }
    sent = raw.http_response.json()["data"][0]["embedding"]
    assert sent == base64.b64encode(struct.pack("<5f", *vector(0, 5))).decode()
    assert raw.parse().data[0].embedding == vector(0, 5)
    assert (raw.headers["x-gateway-backend"], raw.headers["x-gateway-task"]) == ("up-a", "embeddings")

    tokens = client.embeddings.create(model="embed", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert len(tokens.data) == 2 and upstream.received[-1].body["input"] == [[1, 2, 3], [4, 5]]
    assert len(upstream.received) == 3 and upstream_b.received == []

    upstream.reset(status=503)  # the cheaper backend fails: exactly one attempt there, one on up-b
    raw = client.embeddings.with_raw_response.create(model="embed", input="a fish", encoding_format="float")
    assert raw.headers["x-gateway-backend"] == "up-b" and raw.parse().data[0].embedding == vector(0, 3)
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)

    with pytest.raises(openai.BadRequestError) as caught:  # a chat route on the embeddings endpoint
        client.embeddings.create(model="coder", input="x")
    assert caught.value.code == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="embed", input=[])
    assert caught.value.param == "input"
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)  # neither reached a backend

    client.chat.completions.create(
        model="coder", messages=[{"role": "user", "content": "What is the capital of Peru?"}]
    )
    body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 5, window="week")
    categories = body["categories"]
    assert [(e["model"], e["requests"], e["tokens"]) for e in categories["embeddings"]] == [("acme/embed", 4, 44)]
    assert [e["model"] for e in categories["chat"]] == ["qwen/qwen3-coder"]  # the chat board holds chat only

    rows = sorted(export_today(gw), key=lambda e: (e["timestamp"], e["attempt"]))
    embedded = [e for e in rows if e["endpoint"] == "embeddings"]
    assert [(e["backend"], e["status"], e["final"], e["attempt"]) for e in embedded] == [
        ("up-a", 200, True, 1),
        ("up-a", 200, True, 1),
        ("up-a", 200, True, 1),
        ("up-a", 503, False, 1),
        ("up-b", 200, True, 2),
    ]
    finals = [e for e in embedded if e["final"]]
    assert {(e["category"], e["prompt_tokens"], e["completion_tokens"], e["key"]) for e in finals} == {
        ("embeddings", 11, 0, "team-a")
    }
    assert [e["cost"] for e in finals] == pytest.approx([11 * 0.1 / 1e6] * 3 + [11 * 0.3 / 1e6], abs=1e-12)


def test_completions_pass_through_streamed_and_not_with_fim_fallback_and_ledger(
    gw, upstream, upstream_b, openai_client
):
    client = openai_client(gw)
    answer = client.completions.create(model="coder", prompt=FIM_PROMPT, suffix=FIM_SUFFIX, max_tokens=32)
    assert (answer.object, answer.choices[0].text, answer.usage.total_tokens) == (
        "text_completion",
        "Hello from the fake upstream.",
        18,
    )
    assert upstream.received[-1].body == {
        "model": "Qwen/Qwen3-Coder",
        "prompt": FIM_PROMPT,
        "suffix": FIM_SUFFIX,
        "max_tokens": 32,
    }

    chunks = list(client.completions.create(model="coder", prompt=FIM_PROMPT, suffix=FIM_SUFFIX, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake upstream. "
    assert all(c.usage is None for c in chunks)  # asked for upstream, stripped for this client
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
    last = list(
        client.completions.create(model="coder", prompt="x", stream=True, stream_options={"include_usage": True})
    )[-1]
    assert last.usage.total_tokens == 18 and last.choices == []

    upstream.reset(stream_error_before_content=True)  # fails before any content: the next backend answers
    raw = client.completions.with_raw_response.create(model="coder", prompt=FIM_PROMPT, stream=True)
    assert raw.headers["x-gateway-backend"] == "up-b"
    assert "".join(c.choices[0].text for c in raw.parse() if c.choices) == "Hello from the fake upstream. "
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)

    # /v1/models says so beforehand: `chatty`'s only backend (deepseek) serves chat completions only.
    endpoints = {m.id: m.endpoints for m in client.models.list()}
    assert endpoints["chatty"] == ["chat", "messages", "responses"]
    assert endpoints["coder"] == ["chat", "messages", "responses", "completions"]
    assert endpoints["embed"] == ["embeddings"]
    with pytest.raises(openai.BadRequestError) as caught:  # no backend of `chatty` serves /completions
        client.completions.create(model="chatty", prompt="x")
    assert "/v1/completions" in caught.value.message and caught.value.code == "endpoint_not_supported"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="embed", prompt="x")
    assert caught.value.code == "model_not_supported"
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)

    poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 4, window="week")
    rows = [e for e in export_today(gw) if e["final"]]
    assert {e["endpoint"] for e in rows} == {"completions"}
    # The prompts are code: a code-completion plugin's traffic counts as programming.
    assert [e["category"] for e in sorted(rows, key=lambda e: e["timestamp"])] == [
        "programming",
        "programming",
        "chat",
        "programming",
    ]
    assert sorted((e["backend"], e["prompt_tokens"], e["completion_tokens"]) for e in rows) == [
        ("up-a", 11, 7),
        ("up-a", 11, 7),
        ("up-a", 11, 7),
        ("up-b", 11, 7),
    ]


def test_a_batch_without_upstream_usage_is_estimated_for_every_input(gw, upstream, openai_client):
    """Hostile testing: with no usage from the upstream, the ledger estimated only the longest
    input of a batch (100 inputs billed as one), while the limiter reserved them all."""
    client = openai_client(gw)
    upstream.reset(send_usage=False)
    client.embeddings.create(model="embed", input="a cat sat on the mat", encoding_format="float")
    client.embeddings.create(model="embed", input=["a cat sat on the mat"] * 100, encoding_format="float")
    client.completions.create(model="coder", prompt=["def add(a, b):"] * 50, max_tokens=8)
    client.completions.create(model="coder", prompt="def add(a, b):", max_tokens=8)
    rows = poll(lambda: r if len(r := export_today(gw)) == 4 else None, what="four ledger rows")
    estimated = {(e["endpoint"], e["prompt_tokens"]) for e in rows}
    one_input = next(t for endpoint, t in estimated if endpoint == "embeddings" and t < 100)
    one_prompt = next(t for endpoint, t in estimated if endpoint == "completions" and t < 100)
    assert estimated == {
        ("embeddings", one_input),
        ("embeddings", 100 * one_input),
        ("completions", one_prompt),
        ("completions", 50 * one_prompt),
    }
    assert all(e["estimated"] for e in rows)


def test_a_prompt_too_long_for_every_candidate_names_the_endpoints_own_field(gw, upstream, openai_client):
    """Hostile testing: the context-length 400 named `messages`, a field neither API has."""
    client = openai_client(gw)
    long_text = "word " * 60_000  # about 100k tokens by the gateway's estimate: past every 32k context
    with pytest.raises(openai.BadRequestError) as embeddings:
        client.embeddings.create(model="embed", input=long_text)
    with pytest.raises(openai.BadRequestError) as completions:
        client.completions.create(model="coder", prompt=long_text, max_tokens=8)
    assert (embeddings.value.code, embeddings.value.param) == ("context_length_exceeded", "input")
    assert (completions.value.code, completions.value.param) == ("context_length_exceeded", "prompt")
    assert upstream.received == []


def test_a_stream_with_vllms_continuous_usage_reaches_the_client_whole(gw, upstream, upstream_b, openai_client):
    """Hostile testing: a client asking vLLM's `continuous_usage_stats` without `include_usage`
    got an empty completion. The gateway adds `include_usage` for its ledger, so vLLM put the
    usage so far on every text chunk; the relay, stripping the usage the client had not asked
    for, read a chunk's content as chat's `delta` and dropped every text chunk whole."""
    client = openai_client(gw)
    chunks = list(
        client.completions.create(
            model="coder",
            prompt="def add(a, b):",
            stream=True,
            extra_body={"stream_options": {"continuous_usage_stats": True}},
        )
    )
    assert upstream.received[-1].body["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    assert "".join(c.choices[0].text for c in chunks) == "Hello from the fake upstream. "
    # Every text chunk as vLLM sent it (its running count included); the usage-only chunk,
    # which this client did not ask for, stripped.
    assert [(c.choices[0].finish_reason, c.usage.completion_tokens) for c in chunks] == [
        (None, 1),
        (None, 2),
        (None, 3),
        (None, 4),
        (None, 5),
        ("stop", 5),
    ]
    assert upstream_b.received == []
    rows = poll(lambda: r if len(r := export_today(gw)) == 1 else None, what="the stream's ledger row")
    assert [(e["backend"], e["prompt_tokens"], e["completion_tokens"], e["estimated"]) for e in rows] == [
        ("up-a", 11, 7, False)
    ]


def test_a_stream_of_chat_chunks_on_the_completions_endpoint_falls_back(gw, upstream, upstream_b, openai_client):
    """Hostile testing: a backend answering /v1/completions with chat chunks (`delta`, no
    `text`: a proxy mapping it to chat, say) was relayed as the answer, and the SDK read
    `text` None from every choice; its non-streamed answer in chat's shape was already a
    malformed answer that fell back."""
    chat_chunk = {"id": "chatcmpl-a", "object": "chat.completion.chunk", "created": 1, "model": "Qwen/Qwen3-Coder"}
    upstream.reset(
        raw_stream=[
            b"data: "
            + json.dumps(
                {**chat_chunk, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
            ).encode()
            + b"\n\n",
            b"data: "
            + json.dumps({**chat_chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).encode()
            + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )
    client = openai_client(gw)
    raw = client.completions.with_raw_response.create(model="coder", prompt="def add(a, b):", stream=True)
    assert raw.headers["x-gateway-backend"] == "up-b"
    assert "".join(c.choices[0].text for c in raw.parse() if c.choices) == "Hello from the fake upstream. "
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)
    rows = poll(lambda: r if len(r := export_today(gw)) == 2 else None, what="two ledger rows")
    assert sorted((e["backend"], e["status"], e["final"], e["error"]) for e in rows) == [
        ("up-a", 502, False, "malformed"),
        ("up-b", 200, True, None),
    ]


def test_an_embeddings_answer_missing_vectors_falls_back(gw, upstream, upstream_b, openai_client):
    """Hostile testing: a backend that answered three inputs with one vector was relayed and
    billed as a success; the client, which reads vector i as input i's (OpenAI sends one per
    input, `index` in order), lost two inputs without an error."""
    one = {"object": "embedding", "index": 0, "embedding": vector(0, 3)}
    upstream.reset(
        raw_body=json.dumps(
            {
                "object": "list",
                "data": [one],
                "model": "acme-embed-v1",
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        ).encode()
    )
    client = openai_client(gw)
    raw = client.embeddings.with_raw_response.create(model="embed", input=["a", "b", "c"], encoding_format="float")
    assert raw.headers["x-gateway-backend"] == "up-b"
    assert [d.embedding for d in raw.parse().data] == [vector(0, 3), vector(1, 3), vector(2, 3)]
    # The same answer to one input is whole: served as it came.
    single = client.embeddings.with_raw_response.create(model="embed", input="a", encoding_format="float")
    assert single.headers["x-gateway-backend"] == "up-a" and single.parse().data[0].embedding == vector(0, 3)
    assert (len(upstream.received), len(upstream_b.received)) == (2, 1)
    rows = poll(lambda: r if len(r := export_today(gw)) == 3 else None, what="three ledger rows")
    assert sorted((e["backend"], e["status"], e["final"], e["error"], e["prompt_tokens"]) for e in rows) == [
        ("up-a", 200, True, None, 3),
        ("up-a", 502, False, "malformed", 0),
        ("up-b", 200, True, None, 11),
    ]


def test_a_long_models_list_is_routed_in_linear_time(gw, upstream, upstream_b):
    """Hostile testing: `models` was deduplicated by searching the names kept so far for each
    one, quadratic in the list: 100,000 distinct names (2 MB of body) held the worker's event
    loop for about 50 s, every other request on it waiting. Now it is answered at once."""
    names = [f"text-embedding-{i}" for i in range(80_000)]  # all valid: the alias maps each to `embed`
    started = time.monotonic()
    answer = httpx.post(
        gw.url + "/v1/embeddings",
        json={"model": "embed", "input": "a cat", "encoding_format": "float", "models": names},
        headers={"Authorization": "Bearer sk-test"},
        timeout=8,  # before the fix: about 30 s of the gateway's CPU for this list alone
    )
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gateway-backend"] == "up-a" and answer.json()["data"][0]["embedding"] == vector(0, 3)
    assert elapsed < 8
    # One attempt, on the cheaper backend, with the gateway's own `models` field left out.
    assert (len(upstream.received), len(upstream_b.received)) == (1, 0)
    assert upstream.received[0].body == {"model": "acme-embed-v1", "input": "a cat", "encoding_format": "float"}
    with httpx.Client(timeout=8) as client:  # an unknown name deep in the list: its 404, as quickly
        refused = client.post(
            gw.url + "/v1/completions",
            json={"model": "coder", "prompt": "x", "models": [f"nope-{i}" for i in range(80_000)]},
            headers={"Authorization": "Bearer sk-test"},
        )
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "model_not_found")
    assert "nope-0" in refused.json()["error"]["message"]
    assert (len(upstream.received), len(upstream_b.received)) == (1, 0)


def resident_mb(gw) -> float:
    """The serving process's resident memory (one worker: the process started)."""
    for line in open(f"/proc/{gw.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_names_an_alias_matches_are_not_kept_whatever_their_length(gw, upstream):
    """Hostile testing: routing remembers the names an alias glob matched (at most 1,024) and
    the `models` lists it combined (at most 1,024), counted but not measured: names of 2 MB
    (`text-embedding-` and padding) and lists of 50,000 aliased names were each kept until the
    next reload, about 200 MB here, up to gigabytes for a client that keeps going."""
    headers = {"Authorization": "Bearer sk-test"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as client:

        def embed(body: dict) -> None:
            answer = client.post("/v1/embeddings", json={"input": "a cat", "encoding_format": "float", **body})
            assert answer.status_code == 200, answer.text[:300]

        embed({"model": "embed"})
        before = resident_mb(gw)
        padding = "x" * 2_000_000
        for i in range(40):  # each a new name the alias `text-embedding-*` maps to `embed`
            embed({"model": f"text-embedding-{i}-{padding}"})
        names = [f"text-embedding-{j}-{'y' * 16}" for j in range(50_000)]
        for i in range(15):  # each a new list of names, every one of them valid
            embed({"model": "embed", "models": [f"{name}-{i}" for name in names]})
        grown = resident_mb(gw) - before
    assert grown < 40, f"the gateway kept {grown:.0f} MB of what 55 requests named"
    # Each was served, once, on the cheaper backend, with its own model id.
    assert len(upstream.received) == 56
    assert {r.body["model"] for r in upstream.received} == {"acme-embed-v1"}
    assert all("models" not in r.body for r in upstream.received)


def test_a_non_streamed_answer_without_upstream_usage_bills_its_text(gw, upstream, openai_client):
    """Hostile testing: when a backend sent no usage, a non-streamed answer was billed its
    estimated prompt and no completion at all (a stream counts its content), so a key's
    budget never saw the text it was given: 1,500 characters of answer cost nothing."""
    client = openai_client(gw)
    text = "word " * 300  # 1,500 bytes: 500 tokens in the gateway's bytes / 3 measure
    upstream.reset(send_usage=False, content=text)
    completed = client.completions.with_raw_response.create(model="coder", prompt="def add(a, b):", max_tokens=600)
    assert completed.parse().choices[0].text == text and completed.parse().usage is None  # relayed as it came
    chatted = client.chat.completions.with_raw_response.create(
        model="coder", messages=[{"role": "user", "content": "Say word."}], max_tokens=600
    )
    assert chatted.parse().choices[0].message.content == text
    embedded = client.embeddings.with_raw_response.create(model="embed", input="a cat", encoding_format="float")
    assert len(upstream.received) == 3

    found = poll(lambda: r if len(r := export_today(gw)) == 3 else None, what="three ledger rows")
    rows = {e["endpoint"]: e for e in found}
    assert {name: (e["completion_tokens"], e["estimated"]) for name, e in rows.items()} == {
        "completions": (500, True),
        "chat": (500, True),
        "embeddings": (0, True),  # an embedding generates nothing
    }
    for name, raw in (("completions", completed), ("chat", chatted), ("embeddings", embedded)):
        row = rows[name]
        price = 0.1 if name == "embeddings" else 1.0
        expected = (row["prompt_tokens"] * price + row["completion_tokens"] * 2.0) / 1e6
        assert row["prompt_tokens"] > 0 and row["cost"] == pytest.approx(expected, abs=1e-12)
        assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(row["cost"], abs=1e-9)


def test_embeddings_carry_their_cost_when_asked_and_never_send_the_field_on(gw, upstream, openai_client):
    """Hostile testing found `usage` (OpenRouter's usage accounting) forwarded to the
    embeddings backend, where OpenAI answers an unknown field 400, and no cost added: the
    field is the gateway's here as on chat, and the answer is priced at what was billed."""
    client = openai_client(gw)
    asked = {"usage": {"include": True}}
    raw = client.embeddings.with_raw_response.create(
        model="embed", input=["a cat", "a dog"], encoding_format="float", extra_body=asked
    )
    answer = raw.http_response.json()
    assert answer["usage"] == {
        "prompt_tokens": 11,
        "total_tokens": 11,
        "cost": pytest.approx(11 * 0.1 / 1e6, abs=1e-12),
    }
    assert [d.embedding for d in raw.parse().data] == [vector(0, 3), vector(1, 3)]
    assert upstream.received[-1].body == {
        "model": "acme-embed-v1",
        "input": ["a cat", "a dog"],
        "encoding_format": "float",
    }

    # Not asked, whatever the field's value: the upstream's body untouched, the field not sent.
    for value in ({"include": False}, {}):
        plain = client.embeddings.with_raw_response.create(
            model="embed", input="a cat", encoding_format="float", extra_body={"usage": value}
        )
        assert plain.http_response.json()["usage"] == {"prompt_tokens": 11, "total_tokens": 11}
        assert "usage" not in upstream.received[-1].body

    # No usage from the upstream: the estimate billed (the ledger's row) is what the client reads.
    upstream.reset(send_usage=False)
    estimated = client.embeddings.with_raw_response.create(
        model="embed", input="a cat sat on the mat", encoding_format="float", extra_body=asked
    ).http_response.json()["usage"]
    assert estimated["prompt_tokens"] == estimated["total_tokens"] > 0
    assert estimated["cost"] == pytest.approx(estimated["prompt_tokens"] * 0.1 / 1e6, abs=1e-12)
    assert len(upstream.received) == 1
    rows = poll(lambda: r if len(r := export_today(gw)) == 4 else None, what="four ledger rows")
    last = max(rows, key=lambda e: e["timestamp"])
    assert (last["prompt_tokens"], last["estimated"]) == (estimated["prompt_tokens"], True)
    assert last["cost"] == pytest.approx(estimated["cost"], abs=1e-12)


def test_embedding_models_rank_in_their_category_not_on_the_chat_leaderboards(gw, upstream, openai_client):
    """A RAG indexer's embeddings (10,000 prompt tokens a call here) topped `models`,
    `authors` and the chart above the chat models, and made every chat model's share small:
    embedding models rank in the `embeddings` category only; `totals` still count every call."""
    client = openai_client(gw)
    upstream.reset(prompt_tokens=10_000)
    for _ in range(2):
        client.embeddings.create(model="embed", input="a cat")
    upstream.reset()  # chat: 11 prompt + 7 completion tokens
    client.chat.completions.create(model="coder", messages=[{"role": "user", "content": "hi"}])
    body = poll_rankings(gw.url, lambda b: b["totals"]["requests"] == 3, window="week")
    assert (body["totals"]["tokens"], body["totals"]["requests"]) == (20_018, 3)
    assert [(m["model"], m["tokens"], m["share"]) for m in body["models"]] == [("qwen/qwen3-coder", 18, 1.0)]
    assert [(a["author"], a["tokens"], a["share"]) for a in body["authors"]] == [("qwen", 18, 1.0)]
    assert body["others"] == {"models": 0, "tokens": 0, "share": 0.0}
    assert [(m["model"], m["tokens"]) for m in body["categories"]["embeddings"]] == [("acme/embed", 20_000)]
    series = httpx.get(
        gw.url + "/v1/rankings/series",
        params={"granularity": "day", "periods": 2},
        headers={"authorization": "Bearer sk-test"},
        timeout=10,
    ).json()
    assert [(m["model"], m["tokens"]) for m in series["models"]] == [("qwen/qwen3-coder", [0, 18])]
    assert (series["others"], series["totals"]) == ([0, 0], [0, 18])


def packed(index: int) -> str:
    """The fake's vector `index` (3 dimensions) as OpenAI's base64 of little-endian float32s."""
    return base64.b64encode(struct.pack("<3f", *vector(index, 3))).decode()


def test_float_lists_answering_a_request_for_base64_reach_the_client_as_base64(gw, upstream, upstream_b, openai_client):
    """Hostile testing: an upstream that ignores `encoding_format` (LM Studio, the Infinity
    worker, LocalAI until mudler/LocalAI#9135 answer floats whatever is asked) was relayed
    as it came to a client that asked for base64 (what the SDKs ask for by default), and the
    npm SDK read the float list as base64: vectors a quarter as long, silently wrong. The
    floats are encoded as the float32 base64 OpenAI sends; a float request is untouched."""
    client = openai_client(gw)
    upstream.reset(ignore_encoding_format=True)
    raw = client.embeddings.with_raw_response.create(
        model="embed", input=["a cat", "a dog"], extra_body={"usage": {"include": True}}
    )
    assert upstream.received[-1].body["encoding_format"] == "base64"  # the SDK's default, sent on
    answer = raw.http_response.json()
    assert [d["embedding"] for d in answer["data"]] == [packed(0), packed(1)]
    assert answer["usage"] == {"prompt_tokens": 11, "total_tokens": 11, "cost": pytest.approx(1.1e-6, abs=1e-12)}
    assert [d.embedding for d in raw.parse().data] == [vector(0, 3), vector(1, 3)]
    assert int(raw.headers["content-length"]) == len(raw.http_response.content)
    floats = client.embeddings.with_raw_response.create(model="embed", input="a cat", encoding_format="float")
    assert floats.http_response.json()["data"][0]["embedding"] == vector(0, 3)

    # A vector of something else than float32 numbers cannot be encoded: that answer is
    # malformed, and the next backend answers.
    for bad in (["x", 1.0], [1e39]):
        item = {"object": "embedding", "index": 0, "embedding": bad}
        upstream.reset(raw_body=json.dumps({"object": "list", "data": [item], "model": "m"}).encode())
        upstream_b.reset()
        raw = client.embeddings.with_raw_response.create(model="embed", input="a cat", encoding_format="base64")
        assert raw.headers["x-gateway-backend"] == "up-b" and raw.parse().data[0].embedding == packed(0)
        assert (len(upstream.received), len(upstream_b.received)) == (1, 1)
    rows = poll(lambda: r if len(r := export_today(gw)) == 6 else None, what="six ledger rows")
    assert sorted((e["backend"], e["status"], e["error"]) for e in rows) == [
        ("up-a", 200, None),
        ("up-a", 200, None),
        ("up-a", 502, "malformed"),
        ("up-a", 502, "malformed"),
        ("up-b", 200, None),
        ("up-b", 200, None),
    ]


def test_a_fastapi_servers_refusal_reaches_the_client_in_its_own_words(gw, upstream, upstream_b, openai_client):
    """Hostile testing: servers built on FastAPI (Infinity's embeddings, for one) refuse a
    request with `{"detail": ...}`, which the gateway did not read: the client got its 422
    as "upstream error", with no word of what to change."""
    client = openai_client(gw)
    refusal = {"detail": [{"type": "list_type", "loc": ["body", "input"], "msg": "Input should be a valid list"}]}
    upstream.reset(status=422, error_body=refusal)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(model="embed", input="a cat", encoding_format="float")
    assert caught.value.body["message"] == "input: Input should be a valid list"
    assert caught.value.code == "upstream_rejected_request"
    assert (len(upstream.received), len(upstream_b.received)) == (1, 0)  # the client's own error: no fallback
    # A parameter this model lacks (`looks_like_unsupported_feature`): the other backend is
    # asked too, and refusing alike, the client gets the last refusal in its own words.
    refused = {"detail": "Model acme-embed-v1 does not support dimensions"}
    upstream.reset(status=400, error_body=refused)
    upstream_b.reset(status=400, error_body=refused)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="embed", input="a cat", dimensions=5, encoding_format="float")
    assert caught.value.body["message"] == "Model acme-embed-v1 does not support dimensions"
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)  # each asked once


def test_an_embeddings_usage_counted_as_chats_is_billed_as_reported(gw, upstream, openai_client):
    """Hostile testing: chat's usage reader takes a count written as a whole float or a
    string of digits (as some servers and proxies write them); the embeddings reader took
    only integers, so the same report was thrown away and the call billed at the gateway's
    estimate instead of the upstream's count."""
    client = openai_client(gw)
    item = {"object": "embedding", "index": 0, "embedding": vector(0, 3)}
    for usage in ({"prompt_tokens": 900.0, "total_tokens": 900.0}, {"prompt_tokens": "900", "total_tokens": "900"}):
        upstream.reset(raw_body=json.dumps({"object": "list", "data": [item], "model": "m", "usage": usage}).encode())
        raw = client.embeddings.with_raw_response.create(
            model="embed", input="a cat", encoding_format="float", extra_body={"usage": {"include": True}}
        )
        assert raw.http_response.json()["usage"]["cost"] == pytest.approx(900 * 0.1 / 1e6, abs=1e-12)
    rows = poll(lambda: r if len(r := export_today(gw)) == 2 else None, what="two ledger rows")
    assert [(e["prompt_tokens"], e["estimated"]) for e in rows] == [(900, False), (900, False)]


def test_a_batch_of_unequal_inputs_without_upstream_usage_is_billed_at_their_sum(gw, upstream, openai_client):
    """Hostile testing: with no usage from the upstream, a batch was billed as that many
    copies of its longest input: a RAG indexer's batch of one long document and 99 short
    lines paid for 100 long documents (the limiter may reserve that much; the bill is the
    estimate of what was sent)."""
    client = openai_client(gw)
    upstream.reset(send_usage=False)
    long_text, short = "a cat sat on the mat " * 150, "a dog"
    for text in (long_text, short):
        client.embeddings.create(model="embed", input=text, encoding_format="float")
        client.completions.create(model="coder", prompt=text, max_tokens=8)
    client.embeddings.create(model="embed", input=[long_text] + [short] * 99, encoding_format="float")
    client.completions.create(model="coder", prompt=[short] * 49 + [long_text], max_tokens=8)
    client.embeddings.create(model="embed", input=[[1] * 300, [1, 2]], encoding_format="float")
    client.embeddings.create(model="embed", input=[1] * 300, encoding_format="float")
    client.embeddings.create(model="embed", input=[1, 2], encoding_format="float")
    rows = poll(lambda: r if len(r := export_today(gw)) == 9 else None, what="nine ledger rows")
    billed = [(e["endpoint"], e["prompt_tokens"]) for e in sorted(rows, key=lambda e: e["timestamp"])]
    (_, long_embedded), (_, long_prompt), (_, short_embedded), (_, short_prompt) = billed[:4]
    assert billed[4:6] == [
        ("embeddings", long_embedded + 99 * short_embedded),
        ("completions", long_prompt + 49 * short_prompt),
    ]
    assert billed[6][1] == billed[7][1] + billed[8][1]  # token arrays: each counted at its length
    assert all(e["estimated"] for e in rows)


def test_a_backend_without_fill_in_the_middle_passes_the_request_on(gw, upstream, upstream_b, openai_client):
    """Hostile testing: vLLM serves /v1/completions but refuses `suffix` (400 "suffix is not
    currently supported"), and that 400 reached a code-completion plugin as the answer
    although the route's next backend serves fill-in-the-middle. A refusal saying the backend
    does not support what was asked is this backend's lack, as a context overflow is: the
    next candidate is tried (no circuit counts it); a plain invalid request is not."""
    vllm_refusal = {
        "error": {"message": "suffix is not currently supported", "type": "BadRequestError", "param": None, "code": 400}
    }
    upstream.reset(status=400, error_body=vllm_refusal)
    client = openai_client(gw)
    raw = client.completions.with_raw_response.create(model="coder", prompt=FIM_PROMPT, suffix=FIM_SUFFIX)
    assert raw.headers["x-gateway-backend"] == "up-b"
    assert raw.parse().choices[0].text == "Hello from the fake upstream."
    assert upstream_b.received[-1].body["suffix"] == FIM_SUFFIX
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)

    # Refused by every candidate: the upstream's own 400, once each.
    upstream_b.reset(status=400, error_body=vllm_refusal)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="coder", prompt=FIM_PROMPT, suffix=FIM_SUFFIX)
    assert (caught.value.body["message"], caught.value.code) == (
        "suffix is not currently supported",
        "upstream_rejected_request",
    )
    assert (len(upstream.received), len(upstream_b.received)) == (2, 1)

    # The request itself invalid: the first backend's word is final.
    invalid = {"error": {"message": "temperature must be at most 2", "type": "BadRequestError", "code": 400}}
    upstream.reset(status=400, error_body=invalid)
    upstream_b.reset()
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="coder", prompt="x", temperature=3)
    assert (len(upstream.received), len(upstream_b.received)) == (1, 0)
    rows = poll(lambda: r if len(r := export_today(gw)) == 5 else None, what="five ledger rows")
    assert sorted((e["backend"], e["status"], e["final"]) for e in rows) == [
        ("up-a", 400, False),
        ("up-a", 400, False),
        ("up-a", 400, True),
        ("up-b", 200, True),
        ("up-b", 400, True),
    ]
