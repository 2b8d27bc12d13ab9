"""A Responses request's settings as chat spells them, and OpenAI's 400s for the ones it refuses.

Every top-level field but `input` (`gateway.protocol.responses_input`) and `tools`
(`gateway.protocol.responses_tools`): `request_model`; `chat_options`, sampling, limits,
reasoning, `text.format` and the settings echoed in the Response but never sent; and
`chat_tail`, `tool_choice` (checked against the tools translated by then) and `stream`.
The routing view (`gateway.protocol.responses_view`) calls these same functions, so routing
reads the fields the translation sends. Pure code, no I/O.

Mappings chosen where the APIs differ:
- `metadata`, `store` and `previous_response_id` are the gateway's: echoed in the Response,
  never sent to a backend. So are `truncation` (`disabled` unless asked), `text.verbosity`,
  `reasoning.summary`, `prompt_cache_key` and `max_tool_calls` (OpenAI's limit on its
  built-in tools' calls, of which there are none here) in chat: echoed as asked, not sent.
  `include: ["message.output_text.logprobs"]` is chat's `logprobs` (with `top_logprobs`),
  the backend's coming back on the output text; `top_logprobs` is echoed (0 unless asked). `service_tier` is not sent and the Response
  says `default`, the tier used, as OpenAI's does. `user` (else `safety_identifier`) is chat's
  `user`.
- `reasoning.effort` `minimal` is sent as `low`, `xhigh` and `max` as `high` (open-model
  servers take low, medium and high); `none` sends no effort.
- Settings OpenAI refuses get its 400 here, before any backend is asked, whichever way the
  request is sent on (a native backend is sent them as they came): `temperature` outside 0..2,
  `top_p` outside 0..1, `max_output_tokens` under 16, `top_logprobs` outside 0..20, a
  `max_tool_calls` that is not an integer, an unknown `truncation`, `text.verbosity` or
  `reasoning.summary` value, a `reasoning.effort` that is not a string, an `include` that is
  not an array of strings.
  `background: true` is a 400 too: the gateway answers every request while its connection
  is open, so there is no queued response to poll.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.chat import tool_name
from gateway.protocol.errors import echoed, invalid_request

# reasoning.effort as OpenAI documents it -> what chat backends are sent (None: no effort).
_EFFORTS = {
    "none": None,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
_SAMPLING_MAXIMUM = {"temperature": 2, "top_p": 1}
_MIN_OUTPUT_TOKENS = 16  # OpenAI's minimum for max_output_tokens
_MAX_TOP_LOGPROBS = 20  # OpenAI's range for top_logprobs: 0..20
LOGPROBS = "message.output_text.logprobs"  # the includable that asks for the text's logprobs
_TRUNCATIONS = ("auto", "disabled")
_VERBOSITIES = ("low", "medium", "high")  # text.verbosity
_SUMMARIES = ("auto", "concise", "detailed")  # reasoning.summary


def request_model(body: Any) -> str:
    """The request's `model`: OpenAI's 400s for a body that is not an object and for a model
    missing or not a string."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid_request("Invalid type for 'model': expected a string.", "model", "invalid_type")
    if not model:
        raise invalid_request("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    return model


def chat_options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """Sampling, user, max_output_tokens, reasoning and text.format, as chat spells them;
    OpenAI's 400s for those and for the settings no backend is sent in chat (`_settings`)."""
    for name in ("temperature", "top_p", "parallel_tool_calls"):
        value = body.get(name)
        if value is not None:
            if name != "parallel_tool_calls":
                _in_range(name, value, _SAMPLING_MAXIMUM[name], "decimal")
            chat[name] = value
    for name in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        if body.get(name) is not None and type(body[name]) is not str:
            raise invalid_request(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    for name, maximum in (("top_logprobs", _MAX_TOP_LOGPROBS), ("max_tool_calls", None)):
        if body.get(name) is not None:
            _in_range(name, body[name], maximum, "integer")
    user = body.get("user") or body.get("safety_identifier")
    if user:
        chat["user"] = user
    limit = body.get("max_output_tokens")
    if limit is not None:
        chat["max_tokens"] = _output_limit(limit)
    reasoning = _object(body.get("reasoning"), "reasoning")
    effort = reasoning.get("effort")
    if effort is not None:
        effort = _effort(effort)
        if effort is not None:
            chat["reasoning_effort"] = effort
    text = _object(body.get("text"), "text")
    response_format = _response_format(text.get("format"))
    if response_format:
        chat["response_format"] = response_format
    # Echoed in the Response (no chat backend is sent them): OpenAI's values only.
    if reasoning.get("summary") is not None:
        _supported(reasoning["summary"], _SUMMARIES, "reasoning.summary")
    if text.get("verbosity") is not None:
        _supported(text["verbosity"], _VERBOSITIES, "text.verbosity")
    _settings(body)
    if LOGPROBS in (body.get("include") or ()):
        # Asked as OpenAI's are: the includable, `top_logprobs` alternatives at each token.
        chat["logprobs"] = True
        if body.get("top_logprobs"):
            chat["top_logprobs"] = body["top_logprobs"]


def _supported(value: Any, supported: tuple[str, ...], where: str) -> None:
    if value not in supported:
        listed = ", ".join(f"'{v}'" for v in supported[:-1]) + f", and '{supported[-1]}'"
        raise invalid_request(
            f"Invalid value: '{echoed(str(value))}'. Supported values are: {listed}.", where, "invalid_value"
        )


def _in_range(name: str, value: Any, maximum: int | None, kind: str) -> None:
    """OpenAI's 400s for a numeric setting, in its words for a `kind` of "decimal" (a
    `temperature` in 0..2, a `top_p` in 0..1) or "integer" (`top_logprobs` in 0..20, a
    `max_tool_calls` that is a count: echoed in every Response, which the SDK reads as
    integers; a native backend refuses them, so a chat one is not let take them): its type,
    then below 0, then above `maximum` (None: none)."""
    if type(value) is not int and (kind != "decimal" or type(value) is not float):
        expected = "a number" if kind == "decimal" else "an integer"
        raise invalid_request(f"Invalid type for '{name}': expected {expected}.", name, "invalid_type")
    if value < 0:
        side, code, bound = "below minimum value. Expected a value >=", "below_min", 0
    elif maximum is not None and value > maximum:
        side, code, bound = "above maximum value. Expected a value <=", "above_max", maximum
    else:
        return
    raise invalid_request(
        f"Invalid '{name}': {kind} {side} {bound}, but got {value} instead.", name, f"{kind}_{code}_value"
    )


def _output_limit(limit: Any) -> int:
    """`max_output_tokens`, which OpenAI requires to be an integer of at least 16: a smaller
    one was taken by a chat backend and refused by a native one, so the answer depended on
    which was asked; now it is this 400 whichever would be."""
    if type(limit) is not int:
        raise invalid_request(
            "Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens", "invalid_type"
        )
    if limit < _MIN_OUTPUT_TOKENS:
        raise invalid_request(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {_MIN_OUTPUT_TOKENS}, "
            f"but got {limit} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    return limit


def _effort(effort: Any) -> str | None:
    """The chat `reasoning_effort` for a `reasoning.effort` (OpenAI's 400 for one that is not
    a string). An effort this table does not know is sent as none: OpenAI adds efforts with
    its models (`xhigh`, then `max`) and Codex sends them as soon as they exist, so refusing
    one would break a newer client on every request; a native backend reads it as sent."""
    if type(effort) is not str:
        raise invalid_request(
            "Invalid type for 'reasoning.effort': expected a string.", "reasoning.effort", "invalid_type"
        )
    return _EFFORTS.get(effort)


def _settings(body: dict[str, Any]) -> None:
    """OpenAI's 400s for `truncation`, `include` and `background`, which no chat backend is
    sent: a value OpenAI refuses would be passed to a native backend or dropped unsaid."""
    truncation = body.get("truncation")
    if truncation is not None and truncation not in _TRUNCATIONS:
        if type(truncation) is not str:
            raise invalid_request(
                "Invalid type for 'truncation': expected one of 'auto' or 'disabled'.", "truncation", "invalid_type"
            )
        raise invalid_request(
            f"Invalid value: '{echoed(truncation)}'. Supported values are: 'auto' and 'disabled'.",
            "truncation",
            "invalid_value",
        )
    include = body.get("include")
    if include is not None:
        if type(include) is not list:
            raise invalid_request(
                "Invalid type for 'include': expected an array of strings.", "include", "invalid_type"
            )
        # Each value a string; which ones is not checked: clients ask for new ones (Codex:
        # `reasoning.encrypted_content`) before a list kept here would know them, and the
        # gateway fills none (a native backend answers for its own).
        for i, value in enumerate(include):  # a few values at most (Codex sends one)
            if type(value) is not str:
                raise invalid_request(
                    f"Invalid type for 'include[{i}]': expected a string.", f"include[{i}]", "invalid_type"
                )
    background = body.get("background")
    if background is not None:
        if type(background) is not bool:
            raise invalid_request("Invalid type for 'background': expected a boolean.", "background", "invalid_type")
        if background:
            # Answered in the foreground, the client would poll a response that was never queued.
            raise invalid_request(
                "Unsupported parameter: 'background'. This gateway runs no background responses: it answers "
                "while the request's connection is open. Send the request without 'background' (or with it "
                "false), and with 'stream' true to read the answer as it is written.",
                "background",
                "unsupported_parameter",
            )


def _object(value: Any, where: str) -> dict[str, Any]:
    """An optional object field: {} when absent, a 400 when it is something else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid type for '{where}': expected an object.", where)
    return value


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict) and isinstance(fmt.get("name"), str):
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise invalid_request("text.format must be text, json_object or json_schema with a name and schema.", "text.format")


def chat_tail(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """`tool_choice` and `stream` as chat spells them: after the tools, which a named or
    allowed-tools choice is checked against."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        chat["tool_choice"] = _allowed_tools(choice, chat)
    elif choice is not None:
        chat["tool_choice"] = named = _tool_choice(choice)
        if type(named) is dict and not any(tool_name(t) == named["function"]["name"] for t in chat.get("tools") or ()):
            # Forwarded, one server answered 500 (SGLang), another called a tool not named.
            raise invalid_request(
                f"tool_choice names '{echoed(named['function']['name'])}', which is not in 'tools'.", "tool_choice.name"
            )
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed carries the usage


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    named = isinstance(choice, dict) and choice.get("type") in ("function", "custom")
    if named and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if named:  # a kind this gateway takes, without the name it needs
        raise invalid_request(
            "Missing required parameter: 'tool_choice.name'.", "tool_choice.name", "missing_required_parameter"
        )
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise invalid_request(f"tool_choice '{echoed(kind)}' is not supported by this gateway.", "tool_choice")


def _allowed_tools(choice: dict[str, Any], chat: dict[str, Any]) -> str:
    """OpenAI's `allowed_tools` choice as chat spells it: `tools` cut to the ones it names, and
    its mode ("auto", "required") as the choice. `chat["tools"]` is replaced, not edited (in
    the routing view it may be the client's own list)."""
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise invalid_request(
            "Invalid value for 'tool_choice.mode': expected 'auto' or 'required'.", "tool_choice.mode", "invalid_value"
        )
    named = choice.get("tools")
    if type(named) is not list or not named:
        raise invalid_request(
            "Missing required parameter: 'tool_choice.tools'.", "tool_choice.tools", "missing_required_parameter"
        )
    names: set[str] = set()
    for i, tool in enumerate(named):
        if (
            type(tool) is not dict
            or tool.get("type") not in ("function", "custom")
            or type(tool.get("name")) is not str
        ):
            where = f"tool_choice.tools[{i}]"
            raise invalid_request(
                f"'{where}' must name a function or custom tool ({{'type': 'function', 'name': ...}}): allowed "
                "tools of other kinds are not supported by this gateway.",
                where,
            )
        names.add(tool["name"])
    kept = [tool for tool in chat.get("tools") or () if tool_name(tool) in names]
    missing = names.difference(tool_name(tool) for tool in kept)
    if missing:
        raise invalid_request(
            f"tool_choice.tools names '{echoed(min(missing))}', which is not in 'tools'.", "tool_choice.tools"
        )
    chat["tools"] = kept
    return str(mode)
