"""Cache writes: read from the usage upstreams report, priced at the offer's cache_write_price."""

from __future__ import annotations

import pytest

from gateway.backends.anthropic_translate import openai_usage
from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.outcome import price_usd
from gateway.proxy.usage import Usage


def test_openrouter_cache_writes_are_read_from_prompt_tokens_details():
    # OpenRouter's usage accounting shape (openrouter.ai/docs/use-cases/usage-accounting).
    usage = Usage.from_openai(
        {
            "prompt_tokens": 194,
            "completion_tokens": 2,
            "total_tokens": 196,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 100, "audio_tokens": 0},
        }
    )
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (194, 0, 100)


def test_cache_writes_from_anthropic_survive_the_adapters_translation():
    translated = openai_usage(
        {"input_tokens": 10, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 5, "output_tokens": 7}
    )
    usage = Usage.from_openai(translated)
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (45, 30, 5)


def test_reported_cache_writes_never_exceed_the_uncached_prompt():
    usage = Usage.from_openai(
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 9},
        }
    )
    assert (usage.cached_tokens, usage.cache_write_tokens) == (8, 2)


@pytest.mark.parametrize(
    "reported, read",
    [
        # (prompt, completion, cached, reasoning, cache writes)
        ({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}, (9, 4, 0, 0, 0)),
        ({"prompt_tokens": 9, "completion_tokens": 4, "prompt_cache_hit_tokens": 6}, (9, 4, 6, 0, 0)),  # DeepSeek
        ({"prompt_tokens": 9, "prompt_cache_hit_tokens": 20}, (9, 0, 9, 0, 0)),  # capped at the prompt
        (
            {"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 5}, "prompt_cache_hit_tokens": 7},
            (9, 0, 5, 0, 0),  # the details win over the top-level count
        ),
        (
            {"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}, "prompt_cache_hit_tokens": 7},
            (9, 0, 7, 0, 0),
        ),
        (
            {"prompt_tokens": 9, "completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 3}},
            (9, 4, 0, 3, 0),
        ),
        (
            {
                "prompt_tokens": True,
                "completion_tokens": -2,
                "prompt_tokens_details": "x",
                "completion_tokens_details": [],
                "prompt_cache_hit_tokens": 1.5,
            },
            (0, 0, 0, 0, 0),  # what is not a positive integer counts as none
        ),
    ],
)
def test_usage_is_read_from_what_each_upstream_reports(reported, read):
    usage = Usage.from_openai(reported)
    fields = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens)
    assert (*fields, usage.cache_write_tokens) == read and usage.estimated is False
    assert Usage.from_openai(None) is None and Usage.from_openai([]) is None


def offer_of(backend_type: str, **prices) -> Offer:
    config = BackendConfig(
        type=backend_type, base_url="http://x", models={"anthropic/claude-sonnet-4.5": ModelOffer(**prices)}
    )
    return Offer("anthropic/claude-sonnet-4.5", "b", "claude", config.models["anthropic/claude-sonnet-4.5"])


def test_anthropic_cache_writes_cost_a_quarter_more_than_input():
    offer = offer_of("anthropic", input_price=3.0, output_price=15.0, cached_input_price=0.3)
    usage = Usage(prompt_tokens=1_000_000 + 200_000 + 400_000, completion_tokens=100_000)
    usage.cached_tokens, usage.cache_write_tokens = 200_000, 400_000
    # 1M plain input at 3.0, 0.2M cache reads at 0.3, 0.4M cache writes at 3.75, 0.1M output at 15.
    assert price_usd(offer, usage) == pytest.approx(3.0 + 0.06 + 1.5 + 1.5)


def test_elsewhere_cache_writes_cost_the_input_price_unless_set():
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0, cache_write_tokens=400_000)
    assert price_usd(offer_of("openrouter", input_price=3.0), usage) == pytest.approx(3.0)
    assert price_usd(offer_of("openrouter", input_price=3.0, cache_write_price=4.0), usage) == pytest.approx(
        0.6 * 3.0 + 0.4 * 4.0
    )
