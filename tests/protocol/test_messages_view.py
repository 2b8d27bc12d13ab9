"""A Messages request's routing view (`messages_view`) against its chat translation.

Routing reads a pass-through request through its view and never translates it; every fact
the view gives must be the one the translation gives, or the same request would be routed
differently depending on which path read it. Each sample below is compared fact by fact, and
the routing decision made on the view is compared with the one made on the translation.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from typing import Any

import orjson
import pytest

from gateway.api.explain import explained_plan, ingress_for
from gateway.api.messages import MESSAGES_INGRESS, parse_messages_request
from gateway.protocol.chat import ChatRequest, has_images
from gateway.protocol.errors import GatewayError
from gateway.protocol.messages import messages_to_chat
from gateway.protocol.messages_checks import check_tool_results
from gateway.protocol.messages_view import messages_fields, messages_prompt
from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.routing.candidates import may_answer_natively
from gateway.routing.classify import _instruction_text, _request_text
from gateway.routing.pipeline import decide
from tests.protocol import samples as S
from tests.protocol.views import decided_alike
from tests.routing.support import snapshot_from


def messages_view(body: Any) -> tuple[dict[str, Any], Any] | None:
    """Both halves of the view, as the ingress makes them (fields, then the prompt's facts)."""
    fields = messages_fields(body)
    prompt = messages_prompt(body) if fields is not None else None
    return None if fields is None or prompt is None else (fields, prompt)


def _schema(extra: str = "") -> dict[str, Any]:
    return {"type": "object", "properties": {"path": {"type": "string", "description": "Path" + extra}}}


def _agent_turn(**overrides: Any) -> dict[str, Any]:
    """A coding agent's turn: tools, tool calls and results, text with quotes and escapes."""
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=1"},
            {"type": "text", "text": "You are Claude Code. Read files before you edit them.", "cache_control": {}},
        ],
        "tools": [
            {"name": "Bash", "description": "Run a shell command.", "input_schema": _schema()},
            {"name": "Read", "description": 'Read a "file".\n', "input_schema": _schema("é")},
            {"name": "Edit", "input_schema": _schema()},  # no description
            {"name": "Glob", "description": "Find files.", "input_schema": {}},  # empty schema: the default
            {"name": "Grep", "description": None, "input_schema": _schema()},  # a description chat drops
            {"name": "Write", "type": "custom", "description": "Write.", "input_schema": _schema()},
            {
                "name": "Task",
                "description": "Start a sub-agent.",
                "input_schema": _schema(),
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {"role": "user", "content": "Fix the failing test in calc.py, please."},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Read it first.", "signature": "sig"},
                    {"type": "text", "text": "Reading it — “first”."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": 'calc "x".py\\'}},
                    {"type": "tool_use", "id": "toolu_2", "name": "Grep", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "def add(a, b):\n    return a - b\n"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "calc.py:2"}, {"type": "text", "text": "日本語"}],
                    },
                    {"type": "text", "text": "Also look at the README 👀"},
                ],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_3", "name": "Bash", "input": None}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3", "is_error": True}]},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Thanks."},
        ],
    }
    body.update(overrides)
    return body


_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}

USUAL = {
    "api reference, full": S.MESSAGES_REQUEST,
    "api reference, minimal": S.MESSAGES_REQUEST_MINIMAL,
    "agent turn": _agent_turn(),
    "agent turn, streamed, tool_choice any": _agent_turn(stream=True, tool_choice={"type": "any"}),
    "tools off": _agent_turn(tool_choice={"type": "none"}),
    "named tool, no parallel calls": _agent_turn(
        tool_choice={"type": "tool", "name": "Read", "disable_parallel_tool_use": True}
    ),
    "json schema output": _agent_turn(tools=[], output_config={"format": {"type": "json_schema", "schema": _schema()}}),
    "image by url and base64": _agent_turn(
        messages=[
            {
                "role": "user",
                "content": [
                    _IMAGE,
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                    {"type": "text", "text": "What is in these?"},
                    {"type": "text", "text": "And why?"},
                ],
            }
        ]
    ),
    "failed tools' results": _agent_turn(
        messages=[
            {"role": "user", "content": "Run both."},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}},
                    {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "exit 1 — échec", "is_error": True},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": ""}],
                        "is_error": True,
                    },
                ],
            },
        ]
    ),
    "image alone": {**S.MESSAGES_REQUEST_MINIMAL, "messages": [{"role": "user", "content": [_IMAGE]}]},
    # Runs of a role are one chat message each: counted once, their texts rounded together.
    "consecutive turns of a role": _agent_turn(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "é"}, _IMAGE]},
            {"role": "assistant", "content": "b"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "text", "text": "c"},
                ],
            },
            {
                "role": "assistant",  # tool uses in the run's last turn only, as Anthropic pairs them
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "x"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "d"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "e"},
                ],
            },
            {"role": "user", "content": "f"},
            {"role": "user", "content": [{"type": "text", "text": "g"}]},
            {"role": "assistant", "content": []},  # empty content: Anthropic's 400 but for a last assistant turn
        ]
    ),
    "consecutive user strings": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [{"role": "user", "content": "One."}, {"role": "user", "content": "Two."}],
    },
    "consecutive assistant turns last": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "x"},
            {"role": "assistant", "content": [{"type": "text", "text": "y"}]},
        ],
    },
    "assistant first, string system": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "system": "Be brief.",
        "messages": [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Hello"}],
    },
    "no user message": {**S.MESSAGES_REQUEST_MINIMAL, "messages": [{"role": "assistant", "content": "Hi."}]},
    # Thinking blocks become the run's `reasoning_content`, a paragraph apart; redacted ones
    # and a thinking without text are dropped, an empty one still joins.
    "thinking across a run of assistant turns": _agent_turn(
        messages=[
            {"role": "user", "content": "Fix calc.py"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Read it first, é.", "signature": "s1"},
                    {"type": "redacted_thinking", "data": "opaque" * 50},
                    {"type": "text", "text": "Reading."},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "", "signature": "s2"},
                    {"type": "thinking", "thinking": None, "signature": "s3"},
                    {"type": "thinking", "thinking": "Then run the tests.", "signature": "s4"},
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "calc.py"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x = 1"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "x" * 31, "signature": "s5"},
                    {"type": "text", "text": "B"},
                ],
            },
        ]
    ),
    "thinking budget, metadata, sampling": _agent_turn(
        thinking={"type": "enabled", "budget_tokens": 2048}, metadata={"user_id": "u1"}, temperature=0.2, top_k=5
    ),
}

# Bodies `check_tool_results` refuses, as Anthropic does: the view gives up on each (its pass
# reads what the check reads), so the ingress runs the check, whose 400 names what is wrong.
_ASK = {"role": "user", "content": "Go."}
_ASKED = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]}
_ANSWER = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]}
CHECKED = {
    "text blocks, one empty": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": t} for t in ("ab", "", "c")]}],
    },
    "an empty text beside an image": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": ""},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                    {"type": "text", "text": "What is it?"},
                ],
            }
        ],
    },
    "a call left unanswered": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [_ASK, _ASKED, {"role": "user", "content": "Go on."}],
    },
    "a result answering no call": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [_ASK, {"role": "assistant", "content": "Hi."}, _ANSWER],
    },
    "an empty turn": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [_ASK, {"role": "assistant", "content": "Hi."}, {"role": "user", "content": ""}],
    },
    "a blank text": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": " \n"}]}],
    },
    "a prefill ending in whitespace": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [_ASK, {"role": "assistant", "content": "Sure, "}],
    },
    "one id twice": {
        **S.MESSAGES_REQUEST_MINIMAL,
        "messages": [
            _ASK,
            {"role": "assistant", "content": _ASKED["content"] * 2},
            {"role": "user", "content": _ANSWER["content"] * 2},
        ],
    },
}


UNUSUAL = {
    "a mid-conversation system turn": _agent_turn(
        messages=[{"role": "user", "content": "a"}, {"role": "system", "content": "Be terse."}]
    ),
    "a document": _agent_turn(
        messages=[{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "doc"}}]}]
    ),
    "an image inside a tool result": _agent_turn(
        messages=[
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [_IMAGE]}]},
        ]
    ),
    "a server tool": _agent_turn(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
    "a malformed turn": _agent_turn(messages=[{"role": "user", "content": [{"type": "text", "text": 3}]}]),
    "a bad image source": _agent_turn(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]),
    "no messages": {"model": "m", "max_tokens": 5, "messages": []},
}


@pytest.mark.parametrize("name", USUAL)
def test_the_view_gives_every_fact_its_translation_gives(name):
    body = copy.deepcopy(USUAL[name])
    view = messages_view(body)
    assert view is not None, name
    fields, prompt = view
    chat = messages_to_chat(copy.deepcopy(body))
    # Every top-level field routing reads, made by the same code; tools as the client sent them.
    assert fields == {k: v for k, v in chat.items() if k not in ("messages", "tools")} | (
        {"tools": body["tools"]} if chat.get("tools") else {}
    )
    assert prompt.tokens == estimate_prompt_tokens(chat)
    assert prompt.images == has_images(chat["messages"])
    request = ChatRequest(None, body["model"], build=lambda: chat, fields=fields, view=lambda: prompt)
    assert _request_text(request) == _instruction_text(chat["messages"])
    assert not request.translated  # none of the above built the translation
    assert body == USUAL[name]  # the client's body is untouched (it is sent as it is)


@pytest.mark.parametrize("name", UNUSUAL)
def test_a_body_outside_the_usual_shape_has_no_view(name):
    assert messages_view(copy.deepcopy(UNUSUAL[name])) is None


@pytest.mark.parametrize("name", CHECKED)
def test_a_body_the_check_refuses_has_no_view_and_gets_the_checks_400_when_routing_reads_it(name):
    body = CHECKED[name]
    assert messages_view(copy.deepcopy(body)) is None
    with pytest.raises(GatewayError) as checked:
        check_tool_results(copy.deepcopy(body)["messages"])
    chat = parse_messages_request(orjson.dumps(body), {}).chat  # parsed: routing reads the prompt first
    with pytest.raises(GatewayError) as routed:
        decide(chat, {}, snapshot_from(POLICY), endpoint="messages")
    assert (routed.value.status, routed.value.message, routed.value.param) == (
        400,
        checked.value.message,
        checked.value.param,
    )


# Turns of every kind the check reads, for conversations of up to four of them.
_TURNS = [
    {"role": "user", "content": "a"},
    {"role": "user", "content": ""},
    {"role": "user", "content": [{"type": "text", "text": " "}]},
    {"role": "user", "content": []},
    {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": ""}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2"}, {"type": "text", "text": "c"}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": i} for i in ("t2", "t1")]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": i} for i in ("t1", "t1")]},
    {"role": "assistant", "content": "d"},
    {"role": "assistant", "content": "d "},
    {"role": "assistant", "content": ""},
    {"role": "assistant", "content": []},
    {"role": "assistant", "content": [{"type": "text", "text": "e\n"}]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ("t1", "t2")]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}] * 2},
]


def test_no_conversation_the_check_refuses_has_a_view():
    """The view's pass gives up on whatever the check could refuse (so the ingress runs the
    check only for a body without a view): every conversation of up to four turns above,
    each either refused by the check with no view, or passed with its view or, only for
    results answering calls in another order (a conservative give-up), without."""
    counted = {"refused": 0, "viewed": 0, "left to the translation": 0}
    reordered = (_TURNS[15], _TURNS[7])  # calls t1, t2 answered t2, t1: the check passes them
    conversations = [turns for length in (1, 2, 3) for turns in itertools.product(_TURNS, repeat=length)]
    conversations += [(_TURNS[0], *turns) for turns in conversations if len(turns) == 3]  # four, a question first
    for turns in conversations:
        body = {**S.MESSAGES_REQUEST_MINIMAL, "messages": copy.deepcopy(list(turns))}
        view = messages_view(body)
        try:
            check_tool_results(body["messages"])
        except GatewayError:
            assert view is None, turns
            counted["refused"] += 1
            continue
        if view is None:
            assert any(turns[i : i + 2] == reordered for i in range(len(turns) - 1)), turns
        counted["viewed" if view is not None else "left to the translation"] += 1
    assert counted == {"refused": 9868, "viewed": 243, "left to the translation": 21}


def test_the_ingress_routes_an_unusual_body_on_its_translation_and_a_bad_one_gets_its_400():
    unusual = parse_messages_request(orjson.dumps(UNUSUAL["a mid-conversation system turn"]), {}).chat
    assert not unusual.translated
    assert unusual.prompt is None and unusual.translated  # the view gave up: routing reads the translation
    assert unusual.payload["messages"][-1] == {"role": "user", "content": "a\nBe terse."}
    assert unusual.prompt_tokens() == estimate_prompt_tokens(unusual.payload)
    with pytest.raises(GatewayError) as raised:  # a bad field: at once
        parse_messages_request(orjson.dumps(_agent_turn(stop_sequences=[1])), {})
    assert raised.value.status == 400 and raised.value.param == "stop_sequences"
    request = parse_messages_request(orjson.dumps(UNUSUAL["a server tool"]), {})
    server_tool = request.chat
    # Anthropic-only content: routed on the body's size, for native candidates only ...
    assert server_tool.prompt_tokens() > 3 and request.refused
    with pytest.raises(GatewayError) as raised:  # ... and asked in chat, the translation's 400
        server_tool.translate()
    assert raised.value.status == 400 and "web_search" in raised.value.message
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "tool_use", "name": "x"}]}]
    bad_turn = parse_messages_request(orjson.dumps({**_agent_turn(), "messages": turns}), {}).chat
    with pytest.raises(GatewayError) as raised:  # a malformed turn: its 400 when routing reads the prompt
        bad_turn.prompt_tokens()
    assert raised.value.status == 400 and "tool_use needs an `id`" in raised.value.message


def test_tool_uses_and_results_that_do_not_pair_up_are_a_400_before_routing_whichever_path_reads_the_body():
    """Before routing reads anything else: a body of the usual shape (which a native candidate
    would get as is), one the view leaves to the translation, and one only a native candidate
    could take get the same 400."""
    turns = copy.deepcopy(_agent_turn()["messages"])
    del turns[4]  # toolu_3's result: the assistant's "Done." follows its tool_use
    unanswered = "messages.3: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_3."
    for body in [
        _agent_turn(messages=turns),
        _agent_turn(messages=[*turns, {"role": "system", "content": "Be terse."}]),
        _agent_turn(messages=turns, tools=[{"type": "web_search_20250305", "name": "web_search"}]),
    ]:
        chat = parse_messages_request(orjson.dumps(body), {}).chat
        with pytest.raises(GatewayError) as raised:
            decide(chat, {}, snapshot_from(POLICY), endpoint="messages")
        assert raised.value.status == 400 and raised.value.message.startswith(unanswered)
    assert messages_view(_agent_turn(messages=turns)) is None  # the view's pass gives up: the check names it
    # What a chat backend would have got: toolu_3's call (its turn and "Done." one assistant
    # message, as consecutive turns are), and no tool message after it.
    chat = messages_to_chat(_agent_turn(messages=turns))["messages"]
    assert chat[-2]["content"] == "Done." and [c["id"] for c in chat[-2]["tool_calls"]] == ["toolu_3"]
    assert chat[-1] == {"role": "user", "content": "Thanks."}


def test_the_ingress_builds_the_translation_only_when_it_is_read_and_without_max_tokens():
    request = parse_messages_request(orjson.dumps(_agent_turn(stream=True)), {})
    chat = request.chat
    assert not chat.translated
    assert (chat.model, chat.stream, chat.include_usage, chat.completion_ceiling) == (
        "claude-sonnet-4-5",
        True,
        True,
        32000,
    )
    assert "max_tokens" not in chat.fields
    expected = messages_to_chat(_agent_turn(stream=True))
    del expected["max_tokens"]
    assert chat.payload == expected
    assert chat.translated
    assert chat.prompt_tokens() == estimate_prompt_tokens(expected)


# Offers that differ in what they can do: routing must drop the same ones for a view as for
# its translation (vision, tools, json schema, context length).
POLICY = """
backends:
  chat-only:
    type: openai
    base_url: http://127.0.0.1:9/v1
    models:
      plain/small: {context_length: 1200, input_price: 0.1, output_price: 0.1}
      plain/tools: {context_length: 131072, input_price: 0.2, output_price: 0.2, capabilities: [tools]}
      plain/vision: {context_length: 131072, input_price: 0.3, output_price: 0.3, capabilities: [vision]}
  native:
    type: vllm
    base_url: http://127.0.0.1:10/v1
    models:
      native/all: {context_length: 131072, input_price: 0.4, output_price: 0.4, capabilities: [tools, vision, json_schema]}
      native/schema: {context_length: 131072, input_price: 0.5, output_price: 0.5, capabilities: [json_schema]}
routes:
  claude-sonnet-4-5:
    strategy: cost
    models: [plain/small, plain/tools, plain/vision, native/all, native/schema]
"""


@pytest.mark.parametrize("name", USUAL)
def test_routing_decides_the_same_on_the_view_as_on_the_translation(name):
    """Images, tools, json schema and context length filter a view as its translation."""
    snapshot = snapshot_from(POLICY)
    body = {**copy.deepcopy(USUAL[name]), "model": "claude-sonnet-4-5"}
    viewed = parse_messages_request(orjson.dumps(body), {}).chat
    chat = messages_to_chat(copy.deepcopy(body))
    ceiling = chat.pop("max_tokens")
    translated = ChatRequest(chat, chat["model"], bool(chat.get("stream")), completion_ceiling=ceiling)
    decision = decided_alike(viewed, translated, snapshot, "messages")
    if name in FILTERED:  # the samples do exercise the filters
        assert [c.model for c in decision.candidates] == FILTERED[name]


FILTERED = {
    "agent turn": ["plain/tools", "native/all"],  # tools; too long for plain/small
    "tools off": ["plain/tools", "plain/vision", "native/all", "native/schema"],  # tool_choice none
    "json schema output": ["native/all", "native/schema"],
    "image by url and base64": ["native/all"],  # images and tools
    "api reference, minimal": ["plain/small", "plain/tools", "plain/vision", "native/all", "native/schema"],
}


def test_requests_no_candidate_could_take_natively_are_translated_up_front():
    snapshot = snapshot_from(POLICY + "  chat-only-route: {strategy: cost, models: [plain/tools, plain/vision]}\n")
    assert may_answer_natively({}, "claude-sonnet-4-5", snapshot, "messages")  # native/all is in the route
    assert may_answer_natively({}, "native/schema", snapshot, "messages")
    assert not may_answer_natively({}, "chat-only-route", snapshot, "messages")
    assert not may_answer_natively({}, "plain/small", snapshot, "messages")
    assert may_answer_natively({"models": ["plain/small"]}, "plain/small", snapshot, "messages")  # unsure
    assert may_answer_natively({}, "no/such-model", snapshot, "messages")  # routing's 404 to give
    assert snapshot.memo[("natively", "chat-only-route", "messages")] is False
    assert ("natively", "no/such-model", "messages") not in snapshot.memo  # unknown names: not kept


def test_a_tool_schema_nested_deeper_than_json_encoding_allows_is_the_400_of_its_translation():
    deep = '{"a":' * 300 + "{}" + "}" * 300  # orjson reads ~1024 levels but writes ~254
    raw = b'{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"tools":[%s]}' % (
        b'{"name":"t","description":"d","input_schema":%s}' % deep.encode()
    )
    chat = parse_messages_request(raw, {}).chat
    # The view gives up on it; the translation's estimate refuses it: it can never be sent.
    with pytest.raises(GatewayError) as raised:
        chat.prompt_tokens()
    assert raised.value.status == 400 and raised.value.code == "request_not_encodable"
    with pytest.raises(GatewayError):
        estimate_prompt_tokens(messages_to_chat(orjson.loads(raw)))


def test_a_malformed_turn_gets_its_400_before_routing_looks_the_model_up():
    body = {
        "model": "no/such-model",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
    }
    chat = parse_messages_request(orjson.dumps(body), {}).chat
    with pytest.raises(GatewayError) as raised:
        decide(chat, {}, snapshot_from(POLICY), endpoint="messages")
    assert raised.value.status == 400 and "tool_use_id" in raised.value.message


# OpenRouter-style routing fields in the body: a route to fall back on in `models`, and a
# provider order that puts the route's dearer backend first.
OVERRIDES = {"models": ["claude-sonnet-4-5"], "provider": {"order": ["native"]}, "route": "fallback"}


def test_openrouter_routing_fields_steer_the_view_the_translation_and_explain_alike():
    snapshot = snapshot_from(POLICY)
    body = {"model": "plain/small", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **OVERRIDES}
    viewed = parse_messages_request(orjson.dumps(body), {}).chat
    translated = parse_messages_request(orjson.dumps(body), {}).chat
    translated.translate()  # what routing reads once the translation is made (`ChatRequest.translate`)
    decision = decided_alike(viewed, translated, snapshot, "messages")
    assert [(c.backend, c.model) for c in decision.candidates] == [
        ("chat-only", "plain/small"),
        ("native", "native/all"),
        ("native", "native/schema"),
        ("chat-only", "plain/tools"),
        ("chat-only", "plain/vision"),
    ]
    ingress = ingress_for("messages")  # as POST /v1/route/explain reads and decides it
    explained = explained_plan(ingress, ingress.parse(orjson.dumps(body), {}), {}, snapshot)
    assert explained.candidates == decision.candidates and explained.prefs == decision.prefs


def test_openrouter_routing_fields_reach_no_backend():
    snapshot = snapshot_from(POLICY)
    body = {"model": "plain/tools", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **OVERRIDES}
    request = parse_messages_request(orjson.dumps(body), {})
    native = replace(snapshot.offers["native/all"][0], apis=frozenset({"messages"}))
    passed = MESSAGES_INGRESS.plan(request, native, None)
    chat = MESSAGES_INGRESS.plan(request, snapshot.offers["plain/tools"][0], None)
    assert passed is not None and chat is not None
    assert set(passed.payload) == {"model", "max_tokens", "messages"}  # the client's body, less the gateway's
    assert not {"models", "provider", "route"} & set(chat.payload)
    assert request.native == body  # the client's body itself is left as it was


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [("provider", "native", "provider"), ("provider", {"only": "native"}, "provider.only"), ("models", "a", "models")],
)
def test_a_malformed_routing_field_is_a_400_naming_it_on_either_path(field, value, param):
    body = {"model": "plain/tools", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], field: value}
    for translate in (False, True):
        chat = parse_messages_request(orjson.dumps(body), {}).chat
        if translate:
            chat.translate()
        with pytest.raises(GatewayError) as raised:
            decide(chat, {}, snapshot_from(POLICY), endpoint="messages")
        assert (raised.value.status, raised.value.param) == (400, param)


def test_coarse_facts_count_an_attachment_as_the_view_counts_an_image():
    """Review: bytes / 3 counted a 600 KB base64 image whole (about 200k tokens), so a body
    with it and a server tool failed the context filter that the same body without the tool
    passed."""
    from gateway.protocol.messages_view import coarse_prompt

    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 600_000}}
    body = {
        "model": "m",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": [image, {"type": "text", "text": "Hi"}]}],
    }
    facts = coarse_prompt(body, len(orjson.dumps(body)))
    assert facts.images and facts.last_user == "Hi"
    assert facts.tokens < 1_000  # the image as IMAGE_BYTES, not its 600 KB
    odd = {**body, "messages": [{"role": "user", "content": [{"type": ["x"]}, "text", None]}]}
    assert coarse_prompt(odd, 100).tokens > 3  # blocks of any shape read without raising
