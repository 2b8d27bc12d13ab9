"""Stored responses in one SQLite file in the data directory: no other service needed.

Every statement runs on the store's one thread with its own connection (WAL, so several
gateway worker processes share the file), never on the event loop. A read checks the
expiry itself, so an expired record is never served; the rows behind it are deleted at most
once every `prune_every_s`, in small batches, by the next write.

Each owner's bytes are kept beside its records (`owner_bytes`, kept by triggers, so every
statement and every process that changes a record changes them too): a write reads one row
to know whether the owner is past its budget. Summed over the owner's records on each
write, as before, a key that kept storing made every write slower than the last (352
streamed Responses a second at first, 92 with 5,600 records kept, 200 ms a write at the
default budget's 100,000).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, TypeVarTuple

from gateway.conversations.store import DEFAULT_LIMITS, ResponseStore, StoredResponse, StoreLimits, StoreUnavailable
from gateway.sqlite_files import connect_private, file_identity

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

log = logging.getLogger("gateway.conversations")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_expiry ON responses (expires_at);
CREATE INDEX IF NOT EXISTS responses_by_owner ON responses (owner, expires_at);
"""
# The owners' bytes, expired records not yet pruned included. One script under the write
# lock: a file an earlier version wrote (records, no totals) gets its totals filled once;
# two processes opening it at once never both fill them.
_TOTALS = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS owner_bytes (owner TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS responses_added AFTER INSERT ON responses BEGIN
    INSERT INTO owner_bytes (owner, bytes) VALUES (NEW.owner, length(NEW.data))
    ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS responses_removed AFTER DELETE ON responses BEGIN
    UPDATE owner_bytes SET bytes = bytes - length(OLD.data) WHERE owner = OLD.owner;
    DELETE FROM owner_bytes WHERE owner = OLD.owner AND bytes <= 0;
END;
CREATE TRIGGER IF NOT EXISTS responses_replaced AFTER UPDATE ON responses BEGIN
    UPDATE owner_bytes SET bytes = bytes - length(OLD.data) WHERE owner = OLD.owner;
    DELETE FROM owner_bytes WHERE owner = OLD.owner AND bytes <= 0;
    INSERT INTO owner_bytes (owner, bytes) VALUES (NEW.owner, length(NEW.data))
    ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes;
END;
INSERT INTO owner_bytes (owner, bytes) SELECT owner, SUM(length(data)) FROM responses
WHERE NOT EXISTS (SELECT 1 FROM owner_bytes) GROUP BY owner;
COMMIT;
"""
# A record with the same id is replaced only if it is the same owner's, or expired.
_PUT = (
    "INSERT INTO responses (id, owner, expires_at, data) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, data = excluded.data "
    "WHERE responses.owner = excluded.owner OR responses.expires_at <= ?"
)
_GET = "SELECT data FROM responses WHERE id = ? AND owner = ? AND expires_at > ?"
_DELETE = "DELETE FROM responses WHERE id = ? AND owner = ? AND expires_at > ?"
_PRUNE = "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM responses WHERE expires_at <= ? LIMIT ?)"
_PRUNE_BATCH = 500
# An owner's live records, newest first, with their sizes: what eviction walks.
_OWNER_BYTES = "SELECT bytes FROM owner_bytes WHERE owner = ?"
_OWNER_EXPIRED = "DELETE FROM responses WHERE owner = ? AND expires_at <= ?"
# An owner's live records, oldest first, with their sizes: what eviction walks until within budget.
_OLDEST = "SELECT id, length(data) FROM responses WHERE owner = ? AND expires_at > ? ORDER BY expires_at"
_EVICT = "DELETE FROM responses WHERE id = ? AND owner = ?"


class SqliteResponseStore(ResponseStore):
    name = "sqlite"

    def __init__(
        self,
        path: Path,
        limits: StoreLimits = DEFAULT_LIMITS,
        *,
        prune_every_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(limits)
        self.path = Path(path)
        self._clock = clock
        self._prune_every_s = prune_every_s
        self._next_prune = 0.0
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # the file `_db` opened
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responses-sqlite")

    async def _run(self, fn: Callable[[*_Args], _T], *args: *_Args) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:  # OSError: the data directory cannot be made
            raise StoreUnavailable(f"the response store {self.path.name} failed: {exc}") from None

    def _connection(self) -> sqlite3.Connection:
        """The connection to the file at `path` now. A file replaced under a running gateway
        (restored from a backup, or moved aside and made anew) is opened in its place: the
        connection opened first would go on storing responses in, and serving them from, a
        file no longer at the path. A path with no file (moved away, nothing in its place yet)
        keeps the open one rather than make a file in the way."""
        if self._db is not None:
            found = file_identity(self.path)
            if found is not None and found != self._file:
                self._db.close()
                self._db = None
                log.info("response store: %s was replaced under this process: using the file now there", self.path)
        if self._db is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: the data dir
            db = connect_private(self.path, timeout=5.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            try:
                db.executescript(_TOTALS)
            except BaseException:
                db.close()
                raise
            self._db = db
            self._file = file_identity(self.path)
        return self._db

    async def _put(self, owner: str, response_id: str, data: bytes) -> bool:
        return await self._run(self._write, owner, response_id, data)

    def _write(self, owner: str, response_id: str, data: bytes) -> bool:
        db = self._connection()
        now = self._clock()
        written = db.execute(_PUT, (response_id, owner, now + self.limits.ttl_s, data, now)).rowcount > 0
        if written and self._owner_bytes(db, owner) > self.limits.max_owner_bytes:
            db.execute(_OWNER_EXPIRED, (owner, now))  # counted until pruned: not live bytes
            total = self._owner_bytes(db, owner)
            if total > self.limits.max_owner_bytes:
                self._evict(db, owner, response_id, now, total)
        if now >= self._next_prune:
            self._next_prune = now + self._prune_every_s
            deleted = self._prune(db, now)
            if deleted:
                log.info("deleted %d stored response(s) past their retention", deleted)
        return written

    @staticmethod
    def _owner_bytes(db: sqlite3.Connection, owner: str) -> int:
        row = db.execute(_OWNER_BYTES, (owner,)).fetchone()
        return int(row[0]) if row else 0

    def _evict(self, db: sqlite3.Connection, owner: str, kept: str, now: float, total: int) -> None:
        """Delete the owner's oldest records until its `total` bytes are within its budget
        (never `kept`, just written): as many rows read as records evicted, and one more."""
        evicted = []
        for response_id, size in db.execute(_OLDEST, (owner, now)):
            if total <= self.limits.max_owner_bytes:
                break
            if response_id != kept:
                evicted.append(response_id)
                total -= size
        for response_id in evicted:
            db.execute(_EVICT, (response_id, owner))
        log.info(
            "evicted %d stored response(s) of one key past its %d bytes", len(evicted), self.limits.max_owner_bytes
        )

    def _prune(self, db: sqlite3.Connection, now: float) -> int:
        deleted = 0
        while True:
            count = db.execute(_PRUNE, (now, _PRUNE_BATCH)).rowcount
            deleted += count
            if count < _PRUNE_BATCH:
                return deleted

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        data = await self._run(self._read, owner, response_id)
        return StoredResponse.decode(data) if data is not None else None

    def _read(self, owner: str, response_id: str) -> bytes | None:
        row = self._connection().execute(_GET, (response_id, owner, self._clock())).fetchone()
        return bytes(row[0]) if row else None

    async def delete(self, owner: str, response_id: str) -> bool:
        return await self._run(self._delete, owner, response_id)

    def _delete(self, owner: str, response_id: str) -> bool:
        return self._connection().execute(_DELETE, (response_id, owner, self._clock())).rowcount > 0

    async def count(self) -> int:
        """Rows in the file, expired ones not yet pruned included (for tests and operators)."""
        return await self._run(lambda: int(self._connection().execute("SELECT count(*) FROM responses").fetchone()[0]))

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
