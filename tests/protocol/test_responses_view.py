"""A Responses request's routing view (`responses_view`) against its chat translation.

The twin of test_messages_view.py: every fact the view gives (the top-level fields, the
prompt's estimate, images, the classifier's text) must be the translation's, on every sample
and on a conversation continued from stored items; the routing decision made on the view
must be the one made on the translation; unusual requests have no view.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from gateway.api.explain import explained_plan, ingress_for
from gateway.api.responses import continue_from, parse_request
from gateway.protocol.chat import ChatRequest, has_images
from gateway.protocol.errors import GatewayError
from gateway.protocol.responses import responses_to_chat
from gateway.protocol.responses_answer import conversation_items
from gateway.protocol.responses_view import responses_fields, responses_prompt
from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.routing.agents import tool_names
from gateway.routing.classify import _instruction_text, _request_text
from gateway.routing.pipeline import decide
from tests.protocol import samples as S
from tests.protocol.views import decided_alike
from tests.routing.support import snapshot_from
from tests.support.cpu import cpu_seconds


def responses_view(body: Any, previous: Any = None) -> tuple[dict[str, Any], Any] | None:
    """Both halves of the view, as the ingress makes them (fields, then the prompt's facts)."""
    fields = responses_fields(body)
    prompt = responses_prompt(body, previous, fields.get("tools")) if fields is not None else None
    return None if fields is None or prompt is None else (fields, prompt)


def _tool(name: str, **extra: Any) -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"path": {"type": "string", "description": 'a "path" é'}}}
    return {
        "type": "function",
        "name": name,
        "description": f"{name} in the workspace.",
        "parameters": parameters,
    } | extra


def _call(call_id: str, name: str = "read_file") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": '{"path": "a\\"b.py"}'}


def _reasoning(text: str) -> dict[str, Any]:
    return {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}


def _agent_turn(**overrides: Any) -> dict[str, Any]:
    """A Codex-like turn: instructions, function tools, calls (parallel ones too), outputs."""
    body: dict[str, Any] = {
        "model": "gpt-5-codex",
        "instructions": "You are Codex, a coding agent. Edit files with apply_patch.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: on."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix calc.py 👀"}]},
            {"type": "reasoning", "summary": []},
            _call("c1"),
            _call("c2", "run_command"),  # parallel: joins the same assistant turn
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Reading."}]},
            {"type": "function_call_output", "call_id": "c1", "output": "def add(a, b):\n    return a - b\n"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "ok"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Patching."}]},
            _call("c3"),  # follows the assistant's text: joins that turn
            {"type": "custom_tool_call", "call_id": "c4", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "c4", "output": "Done!"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"role": "user", "content": "日本語で"},
        ],
        "tools": [
            _tool("read_file"),
            _tool("run_command", strict=False),
            _tool("list_dir", strict=None, description=None),  # nulls chat drops
            _tool("grep", defer_loading=True),  # a member chat drops
            {"type": "function", "name": "bare"},
        ],
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
    }
    body.update(overrides)
    return body


_IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
# What Codex CLI offers beside its function tools: apply_patch as a custom (freeform) tool with
# a Lark grammar, sub-agent functions grouped in a namespace, its own tool search.
_APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\n',
    },
}
_AGENTS = {
    "type": "namespace",
    "name": "agents",
    "description": "Sub-agents.",
    "tools": [_tool("spawn_agent"), _tool("wait_agent", strict=False)],
}
_SEARCH = {"type": "tool_search", "execution": "client", "description": "Find more tools."}
_CODEX_TOOLS = [_tool("exec_command"), _APPLY_PATCH, _AGENTS, _tool("update_plan"), _SEARCH]
_PREVIOUS = conversation_items(None, S.RESPONSES_REQUEST_STRING, S.RESPONSE_TEXT)

USUAL = {
    "api reference, string": (S.RESPONSES_REQUEST_STRING, None),
    "api reference, items": (S.RESPONSES_REQUEST_ITEMS, None),
    "agent turn": (_agent_turn(), None),
    "agent turn, streamed, tools required": (_agent_turn(stream=True, tool_choice="required"), None),
    "tools off": (_agent_turn(tool_choice="none"), None),
    "json object": (_agent_turn(tools=[], text={"format": {"type": "json_object"}}), None),
    "user parts: images, a file, two texts": (
        _agent_turn(
            input=[
                {
                    "role": "user",
                    "content": [
                        _IMAGE,
                        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_text", "text": "And why?"},
                    ],
                }
            ]
        ),
        None,
    ),
    "an image alone": ({"model": "m", "input": [{"role": "user", "content": [_IMAGE]}]}, None),
    "turns of a role in a row, empty ones and a file among them": (
        {
            "model": "m",
            "input": [
                {"role": "user", "content": []},
                {"role": "user", "content": "xyz"},
                {"role": "user", "content": ""},
                {"role": "user", "content": [{"type": "input_file", "file_data": "data:application/pdf;base64,JVBE"}]},
                {"role": "user", "content": [_IMAGE]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
                {"role": "assistant", "content": "B"},
                {"role": "user", "content": "and?"},
            ],
        },
        None,
    ),
    "user messages in a row, as Codex sends them": (
        _agent_turn(
            input=[
                {"role": "developer", "content": [{"type": "input_text", "text": "<permissions instructions>"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "<environment_context>"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "Fix calc.py"}, _IMAGE]},
                {"role": "user", "content": "and run the tests"},
                _call("c1"),
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                {"role": "user", "content": "c"},
            ]
        ),
        None,
    ),
    # Codex's developer messages after the conversation began are user text in their place
    # (the view counted them as system messages of their own, and read the last user text
    # without them).
    "developer messages mid-conversation": (
        _agent_turn(
            input=[
                {"role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
                {"role": "user", "content": "Fix calc.py"},
                {
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
                },
                {"role": "user", "content": [{"type": "input_text", "text": "c"}, _IMAGE]},
                {"role": "assistant", "content": "On it."},
                {"role": "system", "content": "<environment_context> é"},
                _call("c1"),
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {"role": "developer", "content": ""},
            ]
        ),
        None,
    ),
    "empty contents": (
        {"model": "m", "input": [{"role": "user", "content": []}, {"role": "assistant", "content": []}, _call("x")]},
        None,
    ),
    # Reasoning items become the `reasoning_content` of the assistant turn after them (a call's
    # too), their texts a paragraph apart; before a user turn, or at the end, they are dropped.
    "reasoning items before messages and calls": (
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Fix calc.py"},
                _reasoning("Read it first, é."),
                _reasoning(""),
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "A summary."}]},
                {"type": "reasoning", "summary": [], "encrypted_content": "opaque" * 50},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Reading."}]},
                _reasoning("Dropped: a user turn follows."),
                {"role": "user", "content": "go on"},
                _reasoning("Call it."),
                _call("c1"),
                _reasoning("Across the output."),
                {"type": "function_call_output", "call_id": "c1", "output": "x = 1"},
                _reasoning("x" * 31),
                _call("c2"),
                _reasoning("Then the text."),
                {"role": "assistant", "content": "B"},
                {"type": "function_call_output", "call_id": "c2", "output": "ok"},
                _reasoning("Dropped: nothing follows."),
            ],
        },
        None,
    ),
    "continued from stored items": ({"model": "m", "instructions": "Now be brief.", "input": "And then?"}, _PREVIOUS),
    "continued, no new input": ({"model": "m"}, _PREVIOUS),
    "codex tools: custom, namespace, client tool search": (_agent_turn(tools=_CODEX_TOOLS), None),
    "a custom tool chosen": (
        _agent_turn(tools=[_APPLY_PATCH], tool_choice={"type": "custom", "name": "apply_patch"}),
        None,
    ),
    "a custom tool without a format": (_agent_turn(tools=[{"type": "custom", "name": "apply_patch"}]), None),
    "a namespace tool": (_agent_turn(tools=[{"type": "namespace", "name": "agents", "tools": [_tool("spawn")]}]), None),
    "an empty namespace": (_agent_turn(tools=[{"type": "namespace", "name": "agents", "tools": []}]), None),
    "a client tool search, default parameters": (
        _agent_turn(tools=[{"type": "tool_search", "execution": "client"}]),
        None,
    ),
}

UNUSUAL = {
    "a built-in tool": _agent_turn(tools=[{"type": "web_search"}]),
    "a built-in tool in a namespace": _agent_turn(
        tools=[{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}]
    ),
    "a namespace without its tools": _agent_turn(tools=[{"type": "namespace", "name": "n"}]),
    "a custom tool without a name": _agent_turn(tools=[{"type": "custom"}]),
    "a chat-shaped function beside a custom tool": _agent_turn(
        tools=[{"type": "function", "function": {"name": "f"}}, {"type": "custom", "name": "apply_patch"}]
    ),
    "a hosted tool search": _agent_turn(tools=[{"type": "tool_search"}]),
    "a tool search output": _agent_turn(input=[{"type": "tool_search_output", "call_id": "s", "tools": []}]),
    "an image from the assistant": _agent_turn(input=[{"role": "assistant", "content": [_IMAGE]}]),
    "an image a tool output holds": _agent_turn(
        input=[
            {"type": "function_call", "call_id": "c", "name": "view_image", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": [_IMAGE]},
        ]
    ),
    "a bad role": _agent_turn(input=[{"role": "robot", "content": "hi"}]),
    "a call without arguments": _agent_turn(input=[{"type": "function_call", "call_id": "c", "name": "f"}]),
    "no input": {"model": "m"},
}


@pytest.mark.parametrize("name", USUAL)
def test_the_view_gives_every_fact_its_translation_gives(name):
    body, previous = copy.deepcopy(USUAL[name])
    view = responses_view(body, previous)
    assert view is not None, name
    fields, prompt = view
    chat = responses_to_chat(copy.deepcopy(body), copy.deepcopy(previous))
    assert {k: v for k, v in fields.items() if k != "tools"} == {
        k: v for k, v in chat.items() if k not in ("messages", "tools")
    }
    # Function tools are read as sent (the client's list itself when all are), any other kind
    # as the translation makes it: the same names, in the same order.
    plain = all(tool["type"] == "function" for tool in body.get("tools") or ())
    assert ("tools" in fields) == bool(body.get("tools"))
    assert fields.get("tools") is (body.get("tools") or None) or not plain
    assert tool_names(fields.get("tools")) == tool_names(chat.get("tools"))
    assert prompt.tokens == estimate_prompt_tokens(chat)
    assert prompt.images == has_images(chat["messages"])
    request = ChatRequest(None, chat["model"], build=lambda: chat, fields=fields, view=lambda: prompt)
    assert _request_text(request) == _instruction_text(chat["messages"])
    assert not request.translated
    assert (body, previous) == USUAL[name]  # the client's body and the stored items are untouched


@pytest.mark.parametrize("name", UNUSUAL)
def test_a_request_outside_the_usual_shape_has_no_view(name):
    assert responses_view(copy.deepcopy(UNUSUAL[name])) is None


def test_the_ingress_builds_the_translation_only_when_it_is_read_even_when_continued():
    request = parse_request(orjson.dumps({"model": "m", "input": "And then?", "previous_response_id": "resp_1"}))
    assert not request.chat.translated
    continue_from(request, _PREVIOUS)
    chat = request.chat
    assert not chat.translated
    assert chat.payload == responses_to_chat({"model": "m", "input": "And then?"}, _PREVIOUS)
    assert chat.prompt_tokens() == estimate_prompt_tokens(chat.payload)
    unusual = parse_request(orjson.dumps(UNUSUAL["a tool search output"] | {"models": ["a", "b"]})).chat
    assert unusual.prompt is None and unusual.translated and unusual.payload["models"] == ["a", "b"]
    assert unusual.prompt_tokens() == estimate_prompt_tokens(unusual.payload)


POLICY = """
backends:
  chat-only:
    type: openai
    base_url: http://127.0.0.1:9/v1
    models:
      plain/small: {context_length: 1200, input_price: 0.1, output_price: 0.1}
      plain/tools: {context_length: 131072, input_price: 0.2, output_price: 0.2, capabilities: [tools]}
      plain/vision: {context_length: 131072, input_price: 0.3, output_price: 0.3, capabilities: [vision, json]}
  native:
    type: vllm
    base_url: http://127.0.0.1:10/v1
    models:
      native/all: {context_length: 131072, input_price: 0.4, output_price: 0.4, capabilities: [tools, vision, json_schema]}
      native/schema: {context_length: 131072, input_price: 0.5, output_price: 0.5, capabilities: [json_schema, json]}
routes:
  gpt-5:
    strategy: cost
    models: [plain/small, plain/tools, plain/vision, native/all, native/schema]
"""

FILTERED = {
    "agent turn": ["plain/tools", "native/all"],  # tools; too long for plain/small
    "tools off": ["plain/tools", "plain/vision", "native/all", "native/schema"],
    "json object": ["plain/vision", "native/all", "native/schema"],  # json (json_schema implies it)
    "api reference, items": ["native/all"],  # images, tools and a json schema
    "user parts: images, a file, two texts": ["native/all"],  # images and tools
}


@pytest.mark.parametrize("name", USUAL)
def test_routing_decides_the_same_on_the_view_as_on_the_translation(name):
    snapshot = snapshot_from(POLICY)
    body, previous = copy.deepcopy(USUAL[name])
    body["model"] = "gpt-5"
    request = parse_request(orjson.dumps(body | {"previous_response_id": "r"} if previous else body))
    if previous:
        continue_from(request, previous)
    viewed = request.chat
    chat = responses_to_chat(copy.deepcopy(body), copy.deepcopy(previous))
    translated = ChatRequest(chat, chat["model"], bool(chat.get("stream")))
    decision = decided_alike(viewed, translated, snapshot, "responses")
    if name in FILTERED:  # the samples do exercise the filters
        assert [c.model for c in decision.candidates] == FILTERED[name]


def test_a_codex_turn_is_routed_on_its_view_and_counts_as_code():
    """Codex's custom apply_patch, its namespace and its tool search used to leave the view
    (the turn was translated to be routed): the classifier now reads their names from it."""
    body = _agent_turn(model="gpt-5", tools=_CODEX_TOOLS)
    request = parse_request(orjson.dumps(body)).chat
    decision = decide(request, {}, snapshot_from(POLICY), endpoint="responses")
    assert not request.translated
    assert (decision.task, decision.task_reason) == ("code", "coding agent tools: exec_command, apply_patch")
    assert tool_names(request.fields["tools"]) == [
        "exec_command",
        "apply_patch",
        "spawn_agent",
        "wait_agent",
        "update_plan",
        "tool_search",
    ]
    assert [c.model for c in decision.candidates] == ["plain/tools", "native/all"]


def test_tools_only_the_translation_brings_are_seen_by_routing_when_the_view_gives_up():
    # A tool search's output offers tools from then on (the translation's `discovered` tools):
    # the view gives up on such a body, and routing must then read the translation's tools
    # (the tools filter, the classifier), not the view's fields, which have none.
    body = {
        "model": "gpt-5",
        "input": [
            {"role": "user", "content": "Show me the log."},
            {"type": "tool_search_call", "call_id": "s", "arguments": {"query": "git"}, "execution": "client"},
            {
                "type": "tool_search_output",
                "call_id": "s",
                "execution": "client",
                "tools": [{"type": "function", "name": "git_log", "parameters": {"type": "object", "properties": {}}}],
            },
        ],
    }
    snapshot = snapshot_from(POLICY)
    viewed = parse_request(orjson.dumps(body)).chat
    chat = responses_to_chat(copy.deepcopy(body))
    assert chat["tools"]  # the translation offers git_log
    got = [
        decide(r, {}, snapshot, endpoint="responses")
        for r in (viewed, ChatRequest(chat, chat["model"], bool(chat.get("stream"))))
    ]
    assert got[0].facts == got[1].facts and "tools" in got[0].facts.needs
    # Those declaring capabilities without tools are left out (plain/small declares none: assumed capable).
    expected = ["plain/small", "plain/tools", "native/all"]
    assert [c.model for c in got[0].candidates] == [c.model for c in got[1].candidates] == expected


def test_a_tool_schema_nested_deeper_than_json_encoding_allows_is_the_400_of_its_translation():
    deep = '{"a":' * 300 + "{}" + "}" * 300  # orjson reads ~1024 levels but writes ~254
    raw = b'{"model":"m","input":"hi","tools":[{"type":"function","name":"t","parameters":%s}]}' % deep.encode()
    chat = parse_request(raw).chat
    # The view gives up on it; the translation's estimate refuses it: it can never be sent.
    with pytest.raises(GatewayError) as raised:
        chat.prompt_tokens()
    assert raised.value.status == 400 and raised.value.code == "request_not_encodable"
    with pytest.raises(GatewayError):
        estimate_prompt_tokens(responses_to_chat(orjson.loads(raw)))


def test_openrouter_routing_fields_steer_the_view_the_translation_and_explain_alike():
    """As for Messages (test_messages_view.py): a route in `models`, a provider order."""
    snapshot = snapshot_from(POLICY)
    body = {"model": "plain/small", "input": "hi", "models": ["gpt-5"], "provider": {"order": ["native"]}}
    viewed = parse_request(orjson.dumps(body)).chat
    translated = parse_request(orjson.dumps(body)).chat
    translated.translate()
    decision = decided_alike(viewed, translated, snapshot, "responses")
    assert [(c.backend, c.model) for c in decision.candidates][:3] == [
        ("chat-only", "plain/small"),
        ("native", "native/all"),
        ("native", "native/schema"),
    ]
    ingress = ingress_for("responses")  # as POST /v1/route/explain reads and decides it
    explained = explained_plan(ingress, ingress.parse(orjson.dumps(body), {}), {}, snapshot)
    assert explained.candidates == decision.candidates and explained.prefs == decision.prefs


@pytest.mark.parametrize(("field", "value", "param"), [("provider", "native", "provider"), ("models", "a", "models")])
def test_a_malformed_routing_field_is_a_400_naming_it_on_either_path(field, value, param):
    for translate in (False, True):
        chat = parse_request(orjson.dumps({"model": "plain/small", "input": "hi", field: value})).chat
        if translate:
            chat.translate()
        with pytest.raises(GatewayError) as raised:
            decide(chat, {}, snapshot_from(POLICY), endpoint="responses")
        assert (raised.value.status, raised.value.param) == (400, param)


def test_many_messages_in_a_row_are_viewed_in_linear_time():
    """Hostile testing: the view joined each user message's text to the one before it (for
    the classifier), copying all the text so far: with the translation's same square, an
    8 MB body of one-letter messages held the event loop 6 s. Four times the messages must
    cost about four times the time, not sixteen; the text is the translation's."""
    small, large = ({"model": "m", "input": [{"role": "user", "content": "a"}] * n} for n in (100_000, 400_000))
    assert responses_prompt(large).last_user == "\n".join(["a"] * 400_000)
    ratio = cpu_seconds(lambda: responses_prompt(large)) / cpu_seconds(lambda: responses_prompt(small))
    assert ratio < 10, f"{ratio:.1f} times the time for 4 times the messages"
