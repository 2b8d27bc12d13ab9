"""`cache_write_price`: every offer has one; unset, Anthropic's 1.25x input, else the input price."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config.loader import ConfigError, parse_config

CONFIG = """
backends:
  claude:
    type: anthropic
    api_key: k
    models:
      anthropic/claude-sonnet-4.5: {input_price: 3.0, output_price: 15.0}
      anthropic/claude-haiku-4.5: {input_price: 1.0, cache_write_price: 2.0}
  or:
    type: openrouter
    api_key: k
    models:
      anthropic/claude-sonnet-4.5: {input_price: 3.0}
      qwen/qwen3-32b: {input_price: 0.1, cache_write_price: 0.5}
routes: {}
"""


def test_each_offer_gets_its_cache_write_price_by_backend_type():
    backends = parse_config(textwrap.dedent(CONFIG))[0].backends
    prices = {
        (name, model): offer.cache_write_price for name, b in backends.items() for model, offer in b.models.items()
    }
    assert prices == {
        ("claude", "anthropic/claude-sonnet-4.5"): 3.75,  # 1.25 x 3.0
        ("claude", "anthropic/claude-haiku-4.5"): 2.0,  # set: kept
        ("or", "anthropic/claude-sonnet-4.5"): 3.0,  # not Anthropic's API: the input price
        ("or", "qwen/qwen3-32b"): 0.5,
    }


def test_a_negative_cache_write_price_is_refused():
    text = textwrap.dedent(CONFIG).replace("cache_write_price: 2.0", "cache_write_price: -1")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert [p.path for p in caught.value.problems] == [
        "backends.claude.models.anthropic/claude-haiku-4.5.cache_write_price"
    ]
