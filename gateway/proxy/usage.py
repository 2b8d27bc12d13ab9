"""Reading `usage` out of upstream answers without re-serialising them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The most tokens one field of one call's usage is believed at: a hundred times the longest
# context offered (10M tokens). An upstream's usage is not trusted past it: a report of 10^14
# completion tokens, priced, overflowed the ledger's 64-bit sums, and the writer retried that
# batch, every key's calls in it, for ever (hostile testing).
MAX_TOKENS_PER_CALL = 1_000_000_000


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
        # The details objects are absent from most answers: each read only when present
        # (this runs on every call; the same result as reading empty ones).
        details = usage.get("prompt_tokens_details")
        cached = written = reasoning = 0
        if details and isinstance(details, dict):
            cached = _int(details.get("cached_tokens"))
            # Cache writes: OpenRouter's `prompt_tokens_details.cache_write_tokens`, which the
            # Anthropic adapter's translation also fills from `cache_creation_input_tokens`.
            written = _int(details.get("cache_write_tokens"))
        if not cached:
            hits = usage.get("prompt_cache_hit_tokens")  # DeepSeek reports cache hits at the top level
            if hits:
                cached = _int(hits)
        if cached > prompt:
            cached = prompt
        if written > prompt - cached:
            written = prompt - cached
        cdetails = usage.get("completion_tokens_details")
        if cdetails and isinstance(cdetails, dict):
            reasoning = _int(cdetails.get("reasoning_tokens"))
        return cls(prompt, completion, cached, reasoning, False, written)


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value if value <= MAX_TOKENS_PER_CALL else MAX_TOKENS_PER_CALL
    return 0
