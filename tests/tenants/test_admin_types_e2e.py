"""/admin/keys and /admin/teams refuse fields of the wrong JSON type with a 400 naming the field
(schemathesis found `"expires": {}` answering 500)."""

from __future__ import annotations

import httpx

from tests.support.policies import DEFAULT_MODEL, one_backend_policy

ADMIN = {"authorization": "Bearer sk-admin-types"}


CASES = [
    ("/admin/keys", "POST", {"name": "a", "expires": {}}, "expires"),
    ("/admin/keys", "POST", {"name": 5}, "name"),
    ("/admin/keys", "POST", {"name": "a", "models": ["x", 1]}, "models"),
    ("/admin/keys", "POST", {"name": "a", "rpm": True}, "rpm"),
    ("/admin/keys", "POST", {"name": "a", "rpm": False}, "rpm"),  # not "a limit of 0"
    ("/admin/keys", "POST", {"name": "a", "budget_usd": "10"}, "budget_usd"),
    ("/admin/keys", "POST", {"name": "a", "budget_period": "year"}, "budget_period"),
    ("/admin/teams", "POST", {"name": "t", "tpm": 1.5}, "tpm"),
    ("/admin/keys/a/rotate", "POST", {"overlap": [1]}, "overlap"),
]


def test_a_field_of_the_wrong_type_is_a_400_naming_it(start_gateway, upstream, tmp_path):
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    for path, method, body, param in CASES:
        answer = httpx.request(method, gw.url + path, json=body, headers=ADMIN)
        assert answer.status_code == 400, (path, body, answer.text)
        assert answer.json()["error"]["param"] == param and answer.json()["error"]["code"] == "invalid_type"
    assert httpx.get(gw.url + "/admin/keys", headers=ADMIN).json() == {"data": []}  # nothing was made


# A 0 limit on a new key or team was silently no limit; an expiry past year 9999 once in UTC
# (valid ISO with its offset) answered 500 as the key was shown back.
REFUSED = [
    ("/admin/keys", "POST", {"name": "z", "budget_usd": 0}, 400, "invalid_limit"),
    ("/admin/keys", "POST", {"name": "z", "rpm": 0}, 400, "invalid_limit"),
    ("/admin/teams", "POST", {"name": "t", "budget_usd": 0}, 400, "invalid_limit"),
    ("/admin/keys", "POST", {"name": "z", "expires": "9999-12-31T23:59:59-12:00"}, 400, "invalid_expires"),
]


def test_a_zero_limit_on_a_new_key_and_an_expiry_past_year_9999_are_refused(start_gateway, upstream, tmp_path):
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    for path, method, body, status, code in REFUSED:
        answer = httpx.request(method, gw.url + path, json=body, headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (body, answer.text)
    assert httpx.get(gw.url + "/admin/keys", headers=ADMIN).json() == {"data": []}  # nothing was made
    made = httpx.post(gw.url + "/admin/keys", json={"name": "k", "rpm": 5}, headers=ADMIN)
    assert made.status_code == 201
    late = httpx.patch(gw.url + "/admin/keys/k", json={"expires": "0001-01-01T00:00:00+14:00"}, headers=ADMIN)
    assert (late.status_code, late.json()["error"]["code"]) == (400, "invalid_expires")
    cleared = httpx.patch(gw.url + "/admin/keys/k", json={"rpm": 0}, headers=ADMIN)  # 0 in an update: no limit
    assert cleared.status_code == 200 and cleared.json()["rpm"] is None


def test_a_patch_to_an_expiry_in_the_past_is_a_400_and_the_key_keeps_working(start_gateway, upstream, tmp_path):
    """Create refused an expiry in the past, PATCH took it: 200, and the key ended at once
    (the admin meant 2027 and typed 2020; every client of the key got 401 "expired")."""
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    made = httpx.post(gw.url + "/admin/keys", json={"name": "k", "expires": "2999-01-01"}, headers=ADMIN)
    assert made.status_code == 201
    client = {"authorization": f"Bearer {made.json()['key']}"}
    ask = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    late = httpx.patch(gw.url + "/admin/keys/k", json={"expires": "2020-01-01"}, headers=ADMIN)
    assert late.status_code == 400, late.text
    assert late.json() == {
        "error": {
            "message": "`expires` (2020-01-01T00:00:00Z) is in the past: to end a key now, revoke it.",
            "type": "invalid_request_error",
            "param": "expires",
            "code": "invalid_expires",
        }
    }
    [key] = httpx.get(gw.url + "/admin/keys", headers=ADMIN).json()["data"]
    assert (key["status"], key["expires_at"]) == ("active", "2999-01-01T00:00:00Z")
    assert [e["action"] for e in httpx.get(gw.url + "/admin/audit", headers=ADMIN).json()["data"]] == ["key.create"]
    assert httpx.post(gw.url + "/v1/chat/completions", json=ask, headers=client).status_code == 200
    assert len(upstream.received) == 1
    cleared = httpx.patch(gw.url + "/admin/keys/k", json={"expires": ""}, headers=ADMIN)  # "" removes the expiry
    assert cleared.status_code == 200 and cleared.json()["expires_at"] is None


# A value of the right type but refused (out of range, in the past, an unknown team) named no
# field: `param` was null, so a form or a script could not tell which of a dozen was wrong.
OUT_OF_RANGE = [
    ("POST", "/admin/keys", {"name": "z", "rpm": -5}, 400, "rpm"),
    ("POST", "/admin/keys", {"name": "z", "tpm": 0}, 400, "tpm"),
    ("POST", "/admin/keys", {"name": "z", "budget_usd": -1}, 400, "budget_usd"),
    ("POST", "/admin/teams", {"name": "t", "max_concurrent": 10**13}, 400, "max_concurrent"),
    ("POST", "/admin/keys", {"name": "z", "expires": "soon"}, 400, "expires"),
    ("POST", "/admin/keys", {"name": "z", "expires": "2020-01-01"}, 400, "expires"),
    ("POST", "/admin/keys", {"name": "z", "team": "nope"}, 404, "team"),
    ("POST", "/admin/keys", {"name": "a b"}, 400, "name"),
    ("POST", "/admin/teams", {}, 400, "name"),
    ("POST", "/admin/keys", {"name": "z", "models": [f"m{i}" for i in range(101)]}, 400, "models"),
    ("PATCH", "/admin/keys/k", {"max_concurrent": -1}, 400, "max_concurrent"),
    ("PATCH", "/admin/keys/k", {"team": "nope"}, 404, "team"),
    ("PATCH", "/admin/teams/t", {"budget_usd": 2e9}, 400, "budget_usd"),
    # Hostile testing: a budget below the nano-dollar spend is counted in was a $0 budget
    # listed as $0.00; one empty glob (a form's empty field) made a key for every model.
    ("POST", "/admin/keys", {"name": "z", "budget_usd": 1e-20}, 400, "budget_usd"),
    ("POST", "/admin/keys", {"name": "z", "models": [""]}, 400, "models"),
    ("PATCH", "/admin/keys/k", {"models": ["qwen/*", " "]}, 400, "models"),
]


def test_a_value_out_of_range_is_refused_naming_its_field(start_gateway, upstream, tmp_path):
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    assert httpx.post(gw.url + "/admin/keys", json={"name": "k"}, headers=ADMIN).status_code == 201
    assert httpx.post(gw.url + "/admin/teams", json={"name": "t"}, headers=ADMIN).status_code == 201
    for method, path, body, status, param in OUT_OF_RANGE:
        answer = httpx.request(method, gw.url + path, json=body, headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]["param"]) == (status, param), (body, answer.text)
    [key] = httpx.get(gw.url + "/admin/keys", headers=ADMIN).json()["data"]
    assert key["name"] == "k" and key["models"] == []


def test_a_revoke_with_fields_it_cannot_honour_is_refused_and_revokes_nothing(start_gateway, upstream, tmp_path):
    """Hostile testing: a revoke ignored its body, so `{"at": "2027-01-01"}`, meant as a revoke
    later, revoked the key at once and answered 200."""
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    assert httpx.post(gw.url + "/admin/keys", json={"name": "k"}, headers=ADMIN).status_code == 201
    later = httpx.post(gw.url + "/admin/keys/k/revoke", json={"at": "2027-01-01"}, headers=ADMIN)
    assert later.status_code == 400, later.text
    error = later.json()["error"]
    assert error["message"] == "Unknown field(s): at. This call takes none."
    assert (error["param"], error["code"]) == ("at", "unknown_parameter")
    assert httpx.get(gw.url + "/admin/keys", headers=ADMIN).json()["data"][0]["status"] == "active"
    now = httpx.post(gw.url + "/admin/keys/k/revoke", headers=ADMIN)
    assert now.status_code == 200 and now.json()["status"] == "revoked"


def test_key_management_while_the_key_store_is_down_is_a_503_in_the_apis_shape(
    start_gateway, upstream, tmp_path, redis_server
):
    """Redis gone: every /admin/keys and /admin/teams call was a bare 500 "Internal Server
    Error" (not JSON) with a traceback in the log."""
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={
            "GATEWAY_ADMIN_KEY": "sk-admin-types",
            "GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "GATEWAY_REDIS_URL": redis_server.url,
        },
    )
    assert httpx.post(gw.url + "/admin/keys", json={"name": "a"}, headers=ADMIN).status_code == 201
    redis_server.stop()
    for method, path, body in [
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"name": "b"}),
        ("PATCH", "/admin/keys/a", {"rpm": 5}),
        ("POST", "/admin/keys/a/revoke", None),
        ("GET", "/admin/teams", None),
        ("GET", "/admin/audit", None),
    ]:
        answer = httpx.request(method, gw.url + path, json=body, headers=ADMIN, timeout=30)
        assert answer.status_code == 503, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "key_store_unavailable"
    assert "Traceback" not in gw.log()


# Client text an error quotes, at lengths the 64 KiB body (or the URL, for a path's name)
# still lets through: each was quoted in full.
LONG = "x" * 60_000
LONG_PATH = "x" * 8_000
OVERLONG = [
    ("POST", "/admin/keys", {"name": LONG}, 400),
    ("POST", "/admin/keys", {"name": "a", "team": LONG}, 404),
    ("POST", "/admin/keys", {"name": "a", "expires": LONG}, 400),
    ("POST", "/admin/keys", {"name": "a", LONG: 1}, 400),  # an unknown field's name
    ("POST", "/admin/teams", {"name": LONG}, 400),
    ("PATCH", f"/admin/keys/{LONG_PATH}", {"rpm": 5}, 404),
    ("POST", f"/admin/keys/{LONG_PATH}/revoke", None, 404),
    ("POST", f"/admin/keys/{LONG_PATH}/rotate", None, 404),
    ("PATCH", f"/admin/teams/{LONG_PATH}", {"rpm": 5}, 404),
]


def test_an_error_quotes_a_long_name_or_field_bounded(start_gateway, upstream, tmp_path):
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    unbounded = []
    for method, path, body, status in OVERLONG:
        answer = httpx.request(method, gw.url + path, json=body, headers=ADMIN)
        message = answer.json()["error"]["message"]
        assert answer.status_code == status, (method, path[:40], message[:300])
        if "x" * 200 + "…" not in message or len(message) > 600:  # echoed: 200 characters, then …
            unbounded.append((method, path[:20], body and list(body)[-1][:20], len(message)))
    assert unbounded == []
    assert httpx.get(gw.url + "/admin/keys", headers=ADMIN).json() == {"data": []}  # nothing was made
    assert httpx.get(gw.url + "/admin/teams", headers=ADMIN).json() == {"data": []}


def test_a_refused_model_quotes_the_keys_globs_bounded(start_gateway, upstream, tmp_path):
    """The 403 listed every glob of the key in full: 50 of 1,000 characters made a 50 kB
    message on every refused request."""
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    globs = [f"{i:02d}" + "x" * 998 for i in range(50)]
    made = httpx.post(gw.url + "/admin/keys", json={"name": "narrow", "models": globs}, headers=ADMIN)
    assert made.status_code == 201, made.text
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    refused = httpx.post(
        gw.url + "/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {made.json()['key']}"}
    )
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (403, "model_not_allowed")
    assert error["message"].endswith("It may use: 00" + "x" * 198 + "….") and len(error["message"]) < 400
    assert upstream.received == []


def test_a_whole_dollar_budget_reads_as_the_same_number_type_from_every_call(start_gateway, upstream, tmp_path):
    """New-user testing: PATCH answered `"budget_usd": 5` where GET and the create's answer
    said `5.0`: a typed client (or a diff of the two) saw two kinds of value for one field."""
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-types", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    created = httpx.post(gw.url + "/admin/keys", json={"name": "k", "budget_usd": 3}, headers=ADMIN)
    patched = httpx.patch(gw.url + "/admin/keys/k", json={"budget_usd": 5}, headers=ADMIN)
    listed = httpx.get(gw.url + "/admin/keys", headers=ADMIN)
    assert created.status_code == 201 and patched.status_code == 200, (created.text, patched.text)
    assert b'"budget_usd":3.0' in created.content and b'"budget_usd":5.0' in patched.content, patched.text
    assert b'"budget_usd":5.0' in listed.content, listed.text
