"""Stored responses in one SQLite file in the data directory: no other service needed.

Every statement runs on the store's one thread with its own connection (WAL, so several
gateway worker processes share the file), never on the event loop. A read checks the
expiry itself, so an expired record is never served; the rows behind it are deleted at most
once every `prune_every_s`, in small batches, by the next write.
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
_OWNED = "SELECT id, length(data) FROM responses WHERE owner = ? AND expires_at > ? ORDER BY expires_at DESC"
_OWNED_BYTES = "SELECT COALESCE(SUM(length(data)), 0) FROM responses WHERE owner = ? AND expires_at > ?"
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
            self._db = db
            self._file = file_identity(self.path)
        return self._db

    async def _put(self, owner: str, response_id: str, data: bytes) -> bool:
        return await self._run(self._write, owner, response_id, data)

    def _write(self, owner: str, response_id: str, data: bytes) -> bool:
        db = self._connection()
        now = self._clock()
        written = db.execute(_PUT, (response_id, owner, now + self.limits.ttl_s, data, now)).rowcount > 0
        if written and db.execute(_OWNED_BYTES, (owner, now)).fetchone()[0] > self.limits.max_owner_bytes:
            self._evict(db, owner, response_id, now)
        if now >= self._next_prune:
            self._next_prune = now + self._prune_every_s
            deleted = self._prune(db, now)
            if deleted:
                log.info("deleted %d stored response(s) past their retention", deleted)
        return written

    def _evict(self, db: sqlite3.Connection, owner: str, kept: str, now: float) -> None:
        """Delete the owner's oldest records past its byte budget (never `kept`, just written)."""
        total = 0
        evicted = 0
        for response_id, size in db.execute(_OWNED, (owner, now)).fetchall():
            total += size
            if total > self.limits.max_owner_bytes and response_id != kept:
                db.execute(_EVICT, (response_id, owner))
                evicted += 1
        log.info("evicted %d stored response(s) of one key past its %d bytes", evicted, self.limits.max_owner_bytes)

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
