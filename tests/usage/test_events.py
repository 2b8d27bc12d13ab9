"""UsageEvent: built from a CallOutcome the way OpenRouter attributes and counts a call."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.outcome import Attempt, CallOutcome
from gateway.proxy.usage import Usage
from gateway.usage.events import UsageEvent, category_of, new_event_id

OFFER = Offer("deepseek/deepseek-v3.2", "deepseek", "deepseek-chat", ModelOffer(input_price=0.28, output_price=0.42))


def outcome(**kwargs) -> CallOutcome:
    base = dict(
        request_id="req-1",
        requested_model="auto",
        stream=False,
        started_at=1741600800.25,
        route="auto",
        offer=OFFER,
        attempts=[Attempt("deepseek", OFFER.model, None, 200, 0.4)],
        latency_s=0.5,
        ttft_s=0.4,
    )
    base.update(kwargs)
    return CallOutcome(**base)


def test_a_successful_call_becomes_an_event_with_tokens_cost_and_timings():
    usage = Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=200, reasoning_tokens=100)
    event = UsageEvent.from_outcome(outcome(usage=usage, cost_usd=0.000462, task="code"))
    assert event is not None
    assert event.timestamp == datetime(2025, 3, 10, 10, 0, 0, 250000, tzinfo=UTC)
    assert (event.model, event.author, event.backend, event.route) == (
        "deepseek/deepseek-v3.2",
        "deepseek",
        "deepseek",
        "auto",
    )
    assert event.category == "programming"  # OpenRouter's name for the `code` task
    assert (event.prompt_tokens, event.completion_tokens, event.tokens) == (1200, 300, 1500)
    assert (event.cached_tokens, event.reasoning_tokens) == (200, 100)
    assert event.cost == 0.000462
    assert (event.latency_ms, event.ttft_ms) == (500.0, 400.0)
    assert event.tokens_per_second == 750.0  # non-streamed: 300 tokens over the answering attempt's 0.4 s
    assert (event.status, event.attempts, event.estimated) == (200, 1, False)
    assert event.request_id == "req-1" and event.id != "req-1"  # client-chosen request ids may repeat


def test_streamed_speed_counts_from_the_first_token():
    attempts = [Attempt("deepseek", OFFER.model, None, 200, 2.2)]
    event = UsageEvent.from_outcome(
        outcome(stream=True, usage=Usage(10, 100), attempts=attempts, latency_s=2.5, ttft_s=0.2)
    )
    assert event.tokens_per_second == 50.0  # 100 tokens over the attempt's 2.2 s less its 0.2 s to the first token


@pytest.mark.parametrize("stream", [False, True])
def test_speed_ignores_failed_attempts_and_the_gateways_own_time(stream):
    attempts = [Attempt("groq", OFFER.model, "timeout", None, 3.0), Attempt("deepseek", OFFER.model, None, 200, 1.5)]
    event = UsageEvent.from_outcome(
        outcome(stream=stream, usage=Usage(10, 100), attempts=attempts, latency_s=4.6, ttft_s=0.5 if stream else 1.5)
    )
    assert event.tokens_per_second == (100.0 if stream else 66.667)  # over 1.5 - 0.5 s streamed, 1.5 s not


def test_event_ids_are_unique_per_call():
    assert (
        UsageEvent.from_outcome(outcome(usage=Usage(1, 1))).id != UsageEvent.from_outcome(outcome(usage=Usage(1, 1))).id
    )


@pytest.mark.parametrize(
    ("referer", "title", "key", "app", "app_title"),
    [
        ("https://cline.bot", "Cline", "team-a", "https://cline.bot", "Cline"),  # the referer identifies the app
        (None, "Cline", "team-a", "Cline", "Cline"),  # else its title
        (None, None, "team-a", "team-a", None),  # else the API key's name
        (None, None, None, None, None),
    ],
)
def test_app_attribution_follows_openrouter(referer, title, key, app, app_title):
    event = UsageEvent.from_outcome(outcome(usage=Usage(1, 1), app=referer, app_title=title, api_key_name=key))
    assert (event.app, event.app_title) == (app, app_title)


def test_header_supplied_names_are_cleaned_and_bounded():
    event = UsageEvent.from_outcome(outcome(usage=Usage(1, 1), app="https://x.example/\x1fa\nb" + "z" * 500))
    assert "\x1f" not in event.app and "\n" not in event.app
    assert len(event.app) == 256


def test_a_header_sent_in_utf8_is_read_as_utf8():
    """The gateway reads header bytes as Latin-1: a UTF-8 title arrived as `CafÃ©`."""
    as_read = "Café – 日本".encode().decode("latin-1")  # what `scope["headers"]` decoding gives
    event = UsageEvent.from_outcome(outcome(usage=Usage(1, 1), app_title=as_read, app="https://ü.example/ä"))
    assert (event.app_title, event.app) == ("Café – 日本", "https://ü.example/ä")
    # Bytes that are not UTF-8 stay Latin-1 text; controls are still dropped after decoding.
    latin = UsageEvent.from_outcome(outcome(usage=Usage(1, 1), app_title="Caf\xe9", app="x\xc2\x9b31m"))
    assert (latin.app_title, latin.app) == ("Café", "x31m")


def test_failed_call_is_recorded_with_its_status_and_no_tokens():
    attempts = [Attempt("a", OFFER.model, "http_503", 503, 0.1), Attempt("deepseek", OFFER.model, "http_500", 500, 0.1)]
    event = UsageEvent.from_outcome(outcome(status=502, error="upstream_error", attempts=attempts, usage=None))
    assert (event.status, event.attempts, event.tokens, event.cost) == (502, 2, 0, 0.0)
    assert not event.succeeded and event.tokens_per_second is None


def test_estimated_usage_is_marked_and_not_used_for_speed():
    event = UsageEvent.from_outcome(
        outcome(stream=True, usage=Usage(40, 12, estimated=True), latency_s=1.0, ttft_s=0.1)
    )
    assert event.estimated and event.tokens == 52
    assert event.tokens_per_second is None


def test_a_call_that_never_reached_a_backend_is_not_an_event():
    assert UsageEvent.from_outcome(outcome(offer=None, attempts=[], status=503)) is None


def test_other_tasks_keep_their_name_as_category():
    assert category_of("translation") == "translation"
    assert category_of("chat") == "chat"


def test_embedding_calls_are_their_own_category_whatever_their_task():
    """So an indexer's millions of embedded tokens never reorder the chat leaderboards."""
    event = UsageEvent.from_outcome(outcome(usage=Usage(900, 0), task="code", endpoint="embeddings"))
    assert (event.category, event.endpoint, event.prompt_tokens) == ("embeddings", "embeddings", 900)
    coded = UsageEvent.from_outcome(outcome(usage=Usage(900, 10), task="code", endpoint="completions"))
    assert (coded.category, coded.endpoint) == ("programming", "completions")


def test_json_shape_uses_the_ledger_field_names():
    event = UsageEvent.from_outcome(outcome(usage=Usage(5, 6), cost_usd=1e-6))
    data = event.to_json()
    assert data["timestamp"] == "2025-03-10T10:00:00.250000Z"
    for name in (
        "id",
        "model",
        "backend",
        "app",
        "category",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "latency_ms",
        "ttft_ms",
        "status",
    ):
        assert name in data
    assert data["tokens"] == 11


def test_the_final_row_carries_key_team_endpoint_call_and_cache_writes():
    usage = Usage(prompt_tokens=1000, completion_tokens=10, cached_tokens=200, cache_write_tokens=300)
    attempts = [Attempt("a", OFFER.model, "timeout", None, 1.0), Attempt("deepseek", OFFER.model, None, 200, 0.4)]
    event = UsageEvent.from_outcome(
        outcome(usage=usage, attempts=attempts, api_key_name="alice", team="platform", endpoint="messages")
    )
    assert (event.key, event.team, event.endpoint, event.app) == ("alice", "platform", "messages", "alice")
    assert (event.attempt, event.attempts, event.final, event.error) == (2, 2, True, None)
    assert event.id == f"{event.call_id}-2" and event.call_id != "req-1"  # x-request-id may come from a client
    assert (event.cached_tokens, event.cache_write_tokens) == (200, 300)


def test_a_failed_call_keeps_its_error_label():
    event = UsageEvent.from_outcome(outcome(status=504, error="upstream_timeout", usage=None))
    assert (event.status, event.error, event.final) == (504, "upstream_timeout", True)


def test_event_ids_are_the_time_in_ms_then_80_random_bits_in_32_hex_digits():
    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(200)]
    after = time.time_ns() // 1_000_000
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in ids)
    assert all(before <= int(i[:12], 16) <= after for i in ids)
    assert len(set(ids)) == 200 and len({i[12:] for i in ids}) == 200  # the random part differs
    assert ids == sorted(ids, key=lambda i: i[:12])  # ids made later sort later (by their time)
