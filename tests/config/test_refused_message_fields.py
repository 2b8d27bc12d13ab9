"""`refused_message_fields:` per backend: the assistant-message fields its server refuses, from
the YAML or, unset, from the vendor registry (Groq's); resolved on every offer, for chat
requests passed through and for the reasoning a translated request sends back."""

from __future__ import annotations

import pytest

from gateway.config.loader import ConfigError, parse_config
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.config.vendors import VENDORS


def _offer(backend: str, model: str = "{}") -> Offer:
    fields = "".join(f"    {line}\n" for line in backend.splitlines())
    text = (
        "backends:\n  b:\n"
        + fields
        + f"    base_url: http://127.0.0.1:9/v1\n    api_key: sk-test\n    models: {{acme/m: {model}}}\n"
    )
    config, warnings = parse_config(text)
    [offer] = ConfigSnapshot.build(config, warnings=warnings).offers["acme/m"]
    return offer


def _problem(backend: str) -> tuple[str, str]:
    with pytest.raises(ConfigError) as caught:
        _offer(backend)
    [problem] = caught.value.problems
    return problem.path, problem.message


@pytest.mark.parametrize("vendor", [v for v, spec in VENDORS.items() if spec.adapter == "openai_compat"])
def test_unset_it_is_the_vendors_default_and_set_it_replaces_it(vendor):
    assert _offer(f"type: {vendor}").refused_message_fields == VENDORS[vendor].refused_message_fields
    declared = _offer(f"type: {vendor}\nrefused_message_fields: [reasoning_content]")
    assert declared.refused_message_fields == {"reasoning_content"}
    assert _offer(f"type: {vendor}\nrefused_message_fields: []").refused_message_fields == frozenset()


def test_a_groq_backend_still_refuses_the_reasoning_fields_unless_it_says_otherwise():
    assert _offer("type: groq").refused_message_fields == {"reasoning_content", "reasoning", "reasoning_details"}
    assert _offer("type: groq\nrefused_message_fields: [reasoning]").refused_message_fields == {"reasoning"}


def test_reasoning_sent_back_on_translations_avoids_the_refused_fields():
    """A translated request sent earlier turns' reasoning in every field the vendor reads it
    from, whatever the backend refused: a vLLM behind a server that refuses
    `reasoning_content` still gets `reasoning`; one refusing all gets none."""
    assert _offer("type: vllm").reasoning_fields == ("reasoning_content", "reasoning")
    assert _offer("type: vllm\nrefused_message_fields: [reasoning_content]").reasoning_fields == ("reasoning",)
    assert _offer("type: vllm\nrefused_message_fields: [reasoning, reasoning_content]").reasoning_fields == ()
    taking = "{reasoning_history: true}"
    assert _offer("type: openai", taking).reasoning_fields == ("reasoning_content",)
    assert _offer("type: openai\nrefused_message_fields: [reasoning_content]", taking).reasoning_fields == ()


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("type: openai\nrefused_message_fields: [content]", "`content` carries the conversation"),
        ("type: openai\nrefused_message_fields: [tool_calls]", "`tool_calls` carries the conversation"),
        ("type: openai\nrefused_message_fields: ['reasoning content']", "is not a message field's name"),
        ("type: openai\nrefused_message_fields: ['']", "is not a message field's name"),
        ("type: openai\nrefused_message_fields: reasoning_content", "Input should be a valid list"),
        ("type: anthropic\nrefused_message_fields: [reasoning_content]", "not `type: anthropic`"),
        ("type: mock\nrefused_message_fields: []", "not `type: mock`"),
    ],
)
def test_a_field_it_cannot_leave_out_or_a_backend_it_does_not_apply_to_is_refused(backend, message):
    path, problem = _problem(backend)
    assert path == "backends.b.refused_message_fields" and message in problem, problem
