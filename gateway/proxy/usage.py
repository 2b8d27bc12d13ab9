"""Reading `usage` out of upstream answers without re-serialising them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class TokenCounts:
    """The token fields of one call (`Usage`) and of a sum of calls (the ledger's rollups,
    `gateway.usage.aggregates.Counters`): one definition, so the two cannot drift apart."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # part of prompt_tokens, read from a prompt cache
    reasoning_tokens: int = 0  # part of completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Usage(TokenCounts):
    """One call's usage as the upstream reported it (or as estimated)."""

    estimated: bool = False
    # Prompt tokens written to a prompt cache (Anthropic's `cache_creation_input_tokens`),
    # part of `prompt_tokens` like `cached_tokens`, and priced at the offer's `cache_write_price`.
    cache_write_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details") or {}
        if not isinstance(details, dict):
            details = {}
        cached = _int(details.get("cached_tokens"))
        # DeepSeek reports cache hits at the top level.
        cached = min(cached or _int(usage.get("prompt_cache_hit_tokens")), prompt)
        # Cache writes: OpenRouter's `prompt_tokens_details.cache_write_tokens`, which the
        # Anthropic adapter's translation also fills from `cache_creation_input_tokens`.
        written = min(_int(details.get("cache_write_tokens")), prompt - cached)
        cdetails = usage.get("completion_tokens_details") or {}
        reasoning = _int(cdetails.get("reasoning_tokens")) if isinstance(cdetails, dict) else 0
        return cls(prompt, completion, cached, reasoning, cache_write_tokens=written)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
