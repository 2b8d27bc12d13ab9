from gateway.routing.explain import explanation, render_text
from gateway.routing.pipeline import plan
from tests.routing.support import POLICY, chat, live_for, snapshot_from

SNAP = snapshot_from(POLICY)


def test_explanation_lists_every_candidate_with_verdicts_and_scores():
    live = live_for(SNAP)
    live.stats.record_ttft(("cheap", "big/long"), 0.4, 0.3, 0)
    doc = explanation(plan(chat("lorem " * 1700), {}, SNAP, live, explore=False), live)
    assert doc["route"] == "auto" and doc["task"] == "chat" and doc["strategy"] == "cost"
    assert doc["try_order"] == [{"backend": "cheap", "model": "big/long"}, {"backend": "pricey", "model": "big/long"}]
    first, second, rejected = doc["candidates"]
    assert (first["rank"], second["rank"], rejected["rank"]) == (1, 2, None)
    assert first["eligible"] and first["score"] < second["score"] and "per 1M" in first["score_detail"]
    assert first["observed"]["ttft_s"] == 0.4
    assert [f["filter"] for f in first["filters"]] == [
        "provider",
        "context_length",
        "capabilities",
        "max_price",
        "circuit",
    ]
    assert not rejected["eligible"] and rejected["score"] is None
    assert any(not f["passed"] and "exceed the context of 4,096" in f["reason"] for f in rejected["filters"])
    assert doc["error"] is None


def test_explanation_of_an_impossible_request_carries_the_error():
    doc = explanation(plan(chat("word " * 200_000), {}, SNAP))
    assert doc["try_order"] == [] and doc["error_status"] == 400
    assert doc["error"]["code"] == "context_length_exceeded"


def test_text_rendering_shows_ranks_and_rejections():
    text = render_text(explanation(plan(chat("lorem " * 1700), {}, SNAP)))
    lines = text.splitlines()
    assert lines[0].startswith("model 'auto' -> route auto, task chat")
    assert any(line.startswith("1 ") and "big/long" in line and "cheap" in line for line in lines)
    assert any(line.startswith("- ") and "context_length: ~" in line for line in lines)
