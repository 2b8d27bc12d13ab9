"""gateway/tenants/store.py and admin.py: SQLite and Redis keep keys, teams and the audit
log the same way, and neither ever holds a plain key."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from gateway.tenants.admin import TenantAdmin
from gateway.tenants.keys import MAX_OVERLAP_S, AuditEntry, Limits, TenantError, hash_key
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


def test_an_empty_models_list_lifts_the_restriction_and_none_changes_nothing(store):
    """README: `[]` (the CLI's `--models ''`) means every model, as a key made without
    globs; `null` in an update leaves the globs as they are."""
    admin = TenantAdmin(store, Clock())
    admin.create_key("app1", actor="cli:alice", limits=Limits(), models="qwen/*")
    admin.update_key("app1", actor="cli:alice", models=None)
    [key] = store.all_keys()
    assert key.models == ("qwen/*",) and not key.allows("z-ai/glm-5")
    admin.update_key("app1", actor="cli:alice", models=[])
    [key] = store.all_keys()
    assert key.models == () and key.allows("z-ai/glm-5")


def test_create_list_update_revoke_with_an_audit_entry_each(store):
    clock = Clock()
    admin = TenantAdmin(store, clock)
    versions = [store.version()]
    admin.create_team("platform", actor="cli:alice", limits=Limits(rpm=100, budget_usd=20.0, budget_period="day"))
    versions.append(store.version())
    issued = admin.create_key(
        "app1", actor="cli:alice", limits=Limits(rpm=60, tpm=100_000), models="qwen/*, auto", team="platform"
    )
    versions.append(store.version())
    assert issued.plain.startswith("sk-gw-") and len(issued.plain) > 40
    assert issued.key.credentials[0].hash == hash_key(issued.plain)
    assert issued.key.credentials[0].prefix == issued.plain[:12]
    clock.now += 10
    admin.update_key("app1", actor="http:10.0.0.1", rpm=120, tpm=0, models="auto")
    versions.append(store.version())
    clock.now += 10
    admin.revoke_key("app1", actor="cli:bob")
    versions.append(store.version())
    # Each write gives the store a version it never had (readers compare it for equality).
    assert len(set(versions)) == 5

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


def test_a_change_computed_from_a_stale_read_is_refused(store):
    """Update, revoke and rotate each read the record, change it, write it whole: one written
    over a change made in between would undo it (a revoke answered 200, then an update that
    had read the key before it wrote it back active)."""
    clock = Clock()
    admin = TenantAdmin(store, clock)
    admin.create_key("app1", actor="t")
    admin.create_team("platform", actor="t")
    stale_key, stale_team = admin.key("app1"), admin.team("platform")
    admin.revoke_key("app1", actor="t")
    admin.update_team("platform", actor="t", rpm=10)
    v = store.version()
    entry = AuditEntry(clock.now, "t", "key.update", "app1", {})
    assert store.replace_key(replace(stale_key, limits=Limits(rpm=5)), entry, previous=stale_key) is False
    assert store.replace_team(replace(stale_team, limits=Limits(tpm=5)), entry, previous=stale_team) is False
    assert store.version() == v and store.all_keys()[0].revoked_at == clock.now
    assert store.all_teams()[0].limits == Limits(rpm=10)


class RacingStore:
    """The store, with another admin's action run just before this admin's first write."""

    def __init__(self, store, meanwhile) -> None:
        self._store, self._meanwhile = store, meanwhile

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _first(self) -> None:
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()

    def replace_key(self, *args, **kwargs):
        self._first()
        return self._store.replace_key(*args, **kwargs)

    def replace_team(self, *args, **kwargs):
        self._first()
        return self._store.replace_team(*args, **kwargs)


def test_an_update_racing_a_revoke_or_rotation_starts_over_from_what_it_left(store):
    admin = TenantAdmin(store, Clock())
    admin.create_key("app1", actor="t")
    racing = TenantAdmin(RacingStore(store, lambda: admin.revoke_key("app1", actor="other")), Clock())
    with pytest.raises(TenantError) as revoked:
        racing.update_key("app1", actor="t", rpm=5)
    assert revoked.value.code == "revoked" and admin.key("app1").status(0) == "revoked"

    admin.create_key("app2", actor="t")
    rotations = []
    racing = TenantAdmin(
        RacingStore(store, lambda: rotations.append(admin.rotate_key("app2", actor="other", overlap_s=60))),
        Clock(),
    )
    racing.update_key("app2", actor="t", rpm=5)
    [_, key] = store.all_keys()
    assert key.limits.rpm == 5 and hash_key(rotations[0].plain) in dict(key.valid_hashes(Clock()()))

    admin.create_team("platform", actor="t")
    racing = TenantAdmin(RacingStore(store, lambda: admin.update_team("platform", actor="o", budget_usd=3.0)), Clock())
    racing.update_team("platform", actor="t", rpm=7)
    assert store.all_teams()[0].limits == Limits(rpm=7, budget_usd=3.0)


def test_a_rotation_ends_the_overlap_of_keys_older_than_the_one_it_replaces(store):
    clock = Clock()
    admin = TenantAdmin(store, clock)
    plains = [admin.create_key("app1", actor="t").plain]
    for _ in range(4):
        clock.now += 60
        plains.append(admin.rotate_key("app1", actor="t", overlap_s=MAX_OVERLAP_S).plain)
        [key] = store.all_keys()
        valid = dict(key.valid_hashes(clock.now))
        assert valid == {hash_key(plains[-2]): clock.now + MAX_OVERLAP_S, hash_key(plains[-1]): None}
        assert len(key.credentials) == 2  # nothing ended is kept either
    # A shorter overlap than the replaced key already has shortens it; it never lengthens one.
    admin.rotate_key("app1", actor="t", overlap_s=60)
    assert dict(store.all_keys()[0].valid_hashes(clock.now))[hash_key(plains[-1])] == clock.now + 60


@pytest.mark.parametrize("overlap_s", [MAX_OVERLAP_S + 1, -1, float("inf"), float("nan")])
def test_an_overlap_outside_0_to_30_days_is_refused(store, overlap_s):
    admin = TenantAdmin(store, Clock())
    admin.create_key("app1", actor="t")
    before = store.all_keys()
    with pytest.raises(TenantError) as refused:
        admin.rotate_key("app1", actor="t", overlap_s=overlap_s)
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, "invalid_overlap", "overlap")
    assert store.all_keys() == before and len(store.audit()) == 1


def test_the_sqlite_store_reads_its_connection_holding_the_lock_audit_included(tmp_path):
    """One connection serves every thread, one at a time, and `_current` may close it to open
    a replaced file (its docstring: called holding the lock): an audit that read outside the
    lock, beside a write or a reopen on another worker thread, used a connection in use or
    closed under it."""
    store = SqliteTenantStore(tmp_path / "keys.sqlite3")
    TenantAdmin(store, Clock()).create_key("app1", actor="t")
    current = store._current
    held: list[bool] = []

    def checked() -> sqlite3.Connection:
        held.append(store._lock.locked())
        return current()

    store._current = checked
    assert [(e.action, e.target) for e in store.audit()] == [("key.create", "app1")]
    store.all_keys(), store.all_teams(), store.version()
    assert held == [True, True, True, True]
    store.close()
