"""What every OpenAI-style request body is checked for first, in the same words on every
ingress: JSON, an object, a model; and what counts as a token id in a prompt or input."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.errors import GatewayError, invalid_request


def json_object(body: bytes, expects: str) -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying what is wrong (`expects`: the fields the
    API requires, named in the message for an empty body)."""
    if not body:
        raise invalid_request(f"The request body is empty; send a JSON object with {expects}.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object.")
    return payload


def json_text(value: Any, param: str | None = None) -> str:
    """`value`, parsed from the client's body, as JSON text (a tool call's arguments): a 400
    naming `param` when it is nested deeper than the encoder writes (orjson reads about
    1,000 levels and writes 254), the one way parsed JSON can fail to be written again."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise not_encodable(param) from None


def not_encodable(param: str | None = None) -> GatewayError:
    """The 400 for a client's JSON nested deeper than the encoder writes."""
    return invalid_request(
        "The request cannot be forwarded: its JSON is nested too deeply.", param, "request_not_encodable"
    )


def too_deep(exc: orjson.JSONEncodeError) -> bool:
    """Whether orjson refused a value for its depth (its other refusal: a type it cannot write)."""
    return "Recursion limit" in str(exc)


def required_model(payload: dict[str, Any]) -> str:
    """`model`, required and a non-empty string (OpenAI's words when it is missing)."""
    model = payload.get("model")
    if model is None:
        raise invalid_request("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid_request("`model` must be a non-empty string.", "model", "invalid_type")
    return model


def is_token(value: Any) -> bool:
    """A token id: a non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
