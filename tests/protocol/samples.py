"""Recorded wire samples of the Anthropic Messages, OpenAI Responses and chat-completions APIs.

Each sample names its source. They are data, copied from the vendors' published references
and recorded fixtures (not shapes written from memory), so that the translation tests check
against what clients and servers really send. `test_samples.py` parses every sample with the
vendor SDK's own types and fails on a field those types do not know, so a sample that drifts
from the published shape is caught.

Where a reference gives one example per event type rather than one recorded stream, the
stream here is those examples assembled in the documented order with one set of ids and
consecutive `sequence_number`s, as a real stream carries them; that is said at the sample.

Responses usage carries `input_tokens_details.cache_write_tokens`, which the installed openai
SDK (3.57) requires and the 2025 recordings predate: it is added to them as 0.
"""

from __future__ import annotations

import orjson

# -- Anthropic Messages: requests ------------------------------------------------------------

# What a coding agent sends: system blocks with cache_control (Anthropic "Prompt caching"
# guide), tools with input_schema and tool_choice (the "Tool use" guide's get_weather
# tool), a tool_use / tool_result turn keeping the id (same guide), base64 and url images
# ("Vision" guide), extended thinking with budget_tokens ("Extended thinking" guide),
# stop_sequences, metadata.user_id, temperature, top_p, top_k (API reference, Messages
# create). Field names and nesting as in anthropic-sdk-python src/anthropic/types/
# message_create_params.py (0.121, the fetched snapshot, which types temperature, top_p and
# top_k; the installed 2.10 no longer types those three, though servers such as vLLM read them).
MESSAGES_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": [
        {"type": "text", "text": "You are an AI assistant tasked with analyzing literary works."},
        {
            "type": "text",
            "text": "Here is the full text of a complex literary work: ...",
            "cache_control": {"type": "ephemeral"},
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {
                        "type": "string",
                        "enum": ["celsius", "fahrenheit"],
                        "description": "The unit of temperature, either 'celsius' or 'fahrenheit'",
                    },
                },
                "required": ["location"],
            },
        }
    ],
    "tool_choice": {"type": "auto"},
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="},
                },
                {
                    "type": "image",
                    "source": {
                        "type": "url",
                        "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg",
                    },
                },
                {"type": "text", "text": "What's the weather like in San Francisco?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA", "unit": "celsius"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "15 degrees",
                }
            ],
        },
    ],
    "thinking": {"type": "enabled", "budget_tokens": 10000},
    "stop_sequences": ["\n\nHuman:"],
    "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
    "temperature": 1.0,
    "top_p": 0.9,
    "top_k": 40,
}

# The smallest request (API reference, Messages create example).
MESSAGES_REQUEST_MINIMAL = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, world"}],
}

# -- Anthropic Messages: responses -----------------------------------------------------------

# API reference, Messages create, response example.
MESSAGE_TEXT = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}

# "Tool use" guide: the response that asks for get_weather (usage as the guide's
# companion example; stop_sequence as every Message carries it).
MESSAGE_TOOL_USE = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 384, "output_tokens": 93},
}

# "Extended thinking" guide: a response with a thinking block (signature abbreviated as there).
MESSAGE_THINKING = {
    "id": "msg_01ThinkingExample",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {
            "type": "thinking",
            "thinking": "Let me analyze this step by step...",
            "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL....",
        },
        {"type": "text", "text": "Based on my analysis..."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 50, "output_tokens": 120},
}

# API reference, "Errors": the error body and its HTTP statuses.
ANTHROPIC_ERROR = {
    "type": "error",
    "error": {"type": "not_found_error", "message": "The requested resource could not be found."},
}


def _sse(raw: str) -> list[dict]:
    """The `data` objects of an SSE transcript, in order."""
    return [orjson.loads(line[5:]) for line in raw.splitlines() if line.startswith("data:")]


# anthropic-sdk-python tests/lib/streaming/fixtures/basic_response.txt (a recorded stream).
ANTHROPIC_STREAM_TEXT = _sse(
    """
event: message_start
data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

event: message_stop
data: {"type":"message_stop"}
"""
)

# anthropic-sdk-python tests/lib/streaming/fixtures/tool_use_response.txt (a recorded stream;
# the tool_use block's `caller` field, new in that recording, left out as the installed SDK
# version does not type it on content_block_start).
ANTHROPIC_STREAM_TOOL_USE = _sse(
    """
event: message_start
data: {"type":"message_start","message":{"id":"msg_019Q1hrJbZG26Fb9BQhrkHEr","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'ll check the current weather in Paris for you."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01NRLabsLyVHZPKxbKvkfSMn","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"locati"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"on\\": \\"P"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ar"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":65}}

event: message_stop
data: {"type":"message_stop"}
"""
)

# "Streaming messages" reference, "Streaming request with extended thinking" (the events
# the page shows; it elides further deltas and abbreviates the signature). message_start's
# usage, omitted on the page, as every message_start carries it.
ANTHROPIC_STREAM_THINKING = _sse(
    """
event: message_start
data: {"type": "message_start", "message": {"id": "msg_01ThinkingStream", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 30, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me solve this step by step:\\n\\n1. First break down 27 * 453"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "\\n2. 453 = 400 + 50 + 3"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 40}}

event: message_stop
data: {"type": "message_stop"}
"""
)

# "Streaming messages" reference, "Error events".
ANTHROPIC_STREAM_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

# -- chat completions (the pipeline side) -----------------------------------------------------

# OpenAI API reference, chat.completion object example (text answer).
CHAT_COMPLETION_TEXT = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The image shows a wooden boardwalk path running through a lush green field or meadow.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

# OpenAI API reference, chat.completion with tools example ("function calling" response).
CHAT_COMPLETION_TOOL_CALLS = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": '{\n"location": "Boston, MA"\n}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 82,
        "completion_tokens": 17,
        "total_tokens": 99,
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}

# vLLM "Reasoning Outputs" docs: a reasoning model's answer carries `reasoning_content`
# beside `content` (vLLM's ChatMessage; usage with cached prompt tokens as vLLM reports them
# with --enable-prompt-tokens-details).
CHAT_COMPLETION_REASONING = {
    "id": "chatcmpl-5e0b2c3f4a",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": "9.11 and 9.8: compare the tenths, 1 < 8.",
                "content": "9.8 is greater than 9.11.",
                "tool_calls": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 30,
        "total_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 16},
    },
}

_CHUNK = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190, "model": "gpt-4o-mini"}


def _chunk(delta: dict, finish_reason: str | None = None) -> dict:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return {**_CHUNK, "system_fingerprint": "fp_44709d6fcb", "choices": [choice]}


# OpenAI API reference, chat.completion.chunk streaming example ("Hello" split in deltas),
# ended by the usage chunk that `stream_options.include_usage` adds.
CHAT_STREAM_TEXT = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hello"}),
    _chunk({"content": " there"}),
    _chunk({"content": "!"}),
    _chunk({}, "stop"),
    {
        **_CHUNK,
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17},
    },
]

# OpenAI "Function calling" guide, "Streaming": the first delta carries id, type and name,
# the rest carry argument fragments under the same index.
CHAT_STREAM_TOOL_CALLS = [
    _chunk({"role": "assistant", "content": None}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "location"}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '":"'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "Paris"}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ", France"}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"}'}}]}),
    _chunk({}, "tool_calls"),
]

# vLLM "Reasoning Outputs" docs, streaming: `reasoning_content` deltas before `content` deltas.
CHAT_STREAM_REASONING = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"reasoning_content": "Let me solve this step by step:"}),
    _chunk({"reasoning_content": " 27 * 453 = 12,231"}),
    _chunk({"content": "27 * 453 = 12,231"}),
    _chunk({}, "stop"),
]

# -- OpenAI Responses: requests ---------------------------------------------------------------

# API reference, Create a model response: "Text input" example.
# The gateway's 400 for `background: true` (not OpenAI's: OpenAI runs background responses).
BACKGROUND_REFUSED = (
    "Unsupported parameter: 'background'. This gateway runs no background responses: it answers while the "
    "request's connection is open. Send the request without 'background' (or with it false), and with "
    "'stream' true to read the answer as it is written."
)
RESPONSES_REQUEST_STRING = {"model": "gpt-4.1", "input": "Tell me a three sentence bedtime story about a unicorn."}

# What Codex sends, in the API reference's item shapes: instructions, an input message with
# input_text and input_image parts ("Image input" example, url and data URL), a reasoning
# item, a function_call and its function_call_output ("Function calling" guide), function
# tools in the Responses' flat shape, tool_choice, parallel_tool_calls, text.format json_schema
# ("Structured outputs" guide), reasoning.effort, max_output_tokens, metadata. Field names as
# openai-python src/openai/types/responses/response_create_params.py and response_input_param.py.
RESPONSES_REQUEST_ITEMS = {
    "model": "gpt-5",
    "instructions": "You are a coding agent. Use the tools to answer.",
    "input": [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what's in this image?"},
                {
                    "type": "input_image",
                    "image_url": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg",
                    "detail": "auto",
                },
                {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/4AAQSkZJRg==", "detail": "low"},
            ],
        },
        {
            "type": "message",
            "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A boardwalk.", "annotations": []}],
        },
        {"role": "user", "content": "What is the weather like in Paris today?"},
        {
            "type": "reasoning",
            "id": "rs_6890ed2b6374819dbbff5353e6664ef103f4db9848be4829",
            "summary": [{"type": "summary_text", "text": "Need the weather tool."}],
        },
        {
            "type": "function_call",
            "id": "fc_12345xyz",
            "call_id": "call_12345xyz",
            "name": "get_weather",
            "arguments": '{"location":"Paris, France"}',
        },
        {"type": "function_call_output", "call_id": "call_12345xyz", "output": "15 degrees"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Get current temperature for a given location.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"}},
                "required": ["location"],
                "additionalProperties": False,
            },
            "strict": True,
        }
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "text": {
        "format": {
            "type": "json_schema",
            "name": "calendar_event",
            "schema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "date": {"type": "string"},
                    "participants": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "date", "participants"],
                "additionalProperties": False,
            },
            "strict": True,
        }
    },
    "reasoning": {"effort": "low"},
    "max_output_tokens": 2048,
    "metadata": {"session": "abc"},
    "temperature": 0.2,
    "top_p": 1.0,
    "store": True,
    "user": "user-1234",
}

# -- OpenAI Responses: response objects and stream --------------------------------------------

# A recorded Response (microsoft/agent-framework dotnet/tests/.../TestData/
# OpenAIDefaultResponse.json, a response from the live API).
RESPONSE_TEXT = {
    "id": "resp_0888a46cbf2b1ff3006914596e05d08195a77c3f5187b769a7",
    "object": "response",
    "created_at": 1762941294,
    "status": "completed",
    "background": False,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "model": "gpt-4o-mini-2024-07-18",
    "output": [
        {
            "id": "msg_0888a46cbf2b1ff3006914596f814481958e8cf500a6dabbec",
            "type": "message",
            "status": "completed",
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello! How can I assist you today?"}
            ],
            "role": "assistant",
        }
    ],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None},
    "safety_identifier": None,
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 19,
    },
    "user": None,
    "metadata": {},
}

# "Function calling" guide: the function_call output item.
RESPONSE_FUNCTION_CALL_ITEM = {
    "type": "function_call",
    "id": "fc_12345xyz",
    "call_id": "call_12345xyz",
    "name": "get_weather",
    "arguments": '{"location":"Paris, France"}',
    "status": "completed",
}

_RESP_ID = "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654"
_MSG_ID = "msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654"
_IN_PROGRESS = {
    "id": _RESP_ID,
    "object": "response",
    "created_at": 1741290958,
    "status": "in_progress",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": None,
    "user": None,
    "metadata": {},
}
_MESSAGE_DONE = {
    "id": _MSG_ID,
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Hi there!", "annotations": []}],
}

# API reference, "Streaming events": one example per event (response.created, .in_progress,
# .output_item.added, .content_part.added, .output_text.delta, .output_text.done,
# .content_part.done, .output_item.done, .completed), assembled in that documented order
# with one response/item id and sequence numbers 0.. as a stream carries them; the text split
# in two deltas.
RESPONSES_STREAM_TEXT = [
    {"type": "response.created", "sequence_number": 0, "response": _IN_PROGRESS},
    {"type": "response.in_progress", "sequence_number": 1, "response": _IN_PROGRESS},
    {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {"id": _MSG_ID, "status": "in_progress", "type": "message", "role": "assistant", "content": []},
    },
    {
        "type": "response.content_part.added",
        "sequence_number": 3,
        "item_id": _MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": _MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "delta": "Hi",
        "logprobs": [],
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 5,
        "item_id": _MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "delta": " there!",
        "logprobs": [],
    },
    {
        "type": "response.output_text.done",
        "sequence_number": 6,
        "item_id": _MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "text": "Hi there!",
        "logprobs": [],
    },
    {
        "type": "response.content_part.done",
        "sequence_number": 7,
        "item_id": _MSG_ID,
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "text": "Hi there!", "annotations": []},
    },
    {"type": "response.output_item.done", "sequence_number": 8, "output_index": 0, "item": _MESSAGE_DONE},
    {
        "type": "response.completed",
        "sequence_number": 9,
        "response": {
            **_IN_PROGRESS,
            "status": "completed",
            "output": [_MESSAGE_DONE],
            "usage": {
                "input_tokens": 37,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 11,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 48,
            },
        },
    },
]

_FC_ID = "fc_12345xyz"
_FC_ADDED = {
    "type": "function_call",
    "id": _FC_ID,
    "call_id": "call_12345xyz",
    "name": "get_weather",
    "arguments": "",
    "status": "in_progress",
}
_FC_DONE = {**_FC_ADDED, "arguments": '{"location":"Paris, France"}', "status": "completed"}

# "Function calling" guide, "Streaming": output_item.added with the function_call item,
# function_call_arguments.delta fragments, .done with the whole arguments, output_item.done;
# between response.created/.in_progress and response.completed as in the reference, with
# sequence numbers 0.. as a stream carries them.
RESPONSES_STREAM_FUNCTION_CALL = [
    {"type": "response.created", "sequence_number": 0, "response": _IN_PROGRESS},
    {"type": "response.in_progress", "sequence_number": 1, "response": _IN_PROGRESS},
    {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": _FC_ADDED},
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 3,
        "item_id": _FC_ID,
        "output_index": 0,
        "delta": '{"location":',
    },
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 4,
        "item_id": _FC_ID,
        "output_index": 0,
        "delta": '"Paris, France"}',
    },
    {
        "type": "response.function_call_arguments.done",
        "sequence_number": 5,
        "item_id": _FC_ID,
        "output_index": 0,
        "arguments": '{"location":"Paris, France"}',
    },
    {"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": _FC_DONE},
    {
        "type": "response.completed",
        "sequence_number": 7,
        "response": {
            **_IN_PROGRESS,
            "status": "completed",
            "output": [_FC_DONE],
            "usage": {
                "input_tokens": 60,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 18,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 78,
            },
        },
    },
]

# API reference, "response.failed" event example (its stray top-level `reasoning_effort`, which
# is not a Response field, left out).
RESPONSES_FAILED = {
    "type": "response.failed",
    "sequence_number": 1,
    "response": {
        "id": "resp_123",
        "object": "response",
        "created_at": 1740855869,
        "status": "failed",
        "error": {"code": "server_error", "message": "The model failed to generate a response."},
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4o-mini-2024-07-18",
        "output": [],
        "previous_response_id": None,
        "store": False,
        "temperature": 1,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
        "parallel_tool_calls": True,
    },
}

# Codex's apply_patch as a custom (freeform) tool: openai/codex codex-rs/core/src/tools/handlers/
# apply_patch_spec.rs (name, description, format), the grammar's first lines from
# tool_apply_patch.lark beside it (abbreviated).
CODEX_APPLY_PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.\nThis is a FREEFORM tool, so do not wrap the patch in JSON.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?\n',
    },
}

# The custom_tool_call output item and its output item in the next request (openai-python
# src/openai/types/responses/response_custom_tool_call.py and
# response_custom_tool_call_output_param.py field names; a patch as Codex's model writes it).
CUSTOM_TOOL_CALL_ITEM = {
    "type": "custom_tool_call",
    "id": "ctc_6890e975e86c819c9338825b3e1994810694874df0bd8f1f",
    "call_id": "call_aGiFQkRWSWAIsMQ19fKqxUgb",
    "name": "apply_patch",
    "input": "*** Begin Patch\n*** Add File: hello.txt\n+Hello world\n*** End Patch\n",
}
CUSTOM_TOOL_CALL_OUTPUT_ITEM = {
    "type": "custom_tool_call_output",
    "call_id": "call_aGiFQkRWSWAIsMQ19fKqxUgb",
    "output": "Success. Updated the following files:\nA hello.txt\n",
}


def _call_chunk(position: int, call_id: str | None = None, name: str | None = None, arguments: str | None = None):
    call: dict = {"index": position, "function": {}}
    if call_id:
        call.update(id=call_id, type="function")
    if name:
        call["function"]["name"] = name
    if arguments is not None:
        call["function"]["arguments"] = arguments
    return {**_CHUNK_HEAD, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


_CHUNK_HEAD = {"id": "chatcmpl-par", "object": "chat.completion.chunk", "created": 1741290958, "model": "m"}
_PARALLEL_END = [
    {**_CHUNK_HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {**_CHUNK_HEAD, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}},
]
_PARALLEL_START = [{**_CHUNK_HEAD, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
# Two parallel calls streamed one after the other (OpenAI, vLLM): each call's arguments whole
# before the next call begins.
CHAT_STREAM_PARALLEL_CALLS = [
    *_PARALLEL_START,
    _call_chunk(0, "call_A", "get_weather", ""),
    _call_chunk(0, arguments='{"location":'),
    _call_chunk(0, arguments='"Paris"}'),
    _call_chunk(1, "call_B", "get_weather", ""),
    _call_chunk(1, arguments='{"location":'),
    _call_chunk(1, arguments='"Rome"}'),
    *_PARALLEL_END,
]
# The same calls from a backend that sends every call's head before their arguments, and
# the arguments interleaved: what chat clients assemble by `index` alike.
CHAT_STREAM_INTERLEAVED_CALLS = [
    *_PARALLEL_START,
    _call_chunk(0, "call_A", "get_weather", ""),
    _call_chunk(1, "call_B", "get_weather", ""),
    _call_chunk(0, arguments='{"location":'),
    _call_chunk(1, arguments='{"location":'),
    _call_chunk(0, arguments='"Paris"}'),
    _call_chunk(1, arguments='"Rome"}'),
    *_PARALLEL_END,
]
PARALLEL_CALLS = [("call_A", {"location": "Paris"}), ("call_B", {"location": "Rome"})]
