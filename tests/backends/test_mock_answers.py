"""The mock backend's answers: tool calls valid for their schema, then text; JSON for a schema;
n, max_tokens and stop honoured; deterministic embeddings. Schemas are checked with the
`jsonschema` validator, not by reading our own output back."""

from __future__ import annotations

import base64
import math
import struct

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.backends import mock_answers
from gateway.backends.mock_answers import (
    MAX_EMBEDDING_VALUES,
    VALUE_BUDGET,
    WORDS,
    answer,
    embed,
    embeddings_response,
    value_for_schema,
)
from gateway.protocol.errors import GatewayError
from tests.protocol import samples as S
from tests.protocol.breakage import variants

WEATHER = S.MESSAGES_REQUEST["tools"][0]["input_schema"]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    },
]
USER = [{"role": "user", "content": "What's the weather in Paris?"}]


def test_tools_and_a_user_turn_get_one_call_valid_for_the_first_tools_schema():
    reply = answer({"messages": USER, "tools": TOOLS}, 16)
    (choice,) = reply.choices
    assert (choice.content, choice.finish_reason) == (None, "tool_calls")
    (call,) = choice.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_") and len(call.id) == 29
    jsonschema.validate(orjson.loads(call.arguments), WEATHER)
    assert reply.completion_tokens == choice.tokens == (len(call.arguments) + 3) // 4


def test_a_tool_result_gets_text():
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "15 degrees"},
    ]
    (choice,) = answer({"messages": messages, "tools": TOOLS}, 16).choices
    assert choice.tool_calls == () and choice.finish_reason == "stop"
    assert choice.content == " ".join(WORDS[:16])


def test_a_tool_result_followed_by_a_note_still_gets_text():
    """Claude Code's turns to Haiku end with a system note after the tool results (user text
    once translated to chat); a call there is one more tool run, every step, until the
    agent's turn limit."""
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    result = [*USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    result.append({"role": "tool", "tool_call_id": "c", "content": "15 degrees"})
    for notes in (["system"], ["system", "developer"], ["user"]):
        messages = result + [
            {"role": role, "content": "<total_tokens>14999863 tokens left</total_tokens>"} for role in notes
        ]
        (choice,) = answer({"messages": messages, "tools": TOOLS}, 16).choices
        assert choice.tool_calls == () and choice.content == " ".join(WORDS[:16])
    # A note after the user's turn leaves it the user's (Claude Code's first request ends so).
    (choice,) = answer(
        {"messages": [*USER, {"role": "system", "content": "# Environment"}], "tools": TOOLS}, 16
    ).choices
    assert [call.name for call in choice.tool_calls] == ["get_weather"]
    (choice,) = answer({"messages": [{"role": "system", "content": "x"}], "tools": TOOLS}, 16).choices
    assert [call.name for call in choice.tool_calls] == ["get_weather"]


@pytest.mark.parametrize(
    ("tool_choice", "last_role", "called"),
    [
        ("none", "user", None),
        ("required", "tool", "get_weather"),
        ({"type": "function", "function": {"name": "read_file"}}, "tool", "read_file"),
        ("auto", "user", "get_weather"),
        ("auto", "tool", None),
    ],
)
def test_tool_choice_is_honoured(tool_choice, last_role, called):
    messages = [*USER, {"role": last_role, "content": "x", "tool_call_id": "c"}] if last_role == "tool" else USER
    (choice,) = answer({"messages": messages, "tools": TOOLS, "tool_choice": tool_choice}, 4).choices
    assert (choice.tool_calls[0].name if choice.tool_calls else None) == called


def test_n_choices():
    reply = answer({"messages": USER, "n": 3, "max_tokens": 4}, 16)
    assert [c.content for c in reply.choices] == ["This is a synthetic"] * 3
    assert reply.completion_tokens == 12


@pytest.mark.parametrize(("limit", "words", "finish"), [(5, 5, "length"), (16, 16, "stop"), (40, 16, "stop")])
def test_max_tokens_cuts_with_finish_reason_length(limit, words, finish):
    (choice,) = answer({"messages": USER, "max_tokens": limit}, 16).choices
    assert (len(choice.content.split()), choice.tokens, choice.finish_reason) == (words, words, finish)
    (choice,) = answer({"messages": USER, "max_completion_tokens": limit}, 16).choices
    assert choice.finish_reason == finish


@pytest.mark.parametrize(
    ("stop", "content"),
    [
        ("mock", "This is a synthetic reply from the gateway's"),
        (["zzz", "reply"], "This is a synthetic"),
        (["synthetic reply", " is"], "This"),  # the earliest match wins
        ("is", "Th"),  # a stop sequence is any substring, as a model's are
        ("nowhere", " ".join(WORDS[:16])),
    ],
)
def test_stop_sequences_end_the_text_before_them(stop, content):
    (choice,) = answer({"messages": USER, "stop": stop}, 16).choices
    assert (choice.content, choice.finish_reason, choice.tokens) == (content, "stop", len(content.split()))


SCHEMAS = [
    {"anyOf": [{"type": "null"}, {"anyOf": [{"type": "null"}, {"type": "null"}]}]},  # found by the property test
    S.RESPONSES_REQUEST_ITEMS["text"]["format"]["schema"],
    WEATHER,
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 3, "maximum": 9},
            "x": {"type": "number", "exclusiveMinimum": 0.5},
        },
        "required": ["n", "x"],
    },
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string", "minLength": 6}, "minItems": 2}},
    },
    {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "mail": {"type": "string", "format": "email", "maxLength": 30},
        },
    },
    {"type": ["null", "boolean"]},
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"a": {"const": 7}}, "required": ["a"]}]},
    {
        "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}],
        "$defs": {"base": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}},
    },
    {
        "type": "object",
        "properties": {"node": {"$ref": "#/$defs/node"}},
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"value": {"type": "integer", "exclusiveMaximum": 0}},
                "required": ["value"],
            }
        },
    },
    {
        "type": "object",
        "properties": {"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["unit"],
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_values_are_valid_for_their_schema(schema):
    jsonschema.validate(value_for_schema(schema), schema)


def test_response_format_json_schema_gets_valid_json():
    schema = S.RESPONSES_REQUEST_ITEMS["text"]["format"]["schema"]
    fmt = {"type": "json_schema", "json_schema": {"name": "calendar_event", "schema": schema, "strict": True}}
    (choice,) = answer({"messages": USER, "response_format": fmt}, 16).choices
    jsonschema.validate(orjson.loads(choice.content), schema)
    assert choice.finish_reason == "stop"
    (cut,) = answer({"messages": USER, "response_format": fmt, "max_tokens": 2}, 16).choices
    assert (cut.finish_reason, cut.tokens) == ("length", 2)
    (plain,) = answer({"messages": USER, "response_format": {"type": "json_object"}}, 16).choices
    assert isinstance(orjson.loads(plain.content), dict)


# -- embeddings -------------------------------------------------------------------------------


def test_embeddings_are_deterministic_unit_vectors_of_the_asked_dimension():
    first, again, other = embed("hello", 64), embed("hello", 64), embed("hello!", 64)
    assert first == again and first != other and len(first) == 64
    assert math.isclose(sum(v * v for v in first), 1.0, rel_tol=1e-9)
    assert embed("hello", 3000)[:64] != first  # normalised over its own length
    assert embed([1, 2, 3], 8) == embed([1, 2, 3], 8) != embed([1, 2, 4], 8)  # token arrays too


def test_embeddings_response_shape_and_usage():
    body = embeddings_response({"model": "mock/embed", "input": ["a cat", "a dog"], "dimensions": 8})
    assert body["object"] == "list" and body["model"] == "mock/embed"
    assert [(d["object"], d["index"], len(d["embedding"])) for d in body["data"]] == [
        ("embedding", 0, 8),
        ("embedding", 1, 8),
    ]
    assert body["data"][0]["embedding"] == embed("a cat", 8)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    tokens = embeddings_response({"model": "m", "input": [[1, 2, 3], [4]], "dimensions": 4})
    assert tokens["usage"]["prompt_tokens"] == 4 and len(tokens["data"]) == 2
    assert (
        len(embeddings_response({"model": "m", "input": [5, 6, 7]}, default_dimensions=12)["data"][0]["embedding"])
        == 12
    )


def test_an_embeddings_request_past_the_values_the_mock_holds_is_a_400_at_once():
    """Hostile testing: 2048 inputs of 8192 dimensions took seven seconds of the gateway's
    event loop, then failed as a response too large. Inputs times dimensions is bounded."""
    most = MAX_EMBEDDING_VALUES // 2048
    assert len(embeddings_response({"model": "m", "input": ["x"] * 2048, "dimensions": most})["data"]) == 2048
    with pytest.raises(GatewayError) as refused:
        embeddings_response({"model": "m", "input": ["x"] * 2048, "dimensions": most + 1})
    assert (refused.value.status, refused.value.param) == (400, "input")
    assert refused.value.message == (
        f"The mock answers at most {MAX_EMBEDDING_VALUES:,} vector values (inputs times dimensions); "
        f"this request asks for {2048 * (most + 1):,}."
    )


def test_base64_encoding_is_little_endian_float32_of_the_same_vector():
    body = embeddings_response({"model": "m", "input": "x", "dimensions": 5, "encoding_format": "base64"})
    decoded = struct.unpack("<5f", base64.b64decode(body["data"][0]["embedding"]))
    assert [round(v, 6) for v in decoded] == [round(v, 6) for v in embed("x", 5)]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [1.5]}, "input"),
        ({"input": ["ok", 3]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"dimensions": 0}, "dimensions"),
        ({"encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_embeddings_requests_get_a_400_naming_the_field(change, param):
    with pytest.raises(GatewayError) as caught:
        embeddings_response({"model": "m", "input": "x", **change})
    assert (caught.value.status, caught.value.param) == (400, param)


def test_malformed_fields_count_as_absent_and_never_crash_the_mock():
    full = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x", "tool_call_id": "c"}],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "read_file"}},
        "max_tokens": 5,
        "stop": ["x"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMAS[3]}},
    }
    plain = {k: v for k, v in full.items() if k not in ("tools", "tool_choice")}
    for sample in (full, plain):
        for path, wrong, broken in variants(sample):
            assert len(answer(broken, 16).choices) == 1, (path, wrong)  # no exception, one answer


@pytest.mark.parametrize(("n", "choices"), [("2", 1), (0, 1), (-3, 1), (True, 1), ([2], 1), (129, 128)])
def test_an_n_out_of_range_is_read_leniently(n, choices):
    assert len(answer({"messages": USER, "n": n}, 16).choices) == choices


def _schemas():
    """Schemas over the subset tools and structured outputs use, consistent bounds only."""
    bounded = st.integers(0, 5).flatmap(lambda low: st.tuples(st.just(low), st.integers(low, low + 5)))
    leaves = st.one_of(
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        bounded.map(lambda b: {"type": "string", "minLength": b[0], "maxLength": b[1]}),
        st.sampled_from(["date", "date-time", "email", "uri", "uuid"]).map(lambda f: {"type": "string", "format": f}),
        bounded.map(lambda b: {"type": "integer", "minimum": b[0] - 3, "maximum": b[1]}),
        st.floats(-10, 10).map(lambda low: {"type": "number", "exclusiveMinimum": low}),
        st.lists(st.text(max_size=5), min_size=1, max_size=4).map(lambda values: {"enum": values}),
    )

    def extend(children):
        objects = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=6), children, max_size=4).flatmap(
            lambda props: st.just({"type": "object", "properties": props, "required": sorted(props)})
        )
        arrays = st.tuples(children, bounded).map(
            lambda c: {"type": "array", "items": c[0], "minItems": c[1][0], "maxItems": c[1][1]}
        )
        nullable = children.map(lambda c: {"anyOf": [{"type": "null"}, c]})
        return st.one_of(objects, arrays, nullable)

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schemas())
def test_any_schema_in_the_subset_gets_a_valid_value(schema):
    jsonschema.validate(value_for_schema(schema), schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "minItems": 10**9, "items": {"type": "string"}},
        {"type": "string", "minLength": 10**9},
        # Arrays nested to the depth followed, each asking 50 items: 50**12 values.
        {"$defs": {"n": {"type": "array", "minItems": 50, "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"},
        {"type": "object", "properties": {f"p{i}": {"type": "string", "minLength": 10**6} for i in range(100)}},
        # Hostile testing: an object whose 12 properties are the object again, to the depth
        # followed: 12**6 calls (seconds), as only arrays and strings looked at the budget.
        {"$defs": {"n": {"properties": {f"p{i}": {"$ref": "#/$defs/n"} for i in range(12)}}}, "$ref": "#/$defs/n"},
    ],
    ids=["many-items", "long-string", "nested-arrays", "many-long-strings", "recursive-properties"],
)
def test_a_schema_asking_for_a_huge_value_gets_a_bounded_one_at_once(schema, monkeypatch):
    """The mock runs in the gateway's own process, on its event loop: a tool schema's
    `minItems` or `minLength` of a billion (a client's to send) built that value, holding every
    request of the process for as long, and its memory, before the response size limit
    refused it. What is generated is bounded, whatever the schema asks: in size, and in the
    work done, counted (a time limit failed on a loaded machine)."""
    calls = 0
    generate = mock_answers.value_for_schema

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return generate(*args, **kwargs)

    monkeypatch.setattr(mock_answers, "value_for_schema", counted)  # its recursion calls it by name
    value = mock_answers.value_for_schema(schema)
    assert len(orjson.dumps(value)) <= 8 * VALUE_BUDGET  # a value, or a null, is at most a few bytes
    assert calls <= VALUE_BUDGET + 100  # one value a call, each from the shared budget


@pytest.mark.parametrize("bound", ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"])
def test_an_integer_past_64_bits_is_clamped_into_what_json_encoders_carry(bound):
    """`minimum: 1e308` on an integer made a 1025-bit int that orjson cannot encode: the mock's
    answer failed (`TypeError: Integer exceeds 64-bit range`), a 502 blamed on the backend."""
    for limit in (1e308, -1e308, 10**30, -(10**30)):
        value = value_for_schema({"type": "integer", bound: limit})
        assert -(2**63) <= value < 2**63
        orjson.dumps(value)
