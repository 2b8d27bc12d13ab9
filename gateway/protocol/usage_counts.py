"""The token counts of a chat completion's `usage` object, read one way for all who read them.

The ledger (`gateway.proxy.usage.Usage`) and the answers the gateway writes itself in another
API (a Responses usage, `gateway.protocol.responses_answer.response_usage`) read the same
report: read apart, a count the ledger took (a whole float, DeepSeek's cache hits) was zero
in the client's answer while the call was billed for it.
"""

from __future__ import annotations

from typing import Any

# The most tokens one field of one call's usage is believed at: a hundred times the longest
# context offered (10M tokens). An upstream's usage is not trusted past it: a report of 10^14
# completion tokens, priced, overflowed the ledger's 64-bit sums, and the writer retried that
# batch, every key's calls in it, for ever (hostile testing).
MAX_TOKENS_PER_CALL = 1_000_000_000


def token_count(value: Any) -> int | None:
    """A count of tokens as an upstream reported it, or None when it is not one. Integers as
    they are (up to MAX_TOKENS_PER_CALL); also what some servers and proxies write instead: a
    whole float (`1000.0`) or a string of digits. Negative, fractional, boolean and other
    values are no count."""
    if type(value) is int:
        if value < 0:
            return None
        return value if value <= MAX_TOKENS_PER_CALL else MAX_TOKENS_PER_CALL
    if type(value) is float:
        if not (value >= 0 and value.is_integer()):  # NaN fails the comparison
            return None
        return int(value) if value <= MAX_TOKENS_PER_CALL else MAX_TOKENS_PER_CALL
    if type(value) is str and value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"  # a long run of digits is not converted (it is past the bound)
        return min(int(digits), MAX_TOKENS_PER_CALL) if len(digits) < 20 else MAX_TOKENS_PER_CALL
    return None


def read_counts(usage: Any) -> tuple[int, int, int, int, int] | None:
    """(prompt, completion, cached, cache writes, reasoning) tokens of a chat `usage`; None for
    a report with no usable count (neither prompt nor completion tokens as a number)."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    if prompt is None and completion is None:
        return None
    prompt = prompt or 0
    # The details objects are absent from most answers: each read only when present
    # (this runs on every call; the same result as reading empty ones).
    details = usage.get("prompt_tokens_details")
    cached = written = reasoning = 0
    if details and isinstance(details, dict):
        cached = token_count(details.get("cached_tokens")) or 0
        # Cache writes: OpenRouter's `prompt_tokens_details.cache_write_tokens`, which the
        # Anthropic adapter's translation also fills from `cache_creation_input_tokens`.
        written = token_count(details.get("cache_write_tokens")) or 0
    if not cached:
        hits = usage.get("prompt_cache_hit_tokens")  # DeepSeek reports cache hits at the top level
        if hits:
            cached = token_count(hits) or 0
    if cached > prompt:
        cached = prompt
    if written > prompt - cached:
        written = prompt - cached
    cdetails = usage.get("completion_tokens_details")
    if cdetails and isinstance(cdetails, dict):
        reasoning = token_count(cdetails.get("reasoning_tokens")) or 0
    return prompt, completion or 0, cached, written, reasoning
