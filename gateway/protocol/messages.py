"""Anthropic's Messages API at the gateway's edge: a Messages request as a chat request.

Clients that speak Messages (Claude Code, the `anthropic` SDKs) reach the one chat pipeline
through `messages_to_chat`, which reads the request's top-level fields here (model,
max_tokens, sampling, stop sequences, metadata, service_tier, thinking and effort, output
format, tools, tool_choice, stream) and its system prompt and turns in
`gateway.protocol.messages_turns`; a malformed field is Anthropic's 400 naming it. The rest
of the Messages translation has modules of its own: Anthropic's checks across turns that the
translation does not need (`messages_checks`), the chat answer as a Message and gateway
errors in Anthropic's shape (`messages_answer`), a streamed answer as Anthropic's events
(`messages_stream`), and the request as routing reads it without translating it
(`messages_view`, which reuses this module's field readers). Pure code, no I/O. The opposite
direction (the gateway calling an Anthropic backend) lives in
`gateway.backends.anthropic_translate`, which shares `messages_answer`'s tables.

Mappings chosen where the APIs differ (the conversation's are `messages_turns`', usage's
`messages_answer`'s):
- `thinking.budget_tokens` -> `reasoning_effort`: under 4096 `low`, under 16384 `medium`,
  from 16384 `high`. These are the egress table's budgets read backwards (low 1024, medium
  4096, high 16384), so a budget survives a round trip through both directions as its
  effort. `adaptive` thinking sends no effort (the backend's default); `output_config.effort`
  is sent as given, `xhigh` and `max` as `high` (chat's highest).
- `cache_control` is accepted anywhere and dropped: chat backends have no equivalent, and
  native pass-through to Anthropic backends never comes through here.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.chat import tool_name
from gateway.protocol.errors import GatewayError, echoed, invalid_request
from gateway.protocol.messages_turns import ANTHROPIC_ONLY, append_turns, system_text
from gateway.protocol.tokens import estimate_prompt_tokens

# Anthropic's thinking budgets as chat's reasoning_effort: the inverse of the egress table.
_EFFORT_FLOORS = ((16384, "high"), (4096, "medium"), (0, "low"))
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_SERVICE_TIERS = ("auto", "standard_only")


def messages_to_chat(body: Any) -> dict[str, Any]:
    """The chat payload for a Messages request; a 400 naming the field for what is malformed."""
    model, max_tokens, turns = required_fields(body)
    messages: list[dict[str, Any]] = []
    system = system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    append_turns(turns, messages)

    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    chat_options(body, chat)
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise invalid_request("tools: must be an array.", "tools")
        chat["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    tool_choice_and_stream(body, chat)
    return chat


def count_tokens(body: Any) -> dict[str, int]:
    """The `/v1/messages/count_tokens` answer: the router's own estimate of the prompt."""
    body = {**body, "max_tokens": 1} if isinstance(body, dict) and "max_tokens" not in body else body
    return {"input_tokens": estimate_prompt_tokens(messages_to_chat(body))}


def required_fields(body: Any) -> tuple[str, int, list[Any]]:
    """The required fields: model, max_tokens, messages (checked in this order)."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", model, "a valid string", "Field required (a non-empty string)")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise _invalid("max_tokens", max_tokens, "a valid integer")
    if max_tokens < 1:
        raise invalid_request("max_tokens: Input should be greater than or equal to 1.", "max_tokens")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise invalid_request("messages: Field required (a non-empty array).", "messages")
    return model, max_tokens, turns


def _invalid(name: str, value: Any, expected: str, missing: str = "Field required") -> GatewayError:
    """Anthropic's 400 for a required or typed field, in its words: absent, or of the wrong type."""
    if value is None:
        return invalid_request(f"{name}: {missing}.", name)
    return invalid_request(f"{name}: Input should be {expected}.", name)


def chat_options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """The sampling, stop, user, reasoning and output-format fields, as chat spells them."""
    for name in ("temperature", "top_p", "top_k"):
        value = body.get(name)
        if value is not None:
            if type(value) is not int and (name == "top_k" or type(value) is not float):
                raise _invalid(name, value, "a valid integer" if name == "top_k" else "a valid number")
            _in_range(name, value)
            chat[name] = value
    stops = body.get("stop_sequences")
    if stops is not None:  # `""` or `{}` is not "no stop sequences": Anthropic refuses them
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid_request("stop_sequences: must be an array of strings.", "stop_sequences")
        if stops:
            chat["stop"] = stops
    user = _object(body.get("metadata"), "metadata").get("user_id")
    if user is not None:
        if type(user) is not str:
            raise _invalid("metadata.user_id", user, "a valid string")
        if user:
            chat["user"] = user
    tier = body.get("service_tier")
    if tier is not None and tier not in _SERVICE_TIERS:  # Anthropic's enum; chat backends have no such tier
        raise invalid_request("service_tier: Input should be 'auto' or 'standard_only'", "service_tier")
    output_config = _object(body.get("output_config"), "output_config")
    effort = _reasoning_effort(body.get("thinking"), output_config)
    if effort:
        chat["reasoning_effort"] = effort
    schema = _object(output_config.get("format"), "output_config.format").get("schema")
    if isinstance(schema, dict):
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _in_range(name: str, value: float) -> None:
    """Anthropic's bounds for a sampling field whose type is checked: `temperature` and `top_p`
    0 to 1 (chat's `temperature` goes to 2, so 1.5 would be served, not refused), in its words
    ("temperature: range: 0..1", as quoted from its API), and `top_k` from 0."""
    if name == "top_k":
        if value < 0:
            raise invalid_request("top_k: Input should be greater than or equal to 0.", name)
    elif value < 0 or value > 1:
        raise invalid_request(f"{name}: range: 0..1", name)


def tool_choice_and_stream(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """The tools' names unique (Anthropic's 400 in its words: a chat backend was sent two
    functions of one name), then tool_choice and stream, which follow the tools."""
    tools = body.get("tools")
    if type(tools) is list and len(tools) > 1:
        names = [tool.get("name") for tool in tools if type(tool) is dict]
        # A name that is not a string (a list is not hashable): the translation's 400 names it.
        # Read only when two names repeat: every agent's request has its tools checked here.
        try:
            repeated = len(set(names)) < len(names)
        except TypeError:
            repeated = False
        if repeated and all(type(name) is str for name in names):
            raise invalid_request("tools: Tool names must be unique.", "tools")
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, chat)
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:  # "false" is not false, nor a reason to stream
        raise _invalid("stream", stream, "a valid boolean")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # message_delta carries the usage


def _object(value: Any, where: str) -> dict[str, Any]:
    """An optional object field: {} when absent, a 400 when it is something else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"{where}: must be an object.", where)
    return value


def _reasoning_effort(thinking: Any, output_config: dict[str, Any]) -> str | None:
    """The effort `output_config` names, else the enabled thinking budget's; `thinking` is
    checked either way, as Anthropic checks it."""
    budget = _thinking_budget(thinking) if thinking is not None else None
    effort = output_config.get("effort")
    if effort is not None:
        if type(effort) is not str:
            raise _invalid("output_config.effort", effort, "a valid string")
        if effort in _EFFORTS:
            return _EFFORTS[effort]
    if budget is None:
        return None
    return next(name for floor, name in _EFFORT_FLOORS if budget >= floor)


def _thinking_budget(thinking: Any) -> int | None:
    """An enabled thinking's budget (None for any other type: `disabled`, `adaptive`,
    `between_tools`, Claude Sonnet 5.5's lowest, and whatever Anthropic adds next, which a
    native backend reads and a chat one is sent no effort for). Anthropic refuses a budget
    under 1,024. Its other rule, a budget under `max_tokens`, is not checked: interleaved
    thinking (an `anthropic-beta` Claude Code sends, which this does not see) lifts it."""
    thinking = _object(thinking, "thinking")
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if type(budget) is not int:
            raise _invalid("thinking.budget_tokens", budget, "a valid integer", "Field required (an integer)")
        if budget < 1024:
            raise invalid_request(
                "thinking.budget_tokens: Input should be greater than or equal to 1024.", "thinking.budget_tokens"
            )
        return budget
    if type(kind) is not str:
        raise _invalid("thinking.type", kind, "a valid string")
    return None


def _tool(tool: Any, index: int) -> dict[str, Any]:
    """The chat tool for `tools[index]` (its place named only in a 400: 20 f-strings were a
    quarter of this for an agent's tools)."""
    name = tool.get("name") if type(tool) is dict else None
    if type(name) is not str or not name:
        raise invalid_request(f"tools.{index}.name: Field required.", f"tools.{index}.name")
    if tool.get("type") not in (None, "custom"):
        # Anthropic's server tools (web search, code execution, computer use...) run at Anthropic.
        raise invalid_request(
            f"tools.{index}: the server tool `{tool['type']}` is only available on Anthropic backends; "
            "declare it as a custom tool with an input_schema instead.",
            f"tools.{index}",
            ANTHROPIC_ONLY,
        )
    schema = tool.get("input_schema")
    if type(schema) is not dict:  # required of a custom tool; `{}` stands for no parameters
        raise _invalid(f"tools.{index}.input_schema", schema, "a valid dictionary")
    function: dict[str, Any] = {"name": name, "parameters": schema or {"type": "object", "properties": {}}}
    description = tool.get("description")
    if type(description) is str:
        function["description"] = description
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        name = choice["name"]
        if not any(tool_name(tool) == name for tool in chat.get("tools") or ()):
            # Forwarded, one server answered 500 (SGLang), another called a tool not named.
            raise invalid_request(f"tool_choice.name: no tool named '{echoed(name)}' in tools.", "tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise invalid_request("tool_choice: must be auto, any, none or a named tool.", "tool_choice")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        chat["parallel_tool_calls"] = False
