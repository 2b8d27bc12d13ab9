"""Reading embeddings and legacy completions requests: the 400s name OpenAI's parameters, the
bodies reach the backend untouched, and routing's view measures what must fit a model."""

from __future__ import annotations

import orjson
import pytest

from gateway.config.schema import GatewaySettings
from gateway.protocol.completions import parse_completions_request, upstream_completions_payload
from gateway.protocol.embeddings import parse_embeddings_request, upstream_embeddings_payload
from gateway.protocol.errors import GatewayError
from gateway.routing.facts import request_facts

SETTINGS = GatewaySettings()


def body(**fields) -> bytes:
    return orjson.dumps(fields)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [""] * 2049}, "input"),
        ({"model": "m", "input": [[1, 2], []]}, "input"),
        ({"model": "m", "input": ""}, "input"),  # OpenAI: an input "cannot be an empty string"
        ({"model": "m", "input": ["a", ""]}, "input"),
        ({"model": "m", "input": [1.5]}, "input"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "x", "dimensions": True}, "dimensions"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_embeddings_requests_are_400s_naming_the_parameter(fields, param):
    with pytest.raises(GatewayError) as caught:
        parse_embeddings_request(body(**fields))
    assert (caught.value.status, caught.value.param) == (400, param)


def test_an_embeddings_body_reaches_the_backend_untouched_but_for_its_model_and_the_routing_fields():
    request = parse_embeddings_request(
        body(
            model="embed", input=["a", "b"], dimensions=8, encoding_format="base64", user="u", provider={"only": ["x"]}
        )
    )
    assert upstream_embeddings_payload(request, "bge-m3") == {
        "model": "bge-m3",
        "input": ["a", "b"],
        "dimensions": 8,
        "encoding_format": "base64",
        "user": "u",
    }
    assert request.chat.payload["provider"] == {"only": ["x"]}  # routing still reads the overrides


def test_embeddings_are_measured_by_their_longest_input_and_never_stream():
    one_long = "word " * 3000
    batch = parse_embeddings_request(body(model="m", input=["short", one_long, "short"] * 100))
    facts = request_facts(batch.chat, SETTINGS)
    single = request_facts(parse_embeddings_request(body(model="m", input=one_long)).chat, SETTINGS)
    assert facts.prompt_tokens == single.prompt_tokens  # each input must fit, not the batch
    assert (facts.completion_tokens, facts.stream) == (1, False)
    tokens = request_facts(parse_embeddings_request(body(model="m", input=[[7] * 500, [7] * 20])).chat, SETTINGS)
    assert 500 <= tokens.prompt_tokens < 520  # a token array counts as its length


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": "x"}, "model"),
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": [1, "x"]}, "prompt"),
        ({"model": "m", "prompt": "x", "suffix": 3}, "suffix"),
        ({"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ],
)
def test_bad_completions_requests_are_400s_naming_the_parameter(fields, param):
    with pytest.raises(GatewayError) as caught:
        parse_completions_request(body(**fields))
    assert (caught.value.status, caught.value.param) == (400, param)


def test_a_completions_stream_asks_the_backend_for_usage_and_keeps_every_other_field():
    request = parse_completions_request(
        body(model="auto", prompt="def f(", suffix="):", stream=True, echo=False, logprobs=2, models=["auto", "m/x"])
    )
    assert upstream_completions_payload(request, "Qwen/Qwen3-Coder") == {
        "model": "Qwen/Qwen3-Coder",
        "prompt": "def f(",
        "suffix": "):",
        "stream": True,
        "echo": False,
        "logprobs": 2,
        "stream_options": {"include_usage": True},
    }
    assert (request.stream, request.include_usage, request.chat.stream) == (True, False, True)
    asked = parse_completions_request(body(model="m", prompt="x", stream=True, stream_options={"include_usage": True}))
    assert asked.chat.include_usage  # the relay keeps the usage chunk for this client


def test_completions_budget_is_max_tokens_or_openais_default_of_16():
    assert request_facts(parse_completions_request(body(model="m", prompt="x")).chat, SETTINGS).completion_tokens == 16
    asked = parse_completions_request(body(model="m", prompt="x", max_tokens=300))
    assert request_facts(asked.chat, SETTINGS).completion_tokens == 300
