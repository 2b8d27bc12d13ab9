"""/admin/keys and /admin/teams refuse fields of the wrong JSON type with a 400 naming the field
(schemathesis found `"expires": {}` answering 500)."""

from __future__ import annotations

import httpx

from tests.support.policies import one_backend_policy

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
