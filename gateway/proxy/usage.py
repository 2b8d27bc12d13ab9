"""Reading `usage` out of upstream answers without re-serialising them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.protocol.usage_counts import MAX_TOKENS_PER_CALL, read_counts, token_count

__all__ = ["MAX_COST_USD", "MAX_TOKENS_PER_CALL", "TokenCounts", "Usage", "token_count"]

# The most a call's cost is taken at: a million dollars, about a thousand times the dearest
# call a model could make (ten million tokens of context at $100 per million), so only an
# absurd usage report or price reaches it. The ledger and the limits' spend counters each
# take no call past it; their sums saturate (`gateway.usage.aggregates.SUM_CAP`).
MAX_COST_USD = 1e6


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
        """None for a report with no usable count (neither prompt nor completion tokens as a
        number): the caller estimates, rather than bill a call it cannot read at nothing."""
        counts = read_counts(usage)
        if counts is None:
            return None
        prompt, completion, cached, written, reasoning = counts
        return cls(prompt, completion, cached, reasoning, False, written)
