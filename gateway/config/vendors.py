"""Vendor defaults, as data: where each provider type lives, how it wants to be called, and
which adapter speaks its protocol.

The keys of `VENDORS` are the backend types the routing YAML accepts (`schema.BackendType`
is built from them), so adding an OpenAI-compatible vendor is one entry here. A provider
with a different wire protocol also gets its own adapter module in `gateway.backends` and
a line in `ADAPTERS`.

This lives in `config`, below `backends`, because the schema reads it; adapters are named
here by their import path (a string), never imported, so the arrow still points down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# How an upstream is asked to continue a partial assistant answer (a prefill), for stream
# continuation (`gateway.proxy.continuation`):
# - `continue_final_message`: vLLM's extra parameters `continue_final_message: true,
#   add_generation_prompt: false`, the last message the assistant's partial answer;
# - `prefix`: DeepSeek's chat prefix completion, `prefix: true` on that message (a beta
#   feature: the backend's base_url must be https://api.deepseek.com/beta);
# - `partial`: Moonshot's partial mode, `partial: true` on that message;
# - `assistant`: a plain trailing assistant message (Anthropic's prefill, sent without
#   trailing whitespace, which its API refuses; Claude 4.6+ refuses prefills: `prefill: false`).
PrefillMode = Literal["continue_final_message", "prefix", "partial", "assistant"]

# The ingress APIs a backend may serve natively (`BackendConfig.apis`), spelled as the
# schema's `ApiName`; each maps to its upstream path in `gateway.backends.base`.
OPENAI_COMPATIBLE = frozenset({"chat", "completions", "embeddings"})

# Protocol families: the adapter module in gateway.backends and its class, as `module:Class`.
# `backends.pool` imports the one a backend's vendor names.
ADAPTERS: dict[str, str] = {
    "openai_compat": "gateway.backends.openai_compat:OpenAICompatBackend",
    "mock": "gateway.backends.mock:MockBackend",
    "anthropic": "gateway.backends.anthropic:AnthropicBackend",
}


@dataclass(frozen=True, slots=True)
class Vendor:
    adapter: str  # protocol family, a key of ADAPTERS: "openai_compat", "mock", "anthropic"
    base_url: str | None = None
    key_env: str | None = None  # conventional environment variable, named in warnings
    key_required: bool = True
    # Extra request headers every call carries (attribution, API versions).
    headers: dict[str, str] = field(default_factory=dict)
    # Liveness endpoint for active health checks: relative to base_url, or to the server root
    # (base_url without its trailing /v1) when health_at_root is set, as vLLM serves /health.
    health_path: str = "/models"
    health_at_root: bool = False
    # The APIs the vendor serves natively under `base_url` (`apis:` in YAML overrides it):
    # a request to one of them is passed through as is, any other is translated through
    # chat completions. Checked against each vendor's documentation (README, "Native APIs").
    apis: frozenset[str] = OPENAI_COMPATIBLE
    # Whether (and how) its offers continue a partial answer by default; an offer's own
    # `prefill` in YAML overrides it. None: no continuation sent there.
    prefill: PrefillMode | None = None
    # Whether its offers are sent the reasoning of earlier assistant turns back, as chat's
    # `reasoning_content` on those messages, when a Messages or Responses request is
    # translated for them (an offer's own `reasoning_history` in YAML overrides it). Thinking
    # models that reason between tool calls want it: DeepSeek refuses a tool call's turn
    # without it ("The `reasoning_content` in the thinking mode must be passed back"), Z.ai's
    # GLM asks for it, vLLM's chat templates render it. Off where a server may refuse an
    # unknown message field (Groq, OpenAI's own API behind `openai`).
    reasoning_history: bool = False
    # The message fields that reasoning goes back in: `reasoning_content` (DeepSeek's, Z.ai's,
    # Moonshot's), and for vLLM also `reasoning`, the name its newer releases read.
    reasoning_fields: tuple[str, ...] = ("reasoning_content",)
    # Assistant-message fields its server refuses with a 400 ("property 'reasoning_content'
    # is unsupported"): the reasoning a chat client sends back on earlier turns, as another
    # backend returned it (DeepSeek's `reasoning_content`, vLLM's `reasoning`, OpenRouter's
    # `reasoning_details`), is left out of what such an offer is sent; a conversation that
    # falls back to it would otherwise fail on its own history. A backend's own
    # `refused_message_fields` in YAML overrides it (a Cerebras behind `type: openai`).
    refused_message_fields: frozenset[str] = frozenset()
    # Whether its chat API takes `top_k`, a sampling field OpenAI's API does not have (and
    # refuses: "Unrecognized request argument supplied: top_k"). A translated Messages
    # request's `top_k` goes only where it is documented: vLLM's, Together's, Fireworks' and
    # OpenRouter's sampling parameters (and Anthropic's own); elsewhere, the generic `openai`
    # type included, it is left out (a sampling hint, not worth a 400). A chat client's own
    # `top_k` is sent as it came, wherever it goes.
    top_k: bool = False

    @property
    def adapter_class(self) -> str:
        """The adapter's import path, `module:Class`, for whoever builds backends."""
        return ADAPTERS[self.adapter]


# In the order the schema's error lists them when a backend's `type` is none of these.
VENDORS: dict[str, Vendor] = {
    "vllm": Vendor(
        "openai_compat",
        "http://127.0.0.1:8000/v1",
        "VLLM_API_KEY",
        key_required=False,
        health_path="/health",
        health_at_root=True,
        # docs.vllm.ai "Online Serving": /v1/completions, /v1/chat/completions, /v1/responses,
        # /v1/embeddings, and Anthropic's /v1/messages (+ /count_tokens).
        apis=OPENAI_COMPATIBLE | {"responses", "messages"},
        prefill="continue_final_message",
        reasoning_history=True,
        reasoning_fields=("reasoning_content", "reasoning"),
        top_k=True,
    ),
    # Any OpenAI-compatible server: the three endpoints every such server has.
    "openai": Vendor("openai_compat", key_required=False),
    "openrouter": Vendor(
        "openai_compat",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
        headers={"HTTP-Referer": "https://github.com/open-model-gateway", "X-Title": "open-model-gateway"},
        # chat/completions, completions, embeddings, responses under /api/v1; its
        # Anthropic-compatible base (`https://openrouter.ai/api`, for ANTHROPIC_BASE_URL)
        # serves /api/v1/messages, i.e. `messages` under this same base_url.
        apis=OPENAI_COMPATIBLE | {"responses", "messages"},
        top_k=True,
    ),
    # DeepSeek, Moonshot and MiniMax serve their Anthropic-compatible APIs (and DeepSeek its
    # FIM completions) under other base URLs (`/anthropic`, `/beta`), not under this one:
    # configure a second backend for those. Here: chat only.
    "deepseek": Vendor(
        "openai_compat",
        "https://api.deepseek.com/v1",
        "DEEPSEEK_API_KEY",
        apis=frozenset({"chat"}),
        prefill="prefix",
        reasoning_history=True,  # api-docs.deepseek.com "Thinking Mode": required after tool calls
    ),
    "moonshot": Vendor(
        "openai_compat",
        "https://api.moonshot.ai/v1",
        "MOONSHOT_API_KEY",
        apis=frozenset({"chat"}),
        prefill="partial",
        reasoning_history=True,  # Kimi's thinking models reason across tool calls
    ),
    "zhipu": Vendor(
        "openai_compat",
        "https://open.bigmodel.cn/api/paas/v4",
        "ZHIPU_API_KEY",
        apis=frozenset({"chat", "embeddings"}),
        reasoning_history=True,  # docs.z.ai "Thinking Mode": preserve thinking with tool results
    ),
    "dashscope": Vendor(
        "openai_compat",
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
        "DASHSCOPE_API_KEY",
        apis=frozenset({"chat", "embeddings"}),
    ),
    "minimax": Vendor("openai_compat", "https://api.minimax.io/v1", "MINIMAX_API_KEY", apis=frozenset({"chat"})),
    # Groq: chat completions and the Responses API (no completions, no embedding models).
    "groq": Vendor(
        "openai_compat",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        apis=frozenset({"chat", "responses"}),
        # Its 400s for each, on assistant messages, as quoted in clients' issues.
        refused_message_fields=frozenset({"reasoning_content", "reasoning", "reasoning_details"}),
    ),
    "together": Vendor("openai_compat", "https://api.together.xyz/v1", "TOGETHER_API_KEY", top_k=True),
    # Fireworks: chat, completions, embeddings and the Responses API under /inference/v1.
    "fireworks": Vendor(
        "openai_compat",
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_API_KEY",
        apis=OPENAI_COMPATIBLE | {"responses"},
        top_k=True,
    ),
    "mock": Vendor("mock", key_required=False, health_path="", top_k=True),
    # Anthropic serves the Messages API only; the adapter also translates chat calls to it.
    "anthropic": Vendor(
        "anthropic",
        "https://api.anthropic.com/v1",
        "ANTHROPIC_API_KEY",
        headers={"anthropic-version": "2023-06-01"},
        apis=frozenset({"messages"}),
        prefill="assistant",
        top_k=True,  # Messages' own field
    ),
}
