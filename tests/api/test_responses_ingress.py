"""The Responses ingress's own parts, without HTTP: what a request parses to, what a
native candidate is sent, and how a translated stream turns into Responses events (the
end-to-end behaviour is tests/e2e/test_responses_e2e.py)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.api.edge import ShuttingDown
from gateway.api.responses import (
    INGRESS,
    ResponsesRequest,
    TranslatedStream,
    continue_from,
    native_payload,
    parse_request,
)
from gateway.backends.base import CHAT_COMPLETIONS, RESPONSES
from gateway.backends.errors import UpstreamProtocolError
from gateway.protocol.errors import GatewayError
from gateway.protocol.responses_answer import chat_to_response
from gateway.proxy.relay import SseAccountant
from tests.protocol import samples as S

_EVENT = TypeAdapter(ResponseStreamEvent)


def _parse(**body) -> ResponsesRequest:
    return parse_request(orjson.dumps({"model": "auto", "input": "hi", **body}))


def test_a_request_is_stored_unless_it_says_not():
    assert _parse().store is True
    assert _parse(store=True).store is True
    assert _parse(store=False).store is False


def test_each_request_gets_its_own_unguessable_id():
    ids = {_parse().response_id for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("resp_") and len(i) == 5 + 48 for i in ids)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"", None),
        (b"[1]", None),
        (b"{nope", None),
        (b'{"model": "auto", "input": "hi", "store": "no"}', "store"),
        (b'{"model": "auto", "input": "hi", "stream": 1}', "stream"),
        (b'{"model": "auto", "input": "hi", "previous_response_id": 5}', "previous_response_id"),
        (b'{"model": "auto", "input": "hi", "max_output_tokens": -1}', "max_output_tokens"),
        (b'{"model": "auto", "input": "hi", "metadata": []}', "metadata"),
        (b'{"model": "auto", "input": "hi", "instructions": 5}', "instructions"),  # was dropped, and echoed
        # OpenAI's limits: 16 pairs, keys up to 64 characters, string values up to 512; a
        # deep object there was echoed and stored only after the backend was paid (a 500).
        (orjson.dumps({"model": "auto", "input": "hi", "metadata": {str(i): "v" for i in range(17)}}), "metadata"),
        (orjson.dumps({"model": "auto", "input": "hi", "metadata": {"k" * 65: "v"}}), "metadata"),
        (orjson.dumps({"model": "auto", "input": "hi", "metadata": {"k": "v" * 513}}), "metadata.k"),
        (
            b'{"model": "auto", "input": "hi", "metadata": {"k": ' + b'{"a":' * 300 + b"{}" + b"}" * 300 + b"}}",
            "metadata.k",
        ),
        (b'{"model": "auto", "input": "hi", "tools": [{"type": "web_search"}]}', "tools[0].type"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(body, param):
    with pytest.raises(GatewayError) as caught:
        # Items and tools are checked when routing first reads the prompt (a request routed
        # on its view is never translated), the other fields at once: both before routing decides.
        parse_request(body).chat.prompt_tokens()
    assert caught.value.status == 400 and caught.value.param == param


def test_continuing_puts_the_stored_conversation_first():
    request = _parse(previous_response_id="resp_1", input="And then?")
    assert request.chat.messages == [{"role": "user", "content": "And then?"}]
    continue_from(request, [{"type": "message", "role": "user", "content": "Once"}, S.RESPONSE_FUNCTION_CALL_ITEM])
    assert [m["role"] for m in request.chat.messages] == ["user", "assistant", "user"]


def test_a_continuation_may_bring_no_input_of_its_own():
    request = parse_request(orjson.dumps({"model": "auto", "previous_response_id": "resp_1"}))
    continue_from(request, [{"type": "message", "role": "user", "content": "Once"}])
    assert request.chat.messages == [{"role": "user", "content": "Once"}]


def test_a_native_candidate_gets_the_whole_conversation_and_keeps_nothing():
    request = _parse(previous_response_id="resp_1", input="And then?", metadata={"k": "v"}, temperature=0.2)
    earlier = [{"type": "message", "role": "user", "content": "Once"}]
    continue_from(request, earlier)
    payload = native_payload(request, "qwen3-upstream")
    assert payload == {
        "model": "qwen3-upstream",
        "input": earlier + [{"type": "message", "role": "user", "content": "And then?"}],
        "metadata": {"k": "v"},
        "temperature": 0.2,
        "store": False,
    }
    assert request.native["previous_response_id"] == "resp_1"  # the client's body is left as it was


def test_plan_is_native_where_the_backend_serves_responses_else_chat():
    request = _parse(stream=True)
    native = INGRESS.plan(
        request, SimpleNamespace(apis=frozenset({"chat", "responses"}), upstream_id="u", reasoning_fields=()), None
    )
    chat = INGRESS.plan(request, SimpleNamespace(apis=frozenset({"chat"}), upstream_id="u", reasoning_fields=()), None)
    assert (
        native.path == RESPONSES and native.format.name == "responses" and native.payload["input"][0]["content"] == "hi"
    )
    assert chat.path == CHAT_COMPLETIONS and chat.format.name == "chat"
    assert chat.payload["messages"] == [{"role": "user", "content": "hi"}]
    assert chat.payload["stream_options"] == {"include_usage": True}


_CHAT_ONLY = SimpleNamespace(apis=frozenset({"chat"}), upstream_id="u", reasoning_fields=())


def _sse(chunks: list[dict]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


@pytest.mark.parametrize(("size", "store"), [(5, True), (10_000, True), (10_000, False)])
def test_a_translated_stream_is_responses_events_and_remembers_the_response(size, store):
    request = _parse(stream=True, store=store)
    stream = TranslatedStream(request)
    accountant = SseAccountant(strip_usage=False, hold_done=True)  # as the relay puts it in front
    raw = _sse(S.CHAT_STREAM_TEXT)
    out = b"".join(stream.feed(accountant.feed(raw[i : i + size])) for i in range(0, len(raw), size))
    out += stream.feed(accountant.flush()) + stream.finish()
    events = [orjson.loads(e.split(b"data: ", 1)[1]) for e in out.split(b"\n\n") if e]
    for event in events:
        _EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["id"] == request.response_id
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello there!"
    if not store:  # nothing will be stored: the Response is not rebuilt for it
        assert request.response is None
        return
    assert request.response == events[-1]["response"]


def test_a_broken_translated_stream_ends_with_response_failed_which_is_stored():
    request = _parse(stream=True)
    stream = TranslatedStream(request)
    stream.feed(_sse(S.CHAT_STREAM_TEXT[:2])[: -len(b"data: [DONE]\n\n")])
    tail = stream.broken(UpstreamProtocolError("reset"))
    (last,) = [orjson.loads(e.split(b"data: ", 1)[1]) for e in tail.split(b"\n\n") if e]
    assert last["type"] == "response.failed" and last["response"]["status"] == "failed"
    assert request.response == last["response"]  # what `completed` stores, as OpenAI keeps it


def test_a_translated_stream_cut_by_the_shutdown_says_so_in_its_response_failed():
    request = _parse(stream=True)
    stream = TranslatedStream(request)
    stream.feed(_sse(S.CHAT_STREAM_TEXT[:2])[: -len(b"data: [DONE]\n\n")])
    tail = stream.broken(ShuttingDown())
    (last,) = [orjson.loads(e.split(b"data: ", 1)[1]) for e in tail.split(b"\n\n") if e]
    failed = _EVENT.validate_python(last)  # an event the openai SDK reads
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error is not None
    assert (failed.response.error.code, failed.response.error.message) == (
        "server_error",
        "The gateway is shutting down.",
    )


def test_the_translation_encodes_the_echoed_tools_once_for_the_answer_and_the_bytes_are_the_same(monkeypatch):
    """The Response written back echoes the request's tools and instructions: encoded when
    the translation is made (while the parse has just touched them), not again when the
    answer is written, streamed or not; and the client's bytes are what dumping gives."""
    import gateway.api.responses as api_module
    import gateway.protocol.responses_answer as responses_module
    import gateway.protocol.translation as translation_module

    tools = [{"type": "function", "name": f"t{i}", "parameters": {"type": "object"}} for i in range(3)]
    dumped: list[object] = []

    class Counting:
        Fragment, JSONDecodeError, loads = orjson.Fragment, orjson.JSONDecodeError, staticmethod(orjson.loads)

        @staticmethod
        def dumps(value: object) -> bytes:
            dumped.append(value)
            return orjson.dumps(value)

    for module in (responses_module, translation_module, api_module):  # the encodings of the answer
        monkeypatch.setattr(module, "orjson", Counting)
    for stream in (False, True):
        dumped.clear()
        request = _parse(stream=stream, store=False, tools=tools, instructions="Be brief.")
        assert request.echo == {}  # nothing encoded for a request that is not translated (yet)
        request.chat.translate()
        assert sorted(request.echo) == ["instructions", "tools"]
        assert [v == tools for v in dumped].count(True) == 1
        if stream:
            out = TranslatedStream(request).feed(_sse(S.CHAT_STREAM_TEXT))
            events = [orjson.loads(e.split(b"data: ", 1)[1]) for e in out.split(b"\n\n") if e]
            whole = [e["response"] for e in events if "response" in e]
            assert len(whole) == 3 and all(r["tools"] == tools and r["instructions"] == "Be brief." for r in whole)
        else:
            opened = SimpleNamespace(  # as the loop opens it: the body, and the answer its check parsed
                format=INGRESS.plan(request, _CHAT_ONLY, None).format,
                body=orjson.dumps(S.CHAT_COMPLETION_TEXT),
                answer=S.CHAT_COMPLETION_TEXT,
            )
            body = INGRESS.body(request, opened)
            response = chat_to_response(S.CHAT_COMPLETION_TEXT, request.native, request.response_id, request.created_at)
            assert body == orjson.dumps(response)  # the same bytes as the whole Response dumped
        assert [v == tools for v in dumped].count(True) == 1  # and still the one encoding
        carried = [v.get("response", v) for v in dumped if isinstance(v, dict) and "output" in v.get("response", v)]
        assert len(carried) == (3 if stream else 1)
        assert all(isinstance(r["tools"], orjson.Fragment) for r in carried)  # never walked again


def test_openrouter_routing_overrides_reach_routing_and_no_backend():
    overrides = {"models": ["a/b", "c/d"], "provider": {"order": ["x"]}}
    request = _parse(**overrides)
    assert request.chat.payload["models"] == ["a/b", "c/d"] and request.chat.payload["provider"] == {"order": ["x"]}
    native = INGRESS.plan(
        request, SimpleNamespace(apis=frozenset({"responses"}), upstream_id="u", reasoning_fields=()), None
    ).payload
    chat = INGRESS.plan(
        request, SimpleNamespace(apis=frozenset({"chat"}), upstream_id="u", reasoning_fields=()), None
    ).payload
    assert not {"models", "provider"} & (set(native) | set(chat))
