"""`kind: embedding` offers and top-level `aliases:`: what the loader accepts and what it
refuses, with the path and line an admin fixes."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config.loader import ConfigError, Problem, parse_config

BACKENDS = """\
backends:
  local:
    type: openai
    base_url: http://127.0.0.1:9/v1
    models:
      qwen/qwen3-8b: {}
      baai/bge-m3: {kind: embedding, dimensions: 1024}
      openai/text-embedding-3-small: {kind: embedding}
"""


def parse(text: str):
    return parse_config(textwrap.dedent(text), "policy.yaml")


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


def test_embedding_offers_and_a_route_of_them_load():
    config, warnings = parse(
        BACKENDS
        + """\
routes:
  embed: {models: [baai/bge-m3, openai/text-embedding-3-small]}
  auto: {models: [qwen/qwen3-8b]}
aliases:
  "text-embedding-*": embed
  "claude-*": auto
  "gpt-5*": qwen/qwen3-8b
"""
    )
    assert warnings == []
    offers = config.backends["local"].models
    assert (offers["baai/bge-m3"].kind, offers["baai/bge-m3"].dimensions) == ("embedding", 1024)
    assert offers["qwen/qwen3-8b"].kind == "chat"  # the default
    assert list(config.aliases) == ["text-embedding-*", "claude-*", "gpt-5*"]  # YAML order kept


def test_a_route_mixing_kinds_is_refused_with_both_lists_named():
    problems = problems_of(
        BACKENDS
        + """\
routes:
  mixed:
    models: [qwen/qwen3-8b, baai/bge-m3]
"""
    )
    assert [str(p) for p in problems] == [
        "routes.mixed (line 10): route `mixed` mixes chat models (qwen/qwen3-8b) and embedding models "
        "(baai/bge-m3): a route serves one kind, so split it into two routes"
    ]


def test_a_task_list_of_the_other_kind_is_mixing_too():
    problems = problems_of(
        BACKENDS
        + """\
routes:
  auto:
    models: [qwen/qwen3-8b]
    tasks: {code: [openai/text-embedding-3-small]}
"""
    )
    assert len(problems) == 1 and "mixes chat models (qwen/qwen3-8b) and embedding models" in problems[0].message


def test_a_model_is_one_kind_on_every_backend():
    problems = problems_of(
        BACKENDS
        + """\
  other:
    type: openai
    base_url: http://127.0.0.1:10/v1
    models:
      baai/bge-m3: {}
"""
    )
    assert [str(p) for p in problems] == [
        "backends.local.models.baai/bge-m3.kind (line 7): `baai/bge-m3` is `kind: embedding` on local but a "
        "chat model on other: a model is one kind wherever it is served"
    ]


def test_dimensions_belong_to_embedding_offers():
    problems = problems_of(
        """\
backends:
  local:
    type: openai
    base_url: http://127.0.0.1:9/v1
    models:
      qwen/qwen3-8b: {dimensions: 1024}
"""
    )
    assert [str(p) for p in problems] == [
        "backends.local.models.qwen/qwen3-8b (line 6): `dimensions` is for `kind: embedding` offers only"
    ]


def test_an_unknown_kind_is_refused():
    problems = problems_of(BACKENDS.replace("{kind: embedding}", "{kind: embeddings}"))
    assert len(problems) == 1 and problems[0].path == "backends.local.models.openai/text-embedding-3-small.kind"
    assert "'chat' or 'embedding'" in problems[0].message


def test_an_alias_to_nothing_is_refused_with_a_suggestion():
    problems = problems_of(
        BACKENDS
        + """\
routes:
  auto: {models: [qwen/qwen3-8b]}
aliases:
  "claude-*": autoo
  "gpt-*": qwen/qwen3-8b
"""
    )
    assert [str(p) for p in problems] == [
        "aliases.claude-* (line 12): alias `claude-*` points at `autoo`, which is neither a route nor a model "
        "(did you mean `auto`?)"
    ]
