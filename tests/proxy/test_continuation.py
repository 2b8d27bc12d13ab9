"""The pure parts of stream continuation: what the client got, the prefill request per
vendor mode, and the splice of the continuing stream into the client's."""

from __future__ import annotations

import orjson
import pytest

from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.continuation import (
    MAX_KEPT_CHUNKS,
    Partial,
    PartialRecord,
    Splice,
    continuation_payload,
    prefill_mode,
    read_partial,
)
from gateway.proxy.usage import Usage


def chunk(delta: dict, finish: str | None = None, *, id: str = "chatcmpl-a", model: str = "m/a", **extra) -> bytes:
    obj = {"id": id, "object": "chat.completion.chunk", "created": 7, "model": model, **extra}
    obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def events(relayed: bytes) -> list:
    return [orjson.loads(e[6:]) if e != b"data: [DONE]" else "[DONE]" for e in relayed.split(b"\n\n") if e]


@pytest.mark.parametrize(
    "backend_type, own, expected",
    [
        ("vllm", None, "continue_final_message"),
        ("deepseek", None, "prefix"),
        ("moonshot", None, "partial"),
        ("anthropic", None, "assistant"),
        ("openai", None, None),
        ("openrouter", None, None),
        ("openai", "continue_final_message", "continue_final_message"),  # an offer says it can
        ("vllm", False, None),  # or that it cannot
    ],
)
def test_prefill_capability_is_the_offers_own_else_its_backend_types(backend_type, own, expected):
    offer = Offer("m/x", "b", "x", ModelOffer(prefill=own))
    assert prefill_mode(offer, BackendConfig(type=backend_type, base_url="http://127.0.0.1:9/v1")) == expected


def test_the_partial_answer_is_read_back_from_what_the_client_got():
    record = PartialRecord()
    record.keep(chunk({"role": "assistant", "content": ""}))
    record.keep(chunk({"content": "Hel"}) + chunk({"content": "lo"}))
    record.keep(b": keep-alive\n\n" + chunk({"content": " world"}))
    partial = record.partial()
    assert partial == Partial("Hello world", 3, False, ("chatcmpl-a", 7, "m/a"))


def test_a_started_tool_call_is_noted():
    call = {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a'}}]}
    assert read_partial(chunk({"content": "Let me look."}) + chunk(call)).tool_call


def test_the_record_is_bounded():
    record = PartialRecord()
    for _ in range(MAX_KEPT_CHUNKS + 1):
        record.keep(b"data: {}\n\n")
    assert record.chunks is None and record.partial() is None


PAYLOAD = {"model": "up-b", "messages": [{"role": "user", "content": "Count."}], "stream": True, "max_tokens": 100}
PARTIAL = Partial("t0 t1 ", 2, False, ("chatcmpl-a", 7, "m/a"))


@pytest.mark.parametrize(
    "mode, last, extra",
    [
        (
            "continue_final_message",
            {"role": "assistant", "content": "t0 t1 "},
            {"continue_final_message": True, "add_generation_prompt": False},
        ),
        ("prefix", {"role": "assistant", "content": "t0 t1 ", "prefix": True}, {}),
        ("partial", {"role": "assistant", "content": "t0 t1 ", "partial": True}, {}),
        ("assistant", {"role": "assistant", "content": "t0 t1"}, {}),  # no trailing whitespace
    ],
)
def test_the_prefill_request_per_mode(mode, last, extra):
    sent = continuation_payload(PAYLOAD, PARTIAL, mode)
    assert sent["messages"] == [PAYLOAD["messages"][0], last]
    assert {k: sent[k] for k in extra} == extra
    assert sent["max_tokens"] == 98  # what is left of the client's budget
    assert PAYLOAD["messages"] == [{"role": "user", "content": "Count."}]  # the original is untouched


def test_the_continuation_is_spliced_into_the_clients_stream():
    splice = Splice(PARTIAL, prompt_tokens=11)
    theirs = dict(id="chatcmpl-b", model="up-b")
    relayed = (
        chunk({"role": "assistant", "content": ""}, **theirs)
        + chunk({"content": "t2 "}, **theirs)
        + chunk({}, "stop", **theirs)
        + b"data: "
        + orjson.dumps({"id": "chatcmpl-b", "choices": [], "usage": {"prompt_tokens": 15, "completion_tokens": 1}})
        + b"\n\ndata: [DONE]\n\n"
    )
    out = events(splice.events(relayed))
    # No second role delta; the client's id, created and model throughout; one usage total.
    assert [e if e == "[DONE]" else e["choices"] for e in out] == [
        [{"index": 0, "delta": {"content": "t2 "}, "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        [],
        "[DONE]",
    ]
    assert all((e["id"], e["created"], e["model"]) == ("chatcmpl-a", 7, "m/a") for e in out[:-1])
    assert out[2]["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert splice.usage == Usage(15, 1)  # the continuing attempt's own, for its ledger row
