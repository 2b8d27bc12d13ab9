"""`gateway keys` and `gateway teams` as an admin runs them: no gateway running, the real
command in a subprocess, on the store a gateway would read."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from gateway.tenants.keys import hash_key
from gateway.tenants.store import SqliteTenantStore
from tests.support.services import REPO


def gateway(*args: str, data_dir, redis_url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_DATA_DIR": str(data_dir)}
    env.pop("GATEWAY_REDIS_URL", None)
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_create_prints_the_key_once_and_the_store_keeps_its_hash(tmp_path):
    team = gateway("teams", "create", "platform", "--budget-usd", "20", "--budget-period", "day", data_dir=tmp_path)
    assert team.returncode == 0, team.stderr
    assert team.stdout.splitlines()[1].split() == ["platform", "-", "-", "-", "$20.00", "day"]
    made = gateway(
        "keys", "create", "--name", "app1", "--rpm", "60", "--tpm", "100000", "--budget-usd", "50",
        "--budget-period", "month", "--models", "qwen/*,auto", "--expires", "2099-01-01", "--team", "platform",
        "--max-concurrent", "4", "--json", data_dir=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    plain = body["key"]
    assert plain.startswith("sk-gw-") and body["prefixes"] == [plain[:12]]
    assert {k: body[k] for k in ("name", "team", "models", "rpm", "tpm", "max_concurrent", "budget_usd")} == {
        "name": "app1", "team": "platform", "models": ["qwen/*", "auto"], "rpm": 60, "tpm": 100000,
        "max_concurrent": 4, "budget_usd": 50.0,
    }  # fmt: skip
    assert body["expires_at"] == "2099-01-01T00:00:00Z" and body["status"] == "active"

    listed = gateway("keys", "list", data_dir=tmp_path)
    assert listed.returncode == 0 and plain not in listed.stdout and plain[:12] in listed.stdout
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["name", "prefixes", "team"] and row.split()[:4] == [
        "app1", plain[:12], "platform", "qwen/*,auto",
    ]  # fmt: skip
    store = SqliteTenantStore(tmp_path / "keys.sqlite3")
    [key] = store.all_keys()
    assert key.credentials[0].hash == hash_key(plain)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.sqlite3*"))
    assert hash_key(plain).encode() in raw and plain.encode() not in raw

    table = gateway("keys", "create", "--name", "app2", data_dir=tmp_path)
    first_line = table.stdout.splitlines()[0]
    assert first_line.startswith("key: sk-gw-") and table.stdout.count(first_line[5:]) == 1  # printed once
    header, row = table.stdout.splitlines()[-2:]
    shown = dict(zip(header.split(), row.split()))
    assert (shown["budget_usd"], shown["budget_period"]) == ("-", "-")  # no budget: no period to show


def test_update_rotate_revoke_and_the_audit_trail(tmp_path):
    made = json.loads(gateway("keys", "create", "--name", "app1", "--rpm", "10", "--json", data_dir=tmp_path).stdout)
    updated = json.loads(
        gateway("keys", "update", "app1", "--rpm", "0", "--tpm", "500", "--json", data_dir=tmp_path).stdout
    )
    assert (updated["rpm"], updated["tpm"]) == (None, 500)
    rotated = json.loads(gateway("keys", "rotate", "app1", "--overlap", "24h", "--json", data_dir=tmp_path).stdout)
    assert rotated["key"] != made["key"] and rotated["prefixes"] == [made["key"][:12], rotated["key"][:12]]
    again = json.loads(gateway("keys", "rotate", "app1", "--json", data_dir=tmp_path).stdout)  # no overlap
    # Only the secret that works is listed: the two it ended are gone from the active key's row
    # (they were listed beside it, the key `active`, and an admin could not tell they were dead).
    assert again["prefixes"] == [again["key"][:12]]
    listed = json.loads(gateway("keys", "list", "--json", data_dir=tmp_path).stdout)
    assert [k["prefixes"] for k in listed] == [[again["key"][:12]]]
    revoked = gateway("keys", "revoke", "app1", "--json", data_dir=tmp_path)
    assert json.loads(revoked.stdout)["status"] == "revoked"
    assert json.loads(revoked.stdout)["prefixes"] == [rotated["key"][:12], again["key"][:12]]  # all it had
    audit = json.loads(gateway("keys", "audit", "--json", data_dir=tmp_path).stdout)
    assert [e["action"] for e in audit] == ["key.create", "key.update", "key.rotate", "key.rotate", "key.revoke"]
    assert all(e["actor"].startswith("cli:") and e["target"] == "app1" for e in audit)
    assert audit[1]["detail"] == {"rpm": None, "tpm": 500}
    text = json.dumps(audit)
    assert made["key"] not in text and rotated["key"] not in text

    missing = gateway("keys", "revoke", "ghost", data_dir=tmp_path)
    assert missing.returncode == 1 and not missing.stdout
    assert missing.stderr.splitlines()[-1] == "error: No key named `ghost`."
    bad = gateway("keys", "create", "--name", "x", "--rpm", "-1", data_dir=tmp_path)
    assert bad.returncode == 1 and "`rpm` must be a positive integer" in bad.stderr
    assert len(json.loads(gateway("keys", "audit", "--json", data_dir=tmp_path).stdout)) == 5


@pytest.mark.redis
def test_with_redis_the_cli_writes_where_replicas_read(tmp_path, redis_server):
    made = gateway("keys", "create", "--name", "shared", "--json", data_dir=tmp_path, redis_url=redis_server.url)
    assert made.returncode == 0, made.stderr
    assert not (tmp_path / "keys.sqlite3").exists()
    teams = gateway("teams", "list", "--json", data_dir=tmp_path, redis_url=redis_server.url)
    assert json.loads(teams.stdout) == []
    listed = json.loads(gateway("keys", "list", "--json", data_dir=tmp_path, redis_url=redis_server.url).stdout)
    assert [k["name"] for k in listed] == ["shared"]


@pytest.mark.redis
def test_each_command_says_which_key_store_it_used_and_that_it_was_empty(tmp_path, redis_server):
    """Run where GATEWAY_REDIS_URL was not set (a bastion, a laptop), `keys create` made its
    key in a keys.sqlite3 no gateway reads and printed it as made, saying nothing: every call
    with it was a 401. Each command now names its store on stderr, as the usage commands do,
    and says when it held no key or team before (the tell of the wrong one)."""
    path = tmp_path / "keys.sqlite3"
    first = gateway("keys", "create", "--name", "app1", "--json", data_dir=tmp_path)
    assert first.returncode == 0 and json.loads(first.stdout)["name"] == "app1"  # stdout stays the JSON
    assert (
        first.stderr == f"gateway keys create writes to SQLite {path} (empty: no key or team was made there before)\n"
    )
    assert gateway("keys", "list", data_dir=tmp_path).stderr == f"gateway keys list reads SQLite {path}\n"
    team = gateway("teams", "create", "t", data_dir=tmp_path)
    assert team.stderr == f"gateway teams create writes to SQLite {path}\n"

    url = redis_server.url.replace("redis://", "redis://:s3cret@")
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("requirepass", "s3cret")  # the line names the store, never its password
    admin.close()
    shown = url.replace(":s3cret@", ":***@")
    made = gateway("keys", "create", "--name", "shared", data_dir=tmp_path, redis_url=url)
    assert made.returncode == 0, made.stderr
    assert made.stderr == f"gateway keys create writes to Redis {shown} (empty: no key or team was made there before)\n"
    audit = gateway("keys", "audit", data_dir=tmp_path, redis_url=url)
    assert audit.stderr == f"gateway keys audit reads Redis {shown}\n"


def test_a_zero_limit_on_create_and_an_expiry_out_of_range_are_clear_errors(tmp_path):
    for args in (["keys", "create", "--name", "zero", "--budget-usd", "0"], ["teams", "create", "t", "--rpm", "0"]):
        done = gateway(*args, data_dir=tmp_path)
        assert done.returncode != 0 and "leave it out for no limit" in done.stderr and "Traceback" not in done.stderr
    assert gateway("keys", "create", "--name", "k", data_dir=tmp_path).returncode == 0
    for when in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"):
        done = gateway("keys", "update", "k", "--expires", when, data_dir=tmp_path)
        assert done.returncode != 0 and "years 1-9999" in done.stderr and "Traceback" not in done.stderr
    listed = gateway("keys", "list", "--json", data_dir=tmp_path)
    assert [k["name"] for k in json.loads(listed.stdout)] == ["k"]


def test_update_refuses_an_expiry_in_the_past_as_create_does(tmp_path):
    """`keys update --expires 2020-01-01` (meant: 2027) ended the key at once, exit 0."""
    assert gateway("keys", "create", "--name", "k", "--expires", "2999-01-01", data_dir=tmp_path).returncode == 0
    done = gateway("keys", "update", "k", "--expires", "2020-01-01", data_dir=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error: `expires` (2020-01-01T00:00:00Z) is in the past: to end a key now, revoke it."
    )
    [key] = json.loads(gateway("keys", "list", "--json", data_dir=tmp_path).stdout)
    assert (key["status"], key["expires_at"]) == ("active", "2999-01-01T00:00:00Z")


def test_audit_shows_the_newest_limit_entries_and_refuses_a_limit_below_one(tmp_path):
    """`keys audit --limit 0` (or -3) printed one entry, exit 0: a count the admin never asked
    for. Refused now by argparse, as `rankings --limit 0` is refused, before the store opens."""
    for name in ("a", "b", "c"):
        assert gateway("keys", "create", "--name", name, data_dir=tmp_path).returncode == 0
    newest = json.loads(gateway("keys", "audit", "--limit", "2", "--json", data_dir=tmp_path).stdout)
    assert [(e["action"], e["target"]) for e in newest] == [("key.create", "b"), ("key.create", "c")]
    for limit, said in (("0", "must be 1 or more, got 0"), ("-3", "must be 1 or more, got -3")):
        done = gateway("keys", "audit", "--limit", limit, "--json", data_dir=tmp_path)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.splitlines()[-1] == f"gateway keys audit: error: argument --limit: {said}"
    shown = gateway("keys", "audit", "--help", data_dir=tmp_path).stdout
    assert "1 or more" in " ".join(shown.split())


@pytest.mark.redis
def test_an_audit_limit_past_what_a_store_can_count_shows_every_entry(tmp_path, redis_server):
    """Hostile testing: `keys audit --limit 99999999999999999999` (all of it, please) was an
    OverflowError traceback from SQLite's LIMIT, and a Redis error from LRANGE."""
    for store in ({}, {"redis_url": redis_server.url}):
        for name in ("a", "b"):
            assert gateway("keys", "create", "--name", name, data_dir=tmp_path, **store).returncode == 0
        done = gateway("keys", "audit", "--limit", "99999999999999999999", "--json", data_dir=tmp_path, **store)
        assert done.returncode == 0, done.stderr[-500:]
        assert [e["target"] for e in json.loads(done.stdout)] == ["a", "b"]


LONG = "x" * 100_000  # a pasted file, a runaway script: every error quoting it did so in full


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "create", "--name", LONG],
        ["keys", "create", "--name", "k2", "--team", LONG],
        ["keys", "create", "--name", "k2", "--expires", LONG],
        ["keys", "create", "--name", "k2", "--rpm", LONG],
        ["keys", "create", "--name", "k2", "--budget-usd", LONG],
        ["keys", "create", "--name", "k2", "--budget-period", LONG],
        ["keys", "update", LONG, "--rpm", "5"],
        ["keys", "update", "k", "--team", LONG],
        ["keys", "revoke", LONG],
        ["keys", "rotate", LONG],
        ["teams", "create", LONG],
        ["teams", "update", LONG, "--rpm", "5"],
    ],
    ids=lambda args: " ".join(a if a != LONG else "LONG" for a in args),
)
def test_an_error_quotes_a_long_name_or_value_bounded(tmp_path, args):
    assert gateway("keys", "create", "--name", "k", data_dir=tmp_path).returncode == 0
    done = gateway(*args, data_dir=tmp_path)
    assert done.returncode in (1, 2) and done.stdout == "" and "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert "x" * 200 + "…" in last and len(last) < 500, last[:1000]  # echoed: 200 characters, then …
    listed = gateway("keys", "list", "--json", data_dir=tmp_path)
    assert [(k["name"], k["team"]) for k in json.loads(listed.stdout)] == [("k", None)]


def test_a_revoked_keys_refusal_says_its_name_stays_taken(tmp_path):
    """Updating or rotating a revoked key said "create a new one", and the admin who did so
    under the same name was told it already exists: a revoked key keeps its name (its usage,
    spend and audit stay its own). The refusal now says to choose another."""
    assert gateway("keys", "create", "--name", "app1", data_dir=tmp_path).returncode == 0
    assert gateway("keys", "revoke", "app1", data_dir=tmp_path).returncode == 0
    advice = "error: Key `app1` is revoked; create a new key under another name (a revoked key keeps its name)."
    for args in (("update", "app1", "--rpm", "5"), ("rotate", "app1")):
        refused = gateway("keys", *args, data_dir=tmp_path)
        assert (refused.returncode, refused.stderr.splitlines()[-1], refused.stdout) == (1, advice, "")
    again = gateway("keys", "create", "--name", "app1", data_dir=tmp_path)
    assert (again.returncode, again.stderr.splitlines()[-1]) == (1, "error: A key named `app1` already exists.")
    assert gateway("keys", "create", "--name", "app1-v2", data_dir=tmp_path).returncode == 0


def test_rotating_an_expired_key_is_refused_until_it_is_extended(tmp_path):
    """Hostile testing: `keys rotate` on an expired key printed a new key "shown once" that
    could never authenticate (the key stayed expired), exit 0, and audited a rotation."""
    import time
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert gateway("keys", "create", "--name", "app1", "--expires", soon, data_dir=tmp_path).returncode == 0
    time.sleep(max(0.0, datetime.fromisoformat(soon).timestamp() - time.time()) + 0.2)
    refused = gateway("keys", "rotate", "app1", data_dir=tmp_path)
    assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"error: Key `app1` expired at {soon}: a new secret would never work. Extend it first (`expires`), then rotate."
    )
    audit = json.loads(gateway("keys", "audit", "--json", data_dir=tmp_path).stdout)
    assert [e["action"] for e in audit] == ["key.create"]
    assert gateway("keys", "update", "app1", "--expires", "2099-01-01", data_dir=tmp_path).returncode == 0
    assert gateway("keys", "rotate", "app1", data_dir=tmp_path).returncode == 0
