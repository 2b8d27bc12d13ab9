"""Where keys, teams and the audit log live: one interface, SQLite and Redis behind it.

SQLite (`keys.sqlite3` in the data dir) for one host; Redis when GATEWAY_REDIS_URL is set,
so every replica reads the same keys. Both are synchronous: the CLI calls them directly
(no gateway needs to run), the gateway calls them from a thread (admin endpoints, the
directory's refresh), never on the request path. Each change writes the record, its audit
entry and a new version number together (one transaction, one script), so a reader that
sees the new version sees the change, and no change goes unaudited. A version is only ever
compared for equality (has the store changed since it was read?).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.sqlite_files import connect_private, file_identity
from gateway.tenants.keys import AuditEntry, Team, TenantError, VirtualKey

if TYPE_CHECKING:
    import redis

    from gateway.settings import Settings

SQLITE_FILE = "keys.sqlite3"
REDIS_PREFIX = "gw:tenants:"
# An audit `limit` this large is "every entry": both stores count in signed 64-bit integers.
AUDIT_ALL = 2**62
log = logging.getLogger("gateway.tenants")
_Record = TypeVar("_Record", VirtualKey, Team)


class TenantStore(Protocol):
    def version(self) -> int: ...

    def all_keys(self) -> list[VirtualKey]: ...

    def all_teams(self) -> list[Team]: ...

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` entries, oldest first."""
        ...

    def insert_key(self, key: VirtualKey, entry: AuditEntry) -> None:
        """Raises TenantError (409) if a key of that name exists."""
        ...

    def replace_key(self, key: VirtualKey, entry: AuditEntry, previous: VirtualKey) -> bool:
        """Write `key` only if the stored record still reads as `previous` (what the change
        was computed from); False, writing nothing, if another writer changed it first."""
        ...

    def insert_team(self, team: Team, entry: AuditEntry) -> None: ...

    def replace_team(self, team: Team, entry: AuditEntry, previous: Team) -> bool:
        """Like replace_key."""
        ...

    def close(self) -> None: ...


def store_failure(exc: BaseException) -> bool:
    """Whether `exc` is a store's failure (SQLite's or Redis's: down, locked, corrupt) rather
    than a bug: what callers report as the store's (503, one line) instead of a traceback.
    redis is looked up only if something imported it: an exception cannot be one otherwise."""
    redis = sys.modules.get("redis.exceptions")
    return isinstance(exc, sqlite3.Error) or (redis is not None and isinstance(exc, redis.RedisError))


def store_timed_out(exc: BaseException) -> bool:
    """Whether `exc` is a Redis call that timed out: sent, its outcome unknown (a hung Redis
    runs it when it resumes), unlike a refused connection or a SQLite transaction that did
    not commit. Looked up as `store_failure` does."""
    redis = sys.modules.get("redis.exceptions")
    return redis is not None and isinstance(exc, redis.TimeoutError)


def open_tenant_store(settings: Settings) -> TenantStore:
    if settings.redis_url:
        return RedisTenantStore.from_url(settings.redis_url)
    return SqliteTenantStore(Path(settings.data_dir) / SQLITE_FILE)


def _exists(kind: str, name: str) -> TenantError:
    return TenantError(f"A {kind} named `{name}` already exists.", status=409, code="already_exists")


def _entry_json(entry: AuditEntry) -> str:
    return json.dumps(
        {"at": entry.at, "actor": entry.actor, "action": entry.action, "target": entry.target, "detail": entry.detail}
    )


def _entry(text: str | bytes) -> AuditEntry:
    return AuditEntry(**json.loads(text))


def _reads_as(previous: VirtualKey | Team, kind: type[VirtualKey] | type[Team]) -> Callable[[str | bytes | None], bool]:
    """Whether a stored record is still `previous`. An update is read, changed, then written:
    without this check a revoke answered 200 could be undone by an update that read the key
    just before it (both wrote whole records), and a rotated secret could be dropped."""

    def unchanged(text: str | bytes | None) -> bool:
        if text is None:
            return False
        stored = json.loads(text)
        record = kind.from_json(stored)
        lost = _lost_fields(stored, record.to_json())
        if lost:
            # Written by a newer gateway (a rolling upgrade): read, its new fields are ignored,
            # but written back from here they would be gone.
            raise TenantError(
                f"The {'team' if kind is Team else 'key'} `{record.name}` was written by a newer gateway "
                f"(fields this one does not know: {', '.join(lost[:5])}): change it with that version.",
                status=409,
                code="written_by_newer_gateway",
            )
        return record == previous

    return unchanged


def _lost_fields(stored: Any, written: Any, path: str = "") -> list[str]:
    """The fields of a stored record (nested objects and lists of them too) that writing
    `written` back would drop."""
    if isinstance(stored, dict) and isinstance(written, dict):
        out = [path + str(k) for k in stored if k not in written]
        for k, v in stored.items():
            if k in written:
                out += _lost_fields(v, written[k], f"{path}{k}.")
        return out
    if isinstance(stored, list) and isinstance(written, list) and len(stored) == len(written):
        return [
            f for i, (a, b) in enumerate(zip(stored, written, strict=True)) for f in _lost_fields(a, b, f"{path}{i}.")
        ]
    return []


class SqliteTenantStore:
    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS teams (name TEXT PRIMARY KEY, record TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT OR IGNORE INTO meta VALUES ('version', 0);
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: the data dir
        self.path = path
        self._lock = threading.Lock()
        # Files this store has opened since it was made: the version it reports counts them
        # (see `version`).
        self._opened = 0
        with self._lock:
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        # One connection used from whichever thread calls (the gateway's to_thread workers),
        # one at a time; WAL so the CLI and several gateway processes can share the file.
        db = connect_private(self.path, timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(self._SCHEMA)
        except BaseException:
            db.close()
            raise
        self._file = file_identity(self.path)
        self._opened += 1
        return db

    def _current(self) -> sqlite3.Connection:
        """The connection to the file at `path` now (called holding the lock). A file replaced
        under a running gateway (restored from a backup, or moved aside and made anew by the
        CLI) is opened in its place: the connection opened at start would read and write the
        old one for ever, its keys still working, the new file's never. A path with no file
        (moved away, nothing in its place yet) keeps the one open."""
        found = file_identity(self.path)
        if found is not None and found != self._file:
            self._db.close()
            self._db = self._open()
        return self._db

    def version(self) -> int:
        """The stored version number, plus above it how many files this store has opened: a
        replaced file is read in full even when its number is the old file's."""
        with self._lock:
            # The schema inserts the row and nothing deletes it: there is always one.
            row: tuple[int] = self._current().execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        return (self._opened << 48) + row[0]

    def all_keys(self) -> list[VirtualKey]:
        with self._lock:
            rows = self._current().execute("SELECT name, record FROM keys ORDER BY name").fetchall()
        return _readable(rows, VirtualKey.from_json, "key")

    def all_teams(self) -> list[Team]:
        with self._lock:
            rows = self._current().execute("SELECT name, record FROM teams ORDER BY name").fetchall()
        return _readable(rows, Team.from_json, "team")

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        with self._lock:
            limit = min(limit, AUDIT_ALL)  # past SQLite's integers: an OverflowError, not "all of it"
            rows = self._current().execute("SELECT entry FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_entry(r[0]) for r in reversed(rows)]

    def _write(
        self,
        sql: str,
        name: str,
        record: dict[str, Any],
        entry: AuditEntry,
        kind: str,
        unchanged: Callable[[str | None], bool] | None = None,
    ) -> bool:
        table = "keys" if kind == "key" else "teams"
        with self._lock:
            self._current()
            try:
                self._db.execute("BEGIN IMMEDIATE")  # holds the file's write lock: other processes wait
                if unchanged is not None:
                    row = self._db.execute(f"SELECT record FROM {table} WHERE name = ?", (name,)).fetchone()
                    if not unchanged(row[0] if row else None):
                        self._db.execute("ROLLBACK")
                        return False
                self._db.execute(sql, (name, json.dumps(record)))
                self._db.execute("INSERT INTO audit (entry) VALUES (?)", (_entry_json(entry),))
                self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'version'")
                self._db.execute("COMMIT")
                return True
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise _exists(kind, name) from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def insert_key(self, key: VirtualKey, entry: AuditEntry) -> None:
        self._write("INSERT INTO keys VALUES (?, ?)", key.name, key.to_json(), entry, "key")

    def replace_key(self, key: VirtualKey, entry: AuditEntry, previous: VirtualKey) -> bool:
        sql = "INSERT OR REPLACE INTO keys VALUES (?, ?)"
        return self._write(sql, key.name, key.to_json(), entry, "key", _reads_as(previous, VirtualKey))

    def insert_team(self, team: Team, entry: AuditEntry) -> None:
        self._write("INSERT INTO teams VALUES (?, ?)", team.name, team.to_json(), entry, "team")

    def replace_team(self, team: Team, entry: AuditEntry, previous: Team) -> bool:
        sql = "INSERT OR REPLACE INTO teams VALUES (?, ?)"
        return self._write(sql, team.name, team.to_json(), entry, "team", _reads_as(previous, Team))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _readable(rows: Iterable[tuple[Any, Any]], parse: Callable[[dict[str, Any]], _Record], kind: str) -> list[_Record]:
    """The records of (name, stored JSON) `rows` that can be read, each error logged and the
    record left out. One record that cannot be read (a hand edit, a field missing) failed the
    whole load, and every replica then kept the keys it last read, revoked ones with them,
    until it restarted; left out, that key is refused (as unknown; a team's keys with it:
    `directory.build_view`) and the rest follow the store. Fields a newer gateway added are
    ignored where they are read (`VirtualKey.from_json`), and kept from being written back
    without them (`_reads_as`)."""
    out = []
    for name, record in rows:
        try:
            out.append(parse(json.loads(record)))
        except (ValueError, TypeError, KeyError, AttributeError, TenantError) as exc:
            shown = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            log.error(
                "the key store's %s record %r cannot be read (%s: %s): left out, so it is refused until fixed",
                kind,
                shown[:200],
                type(exc).__name__,
                str(exc)[:200],
            )
    return out


# KEYS: the records hash, the audit list, the version. ARGV: name, record, entry, 1 to
# refuse an existing name, the new version. One script, so record, audit and version change
# together. The version is a fresh random number per write, not a counter: a Redis that lost
# writes (restarted without its data, restored from an older snapshot) and took as many new
# ones counted back to the number a gateway knew, and its view was never read again (the
# lost keys kept working, the new ones were refused). Readers only compare it for equality.
_APPLY = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[5])
return 1
"""
_WRITE = (
    """
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end"""
    + _APPLY
)

# As _WRITE, for a change: ARGV[4] is the record the change was computed from; another
# record there (someone wrote in between) refuses the write.
_SWAP = (
    """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[4] then
  return 0
end"""
    + _APPLY
)


def _new_version() -> int:
    """A version no earlier state of the store had (1 to 2^62: never an empty store's 0, and
    within the int64 an older gateway's INCR of it still fits)."""
    return 1 + secrets.randbits(62)


class RedisTenantStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._write_script = client.register_script(_WRITE)
        self._swap_script = client.register_script(_SWAP)
        self._keys = REDIS_PREFIX + "keys"
        self._teams = REDIS_PREFIX + "teams"
        self._audit = REDIS_PREFIX + "audit"
        self._version = REDIS_PREFIX + "version"

    @classmethod
    def from_url(cls, url: str) -> RedisTenantStore:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0))

    def version(self) -> int:
        return int(self._redis.get(self._version) or 0)

    def all_keys(self) -> list[VirtualKey]:
        records = self._redis.hgetall(self._keys)
        return sorted(_readable(records.items(), VirtualKey.from_json, "key"), key=lambda k: k.name)

    def all_teams(self) -> list[Team]:
        records = self._redis.hgetall(self._teams)
        return sorted(_readable(records.items(), Team.from_json, "team"), key=lambda t: t.name)

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        return [_entry(e) for e in self._redis.lrange(self._audit, -min(limit, AUDIT_ALL), -1)]

    def _write(
        self, where: str, name: str, record: dict[str, Any], entry: AuditEntry, refuse_existing: bool, kind: str
    ) -> None:
        args = [name, json.dumps(record), _entry_json(entry), "1" if refuse_existing else "0", _new_version()]
        if not self._write_script(keys=[where, self._audit, self._version], args=args):
            raise _exists(kind, name)

    def _swap(
        self, where: str, name: str, record: dict[str, Any], entry: AuditEntry, unchanged: Callable[[Any], bool]
    ) -> bool:
        """Write only if the stored record is unchanged since it was read: the script writes
        only if the record is still, byte for byte, the one checked here (a write by anyone in
        between, another replica or the CLI, makes it refuse)."""
        current = self._redis.hget(where, name)
        if current is None or not unchanged(current):
            return False
        args = [name, json.dumps(record), _entry_json(entry), current, _new_version()]
        return bool(self._swap_script(keys=[where, self._audit, self._version], args=args))

    def insert_key(self, key: VirtualKey, entry: AuditEntry) -> None:
        self._write(self._keys, key.name, key.to_json(), entry, True, "key")

    def replace_key(self, key: VirtualKey, entry: AuditEntry, previous: VirtualKey) -> bool:
        return self._swap(self._keys, key.name, key.to_json(), entry, _reads_as(previous, VirtualKey))

    def insert_team(self, team: Team, entry: AuditEntry) -> None:
        self._write(self._teams, team.name, team.to_json(), entry, True, "team")

    def replace_team(self, team: Team, entry: AuditEntry, previous: Team) -> bool:
        return self._swap(self._teams, team.name, team.to_json(), entry, _reads_as(previous, Team))

    def close(self) -> None:
        self._redis.close()
