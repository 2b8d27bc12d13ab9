"""What the built-in `mock` backend answers, decided from the chat payload alone.

The mock has to drive real clients end to end (coding agents, structured-output callers, RAG
apps), so its answers follow the request the way a model's would: a tool call when tools are
offered and the conversation waits on the model, text once a tool result came back, JSON
valid for a `response_format` schema, `n` choices, `max_tokens` (finish_reason `length`) and
stop sequences honoured. Embeddings are deterministic vectors from a hash of the input. Pure
code: `gateway.backends.mock` turns these answers into wire bytes and paces them. A chat
field of the wrong kind counts as absent (`n` outside 1-128 is clamped): the mock answers
whatever reaches it rather than failing inside the backend.

Whether the model is "waiting on" a tool: tool results after its last message get text
(whatever notes follow them: Claude Code's system notes, read as user text when translated),
anything else with tools offered a tool call.
`tool_choice` `required` or a named function always gets a call, `none` never does. Which
tool: the named one, else the first offered.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.protocol.embeddings import embedding_inputs
from gateway.protocol.errors import invalid_request

WORDS = [
    "This",
    "is",
    "a",
    "synthetic",
    "reply",
    "from",
    "the",
    "gateway's",
    "mock",
    "backend,",
    "generated",
    "locally",
    "so",
    "the",
    "gateway",
    "answers",
    "without",
    "any",
    "upstream.",
    "Point",
    "a",
    "real",
    "backend",
    "at",
    "a",
    "model",
    "to",
    "get",
    "real",
    "text.",
]
DEFAULT_DIMENSIONS = 1536  # OpenAI text-embedding-3-small's, the size RAG code most often expects
_MAX_DEPTH = 12  # schema nesting followed before giving up on a branch (recursive $refs)
# What one generated value may hold, counted in values and string characters: the mock runs on
# the gateway's event loop, and a schema is the client's to write (`minItems` or `minLength` of a
# billion, arrays nested to multiply, objects whose properties refer back to the object), so
# past this a schema gets less than it asks for. About 30 ms of the loop at most.
VALUE_BUDGET = 1 << 16
_INT_RANGE = (-(2**63), 2**63 - 1)  # what JSON encoders carry (orjson: 64 bits)
_MAX_CHOICES = 128  # OpenAI's own limit on `n`
_FORMATS = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as chat completions carry it


@dataclass(frozen=True, slots=True)
class Choice:
    content: str | None
    finish_reason: str
    tool_calls: tuple[ToolCall, ...] = ()
    tokens: int = 0  # completion tokens this choice counts for
    # The stop string that ended the choice, which vLLM names in the choice's `stop_reason`
    # (None: it ended otherwise): what the Messages translation reports as `stop_sequence`.
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    choices: tuple[Choice, ...] = field(default_factory=tuple)

    @property
    def completion_tokens(self) -> int:
        return sum(choice.tokens for choice in self.choices)


def text_completion(payload: dict[str, Any], default_tokens: int) -> Answer:
    """The answer to a legacy `/completions` payload: `n` texts continuing the prompt, honouring
    `max_tokens` (16 when unset, OpenAI's default for this endpoint) and `stop`."""
    n = payload.get("n")
    n = min(n, _MAX_CHOICES) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    limit = payload.get("max_tokens")
    asked = {"max_tokens": limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 16}
    text = {**asked, "stop": payload.get("stop")}
    return Answer(tuple(_text_choice(text, default_tokens) for _ in range(n)))


def answer(payload: dict[str, Any], default_tokens: int) -> Answer:
    """The answer to a chat payload; `default_tokens` is the text length when nothing limits it."""
    n = payload.get("n")
    n = min(n, _MAX_CHOICES) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    tool = _tool_to_call(payload)
    choices = []
    for _ in range(n):
        if tool is not None:
            choices.append(_tool_choice(tool))
        else:
            choices.append(_text_choice(payload, default_tokens))
    return Answer(tuple(choices))


def _tool_to_call(payload: dict[str, Any]) -> dict[str, Any] | None:
    offered = _list(payload.get("tools"))
    tools = [_dict(t.get("function")) for t in offered if isinstance(t, dict) and t.get("type") == "function"]
    tools = [t for t in tools if isinstance(t.get("name"), str)]
    choice = payload.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = _dict(choice.get("function")).get("name")
        return next((t for t in tools if t["name"] == name), tools[0])
    if choice == "required" or not _results_since_call(_list(payload.get("messages"))):
        return tools[0]
    return None


def _results_since_call(messages: list[Any]) -> bool:
    """Whether a tool result came after the assistant's last message. Not just "the last
    message is one": Claude Code ends a tool result's turn to Haiku with a note
    (`<total_tokens>... left`), and read as the last turn it got another tool call, and the
    agent ran tools until its turn limit."""
    for message in reversed(messages):
        role = _dict(message).get("role")
        if role == "tool":
            return True
        if role == "assistant":
            return False
    return False


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # a malformed field counts as absent


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tool_choice(tool: dict[str, Any]) -> Choice:
    schema = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else {"type": "object"}
    arguments = orjson.dumps(value_for_schema(schema)).decode()
    call = ToolCall(id="call_" + uuid.uuid4().hex[:24], name=tool["name"], arguments=arguments)
    return Choice(content=None, finish_reason="tool_calls", tool_calls=(call,), tokens=_tokens(arguments))


def _text_choice(payload: dict[str, Any], default_tokens: int) -> Choice:
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    schema = _response_schema(payload.get("response_format"))
    if schema is not None:
        text = orjson.dumps(value_for_schema(schema)).decode()
        tokens = _tokens(text)
        if limit is not None and tokens > limit:
            return Choice(content=text[: limit * 3], finish_reason="length", tokens=limit)
        return Choice(content=text, finish_reason="stop", tokens=tokens)
    count = min(limit, default_tokens) if limit is not None else default_tokens
    words = [WORDS[i % len(WORDS)] for i in range(count)]
    finish = "length" if limit is not None and limit < default_tokens else "stop"
    cut = _stop_at(words, payload.get("stop"))
    if cut is None:
        return Choice(content=" ".join(words), finish_reason=finish, tokens=len(words))
    kept, matched = cut
    return Choice(content=" ".join(kept), finish_reason="stop", tokens=len(kept), stop_reason=matched)


def _stop_at(words: list[str], stop: Any) -> tuple[list[str], str] | None:
    """The words before the first stop sequence and that sequence, or None if none occurs."""
    stops = [stop] if isinstance(stop, str) else [s for s in _list(stop) if isinstance(s, str)]
    text = " ".join(words)
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return None
    at, matched = min(hits, key=lambda hit: hit[0])  # the earliest in the text; of a tie, the first listed
    return text[:at].split(), matched  # a word cut by the stop sequence is kept up to it


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        schema = _dict(response_format.get("json_schema")).get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    if kind == "json_object":
        return {"type": "object", "properties": {"answer": {"type": "string"}}}
    return None


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


# -- JSON for a schema ------------------------------------------------------------------------


def value_for_schema(schema: Any, root: Any = None, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A value valid for `schema` over the subset real tool and output schemas use: type,
    properties, required, enum, const, items, min/max, formats, anyOf/oneOf/allOf, local $ref;
    at most `VALUE_BUDGET` values and characters in all (`budget`: what is left, shared by the
    whole value), so arrays and strings a schema wants longer come out shorter."""
    root = schema if root is None else root
    budget = [VALUE_BUDGET] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None  # spent: an object's remaining properties come out null, at once
    if "$ref" in schema:
        return value_for_schema(_resolve(schema["$ref"], root), root, depth + 1, budget)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [s for s in _list(schema.get(key)) if isinstance(s, dict)]
        if options:  # the first option that is not null, else null itself
            chosen = next((s for s in options if s.get("type") != "null"), options[0])
            return value_for_schema(chosen, root, depth + 1, budget)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return value_for_schema(
            _merge(merged, {k: v for k, v in schema.items() if k != "allOf"}), root, depth + 1, budget
        )
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        found = schema.get("properties")
        properties = found if isinstance(found, dict) else {}
        return {name: value_for_schema(sub, root, depth + 1, budget) for name, sub in properties.items()}
    if kind == "array":
        low = schema.get("minItems")
        count = max(low if isinstance(low, int) else 0, 1)
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        items = []
        for _ in range(count):
            if budget[0] <= 0:
                break
            items.append(value_for_schema(schema.get("items") or {}, root, depth + 1, budget))
        return items
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _string(schema, max(budget[0], 0))
    budget[0] -= len(text)
    return text


def _resolve(ref: Any, root: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for key in ref[1:].split("/")[1:] if ref != "#" else []:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    if isinstance(a.get("properties"), dict) and isinstance(b.get("properties"), dict):
        out["properties"] = {**a["properties"], **b["properties"]}
    return out


def _number(schema: dict[str, Any], kind: str) -> int | float:
    low = schema.get("minimum")
    if isinstance(schema.get("exclusiveMinimum"), (int, float)) and not isinstance(schema["exclusiveMinimum"], bool):
        low = schema["exclusiveMinimum"] + (1 if kind == "integer" else 0.5)
    high = schema.get("maximum")
    value = low if isinstance(low, (int, float)) else 0
    if isinstance(high, (int, float)) and value > high:
        value = high
    if isinstance(schema.get("exclusiveMaximum"), (int, float)) and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - (1 if kind == "integer" else 0.5)
    if kind != "integer":
        return value
    return min(max(math.ceil(value), _INT_RANGE[0]), _INT_RANGE[1])


def _string(schema: dict[str, Any], room: int) -> str:
    """A string for `schema`, padded to its `minLength` within `room` characters."""
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "mock") if isinstance(fmt, str) else "mock"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text += "x" * (min(low, room) - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


# -- embeddings -------------------------------------------------------------------------------


# A byte of a digest as a vector component, in [-1, 1].
_COMPONENTS = [(b - 127.5) / 127.5 for b in range(256)]
# Vector values one answer holds (inputs times dimensions): the mock runs on the gateway's
# event loop, and 2048 inputs of 8192 dimensions took seven seconds of it (a tenth of a
# second per million values now). Past this the answer, as JSON or base64, is larger than
# the gateway's default response limit anyway.
MAX_EMBEDDING_VALUES = 2048 * 2048


def embed(item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector of `dimensions` floats, the same for the same input every time: one byte
    of the input's SHAKE-256 digest per component, every step in C (`map`, `math.hypot`)."""
    seed = item.encode() if isinstance(item, str) else orjson.dumps(item)
    values = list(map(_COMPONENTS.__getitem__, hashlib.shake_256(seed).digest(dimensions)))
    return list(map((1.0 / (math.hypot(*values) or 1.0)).__mul__, values))


def embeddings_response(payload: dict[str, Any], default_dimensions: int = DEFAULT_DIMENSIONS) -> dict[str, Any]:
    """OpenAI's embeddings answer for a request: float lists, or base64 of little-endian
    float32 when `encoding_format` is `base64` (what the `openai` SDK asks for by default)."""
    inputs = embedding_inputs(payload.get("input"))
    dimensions = default_dimensions if payload.get("dimensions") is None else payload["dimensions"]
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= 8192:
        raise invalid_request("`dimensions` must be an integer from 1 to 8192.", "dimensions")
    encoding = payload.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid_request("`encoding_format` must be `float` or `base64`.", "encoding_format")
    if len(inputs) * dimensions > MAX_EMBEDDING_VALUES:
        raise invalid_request(
            f"The mock answers at most {MAX_EMBEDDING_VALUES:,} vector values (inputs times dimensions); "
            f"this request asks for {len(inputs) * dimensions:,}.",
            "input",
        )
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        vector = embed(item, dimensions)
        tokens += len(item) if isinstance(item, list) else _tokens(item)
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": payload.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
