"""A Responses request's tools as chat tools, and what the calls to them come back as.

`chat_tools` translates the request's `tools` (`chat_tool` one of them, `flatten_namespace`
a namespace into the functions inside it); `discovered_tools` the tools a client-side tool
search brought in (`gateway.protocol.responses_input` offers them from then on). For the way
back (`gateway.protocol.responses_answer`, `gateway.protocol.responses_stream`), `call_kinds`
reads which calls answer as custom, namespaced or tool search calls. `tool_choice` is a
setting (`gateway.protocol.responses_settings`), checked against the tools made here. Pure
code, no I/O.

Mappings chosen where the APIs differ: function tools translate as they are. Custom
(freeform) tools, which Codex uses for apply_patch, become function tools taking one string
`input` (their grammar, if any, in the description), and calls to them come back as
`custom_tool_call` items. OpenAI's built-in tools (web search, file search, computer use,
code interpreter...) run inside OpenAI, so they get a 400 naming the tool. A `namespace` tool
(Codex's sub-agent functions) is the function tools inside it; calls to them come back with
the `namespace` set. A `tool_search` the client runs itself (`execution: "client"`, Codex's
tool discovery) is a function tool named `tool_search`; calls to it come back as
`tool_search_call` items, and the tools a `tool_search_output` item brings are offered from
then on. A hosted tool search is a 400.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.errors import echoed, invalid_request

# The members of a function tool that its chat spelling keeps (others, `defer_loading`, are dropped).
FUNCTION_FIELDS = ("name", "description", "parameters", "strict")
TOOL_SEARCH = "tool_search"  # the function a client-side tool search is offered as
_SEARCH_PARAMETERS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}


def chat_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """The chat tools for the request's `tools` (namespaces flattened). A named function tool,
    nearly every tool an agent sends, is spelled here without `chat_tool`'s checks (a fifth of
    the translation's time for 20 tools); the same dict either way."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if type(tool) is dict and tool.get("type") == "function":
            name = tool.get("name")
            if type(name) is str and name:
                function = {"name": name}
                for key in ("description", "parameters", "strict"):  # FUNCTION_FIELDS after the name
                    value = tool.get(key)
                    if value is not None:
                        function[key] = value
                out.append({"type": "function", "function": function})
                continue
        out += [chat_tool(inner, where) for inner, where in flatten_namespace(tool, f"tools[{i}]")]
    return out


def chat_tool(tool: Any, where: str) -> dict[str, Any]:
    """The chat tool for one of the request's tools (`where` names it in the 400s): a function as
    it is, a custom tool or a client tool search as the function it is offered as."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "custom" and isinstance(tool.get("name"), str) and tool["name"]:
        return _custom_tool(tool)
    if kind == "tool_search" and tool.get("execution") == "client":
        # Codex searches its own (deferred) tools: to the model, a function like any other.
        parameters = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else _SEARCH_PARAMETERS
        function = {"name": TOOL_SEARCH, "parameters": parameters}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        return {"type": "function", "function": function}
    if kind != "function":
        raise invalid_request(
            f"The built-in tool '{echoed(kind)}' is not supported by this gateway: it runs inside OpenAI. "
            "Declare your own function tools instead.",
            f"{where}.type",
            "unsupported_tool",
        )
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise invalid_request(f"Missing required parameter: '{where}.name'.", f"{where}.name")
    return {"type": "function", "function": {k: tool[k] for k in FUNCTION_FIELDS if tool.get(k) is not None}}


def flatten_namespace(tool: Any, where: str) -> list[tuple[Any, str]]:
    """A `namespace` tool (Codex groups its sub-agent functions in one) as the tools inside it,
    each with where it was; any other tool as itself. Calls to them come back with the namespace."""
    if not (isinstance(tool, dict) and tool.get("type") == "namespace"):
        return [(tool, where)]
    inner = tool.get("tools")
    if not isinstance(inner, list):
        raise invalid_request(f"Invalid type for '{where}.tools': expected an array.", f"{where}.tools")
    return [(t, f"{where}.tools[{j}]") for j, t in enumerate(inner)]


def _custom_tool(tool: dict[str, Any]) -> dict[str, Any]:
    description = tool.get("description")
    if not isinstance(description, str):
        description = ""
    fmt = tool.get("format")
    if not isinstance(fmt, dict):
        fmt = {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        description += f"\n\nThe input must follow this {fmt.get('syntax', '')} grammar:\n{fmt['definition']}"
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
        "required": ["input"],
    }
    function: dict[str, Any] = {"name": tool["name"], "parameters": parameters}
    if description:
        function["description"] = description.strip()
    return {"type": "function", "function": function}


def discovered_tools(tools: Any) -> list[dict[str, Any]]:
    """The function tools a client-side tool search returned (namespaces flattened); others,
    which this gateway could not offer anyway, are left out."""
    found = []
    for tool in tools if isinstance(tools, list) else ():
        for inner, _ in flatten_namespace(tool, "tools") if isinstance(tool, dict) else ():
            if isinstance(inner, dict) and inner.get("type") in ("function", "custom") and inner.get("name"):
                found.append(chat_tool(inner, "tools"))
    return found


CallKinds = tuple[frozenset[str], dict[str, str], bool]


def call_kinds(request: dict[str, Any]) -> CallKinds:
    """What the calls coming back are, by the request's tools, read in one pass and only once
    the answer has a call: the custom tools' names (they answer as custom_tool_call items),
    function name -> the namespace it was declared in, and whether a tool search is the
    client's (its calls answer as tool_search_call items)."""
    custom: set[str] = set()
    namespaces: dict[str, str] = {}
    search = False
    tools = request.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if kind == "function":
            continue
        if kind == "custom" and "name" in tool:
            custom.add(tool["name"])
        elif kind == "namespace" and isinstance(tool.get("name"), str):
            for inner in tool.get("tools") or ():
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    namespaces[inner["name"]] = tool["name"]
        elif kind == "tool_search" and tool.get("execution") == "client":
            search = True
    return frozenset(custom), namespaces, search
