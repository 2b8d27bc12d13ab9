"""`apis:` per backend: which ingress APIs it serves natively, from the YAML or, unset, from
the vendor registry; after loading the resolved set is on every offer and the snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import ConfigError, parse_config
from gateway.config.snapshot import ConfigSnapshot
from gateway.config.vendors import VENDORS


def _snapshot(backend: str) -> ConfigSnapshot:
    fields = "".join(f"    {line}\n" for line in backend.splitlines())
    text = (
        "backends:\n  b:\n"
        + fields
        + "    base_url: http://127.0.0.1:9/v1\n    api_key: sk-test\n    models: {acme/m: {}}\n"
    )
    config, warnings = parse_config(text)
    return ConfigSnapshot.build(config, warnings=warnings)


# Each vendor's documented native APIs under its default base_url (README, "Native APIs").
DEFAULTS = {
    "vllm": {"chat", "completions", "embeddings", "responses", "messages"},
    "openai": {"chat", "completions", "embeddings"},
    "openrouter": {"chat", "completions", "embeddings", "responses", "messages"},
    "deepseek": {"chat"},
    "moonshot": {"chat"},
    "zhipu": {"chat", "embeddings"},
    "dashscope": {"chat", "embeddings"},
    "minimax": {"chat"},
    "groq": {"chat", "responses"},
    "together": {"chat", "completions", "embeddings"},
    "fireworks": {"chat", "completions", "embeddings", "responses"},
    "mock": {"chat", "completions", "embeddings"},
    "anthropic": {"messages"},
}


def test_every_vendor_declares_its_apis():
    assert set(DEFAULTS) == set(VENDORS)


@pytest.mark.parametrize("vendor", list(DEFAULTS))
def test_unset_apis_resolve_to_the_vendor_default(vendor):
    snapshot = _snapshot(f"type: {vendor}")
    [offer] = snapshot.offers["acme/m"]
    assert offer.apis == DEFAULTS[vendor]
    assert snapshot.apis("b") == DEFAULTS[vendor]
    assert snapshot.config.backends["b"].apis is None  # what the admin wrote stays as written


def test_apis_in_yaml_override_the_vendor_default():
    snapshot = _snapshot("type: openai\napis: [chat, messages]")
    [offer] = snapshot.offers["acme/m"]
    assert offer.apis == {"chat", "messages"}
    assert snapshot.apis("b") == {"chat", "messages"}


def test_an_empty_list_means_nothing_is_served_natively():
    """Every request is then translated through chat completions."""
    snapshot = _snapshot("type: vllm\napis: []")
    assert snapshot.offers["acme/m"][0].apis == frozenset()


def test_an_unknown_api_is_refused_with_the_names_listed():
    with pytest.raises(ConfigError) as caught:
        _snapshot("type: openai\napis: [chat, realtime]")
    [problem] = caught.value.problems
    assert problem.path == "backends.b.apis[1]"
    assert "'chat', 'messages', 'responses', 'completions' or 'embeddings'" in problem.message


def test_an_unknown_backend_serves_nothing():
    assert _snapshot("type: openai").apis("nope") == frozenset()


def test_offers_with_different_apis_still_compare_by_model_and_backend():
    """`apis` is derived data: it never makes two views of one offer unequal."""
    a = _snapshot("type: openai").offers["acme/m"][0]
    b = _snapshot("type: openai\napis: [chat]").offers["acme/m"][0]
    assert a == b and hash(a) == hash(b)


def test_the_policy_reference_table_states_each_vendors_default():
    """policies/README.md's backend table is what admins read: it must say what the code does."""
    readme = (Path(__file__).resolve().parents[2] / "policies" / "README.md").read_text()
    documented = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[0].strip("`") in VENDORS:
            documented[cells[0].strip("`")] = {name.strip() for name in cells[3].split(",")}
    assert documented == {vendor: set(v.apis) for vendor, v in VENDORS.items()}


def test_an_embedding_model_on_a_backend_serving_no_embeddings_is_warned_about():
    """Hostile testing: `gateway validate` called such a policy valid and a reload applied it
    without a word, yet no request can reach the model: embeddings are only passed through
    to a backend whose `apis` include them (every call is a 400 `endpoint_not_supported`)."""
    text = """\
backends:
  claude:
    type: anthropic
    api_key: sk-ant-test-123456
    models:
      anthropic/embed: {upstream_id: embed-x, kind: embedding}
      anthropic/chat: {upstream_id: chat-x}
  local:
    type: vllm
    base_url: http://127.0.0.1:9/v1
    models:
      baai/bge-m3: {kind: embedding}
"""
    _, warnings = parse_config(text)
    assert warnings == [
        "backends.claude.models.anthropic/embed.kind (line 6): `anthropic/embed` is `kind: embedding`, but "
        "backend `claude` (anthropic) does not serve POST /v1/embeddings (its `apis`: messages): no request "
        "can reach it here; add `embeddings` to its `apis:` if it does serve them"
    ]
