"""SQLite files only their owner can read, whatever the umask and the directory's mode.

The data directory is made 0700, but one that already existed (a volume, a directory the
operator made) keeps its mode, and SQLite creates its files with the process's umask
(usually 0644). The ledger names every key and app, the key store holds the keys' hashes and
the response store clients' prompts and answers: each file is made 0600 before SQLite opens
it, and SQLite gives its journals (`-wal`, `-shm`, `-journal`) the database file's mode.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

_JOURNALS = ("-wal", "-shm", "-journal")


def connect_private(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection to `path`, made (with its journals) 0600: autocommit (transactions are
    the caller's), usable from any one thread at a time, waiting up to `timeout` s on a lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: make sure
    except PermissionError:
        pass  # another user's file this process may write: its owner decides its mode
    finally:
        os.close(fd)
    for suffix in _JOURNALS:  # left by an earlier run, perhaps under another umask
        try:
            os.chmod(path.with_name(path.name + suffix), 0o600)
        except (FileNotFoundError, PermissionError):
            pass
    return sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)


def file_identity(path: Path) -> tuple[int, int] | None:
    """Which file `path` names (device, inode); None when there is none. A store compares it
    with the file it opened to see that file replaced under it (a backup restored, or the
    file moved aside and made anew): its connection would go on reading and writing the old
    file, which is no longer at the path, for as long as the process runs."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def unusable_database(path: Path) -> str | None:
    """Why the SQLite file at `path` can never be used (not a database, a corrupt header),
    else None (also when it does not exist yet: it is made on first use). Read at startup:
    such a file does not heal, and a gateway serving on it would drop every call's record
    (or stored response) while it answered. Only the header and the schema's pages are read,
    so a ledger of any size is checked at once (a page of events corrupt past them is met,
    logged and survived when used); a lock held by another process is not a fault."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None  # busy, locked, out of memory: not the file's state, met again when used
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None
