"""The figures of an upstream's context-length refusal, in the wordings servers use."""

from __future__ import annotations

import pytest

from gateway.backends.base import context_figures


@pytest.mark.parametrize(
    ("message", "figures"),
    [
        # vLLM: the total, then the prompt and the completion asked (the prompt may have
        # this model's context less the completion).
        (
            "This model's maximum context length is 32768 tokens. However, you requested 33000 tokens "
            "(32000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
            (32000, 31768),
        ),
        # Newer vLLM: the output asked, then the prompt.
        (
            "This model's maximum context length is 32768 tokens. However, you requested 1000 output tokens and "
            "your prompt contains at least 32001 input tokens, for a total of at least 33001 tokens.",
            (32001, 31768),
        ),
        # OpenAI: the messages alone.
        (
            "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
            (9000, 8192),
        ),
        ("This model's maximum context length is 8192 tokens.", None),  # no prompt: no figures
        ("Input is too long for requested model.", None),
    ],
)
def test_context_figures(message, figures):
    assert context_figures(message) == figures
