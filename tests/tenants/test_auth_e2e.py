"""Virtual keys as a running gateway meets them: created, revoked and expiring while it runs,
restricted to some models, managed over HTTP only with the admin key, and failed
authentication throttled per address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import openai
import pytest

from tests.support.clock import clear_of_minute_edge
from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.services import REPO
from tests.tenants.support import bearer, cli, create_key

ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}
FAST_REFRESH = {"GATEWAY_KEYS_REFRESH_S": "0.2"}


def chat(gw, key: str | None, body=ASK, headers=None) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions", json=body, headers={**(bearer(key) if key else {}), **(headers or {})}
    )


def test_a_key_made_while_the_gateway_runs_works_and_revocation_reaches_it(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    first = create_key("app1", data_dir=data)  # made before the gateway starts, with none running
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={**FAST_REFRESH, "GATEWAY_DATA_DIR": str(data), "GATEWAY_API_KEYS": "ops:sk-static"},
    )
    assert chat(gw, first).status_code == 200
    assert chat(gw, "sk-static").status_code == 200  # static keys keep working beside virtual ones
    second = create_key("app2", data_dir=data)  # made while it runs: no restart
    poll(lambda: chat(gw, second).status_code == 200, what="the new key to be accepted", timeout=15)

    revoked = cli("keys", "revoke", "app1", data_dir=data)
    assert revoked.returncode == 0, revoked.stderr
    refused = poll(lambda: (r := chat(gw, first)).status_code == 401 and r, what="the revoked key refused", timeout=15)
    assert refused.json()["error"] == {
        "message": "This API key has been revoked.", "type": "authentication_error", "param": None,
        "code": "invalid_api_key",
    }  # fmt: skip
    before = len(upstream.received)
    assert chat(gw, first).status_code == 401 and chat(gw, "sk-gw-nonsense").status_code == 401
    assert chat(gw, second).status_code == 200
    assert len(upstream.received) == before + 1  # only the valid key's call reached the upstream


def test_an_expiring_key_is_refused_once_it_expires(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    gw = start_gateway(one_backend_policy(upstream.base_url), env={**FAST_REFRESH, "GATEWAY_DATA_DIR": str(data)})
    expires = datetime.fromtimestamp(time.time() + 8, UTC).isoformat()
    key = create_key("brief", "--expires", expires, data_dir=data)  # made while it runs
    poll(lambda: chat(gw, key).status_code == 200, what="the key accepted", timeout=6)
    refused = poll(lambda: (r := chat(gw, key)).status_code == 401 and r, what="the expired key refused", timeout=15)
    assert refused.json()["error"]["message"] == "This API key has expired."
    assert time.time() >= datetime.fromisoformat(expires).timestamp()  # not a moment before


def test_rotation_with_overlap_keeps_both_keys_working(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    old = create_key("app1", data_dir=data)
    gw = start_gateway(one_backend_policy(upstream.base_url), env={**FAST_REFRESH, "GATEWAY_DATA_DIR": str(data)})
    rotated = cli("keys", "rotate", "app1", "--overlap", "1h", "--json", data_dir=data)
    new = json.loads(rotated.stdout)["key"]
    poll(lambda: chat(gw, new).status_code == 200, what="the rotated key accepted", timeout=15)
    assert chat(gw, old).status_code == 200
    cli("keys", "rotate", "app1", data_dir=data)  # no overlap: both earlier keys end now
    refused = poll(lambda: (r := chat(gw, new)).status_code == 401 and r, what="the superseded key refused", timeout=15)
    # Not "has expired": the key has no expiry, and `gateway keys list` shows it active.
    assert refused.json()["error"]["message"] == "This API key was replaced when its key was rotated; use the new key."
    assert chat(gw, old).status_code == 401


def test_a_key_limited_to_some_models_gets_403_for_the_others(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("narrow", "--models", "auto,qwen/qwen3-*", data_dir=data)
    policy = one_backend_policy(
        upstream.base_url,
        models=["qwen/qwen3-32b", "meta/llama-3-8b"],
        routes={"auto": ["meta/llama-3-8b"], "big": ["meta/llama-3-8b"]},
    )
    gw = start_gateway(policy, env={"GATEWAY_DATA_DIR": str(data)})
    allowed = [
        {**ASK, "model": "auto"},  # a listed route: all its candidates, whatever their model
        {**ASK, "model": "qwen/qwen3-32b"},
        {**ASK, "model": "qwen/qwen3-32b:floor"},
        {**ASK, "model": "auto", "models": ["qwen/qwen3-32b"]},
    ]
    for body in allowed:
        assert chat(gw, key, body).status_code == 200, body
    refused = [
        {**ASK, "model": "meta/llama-3-8b"},
        {**ASK, "model": "meta/llama-3-8b:nitro"},
        {**ASK, "model": "big"},
        {**ASK, "model": "auto", "models": ["meta/llama-3-8b"]},  # a fallback list cannot smuggle a model in
    ]
    for body in refused:
        r = chat(gw, key, body)
        assert r.status_code == 403, (body, r.text)
        assert r.json()["error"]["code"] == "model_not_allowed" and r.json()["error"]["type"] == "permission_error"
    assert len(upstream.received) == len(allowed)

    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="meta/llama-3-8b", messages=ASK["messages"])
    assert "may not use `meta/llama-3-8b`" in denied.value.message
    client.close()


def test_admin_status_with_virtual_keys_only_tells_a_missing_key_from_a_virtual_one(start_gateway, upstream, tmp_path):
    """A new user: with virtual keys only (no static key, no admin key), /admin/status
    answered a missing or made-up key with 403 "Virtual keys have no admin access": a 401,
    as everywhere else, for a key that is not one; the 403 for a virtual key."""
    data = tmp_path / "data"
    tenant = create_key("tenant", data_dir=data)
    gw = start_gateway(one_backend_policy(upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    for path in ("/admin/status", "/admin/reload"):
        send = httpx.get if path == "/admin/status" else httpx.post
        for headers in ({}, bearer("sk-made-up")):
            r = send(gw.url + path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
        denied = send(gw.url + path, headers=bearer(tenant))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_only"


def test_key_management_over_http_needs_the_admin_key(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    tenant = create_key("tenant", data_dir=data)
    no_admin = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_DATA_DIR": str(data), "GATEWAY_API_KEYS": "ops:sk-static"},
    )
    for key in (tenant, "sk-static", None):
        r = httpx.post(no_admin.url + "/admin/keys", json={"name": "minted"}, headers=bearer(key) if key else {})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_not_set", r.text
    # /admin/status: the operator's static key yes, a tenant's virtual key no.
    assert httpx.get(no_admin.url + "/admin/status", headers=bearer("sk-static")).status_code == 200
    denied = httpx.get(no_admin.url + "/admin/status", headers=bearer(tenant))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_only"
    assert [
        k["name"] for k in httpx.get(no_admin.url + "/admin/keys", headers=bearer(tenant)).json().get("data", [])
    ] == []
    no_admin.stop()

    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={**FAST_REFRESH, "GATEWAY_DATA_DIR": str(data), "GATEWAY_ADMIN_KEY": "sk-admin"},
    )
    assert httpx.post(gw.url + "/admin/keys", json={"name": "minted"}, headers=bearer(tenant)).status_code == 401
    made = httpx.post(
        gw.url + "/admin/keys",
        json={"name": "minted", "rpm": 5, "models": ["auto"], "expires": "2099-01-01"},
        headers=bearer("sk-admin"),
    )
    assert made.status_code == 201, made.text
    minted = made.json()["key"]
    assert made.json()["rpm"] == 5 and made.json()["models"] == ["auto"]
    assert chat(gw, minted).status_code == 200  # the replica that made it knows it at once
    bad = httpx.post(gw.url + "/admin/keys", json={"name": "x", "rpm": "lots"}, headers=bearer("sk-admin"))
    assert bad.status_code == 400 and "rpm" in bad.json()["error"]["message"]
    dup = httpx.post(gw.url + "/admin/keys", json={"name": "minted"}, headers=bearer("sk-admin"))
    assert dup.status_code == 409
    patched = httpx.patch(gw.url + "/admin/keys/minted", json={"rpm": 7}, headers=bearer("sk-admin"))
    assert patched.status_code == 200 and patched.json()["rpm"] == 7
    rotated = httpx.post(gw.url + "/admin/keys/minted/rotate", json={"overlap": "0"}, headers=bearer("sk-admin"))
    assert rotated.status_code == 200 and chat(gw, rotated.json()["key"]).status_code == 200
    assert chat(gw, minted).status_code == 401
    revoked = httpx.post(gw.url + "/admin/keys/minted/revoke", headers=bearer("sk-admin"))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert chat(gw, rotated.json()["key"]).status_code == 401
    team = httpx.post(gw.url + "/admin/teams", json={"name": "ops", "rpm": 3}, headers=bearer("sk-admin"))
    assert team.status_code == 201 and team.json()["rpm"] == 3
    # Each success status as the served OpenAPI document says (it said 201 for a rotation).
    paths = httpx.get(gw.url + "/openapi.json").json()["paths"]
    for answer, path, method in (
        (made, "/admin/keys", "post"),
        (patched, "/admin/keys/{name}", "patch"),
        (rotated, "/admin/keys/{name}/rotate", "post"),
        (revoked, "/admin/keys/{name}/revoke", "post"),
        (team, "/admin/teams", "post"),
    ):
        assert str(answer.status_code) in paths[path][method]["responses"], (path, answer.status_code)
    team = httpx.patch(gw.url + "/admin/teams/ops", json={"budget_usd": 2.5}, headers=bearer("sk-admin"))
    assert (team.json()["rpm"], team.json()["budget_usd"], team.json()["budget_period"]) == (3, 2.5, "month")
    assert httpx.get(gw.url + "/admin/teams", headers=bearer(tenant)).status_code == 401
    assert [t["name"] for t in httpx.get(gw.url + "/admin/teams", headers=bearer("sk-admin")).json()["data"]] == ["ops"]
    listing = httpx.get(gw.url + "/admin/keys", headers=bearer("sk-admin")).json()["data"]
    assert [(k["name"], k["status"]) for k in listing] == [("minted", "revoked"), ("tenant", "active")]
    audit = httpx.get(gw.url + "/admin/audit", headers=bearer("sk-admin")).json()["data"]
    assert [(e["action"], e["actor"].split(":")[0]) for e in audit] == [
        ("key.create", "cli"), ("key.create", "http"), ("key.update", "http"), ("key.rotate", "http"),
        ("key.revoke", "http"), ("team.create", "http"), ("team.update", "http"),
    ]  # fmt: skip
    assert minted not in str(audit) and rotated.json()["key"] not in str(audit)


def test_failed_authentication_is_throttled_per_address_and_never_a_valid_key(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("good", data_dir=data)
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={
            "GATEWAY_DATA_DIR": str(data),
            "GATEWAY_AUTH_FAILURES_PER_MINUTE": "10",
            "GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
        },
    )
    clear_of_minute_edge()
    with httpx.Client() as client:
        statuses = [
            client.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(f"sk-wrong-{i}")).status_code
            for i in range(15)
        ]
        assert statuses == [401] * 10 + [429] * 5
        throttled = client.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer("sk-wrong"))
        assert (
            throttled.json()["error"]["code"] == "auth_throttled" and 1 <= int(throttled.headers["retry-after"]) <= 60
        )
        # The valid key from the same address is never refused for its neighbours' failures.
        assert [
            client.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key)).status_code for _ in range(3)
        ] == [200] * 3
        # Behind the trusted proxy (127.0.0.1), each forwarded client has its own count.
        other = {"x-forwarded-for": "203.0.113.7"}
        assert chat(gw, "sk-wrong", headers=other).status_code == 401
    assert len(upstream.received) == 3


def test_without_trusted_proxies_a_forwarded_for_header_does_not_escape_the_throttle(start_gateway, upstream, tmp_path):
    """A client naming a new address in X-Forwarded-For on every try is still one address
    when no proxy is trusted (uvicorn's own default once believed any local peer's header)."""
    data = tmp_path / "data"
    create_key("good", data_dir=data)
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_DATA_DIR": str(data), "GATEWAY_AUTH_FAILURES_PER_MINUTE": "3", "GATEWAY_TRUSTED_PROXIES": ""},
    )
    clear_of_minute_edge()
    statuses = [chat(gw, f"sk-wrong-{i}", headers={"x-forwarded-for": f"203.0.113.{i}"}).status_code for i in range(5)]
    assert statuses == [401] * 3 + [429] * 2
    assert upstream.received == []


def test_an_open_gateway_says_so_once_at_start(start_gateway, upstream, tmp_path):
    gw = start_gateway(one_backend_policy(upstream.base_url), env={"GATEWAY_DATA_DIR": str(tmp_path / "data")})
    for _ in range(3):
        assert chat(gw, None).status_code == 200
    assert gw.log().count("the gateway is open to anyone") == 1


def test_the_ledger_names_the_key_and_its_team(start_gateway, upstream, tmp_path):
    """Every usage event carries the key's name and its team, for spend per key and team."""
    data = tmp_path / "data"
    assert cli("teams", "create", "platform", data_dir=data).returncode == 0
    teamed = create_key("app1", "--team", "platform", data_dir=data)
    solo = create_key("app2", data_dir=data)
    gw = start_gateway(one_backend_policy(upstream.base_url), env={**FAST_REFRESH, "GATEWAY_DATA_DIR": str(data)})
    assert chat(gw, teamed).status_code == 200
    assert chat(gw, solo).status_code == 200
    day = datetime.now(UTC).date().isoformat()

    def exported() -> list[dict] | None:
        done = cli("usage", "export", "--start", day, "--end", day, data_dir=data)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        return rows if len(rows) >= 2 else None

    rows = poll(exported, what="two events in the ledger", timeout=30)
    assert sorted((r["key"], r["team"]) for r in rows) == [("app1", "platform"), ("app2", None)]


def test_a_virtual_key_may_not_share_a_static_keys_name(start_gateway, upstream, tmp_path):
    """A name is what the ledger, limits, spend and stored responses know a key by: a virtual
    key named as a static key would read that key's stored responses (hostile testing found
    it). Refused at creation where the static keys are known, and refused at the door where
    a CLI without GATEWAY_API_KEYS made one anyway."""
    data = tmp_path / "data"
    twin = create_key("bob", data_dir=data)  # this CLI does not see the server's static keys
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={
            **FAST_REFRESH,
            "GATEWAY_DATA_DIR": str(data),
            "GATEWAY_API_KEYS": "bob:sk-static-bob",
            "GATEWAY_ADMIN_KEY": "sk-admin",
        },
    )
    assert chat(gw, "sk-static-bob").status_code == 200
    for _ in range(2):
        refused = chat(gw, twin)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "key_name_conflict"
    stored = httpx.post(
        gw.url + "/v1/responses", json={"model": "auto", "input": "my secret"}, headers=bearer("sk-static-bob")
    )
    assert stored.status_code == 200
    response_id = stored.json()["id"]
    assert httpx.get(gw.url + f"/v1/responses/{response_id}", headers=bearer("sk-static-bob")).status_code == 200
    assert httpx.get(gw.url + f"/v1/responses/{response_id}", headers=bearer(twin)).status_code == 403
    assert len(upstream.received) == 2  # static bob's two calls; the twin's never went out
    assert gw.log().count("shares its name with a static key") == 1  # logged once, not per request

    made = httpx.post(gw.url + "/admin/keys", json={"name": "bob"}, headers=bearer("sk-admin"))
    assert made.status_code == 409 and made.json()["error"]["code"] == "name_taken", made.text
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_DATA_DIR": str(data), "GATEWAY_API_KEYS": "bob:sk-x"}
    by_cli = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--name", "bob"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert by_cli.returncode == 1 and "static key's name" in by_cli.stderr
    assert httpx.post(gw.url + "/admin/keys", json={"name": "bobby"}, headers=bearer("sk-admin")).status_code == 201


def test_rotations_leave_at_most_two_keys_and_an_overlap_past_30_days_is_refused(start_gateway, upstream, tmp_path):
    """A rotation's overlap keeps the key it replaces working, not every key before it: four
    rotations with long overlaps left five live secrets, and nothing bounded how many (or how
    long: `99999999d`). Now at most the new key and the one it replaced work, for 30 days at most."""
    data = tmp_path / "data"
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={**FAST_REFRESH, "GATEWAY_DATA_DIR": str(data), "GATEWAY_ADMIN_KEY": "sk-admin"},
    )
    made = httpx.post(gw.url + "/admin/keys", json={"name": "app"}, headers=bearer("sk-admin"))
    assert made.status_code == 201, made.text
    keys = [made.json()["key"]]
    for _ in range(4):
        rotated = httpx.post(gw.url + "/admin/keys/app/rotate", json={"overlap": "30d"}, headers=bearer("sk-admin"))
        assert rotated.status_code == 200, rotated.text
        keys.append(rotated.json()["key"])
        assert rotated.json()["prefixes"] == [k[:12] for k in keys[-2:]]
        assert [chat(gw, k).status_code for k in keys] == [401] * (len(keys) - 2) + [200, 200]
    audit = httpx.get(gw.url + "/admin/audit", headers=bearer("sk-admin")).json()["data"]
    assert audit[-1]["detail"]["ended_prefixes"] == [keys[-3][:12]]  # whose overlap the rotation cut short

    for overlap, wording in [("99999999d", "at most 30d"), ("31d", "at most 30d"), ("soon", "a duration")]:
        refused = httpx.post(gw.url + "/admin/keys/app/rotate", json={"overlap": overlap}, headers=bearer("sk-admin"))
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "overlap", "invalid_overlap")
        assert error["message"].startswith("`overlap` must be") and wording in error["message"], error["message"]
    assert [chat(gw, k).status_code for k in keys[-2:]] == [200, 200]  # nothing changed
    assert len(httpx.get(gw.url + "/admin/audit", headers=bearer("sk-admin")).json()["data"]) == len(audit)

    refused = cli("keys", "rotate", "app", "--overlap", "99999999d", data_dir=data)
    assert refused.returncode == 1 and refused.stderr.splitlines()[-1].startswith("error: `overlap` must be"), (
        refused.stderr
    )


@pytest.mark.parametrize("trusted", ["127.0.0.1", ""])
def test_the_audit_names_the_admin_behind_a_trusted_proxy_not_the_proxy(start_gateway, upstream, tmp_path, trusted):
    """Behind a load balancer the audit names the client it forwards when it is trusted
    (uvicorn reads the header from GATEWAY_TRUSTED_PROXIES), and only then: an untrusted
    peer's header names nobody. (Hostile testing suspected the balancer's address was named.)"""
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={
            "GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "GATEWAY_ADMIN_KEY": "sk-admin",
            "GATEWAY_TRUSTED_PROXIES": trusted,
        },
    )
    forwarded = {**bearer("sk-admin"), "x-forwarded-for": "198.51.100.4, 203.0.113.7"}
    assert httpx.post(gw.url + "/admin/keys", json={"name": "app"}, headers=forwarded).status_code == 201
    audit = httpx.get(gw.url + "/admin/audit", headers=bearer("sk-admin")).json()["data"]
    assert [(e["action"], e["actor"]) for e in audit] == [
        ("key.create", f"http:{'203.0.113.7' if trusted else '127.0.0.1'}")
    ]


def test_static_keys_written_with_spaces_around_the_colon_work_under_their_names(start_gateway, upstream, tmp_path):
    """Hostile testing: `GATEWAY_API_KEYS="ops: sk-ops, ci : sk-ci"`, as people write lists,
    made the keys " sk-ops" and " sk-ci" (no client can send a key starting with a space:
    every call was a 401) and the name "ci " (booked so in the ledger, apart from "ci")."""
    data = tmp_path / "data"
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={
            "GATEWAY_DATA_DIR": str(data),
            "GATEWAY_API_KEYS": "ops: sk-ops, ci : sk-ci",
            "GATEWAY_USAGE_FLUSH_S": "0.05",
        },
    )
    assert [chat(gw, key).status_code for key in ("sk-ops", "sk-ci")] == [200, 200]
    assert len(upstream.received) == 2

    def booked() -> list[str] | None:
        report = json.loads(cli("usage", "report", "--by", "key", "--json", data_dir=data).stdout)
        return sorted(row["key"] for row in report["rows"]) if report["totals"]["requests"] == 2 else None

    assert poll(booked, what="both calls in the ledger") == ["ci", "ops"]


def test_an_admin_key_with_spaces_around_it_is_the_key_without_them(start_gateway, upstream, tmp_path):
    """Hostile testing: `GATEWAY_ADMIN_KEY= sk-admin` (an env file's space after `=`) was the
    key " sk-admin", which no client can send: every admin call was a 401."""
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_ADMIN_KEY": " sk-admin-spaced "},
    )
    answer = httpx.get(gw.url + "/admin/keys", headers=bearer("sk-admin-spaced"))
    assert (answer.status_code, answer.json()) == (200, {"data": []})
