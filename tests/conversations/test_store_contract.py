"""Both stored-responses stores keep the same promises: round trip, ownership, deletion,
the size limit and the TTL. The Redis one runs on a private redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.conversations.redis_store import RedisResponseStore
from gateway.conversations.sqlite_store import SqliteResponseStore
from gateway.conversations.store import DEFAULT_LIMITS, ResponseStore, StoredResponse, StoreLimits, StoreUnavailable


def _record(response_id: str = "resp_abc", text: str = "hi") -> StoredResponse:
    response = {"id": response_id, "object": "response", "output": [{"type": "message", "content": text}]}
    items = [{"type": "message", "role": "user", "content": "hello"}, *response["output"]]
    return StoredResponse(response, items)


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """Factory: make_store(limits) -> a store of each kind in turn."""
    made: list[ResponseStore] = []

    def make(limits: StoreLimits = DEFAULT_LIMITS) -> ResponseStore:
        if request.param == "sqlite":
            store: ResponseStore = SqliteResponseStore(tmp_path / f"responses{len(made)}.sqlite3", limits)
        else:
            from redis.asyncio import Redis

            server = request.getfixturevalue("redis_server")
            store = RedisResponseStore(Redis.from_url(server.url), limits, owns_client=True)
        made.append(store)
        return store

    return make  # each test closes its store in its own event loop


async def test_a_record_round_trips_for_its_owner(make_store):
    store = make_store()
    try:
        record = _record()
        assert await store.put("alice", record) == "stored"
        got = await store.get("alice", "resp_abc")
        assert got == record
        assert got is not None and got.id == "resp_abc"
    finally:
        await store.aclose()


async def test_another_owner_sees_nothing_and_cannot_delete(make_store):
    store = make_store()
    try:
        await store.put("alice", _record())
        assert await store.get("bob", "resp_abc") is None
        assert await store.delete("bob", "resp_abc") is False
        assert await store.get("alice", "resp_abc") == _record()  # bob's delete removed nothing
    finally:
        await store.aclose()


async def test_unknown_ids_are_none(make_store):
    store = make_store()
    try:
        assert await store.get("alice", "resp_missing") is None
        assert await store.delete("alice", "resp_missing") is False
    finally:
        await store.aclose()


async def test_delete_removes_the_record_once(make_store):
    store = make_store()
    try:
        await store.put("alice", _record())
        assert await store.delete("alice", "resp_abc") is True
        assert await store.get("alice", "resp_abc") is None
        assert await store.delete("alice", "resp_abc") is False
    finally:
        await store.aclose()


async def test_a_record_over_the_size_limit_is_not_stored(make_store):
    store = make_store(StoreLimits(max_record_bytes=2048))
    try:
        small, large = _record("resp_small"), _record("resp_large", "x" * 4096)
        assert len(small.encode()) <= 2048 < len(large.encode())
        assert await store.put("alice", small) == "stored"
        assert await store.put("alice", large) == "too_large"
        assert await store.get("alice", "resp_large") is None
        assert await store.get("alice", "resp_small") == small
    finally:
        await store.aclose()


async def test_a_record_too_deep_to_write_is_not_stored_and_says_so(make_store):
    """Hostile testing: an input item's extra field nested 300 deep (orjson reads it, the
    translation does not read it, nothing sends it) failed the store's write with an error
    logged as the completed hook's traceback. It is a reason not to store, as size is."""
    deep: dict = {}
    for _ in range(300):
        deep = {"x": deep}
    record = _record("resp_deep")
    record.items[0]["extra"] = deep
    store = make_store()
    try:
        assert await store.put("alice", record) == "not_encodable"
        assert await store.get("alice", "resp_deep") is None
        assert await store.put("alice", _record()) == "stored"  # the store goes on
    finally:
        await store.aclose()


async def test_records_expire_after_the_ttl(make_store):
    store = make_store(StoreLimits(ttl_s=0.4))
    try:
        await store.put("alice", _record())
        assert await store.get("alice", "resp_abc") is not None
        await asyncio.sleep(0.6)
        assert await store.get("alice", "resp_abc") is None
        assert await store.delete("alice", "resp_abc") is False
    finally:
        await store.aclose()


async def test_writing_the_same_id_again_replaces_it(make_store):
    store = make_store()
    try:
        await store.put("alice", _record(text="first"))
        await store.put("alice", _record(text="second"))
        assert await store.get("alice", "resp_abc") == _record(text="second")
    finally:
        await store.aclose()


async def test_one_owner_never_replaces_anothers_record(make_store):
    """Ids of natively answered responses are the backend's: a reused one must not let a key
    overwrite (and so read back) another key's response."""
    store = make_store()
    try:
        assert await store.put("alice", _record(text="alice's")) == "stored"
        assert await store.put("bob", _record(text="bob's")) == "id_taken"
        assert await store.get("alice", "resp_abc") == _record(text="alice's")
        assert await store.get("bob", "resp_abc") is None
    finally:
        await store.aclose()


async def test_an_expired_record_of_another_owner_gives_its_id_up(make_store):
    store = make_store(StoreLimits(ttl_s=0.3))
    try:
        await store.put("alice", _record(text="alice's"))
        await asyncio.sleep(0.5)
        assert await store.put("bob", _record(text="bob's")) == "stored"
        assert await store.get("bob", "resp_abc") == _record(text="bob's")
        assert await store.get("alice", "resp_abc") is None
    finally:
        await store.aclose()


async def test_many_owners_many_records(make_store):
    store = make_store()
    try:
        for i in range(20):
            await store.put(f"key{i % 3}", _record(f"resp_{i}", f"text {i}"))
        for i in range(20):
            assert await store.get(f"key{i % 3}", f"resp_{i}") == _record(f"resp_{i}", f"text {i}")
            assert await store.get(f"key{(i + 1) % 3}", f"resp_{i}") is None
    finally:
        await store.aclose()


async def test_a_redis_that_is_gone_is_store_unavailable(redis_server):
    from redis.asyncio import Redis

    store = RedisResponseStore(Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1))
    await store.put("alice", _record())
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("alice", "resp_abc")
        with pytest.raises(StoreUnavailable):
            await store.put("alice", _record())
        with pytest.raises(StoreUnavailable):
            await store.delete("alice", "resp_abc")
    finally:
        await store.redis.aclose()


async def test_an_unopenable_sqlite_file_is_store_unavailable(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    store = SqliteResponseStore(blocker / "responses.sqlite3")
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("alice", "resp_abc")
    finally:
        await store.aclose()


async def test_sqlite_prunes_expired_rows_on_a_later_write(tmp_path):
    now = [1000.0]
    store = SqliteResponseStore(tmp_path / "r.sqlite3", StoreLimits(ttl_s=10), prune_every_s=60, clock=lambda: now[0])
    try:
        for i in range(3):
            await store.put("alice", _record(f"resp_{i}"))
        assert await store.count() == 3
        now[0] += 11  # all three expired, but the last prune was at the first write
        assert await store.get("alice", "resp_0") is None
        await store.put("alice", _record("resp_new"))  # 11 s after the last prune: not yet
        assert await store.count() == 4
        now[0] += 60
        await store.put("alice", _record("resp_newer"))  # past prune_every_s: expired rows go
        assert await store.count() == 1
        assert await store.get("alice", "resp_newer") is not None
    finally:
        await store.aclose()


async def test_two_sqlite_stores_share_one_file(tmp_path):
    """Two gateway workers open the same file: one's record is the other's to read."""
    a, b = SqliteResponseStore(tmp_path / "r.sqlite3"), SqliteResponseStore(tmp_path / "r.sqlite3")
    try:
        await a.put("alice", _record())
        assert await b.get("alice", "resp_abc") == _record()
        assert await b.delete("alice", "resp_abc") is True
        assert await a.get("alice", "resp_abc") is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_one_owners_records_stay_within_its_byte_budget_oldest_evicted_first(make_store):
    # Each record is about 1.2 KB; the budget holds three. A fourth evicts the oldest, a
    # replaced record is counted once, a deleted one gives its bytes back, and another
    # owner's records are never touched.
    store = make_store(StoreLimits(max_owner_bytes=4000))
    owner = f"carol-{id(store)}"  # the Redis server may be shared: an owner of this test's own
    try:
        records = [_record(f"resp_{i}", "x" * 500) for i in range(5)]
        assert 1000 < len(records[0].encode()) < 1333
        await store.put("dave", _record("resp_dave", "y" * 500))
        for record in records[:3]:
            assert await store.put(owner, record) == "stored"
            await asyncio.sleep(0.01)  # distinct write times
        assert [await store.get(owner, r.id) is not None for r in records[:3]] == [True] * 3
        await store.put(owner, records[2])  # the same id again: counted once
        assert await store.get(owner, "resp_0") is not None
        await store.put(owner, records[3])
        assert [await store.get(owner, r.id) is not None for r in records[:4]] == [False, True, True, True]
        assert await store.delete(owner, "resp_1") is True
        await store.put(owner, records[4])  # fits in what the delete gave back
        assert [await store.get(owner, r.id) is not None for r in records[2:5]] == [True, True, True]
        assert await store.get("dave", "resp_dave") is not None
    finally:
        await store.aclose()


def _owner_totals(path) -> tuple[dict[str, int], dict[str, int]]:
    """The bytes the file keeps per owner, and what its records add up to (expired included)."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        kept = dict(db.execute("SELECT owner, bytes FROM owner_bytes").fetchall())
        summed = dict(db.execute("SELECT owner, SUM(length(data)) FROM responses GROUP BY owner").fetchall())
    finally:
        db.close()
    return kept, summed


async def test_sqlite_keeps_each_owners_bytes_beside_its_records(tmp_path):
    """A write reads the owner's total rather than summing its records: summed, each write
    cost more than the last (a key storing streamed Responses went from 352 a second to 92
    with 5,600 records kept). The total follows every change: new, replaced, taken over when
    expired, deleted, evicted, pruned, and a second process's writes."""
    now = [1000.0]
    path = tmp_path / "r.sqlite3"
    limits = StoreLimits(ttl_s=10, max_owner_bytes=4000)
    store = SqliteResponseStore(path, limits, prune_every_s=3600, clock=lambda: now[0])
    other = SqliteResponseStore(path, limits, prune_every_s=3600, clock=lambda: now[0])
    try:
        await store.put("alice", _record("resp_1", "x" * 500))
        await store.put("alice", _record("resp_1", "x" * 900))  # replaced: counted once, at its new size
        await other.put("bob", _record("resp_2"))
        await store.put("bob", _record("resp_3", "y" * 300))
        kept, summed = _owner_totals(path)
        assert kept == summed and set(kept) == {"alice", "bob"}
        assert await other.delete("bob", "resp_2") is True
        assert _owner_totals(path)[0] == _owner_totals(path)[1]
        now[0] += 11  # resp_1 and resp_3 expired, not pruned
        await store.put("carol", _record("resp_1", "z" * 100))  # alice's expired id taken over
        kept, summed = _owner_totals(path)
        assert kept == summed and set(kept) == {"bob", "carol"}  # alice has nothing left
        for i in range(4):  # past carol's budget: her oldest evicted
            await store.put("carol", _record(f"resp_c{i}", "w" * 500))
        kept, summed = _owner_totals(path)
        assert kept == summed and kept["carol"] <= 4000
        now[0] += 3600
        await store.put("dave", _record("resp_d"))  # prunes everything expired: bob's and carol's
        assert _owner_totals(path) == ({"dave": _owner_totals(path)[1]["dave"]},) * 2
    finally:
        await store.aclose()
        await other.aclose()


async def test_sqlite_counts_an_owners_expired_records_out_before_evicting(tmp_path):
    """Expired records not yet pruned are in the owner's kept total; they go before any live
    record is evicted for them."""
    now = [1000.0]
    store = SqliteResponseStore(
        tmp_path / "r.sqlite3", StoreLimits(ttl_s=10, max_owner_bytes=4000), prune_every_s=3600, clock=lambda: now[0]
    )
    try:
        await store.put("alice", _record("resp_other"))  # the prune's hour starts here
        for i in range(3):
            await store.put("alice", _record(f"resp_old{i}", "x" * 500))
        now[0] += 11
        for i in range(3):
            await store.put("alice", _record(f"resp_new{i}", "x" * 500))
        assert [await store.get("alice", f"resp_new{i}") is not None for i in range(3)] == [True] * 3
        assert await store.count() == 3  # the expired ones deleted to make room, nothing else
    finally:
        await store.aclose()


async def test_a_sqlite_file_from_before_the_kept_totals_gets_them(tmp_path):
    """A file written by an earlier version (records, no totals) is counted once when opened:
    its records count against their owners' budgets from the first write on."""
    import sqlite3

    path = tmp_path / "r.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL, data BLOB NOT NULL);"
    )
    old = [_record(f"resp_{i}", "x" * 500) for i in range(3)]
    for i, record in enumerate(old):
        db.execute(
            "INSERT INTO responses VALUES (?, ?, ?, ?)", (record.id, "alice", time.time() + 86400 + i, record.encode())
        )
    db.commit()
    db.close()
    store = SqliteResponseStore(path, StoreLimits(max_owner_bytes=4000))
    try:
        assert await store.get("alice", "resp_0") is not None
        await store.put("alice", _record("resp_new", "x" * 500))  # a fourth: the oldest goes
        assert [await store.get("alice", f"resp_{i}") is not None for i in range(3)] == [False, True, True]
        kept, summed = _owner_totals(path)
        assert kept == summed
    finally:
        await store.aclose()
