"""The mock backend's `/embeddings` and legacy `/completions` answers, read back with the
`openai` SDK's own response types (what a client would parse them as)."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest
from openai.types import Completion, CreateEmbeddingResponse

from gateway.backends.base import UpstreamError, UpstreamRequest
from gateway.backends.mock import MAX_COMPLETION_CHOICES, MockBackend
from gateway.backends.mock_answers import embed
from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer

CONFIG = BackendConfig(type="mock", completion_tokens=8)
EMBEDDER = Offer("mock/embed", "mock", "mock/embed", ModelOffer(kind="embedding", dimensions=12))
DEFAULT_EMBEDDER = Offer("mock/embed-default", "mock", "mock/embed-default", ModelOffer(kind="embedding"))
WRITER = Offer("mock/writer", "mock", "mock/writer", ModelOffer())


async def call(offer: Offer, path: str, payload: dict, stream: bool = False) -> bytes:
    backend = MockBackend("mock", CONFIG)
    response = await backend.send(UpstreamRequest(offer, payload, stream, path=path))
    return await response.aread()


async def test_embeddings_have_the_offers_dimension_unless_the_request_asks():
    body = CreateEmbeddingResponse.model_validate(
        orjson.loads(await call(EMBEDDER, "/embeddings", {"model": "mock/embed", "input": ["a", "b"]}))
    )
    assert [len(d.embedding) for d in body.data] == [12, 12] and [d.index for d in body.data] == [0, 1]
    assert body.data[0].embedding == embed("a", 12)  # deterministic
    asked = orjson.loads(await call(EMBEDDER, "/embeddings", {"model": "m", "input": "a", "dimensions": 5}))
    assert len(asked["data"][0]["embedding"]) == 5
    default = orjson.loads(await call(DEFAULT_EMBEDDER, "/embeddings", {"model": "m", "input": [1, 2, 3]}))
    assert len(default["data"][0]["embedding"]) == 1536 and default["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_base64_embeddings_are_float32_of_the_same_vector():
    raw = orjson.loads(await call(EMBEDDER, "/embeddings", {"model": "m", "input": "a", "encoding_format": "base64"}))
    vector = struct.unpack("<12f", base64.b64decode(raw["data"][0]["embedding"]))
    assert [round(v, 6) for v in vector] == [round(v, 6) for v in embed("a", 12)]


async def test_a_bad_embeddings_request_fails_the_call_with_a_400_as_an_upstream_would():
    with pytest.raises(UpstreamError) as caught:
        await call(EMBEDDER, "/embeddings", {"model": "m", "input": []})
    assert (type(caught.value).__name__, caught.value.status, caught.value.retryable) == ("ClientRejected", 400, False)
    assert orjson.loads(caught.value.body)["error"]["param"] == "input"


async def test_a_text_completion_honours_max_tokens_n_and_usage():
    body = Completion.model_validate(
        orjson.loads(await call(WRITER, "/completions", {"model": "mock/writer", "prompt": "def add(a, b):", "n": 2}))
    )
    assert body.object == "text_completion" and len(body.choices) == 2
    assert [c.finish_reason for c in body.choices] == ["stop", "stop"]  # 8 words < OpenAI's default 16
    assert body.choices[0].text == "This is a synthetic reply from the gateway's"
    assert body.usage.completion_tokens == 16 and body.usage.prompt_tokens == 5
    cut = orjson.loads(await call(WRITER, "/completions", {"model": "m", "prompt": ["x", "y"], "max_tokens": 3}))
    # A batch: `n` choices for each prompt, as OpenAI answers it (hostile testing found one in all).
    assert [(c["index"], c["text"], c["finish_reason"]) for c in cut["choices"]] == [
        (0, "This is a", "length"),
        (1, "This is a", "length"),
    ]
    assert cut["usage"]["completion_tokens"] == 6
    batch = {"model": "m", "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 3}
    assert [c["index"] for c in orjson.loads(await call(WRITER, "/completions", batch))["choices"]] == list(range(6))


async def test_a_completions_batch_of_more_choices_than_the_mock_holds_is_a_400():
    """Hostile testing: 20,000 one-letter prompts with n=128 (a 100 KB body) made the mock
    build 2.5 million choices (650 MB, seconds of the event loop) before the gateway refused
    the answer as too large; a body of the size the gateway takes would run it out of memory."""
    most = {"model": "m", "prompt": ["a"] * 16, "n": 128, "max_tokens": 1}  # 2048 choices: answered
    assert len(orjson.loads(await call(WRITER, "/completions", most))["choices"]) == MAX_COMPLETION_CHOICES
    for stream in (False, True):
        with pytest.raises(UpstreamError) as caught:
            await call(WRITER, "/completions", {**most, "prompt": ["a"] * 20_000, "stream": stream}, stream)
        assert (type(caught.value).__name__, caught.value.status) == ("ClientRejected", 400)
        assert orjson.loads(caught.value.body)["error"] == {
            "message": "The mock answers at most 2048 choices (prompts times `n`); this request asks for 2560000.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": None,
        }


async def test_a_streamed_text_completion_is_text_completion_chunks_then_usage_then_done():
    payload = {"model": "m", "prompt": "x", "suffix": "y", "stream": True, "stream_options": {"include_usage": True}}
    raw = await call(WRITER, "/completions", payload, stream=True)
    events = [e for e in raw.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    # The SDK builds stream chunks without validation (`finish_reason` is null until the last).
    chunks = [orjson.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert all(set(c) == {"text", "index", "logprobs", "finish_reason"} for c in choices[:-1])
    assert choices[-1]["stop_reason"] is None  # vLLM's: the last one names a matched stop string
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "This is a synthetic reply from the gateway's"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-2:] == [None, "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
