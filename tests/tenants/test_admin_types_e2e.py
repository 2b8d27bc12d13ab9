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
