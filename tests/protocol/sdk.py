"""Parsing with the vendor SDKs' own types, strictly: a field the SDK does not know fails.

The SDKs' pydantic models accept unknown fields (kept in `model_extra`) so that old clients
survive new API fields; for checking our output that leniency would hide a misspelt or
invented field, so `strict` walks the parsed object and fails on any extra.
"""

from __future__ import annotations

import functools
from typing import Any

import pydantic
from pydantic import ConfigDict, TypeAdapter


def _extras(value: Any, where: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        found += [f"{where}.{name}" for name in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += _extras(item, f"{where}[{i}]")
    return found


# Fields the live APIs send that the installed SDKs do not type: recorded Responses carry
# `store` (the request's flag echoed back); openai-python's Response model has no field for it.
UNTYPED_BUT_SENT = {"store"}


@functools.cache
def _adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)  # building one for the SDKs' big unions takes tens of milliseconds


def strict(kind: Any, data: Any) -> Any:
    """`data` parsed as the SDK type `kind` (a model or a union); fails on unknown fields."""
    parsed = _adapter(kind).validate_python(data)
    extras = [e for e in _extras(parsed, "$") if e.rsplit(".", 1)[-1] not in UNTYPED_BUT_SENT]
    assert not extras, f"fields the SDK does not know: {extras}"
    return parsed


def request(kind: Any, data: dict, tolerated: tuple[str, ...] = ()) -> None:
    """A request body checked against the SDK's params TypedDict (a union): top-level fields
    must all be known, except `tolerated` ones."""
    body = {k: v for k, v in data.items() if k not in tolerated}
    TypeAdapter(kind, config=ConfigDict(extra="forbid")).validate_python(body)
