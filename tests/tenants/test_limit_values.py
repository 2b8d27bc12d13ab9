"""Limit values and names an admin can type that once broke the gateway (hostile testing):
a budget of nan, inf or 1e300 was accepted and made every call of that key or team a 500
(the nano-dollar count overflowed); a name with a trailing newline passed the name check
(`$` matches before a final newline) and its calls were booked to the key without it."""

from __future__ import annotations

import math

import httpx
import pytest

from gateway.tenants.keys import (
    MAX_BUDGET_USD,
    MAX_COUNT,
    Limits,
    TenantError,
    VirtualKey,
    check_name,
    parse_overlap,
)
from gateway.tenants.limits import NANO, to_nano
from tests.support.policies import one_backend_policy
from tests.tenants.support import cli

ADMIN = {"authorization": "Bearer sk-admin-values"}


@pytest.mark.parametrize("budget", [math.nan, math.inf, -math.inf, 1e300, MAX_BUDGET_USD * 2, 0, -1.0, True])
def test_a_budget_that_is_not_a_positive_bounded_number_is_refused(budget):
    with pytest.raises(TenantError, match="budget_usd"):
        Limits(budget_usd=budget)


@pytest.mark.parametrize("field", ["rpm", "tpm", "max_concurrent"])
def test_a_count_past_the_bound_is_refused(field):
    assert getattr(Limits(**{field: MAX_COUNT}), field) == MAX_COUNT
    with pytest.raises(TenantError, match=field):
        Limits(**{field: MAX_COUNT + 1})


@pytest.mark.parametrize("name", ["acme\n", "acme\r", " acme", "acme ", "", "a" * 65, "-a"])
def test_a_name_is_matched_whole(name):
    with pytest.raises(TenantError):
        check_name(name)
    assert check_name("acme.team:1@x-y_z") == "acme.team:1@x-y_z"


def test_limits_stored_before_the_bounds_load_at_the_bound_rather_than_failing_the_store():
    """Refusing them on load would fail the whole key store's load (every key with it)."""
    limits = {"budget_usd": math.inf, "rpm": 10**15}
    stored = {"name": "old", "credentials": [], "limits": limits, "models": [], "created_at": 0.0}
    key = VirtualKey.from_json(stored)
    assert key.limits.budget_usd == MAX_BUDGET_USD and key.limits.rpm == MAX_COUNT
    assert Limits.stored({"budget_usd": math.nan}).budget_usd == MAX_BUDGET_USD
    assert Limits.stored({"budget_usd": 10**10}).budget_usd == MAX_BUDGET_USD  # an int the old check took
    assert Limits.stored({"budget_usd": True}).budget_usd == 1.0  # so did `true`, as $1
    assert to_nano(math.inf) == to_nano(math.nan) == math.ceil(MAX_BUDGET_USD * NANO)  # no OverflowError


def test_the_admin_api_and_the_cli_refuse_them_with_a_400(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-values", "GATEWAY_DATA_DIR": str(data)},
    )
    for path, body in (
        ("/admin/keys", {"name": "big", "budget_usd": 1e300}),
        ("/admin/teams", {"name": "big", "budget_usd": 1e300}),
        ("/admin/keys", {"name": "acme\n"}),
        ("/admin/teams", {"name": "acme\n"}),
        ("/admin/keys", {"name": "busy", "rpm": 10**13}),
    ):
        answer = httpx.post(gw.url + path, json=body, headers=ADMIN)
        assert answer.status_code == 400, (path, body, answer.text)
    for flags in (
        ["teams", "create", "tnan", "--budget-usd", "nan"],
        ["keys", "create", "--name", "kinf", "--budget-usd", "inf"],
    ):
        made = cli(*flags, data_dir=data)
        assert made.returncode != 0 and "budget_usd" in made.stderr, made.stderr
    assert httpx.get(gw.url + "/admin/keys", headers=ADMIN).json() == {"data": []}  # nothing was made
    assert httpx.get(gw.url + "/admin/teams", headers=ADMIN).json() == {"data": []}


def test_a_models_glob_with_a_control_character_is_refused(start_gateway, upstream, tmp_path):
    """Hostile testing: `"models": ["\u001b[2J..."]` was taken, and `gateway keys list`
    wrote it raw to the admin's terminal (cleared it, recoloured it). No model id holds a
    control character (the routing YAML refuses them), so such a glob never matched either."""
    data = tmp_path / "data"
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": "sk-admin-values", "GATEWAY_DATA_DIR": str(data)},
    )
    for glob in ("\x1b[2Jqwen/*", "qwen/\x00*", "qwen/*\x9b31m", "qwen/\u202e*"):
        answer = httpx.post(gw.url + "/admin/keys", json={"name": "k", "models": ["auto", glob]}, headers=ADMIN)
        assert answer.status_code == 400, (glob, answer.text)
        assert answer.json()["error"]["param"] == "models"
    made = cli("keys", "create", "--name", "k", "--models", "auto,\x1b[2Jqwen/*", data_dir=data)
    assert made.returncode == 1 and "models" in made.stderr and "\x1b" not in made.stderr, made.stderr
    assert httpx.get(gw.url + "/admin/keys", headers=ADMIN).json() == {"data": []}  # nothing was made


@pytest.mark.parametrize("overlap", ["9" * 400 + "d", "3651d", "31d", "1e400"])
def test_a_rotation_overlap_past_thirty_days_is_refused(overlap):
    """400 nines parse as inf: the rotated-out key stayed valid for ever (stored as the
    non-JSON `Infinity`, listed in the audit as null). An overlap is at most 30 days."""
    with pytest.raises(TenantError):
        parse_overlap(overlap)
    assert parse_overlap("30d") == 30 * 86400
