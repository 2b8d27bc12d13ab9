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
  embed: {models: [baai/bge-m3]}
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


def test_a_route_listing_two_embedding_models_is_warned_about():
    """Hostile testing: a route of two embedding models (the policies README's own example)
    loaded without a word, and its fallback filled a RAG index with vectors of two models,
    each in its own space; searches then quietly went wrong."""
    config, warnings = parse(
        BACKENDS
        + """routes:
  embed:
    models: [baai/bge-m3]
    tasks: {chat: [openai/text-embedding-3-small]}
"""
    )
    assert warnings == [
        "routes.embed (line 10): route `embed` lists the embedding models baai/bge-m3, openai/text-embedding-3-small: "
        "each answers in its own vector space, so a fallback or the strategy's choice between them would mix their "
        "vectors in one index; list one model per route (served by several backends, it still falls back)"
    ]
    assert list(config.routes) == ["embed"]  # served all the same: a warning


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


ALIASED = (
    BACKENDS
    + """\
routes:
  auto: {models: [qwen/qwen3-8b]}
  fast: {models: [qwen/qwen3-8b]}
aliases:
  "claude-*": auto
  "claude-haiku-*": fast
  "gpt-5-mini": fast
  "gpt-5*": auto
  "*-mini": fast
  "o4-mini": auto
  "fast": qwen/qwen3-8b
  "qwen/qwen3-?b": fast
  "kimi-[kK]2": auto
  "kimi-k2*": fast
"""
)


def test_an_alias_listed_after_a_broader_one_that_takes_its_names_is_warned_about():
    """Hostile testing: `claude-haiku-*` listed after `claude-*` never matches (the first
    pattern that matches wins), and neither does an alias named like a route (a name the
    config knows is never aliased); `gateway validate` called such a file valid without a
    word, and Claude Code's background calls went to `auto` instead of `fast`. Each dead
    alias is now a warning naming what takes its names; a pattern only partly taken by an
    earlier one (`kimi-k2*` after `kimi-[kK]2`, `*-mini` after `gpt-5*`) and a narrow one
    listed first pass unnamed."""
    _config, warnings = parse(ALIASED)
    assert warnings == [
        "aliases.claude-haiku-* (line 14): alias `claude-haiku-*` is never used: every name it matches is "
        "matched first by `claude-*` (line 13); list the narrower pattern first",
        "aliases.o4-mini (line 18): alias `o4-mini` is never used: every name it matches is "
        "matched first by `*-mini` (line 17); list the narrower pattern first",
        "aliases.fast (line 19): alias `fast` is never used: `fast` is a route, and a name the config "
        "knows is never aliased",
    ]


def test_aliases_in_the_right_order_give_no_warning():
    reordered = ALIASED.replace(
        '  "claude-*": auto\n  "claude-haiku-*": fast\n', '  "claude-haiku-*": fast\n  "claude-*": auto\n'
    )
    reordered = reordered.replace('  "*-mini": fast\n  "o4-mini": auto\n', '  "o4-mini": auto\n  "*-mini": fast\n')
    reordered = reordered.replace('  "fast": qwen/qwen3-8b\n', "")
    _config, warnings = parse(reordered)
    assert warnings == []
