"""Who sees whose usage on /v1/rankings and /v1/rankings/series, on a running gateway: a client
key its own calls only; the admin key everything, narrowed by ?key= and ?team=."""

from __future__ import annotations

import httpx

from tests.tenants.support import bearer
from tests.tenants.visibility import (
    ADMIN,
    ALICE_APP,
    ALICE_CALLS,
    ALICE_TITLE,
    BOB_APP,
    BOB_CALLS,
    BOB_TITLE,
    PER_CALL,
    two_tenants,
)


def test_a_client_key_sees_only_its_own_traffic(start_gateway, upstream, tmp_path):
    t = two_tenants(start_gateway, upstream, tmp_path / "data")
    answer = t.get("/v1/rankings", t.bob, window="day")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["totals"]["requests"] == BOB_CALLS and body["totals"]["tokens"] == BOB_CALLS * PER_CALL
    assert [(a["app"], a["title"], a["requests"]) for a in body["apps"]["top"]] == [(BOB_APP, BOB_TITLE, BOB_CALLS)]
    assert body["scope"] == {"key": "bob", "team": None, "all_visible": False}
    for secret in ("alice", ALICE_APP, ALICE_TITLE, "red"):
        assert secret not in answer.text, secret
    series = t.get("/v1/rankings/series", t.bob, granularity="day", periods=2)
    assert series.status_code == 200 and series.json()["totals"] == [0, BOB_CALLS * PER_CALL]
    assert "alice" not in series.text

    alice = t.get("/v1/rankings", t.alice, window="day").json()
    assert alice["totals"]["requests"] == ALICE_CALLS and alice["apps"]["top"][0]["title"] == ALICE_TITLE


def test_a_client_key_cannot_filter_its_way_to_another_tenant(start_gateway, upstream, tmp_path):
    t = two_tenants(start_gateway, upstream, tmp_path / "data")
    for params in ({"key": "alice"}, {"team": "red"}, {"team": "blue"}, {"key": "bob", "team": "red"}):
        for path in ("/v1/rankings", "/v1/rankings/series"):
            refused = t.get(path, t.bob, **params)
            assert refused.status_code == 403, (path, params, refused.text)
            assert refused.json()["error"]["code"] == "admin_only"
            assert "alice" not in refused.text or params.get("key") == "alice"
    own = t.get("/v1/rankings", t.bob, window="day", key="bob")  # naming itself is allowed
    assert own.status_code == 200 and own.json()["totals"]["requests"] == BOB_CALLS
    assert t.get("/v1/rankings", "sk-gw-wrong").status_code == 401


def test_the_admin_key_sees_everything_and_filters_by_key_and_team(start_gateway, upstream, tmp_path):
    t = two_tenants(start_gateway, upstream, tmp_path / "data")
    everything = t.get("/v1/rankings", ADMIN, window="day").json()
    assert everything["totals"]["requests"] == ALICE_CALLS + BOB_CALLS
    assert everything["scope"] == {"key": None, "team": None, "all_visible": True}
    assert {a["app"] for a in everything["apps"]["top"]} == {ALICE_APP, BOB_APP}
    alice = t.get("/v1/rankings", ADMIN, window="day", key="alice").json()
    assert alice["totals"]["requests"] == ALICE_CALLS and alice["scope"]["key"] == "alice"
    assert alice["apps"]["top"][0]["app"] == ALICE_APP and len(alice["apps"]["top"]) == 1
    blue = t.get("/v1/rankings", ADMIN, window="day", team="blue").json()
    assert blue["totals"]["requests"] == BOB_CALLS and blue["apps"]["top"][0]["app"] == BOB_APP
    assert t.get("/v1/rankings", ADMIN, window="day", key="alice", team="blue").json()["totals"]["requests"] == 0
    series = t.get("/v1/rankings/series", ADMIN, granularity="day", periods=1, team="red").json()
    assert series["totals"] == [ALICE_CALLS * PER_CALL]


def test_a_static_key_beside_an_admin_key_is_a_client_too(start_gateway, upstream, tmp_path):
    t = two_tenants(start_gateway, upstream, tmp_path / "data", env={"GATEWAY_API_KEYS": "ops:sk-static-ops"})
    answer = httpx.get(t.gw.url + "/v1/rankings", params={"window": "day"}, headers=bearer("sk-static-ops"))
    assert answer.status_code == 200
    assert answer.json()["totals"]["requests"] == 0 and answer.json()["scope"]["all_visible"] is False
    assert "alice" not in answer.text


def test_kept_answers_are_kept_per_viewer_and_never_shared_across_tenants(start_gateway, upstream, tmp_path):
    t = two_tenants(start_gateway, upstream, tmp_path / "data", env={"GATEWAY_RANKINGS_REFRESH_S": "3600"})
    for _ in range(2):  # the second round is served from what the first kept
        assert t.get("/v1/rankings", t.bob, window="day").json()["totals"]["requests"] == BOB_CALLS
        assert t.get("/v1/rankings", t.alice, window="day").json()["totals"]["requests"] == ALICE_CALLS
        assert t.get("/v1/rankings", ADMIN, window="day").json()["totals"]["requests"] == ALICE_CALLS + BOB_CALLS
        series = t.get("/v1/rankings/series", t.bob, granularity="day", periods=1).json()
        assert series["totals"] == [BOB_CALLS * PER_CALL] and series["scope"]["key"] == "bob"
