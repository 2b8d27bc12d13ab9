"""gateway/tenants/directory.py: the view authentication reads, rebuilt when the store
changes, kept when the store fails, and exact about expiry and rotation."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from gateway.tenants.admin import TenantAdmin
from gateway.tenants.directory import KeyDirectory
from gateway.tenants.keys import Limits, TenantError
from gateway.tenants.principal import Principal
from gateway.tenants.store import RedisTenantStore, SqliteTenantStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FlakyStore:
    """A store whose reads fail while `down` is set."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.down = False
        self.version_reads = 0

    def version(self) -> int:
        self.version_reads += 1
        if self.down:
            raise ConnectionError("store down")
        return self.inner.version()

    def all_keys(self):
        return self.inner.all_keys()

    def all_teams(self):
        return self.inner.all_teams()


async def test_the_view_follows_the_store_and_survives_its_failures(tmp_path, caplog):
    clock = Clock()
    inner = SqliteTenantStore(tmp_path / "keys.sqlite3")
    admin = TenantAdmin(inner, clock)
    store = FlakyStore(inner)
    errors = []
    directory = KeyDirectory(store, clock=clock, on_error=lambda: errors.append(1))
    assert not directory.loaded
    assert await directory.refresh() and directory.loaded and directory.empty

    admin.create_team("platform", actor="t", limits=Limits(rpm=9))
    plain = admin.create_key("app", actor="t", team="platform", expires_at=clock.now + 60).plain
    assert directory.lookup(plain) is None  # not yet refreshed
    assert await directory.refresh()
    found = directory.lookup(plain)
    assert isinstance(found, Principal) and (found.key_name, found.team, found.team_limits) == (
        "app",
        "platform",
        Limits(rpm=9),
    )
    assert not await directory.refresh()  # same version: nothing reloaded

    store.down = True
    admin.revoke_key("app", actor="t")
    assert not await directory.refresh()
    assert not await directory.refresh()
    assert directory.lookup(plain) is found  # the last good view stays in force
    assert len(errors) == 2 and caplog.text.count("key store failed") == 1  # counted each time, logged once
    store.down = False
    with caplog.at_level(logging.WARNING):
        assert await directory.refresh()
    assert directory.lookup(plain) == "revoked" and "key store answers again" in caplog.text
    inner.close()


async def test_expiry_and_the_end_of_a_rotation_overlap_need_no_refresh(tmp_path):
    clock = Clock()
    store = SqliteTenantStore(tmp_path / "keys.sqlite3")
    admin = TenantAdmin(store, clock)
    expiring = admin.create_key("brief", actor="t", expires_at=clock.now + 10).plain
    old = admin.create_key("app", actor="t").plain
    new = admin.rotate_key("app", actor="t", overlap_s=5).plain
    directory = KeyDirectory(store, clock=clock)
    await directory.refresh()
    assert all(isinstance(directory.lookup(k), Principal) for k in (expiring, old, new))
    clock.now += 5
    # Replaced, not expired: the key has no expiry and still works with its new secret.
    assert directory.lookup(old) == "replaced" and isinstance(directory.lookup(new), Principal)
    clock.now += 5
    assert directory.lookup(expiring) == "expired"
    assert directory.lookup("sk-gw-unknown") is None
    store.close()


async def test_a_secret_a_rotation_superseded_is_refused_as_replaced_not_expired(tmp_path):
    """A new user rotated a key without overlap: the old secret's 401 said "This API key has
    expired." while `gateway keys list` showed the key active with no expiry. Why a secret is
    refused is now what ended it: the rotation, or the key's own expiry."""
    clock = Clock()
    store = SqliteTenantStore(tmp_path / "keys.sqlite3")
    admin = TenantAdmin(store, clock)
    old = admin.create_key("app", actor="t").plain
    new = admin.rotate_key("app", actor="t", overlap_s=0).plain
    dated_old = admin.create_key("dated", actor="t", expires_at=clock.now + 100).plain
    dated_new = admin.rotate_key("dated", actor="t", overlap_s=0).plain
    directory = KeyDirectory(store, clock=clock)
    await directory.refresh()
    assert directory.lookup(old) == "replaced" and isinstance(directory.lookup(new), Principal)
    assert directory.lookup(dated_old) == "replaced" and isinstance(directory.lookup(dated_new), Principal)
    clock.now += 100  # the key's own expiry ends its current secret: expired
    assert directory.lookup(dated_new) == "expired" and isinstance(directory.lookup(new), Principal)
    store.close()


def test_a_key_that_would_be_born_expired_is_refused(tmp_path):
    """A new user typed `gateway keys create --expires 2020-01-01`: the key was made, and
    expired at once, without a word. Refused now; a future expiry is taken as before."""
    clock = Clock()
    admin = TenantAdmin(SqliteTenantStore(tmp_path / "keys.sqlite3"), clock)
    with pytest.raises(TenantError, match="is in the past") as refused:
        admin.create_key("late", actor="t", expires_at=clock.now - 1)
    assert refused.value.code == "invalid_expires" and refused.value.status == 400
    assert admin.create_key("soon", actor="t", expires_at=clock.now + 60).key.name == "soon"
    assert [k.name for k in admin.store.all_keys()] == ["soon"]


def test_an_update_to_an_expiry_in_the_past_is_refused_as_on_create(tmp_path):
    """`PATCH /admin/keys/NAME {"expires": "2020-01-01"}` (or `keys update --expires`), meant
    to extend a key, answered 200 and ended it at once: every client a 401 "expired". Refused
    as on create, and nothing is written; a future expiry and 0 (none) are taken as before."""
    clock = Clock()
    admin = TenantAdmin(SqliteTenantStore(tmp_path / "keys.sqlite3"), clock)
    admin.create_key("app", actor="t", expires_at=clock.now + 3600)
    for past in (clock.now - 86400, clock.now):
        with pytest.raises(TenantError, match=r"is in the past: to end a key now, revoke it") as refused:
            admin.update_key("app", actor="t", expires_at=past)
        assert (refused.value.status, refused.value.code, refused.value.param) == (400, "invalid_expires", "expires")
    assert admin.key("app").expires_at == clock.now + 3600
    assert [e.action for e in admin.store.audit(10)] == ["key.create"]
    assert admin.update_key("app", actor="t", expires_at=clock.now + 60).expires_at == clock.now + 60
    assert admin.update_key("app", actor="t", expires_at=0).expires_at is None


async def test_a_store_that_loses_its_keys_leaves_the_gateway_closed(tmp_path, caplog):
    """A Redis restarted without its data (or flushed) answers with no keys and version 0: the
    view follows it, so every virtual key is refused, but `empty` (what opens the gateway to
    requests without a key) stays false: losing the store must not open the gateway."""
    admin = TenantAdmin(SqliteTenantStore(tmp_path / "keys.sqlite3"), Clock())
    plain = admin.create_key("app", actor="t").plain
    store = FlakyStore(admin.store)
    directory = KeyDirectory(store)
    assert await directory.refresh() and not directory.empty

    store.inner = SqliteTenantStore(tmp_path / "wiped.sqlite3")  # what the next reads find
    with caplog.at_level(logging.ERROR, logger="gateway.tenants"):
        assert await directory.refresh()
    assert directory.lookup(plain) is None and not directory.empty
    assert "holds no keys any more" in caplog.text


class SlowStore(FlakyStore):
    """A store whose next `all_keys` read returns what the store held, but only once
    `release` is set: a background refresh caught mid-load by an admin's write."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.hold = False
        self.release = threading.Event()

    def all_keys(self):
        keys = self.inner.all_keys()
        if self.hold:
            self.hold = False
            self.release.wait(10)
        return keys


async def test_a_refresh_that_read_the_store_before_a_revoke_does_not_undo_it(tmp_path):
    """Hostile testing: `POST /admin/keys/NAME/revoke` refreshes its replica's view at once,
    while the background refresh may be reading the store in its thread. When that read had
    begun before the revoke and ended after the admin's refresh, it put the older view back:
    the revoked key worked again on the replica that had just said it was revoked."""
    admin = TenantAdmin(SqliteTenantStore(tmp_path / "keys.sqlite3"), Clock())
    plain = admin.create_key("app", actor="t").plain
    store = SlowStore(admin.store)
    directory = KeyDirectory(store)
    store.hold = True
    background = asyncio.create_task(directory.refresh())  # reads the key active, held in its thread
    await asyncio.sleep(0.2)
    admin.revoke_key("app", actor="t")
    admins = asyncio.create_task(directory.refresh())  # the revoking replica's own refresh
    for _ in range(50):  # done at once, or waiting for the background refresh to end first
        if admins.done():
            break
        await asyncio.sleep(0.01)
    store.release.set()
    await asyncio.gather(background, admins)
    assert directory.lookup(plain) == "revoked"
    store.inner.close()


async def test_a_key_store_file_replaced_under_a_running_gateway_is_read_from_then_on(tmp_path):
    """Hostile testing: a gateway read the keys.sqlite3 it had opened at start for ever. Once
    the file was replaced (restored from a backup, or moved aside and made anew by the CLI),
    keys that were no longer in the store kept working, and keys the CLI then created or
    revoked in the new file never took effect, until a restart. Here the new file's version
    number is the old one's too (one write each), so a changed number alone cannot tell."""
    path = tmp_path / "data" / "keys.sqlite3"
    store = SqliteTenantStore(path)
    old = TenantAdmin(store).create_key("old", actor="t").plain
    directory = KeyDirectory(store)
    assert await directory.refresh()
    assert isinstance(directory.lookup(old), Principal)

    aside = tmp_path / "aside"
    aside.mkdir()
    for part in path.parent.glob("keys.sqlite3*"):
        part.rename(aside / part.name)
    cli = SqliteTenantStore(path)  # the CLI, finding no file, makes a new store
    new = TenantAdmin(cli).create_key("new", actor="cli").plain
    cli.close()

    assert await directory.refresh()
    assert isinstance(directory.lookup(new), Principal) and directory.lookup(new).key_name == "new"
    assert directory.lookup(old) is None
    assert not await directory.refresh()  # the same file from then on: nothing to rebuild
    store.close()


@pytest.mark.redis
@pytest.mark.parametrize("loss", ["restarted empty", "restored from an older snapshot"])
async def test_a_redis_that_lost_writes_and_took_as_many_new_ones_is_read_again(redis_server, loss):
    """Hostile testing: the Redis store's version was a counter, so a Redis restarted without
    its data (or restored from an older snapshot) that took as many writes before the next
    refresh (a provisioning script re-creating keys, two replicas' admins) came back to the
    number the gateway knew: the view was never rebuilt, the lost keys kept working and the
    new ones were refused as unknown until some later write."""
    import redis

    client = redis.Redis(port=redis_server.port)
    store = RedisTenantStore(client)
    admin = TenantAdmin(store, Clock())
    first = admin.create_key("first", actor="t").plain
    snapshot = {k: client.dump(k) for k in client.keys("gw:tenants:*")}
    lost = admin.create_key("lost", actor="t").plain
    directory = KeyDirectory(store)
    assert await directory.refresh()
    assert isinstance(directory.lookup(lost), Principal)

    if loss == "restarted empty":
        redis_server.restart()  # no persistence: every key is gone
        made = [admin.create_key(name, actor="t").plain for name in ("new1", "new2")]
    else:
        client.flushall()
        for name, value in snapshot.items():
            client.restore(name, 0, value)  # the store as it was after `first` was made
        made = [admin.create_key("new1", actor="t").plain]

    assert await directory.refresh()
    assert directory.lookup(lost) is None
    assert all(isinstance(directory.lookup(plain), Principal) for plain in made)
    if loss != "restarted empty":
        assert isinstance(directory.lookup(first), Principal)
    store.close()


async def test_a_record_that_cannot_be_read_is_refused_and_revocations_still_reach_the_rest(tmp_path, caplog):
    """One record the store cannot read (a hand edit; a field missing) failed the whole load:
    every replica kept the keys it had, and a key revoked after that kept working until a
    restart. Fields a newer gateway added (a rolling upgrade) failed it too."""
    import json
    import sqlite3

    clock = Clock()
    path = tmp_path / "keys.sqlite3"
    store = SqliteTenantStore(path)
    admin = TenantAdmin(store, clock)
    plain = {name: admin.create_key(name, actor="t", limits=Limits(rpm=5)).plain for name in ("bad", "good", "newer")}
    admin.create_team("capped", actor="t", limits=Limits(rpm=1))
    plain["member"] = admin.create_key("member", actor="t", team="capped").plain
    directory = KeyDirectory(store, clock=clock)
    assert await directory.refresh()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE keys SET record = ? WHERE name = 'bad'", ('{"name": "bad"}',))
        db.execute("UPDATE teams SET record = ? WHERE name = 'capped'", ('{"name": "capped"}',))
        record = json.loads(db.execute("SELECT record FROM keys WHERE name = 'newer'").fetchone()[0])
        record["limits"]["requests_per_day"] = 100
        record["credentials"][0]["scopes"] = ["chat"]
        record["owner"] = "someone"
        db.execute("UPDATE keys SET record = ? WHERE name = 'newer'", (json.dumps(record),))
    admin.revoke_key("good", actor="t")  # the admin reads the store too (and logs the record)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert await directory.refresh()
    assert directory.lookup(plain["good"]) == "revoked"
    assert directory.lookup(plain["bad"]) is None  # refused as unknown until fixed
    newer = directory.lookup(plain["newer"])
    assert isinstance(newer, Principal) and newer.key.limits == Limits(rpm=5)
    assert caplog.text.count("the key store's key record 'bad' cannot be read") == 1
    # Its team unreadable, a member key is refused: served without the team, its limits would not hold.
    assert directory.lookup(plain["member"]) is None
    # Written back from here, the newer gateway's fields would be lost: the write is refused.
    with pytest.raises(TenantError, match="written by a newer gateway") as refused:
        admin.update_key("newer", actor="t", rpm=7)
    assert refused.value.status == 409 and "limits.requests_per_day" in str(refused.value)
    with sqlite3.connect(path) as db:
        assert json.loads(db.execute("SELECT record FROM keys WHERE name = 'newer'").fetchone()[0]) == record
    store.close()


async def test_unknown_keys_catch_the_view_up_sharing_store_reads(tmp_path, monkeypatch):
    """A key made a moment ago elsewhere is found by the catch-up an unknown key triggers;
    unknown keys arriving together share one store read, and none reads the store again
    within CATCH_UP_GAP_S of the last (guessing keys costs the store little)."""
    import gateway.tenants.directory as directory_module

    clock = Clock()
    inner = SqliteTenantStore(tmp_path / "keys.sqlite3")
    store = FlakyStore(inner)
    directory = KeyDirectory(store, clock=clock)
    assert await directory.refresh()
    plain = TenantAdmin(inner, clock).create_key("late", actor="t").plain
    assert directory.lookup(plain) is None and store.version_reads == 1

    await asyncio.gather(*(directory.catch_up() for _ in range(50)))
    assert store.version_reads == 2  # fifty misses at once: one read
    found = directory.lookup(plain)
    assert isinstance(found, Principal) and found.key_name == "late"

    # A second key made at once (a provisioning flow making two): its miss, within the gap,
    # was refused unread (401). It now waits for the gap's end, and the misses that come
    # meanwhile share that read.
    second = TenantAdmin(inner, clock).create_key("later", actor="t").plain
    await asyncio.gather(*(directory.catch_up() for _ in range(20)))
    assert store.version_reads == 3
    found = directory.lookup(second)
    assert isinstance(found, Principal) and found.key_name == "later"
    monkeypatch.setattr(directory_module, "CATCH_UP_GAP_S", 0.0)
    await directory.catch_up()
    assert store.version_reads == 4  # each miss: one read


async def test_a_miss_during_a_read_waits_for_a_read_that_begins_after_it(tmp_path, monkeypatch):
    """A read under way may have begun before the key was made: a miss that joined it was
    refused a key the store already held. It waits for the next read instead, one for all
    the misses that arrive while the first is under way."""
    import gateway.tenants.directory as directory_module

    monkeypatch.setattr(directory_module, "CATCH_UP_GAP_S", 0.0)
    inner = SqliteTenantStore(tmp_path / "keys.sqlite3")
    store = FlakyStore(inner)
    directory = KeyDirectory(store, clock=Clock())
    assert await directory.refresh()
    reading, release = threading.Event(), threading.Event()
    version = store.version

    def slow_version() -> int:
        value = version()  # read before the key is made
        reading.set()
        release.wait(5)
        return value

    store.version = slow_version
    first = asyncio.ensure_future(directory.catch_up())
    await asyncio.to_thread(reading.wait, 5)
    store.version = version
    plain = TenantAdmin(inner, Clock()).create_key("made-meanwhile", actor="t").plain
    late = [asyncio.ensure_future(directory.catch_up()) for _ in range(5)]
    release.set()
    await first
    assert directory.lookup(plain) is None  # the first read began before the key was made
    await asyncio.gather(*late)
    found = directory.lookup(plain)
    assert isinstance(found, Principal) and found.key_name == "made-meanwhile"
    assert store.version_reads == 3  # the refresh, the first read, one read for the five


async def test_no_catch_up_reads_a_store_that_is_failing(tmp_path, monkeypatch):
    """While the store fails, an unknown key's catch-up would only wait out its timeout (a
    Redis outage held every unknown key's 401 that long): it reads nothing until the
    background refresh finds the store back."""
    import gateway.tenants.directory as directory_module

    monkeypatch.setattr(directory_module, "CATCH_UP_GAP_S", 0.0)
    store = FlakyStore(SqliteTenantStore(tmp_path / "keys.sqlite3"))
    directory = KeyDirectory(store, clock=Clock())
    assert await directory.refresh()
    store.down = True
    assert not await directory.refresh() and store.version_reads == 2
    await directory.catch_up()
    assert store.version_reads == 2
    store.down = False
    assert not await directory.refresh()  # back: nothing changed
    await directory.catch_up()
    assert store.version_reads == 4
