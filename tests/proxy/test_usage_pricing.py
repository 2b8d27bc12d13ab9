"""Cache writes: read from the usage upstreams report, priced at the offer's cache_write_price."""

from __future__ import annotations

import pytest

from gateway.backends.anthropic_translate import openai_usage
from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.outcome import price_usd
from gateway.proxy.responses_format import usage_of_response
from gateway.proxy.usage import MAX_TOKENS_PER_CALL, Usage


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
                "prompt_tokens": 4,
                "completion_tokens": -2,
                "prompt_tokens_details": "x",
                "completion_tokens_details": [],
                "prompt_cache_hit_tokens": 1.5,
            },
            (4, 0, 0, 0, 0),  # beside a usable count, what is no count counts as none
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


@pytest.mark.parametrize(
    "reported, read",
    [
        # Whole floats and digit strings, as some servers and proxies write counts: read as counts.
        ({"prompt_tokens": 1000000.0, "completion_tokens": 20.0}, (1_000_000, 20)),
        ({"prompt_tokens": "1000", "completion_tokens": "7"}, (1000, 7)),
        ({"prompt_tokens": 12}, (12, 0)),  # one usable count: the other was none
        ({"prompt_tokens": "0" * 30 + "12", "completion_tokens": 3}, (12, 3)),  # leading zeros
        ({"prompt_tokens": 1e300, "completion_tokens": "9" * 40}, (MAX_TOKENS_PER_CALL,) * 2),
    ],
)
def test_counts_written_as_floats_or_strings_are_read(reported, read):
    usage = Usage.from_openai(reported)
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == read


@pytest.mark.parametrize(
    "reported",
    [
        {},
        {"total_tokens": 2_000_000},
        {"input_tokens": 10, "output_tokens": 5},  # another API's names
        {"prompt_tokens": None, "completion_tokens": None},
        {"prompt_tokens": -5, "completion_tokens": 2.5},
        {"prompt_tokens": True, "completion_tokens": float("nan")},
        {"prompt_tokens": "12a", "completion_tokens": "-3"},
    ],
)
def test_a_report_with_no_usable_count_is_no_usage_so_the_call_is_estimated(reported):
    """It was read as zero tokens and not marked estimated: every call of such an upstream
    was billed at nothing and no budget moved (hostile testing)."""
    assert Usage.from_openai(reported) is None


@pytest.mark.parametrize(
    "reported", [{}, {"total_tokens": 9}, {"input_tokens": -1, "output_tokens": "x"}, {"prompt_tokens": 3}]
)
def test_a_response_usage_with_no_usable_count_is_no_usage(reported):
    assert usage_of_response(reported) is None
    assert usage_of_response({"input_tokens": 3.0, "output_tokens": "2"}) == Usage(3, 2)
