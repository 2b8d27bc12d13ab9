"""OpenAI's embeddings request (`POST /v1/embeddings`), read just enough to route and account it.

The body is passed to the backend as the client sent it (only `model` replaced and the
gateway's own routing fields removed): `input`, `dimensions`, `encoding_format` (`float` or
`base64`, whose answer is relayed untouched), `user` and vendor extras. What is checked here
is what the gateway relies on, with OpenAI's parameter names in the 400s.

Routing reads a chat-shaped view of the request (`EmbeddingsRequest.chat`): one user message
as long as the longest input, so the context filter checks what each input must fit (an
embedding model's window bounds each input, not the batch), and a completion budget of one
token (an embedding answer has no completion).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from gateway.protocol.batch import routing_request
from gateway.protocol.body import is_token, json_object, required_model
from gateway.protocol.chat import GATEWAY_OWNED_FIELDS, ChatRequest
from gateway.protocol.errors import echoed, invalid_request

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
MAX_DIMENSIONS = 65536
ENCODINGS = ("float", "base64")


@dataclass(slots=True)
class EmbeddingsRequest:
    payload: dict[str, Any]  # the client's body
    model: str
    inputs: list[str | list[int]]  # `input` as a list, one entry per vector asked for
    chat: ChatRequest  # the view routing and limits read
    priced: bool = False  # asked for `usage.cost` (OpenRouter's `usage.include`: gateway.api.usage_cost)

    @property
    def native(self) -> dict[str, Any]:
        """The client's body (what the ingress passes through)."""
        return self.payload

    @property
    def encoding_format(self) -> str:
        encoding: str = self.payload.get("encoding_format") or "float"
        return encoding


def embedding_inputs(value: Any) -> list[str | list[int]]:
    """`input` as a list of texts or token arrays; a 400 naming `input` otherwise (OpenAI's
    rule: an input "cannot be an empty string", an array at most 2,048 inputs)."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(is_token(v) for v in value):
        return [value]  # one token array
    if (
        isinstance(value, list)
        and value
        and len(value) <= MAX_INPUTS
        and all(
            (isinstance(v, str) and v) or (isinstance(v, list) and v and all(is_token(t) for t in v)) for v in value
        )
    ):
        return value
    raise invalid_request(
        f"`input` must be a string, an array of strings, an array of tokens or an array of token arrays "
        f"(at most {MAX_INPUTS} inputs, none empty).",
        "input",
        "invalid_type",
    )


def parse_embeddings_request(body: bytes) -> EmbeddingsRequest:
    payload = json_object(body, "`model` and `input`")
    model = required_model(payload)
    if "input" not in payload:
        raise invalid_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    inputs = embedding_inputs(payload["input"])
    dimensions = payload.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= MAX_DIMENSIONS
    ):
        raise invalid_request(
            f"`dimensions` must be an integer from 1 to {MAX_DIMENSIONS}.", "dimensions", "invalid_value"
        )
    encoding = payload.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise invalid_request(
            f"`encoding_format` must be one of {', '.join(ENCODINGS)}; got '{echoed(encoding)}'.",
            "encoding_format",
            "invalid_value",
        )
    return EmbeddingsRequest(payload, model, inputs, _routing_view(payload, model, inputs))


def _routing_view(payload: dict[str, Any], model: str, inputs: list[str | list[int]]) -> ChatRequest:
    longest = max(inputs, key=len)
    # A token array stands for as many tokens: three bytes each in the estimate's measure.
    text = longest if isinstance(longest, str) else "xxx" * len(longest)
    view: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1}
    for name in GATEWAY_OWNED_FIELDS:  # `models` and `provider` overrides apply here too
        if name in payload:
            view[name] = payload[name]
    return routing_request(view, model, inputs)  # the limiter reserves for each input, the bill sums them


# The most a valid answer may take per input: a float written in JSON (`-1.2345678901234567e-05,`
# is 24 bytes; base64 takes under 6) for each dimension asked for, or for the widest model in
# common use when the request names none, and its item's own fields.
_BYTES_PER_VALUE = 24
_DIMENSIONS_UNNAMED = 4096
_BYTES_PER_ITEM = 256
# Whatever it asks for, no answer is held past this (a batch of 2,048 at 4,096 dimensions is
# about 200 MB): the bound keeps a broken upstream from filling the gateway's memory.
MAX_ANSWER_BYTES = 256 * 1024 * 1024


def answer_bytes(request: EmbeddingsRequest) -> int:
    """The size a valid answer to `request` can reach: what its batch and `dimensions` ask
    for, at most `MAX_ANSWER_BYTES`."""
    dimensions = request.payload.get("dimensions") or _DIMENSIONS_UNNAMED
    return min(len(request.inputs) * (dimensions * _BYTES_PER_VALUE + _BYTES_PER_ITEM), MAX_ANSWER_BYTES)


def upstream_embeddings_payload(request: EmbeddingsRequest, upstream_model: str) -> dict[str, Any]:
    """The body one backend gets: the client's fields, the backend's model id. `usage`
    (OpenRouter's usage accounting, whatever its value) is the gateway's, as on chat."""
    payload = {k: v for k, v in request.payload.items() if k not in GATEWAY_OWNED_FIELDS and k != "usage"}
    payload["model"] = upstream_model
    return payload


def as_base64(data: list[dict[str, Any]]) -> None:
    """Each float list `embedding` of an answer's `data` as OpenAI sends it for
    `encoding_format: base64`: the base64 of its little-endian float32s (what the SDKs decode
    with numpy's `frombuffer` and `Float32Array`). Raises `struct.error` for a value that is
    not a number, OverflowError for one past float32's range."""
    for item in data:
        vector = item["embedding"]
        if type(vector) is list:
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
