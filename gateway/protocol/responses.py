"""OpenAI's Responses API at the gateway's edge: a request translated to chat completions.

Codex and the `openai` SDK's `responses` calls reach the one chat pipeline through this
module: `responses_to_chat` turns a request (plus the items of the response it continues)
into a chat payload. It is the whole translation, in order; each part, with the mappings
chosen where the APIs differ and why, is in the module that makes it:
- `gateway.protocol.responses_settings`: the model and every setting (sampling, limits,
  reasoning effort, `text.format`, `tool_choice`, `stream`, and the settings echoed in the
  Response but never sent), with OpenAI's 400s for the values it refuses;
- `gateway.protocol.responses_input`: the input items, after the stored ones a
  `previous_response_id` continues from, as chat messages, and OpenAI's 400s for tool calls
  and outputs that do not pair up;
- `gateway.protocol.responses_tools`: the tools (custom, namespaced, a client's tool search)
  as chat function tools, and what the calls to them come back as.
`instructions` are the first message, a system one: they apply to their own request only, as
OpenAI's do. The way back is `gateway.protocol.responses_answer` (a chat answer as a
Response object, and `conversation_items`, what the gateway stores so that
`previous_response_id` can continue a conversation through any backend) and
`gateway.protocol.responses_stream` (a streamed one as the typed event sequence); routing
reads a request through `gateway.protocol.responses_view` without translating it. Pure
code, no I/O; storing and looking up responses is the route's business.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.errors import invalid_request
from gateway.protocol.responses_input import append_messages, input_items
from gateway.protocol.responses_settings import chat_options, chat_tail, request_model
from gateway.protocol.responses_tools import chat_tools
from gateway.protocol.translation import encode_event

# Responses events go out as Anthropic's do (an `event:` line naming the type, then the data),
# so one encoder serves both; it is re-exported here for the /v1/responses route.
__all__ = ["encode_event", "responses_to_chat"]


def responses_to_chat(body: Any, previous: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat payload for a Responses request continuing `previous` (stored items) if any."""
    model = request_model(body)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = input_items(body.get("input"))
    if not items and previous is None:  # continuing a conversation may add no input
        raise invalid_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    discovered = append_messages(messages, previous or [], items)  # tools a client-side tool search brought in

    chat: dict[str, Any] = {"model": model, "messages": messages}
    chat_options(body, chat)
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise invalid_request("Invalid type for 'tools': expected an array.", "tools")
        chat["tools"] = chat_tools(tools)
    if discovered:
        known = {t["function"]["name"] for t in chat.get("tools", ())}
        chat["tools"] = chat.get("tools", []) + [t for t in discovered if t["function"]["name"] not in known]
    chat_tail(body, chat)
    return chat
