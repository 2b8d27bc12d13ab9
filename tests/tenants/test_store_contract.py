"""gateway/tenants/store.py and admin.py: SQLite and Redis keep keys, teams and the audit
log the same way, and neither ever holds a plain key."""

from __future__ import annotations

import pytest

from gateway.tenants.admin import TenantAdmin
from gateway.tenants.keys import Limits, TenantError, hash_key
from gateway.tenants.store import RedisTenantStore, SqliteTenantStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteTenantStore(tmp_path / "keys.sqlite3")
        s.dump = lambda: (tmp_path / "keys.sqlite3").read_bytes() + _wal(tmp_path)
    else:
        import redis

        server = request.getfixturevalue("redis_server")
        client = redis.Redis(port=server.port)
        s = RedisTenantStore(client)

        def dump() -> bytes:
            client.config_set("rdbcompression", "no")  # else long strings are LZF-packed and grep finds nothing
            client.save()
            return (server.dir / "dump.rdb").read_bytes()

        s.dump = dump
    yield s
    s.close()


def _wal(path) -> bytes:
    wal = path / "keys.sqlite3-wal"
    return wal.read_bytes() if wal.exists() else b""


def test_create_list_update_revoke_with_an_audit_entry_each(store):
    clock = Clock()
    admin = TenantAdmin(store, clock)
    v0 = store.version()
    admin.create_team("platform", actor="cli:alice", limits=Limits(rpm=100, budget_usd=20.0, budget_period="day"))
    issued = admin.create_key(
        "app1", actor="cli:alice", limits=Limits(rpm=60, tpm=100_000), models="qwen/*, auto", team="platform"
    )
    assert issued.plain.startswith("sk-gw-") and len(issued.plain) > 40
    assert issued.key.credentials[0].hash == hash_key(issued.plain)
    assert issued.key.credentials[0].prefix == issued.plain[:12]
    clock.now += 10
    admin.update_key("app1", actor="http:10.0.0.1", rpm=120, tpm=0, models="auto")
    clock.now += 10
    admin.revoke_key("app1", actor="cli:bob")
    assert store.version() == v0 + 4

    [key] = store.all_keys()
    assert key.name == "app1" and key.team == "platform" and key.models == ("auto",)
    assert key.limits == Limits(rpm=120, tpm=None)
    assert key.revoked_at == clock.now and key.valid_hashes(clock.now) == []
    [team] = store.all_teams()
    assert team.limits == Limits(rpm=100, budget_usd=20.0, budget_period="day")

    audit = store.audit()
    assert [(e.actor, e.action, e.target) for e in audit] == [
        ("cli:alice", "team.create", "platform"),
        ("cli:alice", "key.create", "app1"),
        ("http:10.0.0.1", "key.update", "app1"),
        ("cli:bob", "key.revoke", "app1"),
    ]
    assert audit[2].detail == {"rpm": 120, "tpm": None, "models": ["auto"]}
    assert [e.at for e in audit] == [1_800_000_000.0, 1_800_000_000.0, 1_800_000_010.0, 1_800_000_020.0]
    assert store.audit(limit=1) == audit[-1:]


def test_refusals_change_nothing(store):
    admin = TenantAdmin(store, Clock())
    admin.create_key("app1", actor="t")
    v = store.version()
    with pytest.raises(TenantError) as dup:
        admin.create_key("app1", actor="t")
    assert dup.value.status == 409
    with pytest.raises(TenantError) as no_team:
        admin.create_key("app2", actor="t", team="nope")
    assert no_team.value.status == 404
    with pytest.raises(TenantError):
        admin.create_key("bad name", actor="t")
    with pytest.raises(TenantError):
        admin.update_key("app1", actor="t", rpm=-3)
    with pytest.raises(TenantError) as missing:
        admin.revoke_key("ghost", actor="t")
    assert missing.value.status == 404
    assert store.version() == v and len(store.audit()) == 1 and [k.name for k in store.all_keys()] == ["app1"]


def test_rotation_keeps_the_old_key_for_the_overlap_only(store):
    clock = Clock()
    admin = TenantAdmin(store, clock)
    first = admin.create_key("app1", actor="t")
    second = admin.rotate_key("app1", actor="t", overlap_s=3600)
    [key] = store.all_keys()
    valid = dict(key.valid_hashes(clock.now))
    assert set(valid) == {hash_key(first.plain), hash_key(second.plain)}
    assert valid[hash_key(first.plain)] == clock.now + 3600 and valid[hash_key(second.plain)] is None
    clock.now += 3600
    assert [h for h, _ in store.all_keys()[0].valid_hashes(clock.now)] == [hash_key(second.plain)]
    # Rotating without overlap ends the old secret at once.
    third = admin.rotate_key("app1", actor="t")
    assert [h for h, _ in store.all_keys()[0].valid_hashes(clock.now)] == [hash_key(third.plain)]
    assert store.audit()[-1].detail == {"overlap_s": 0.0, "new_prefix": third.plain[:12]}


def test_the_store_never_holds_a_plain_key(store):
    admin = TenantAdmin(store, Clock())
    plains = [admin.create_key(f"app{i}", actor="t").plain for i in range(3)]
    plains.append(admin.rotate_key("app0", actor="t", overlap_s=60).plain)
    raw = store.dump()
    for plain in plains:
        assert hash_key(plain).encode() in raw  # the dump is readable: the grep below can fail
        assert plain.encode() not in raw
        assert plain[12:].encode() not in raw  # not even the secret part
