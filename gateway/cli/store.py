"""Which usage store a CLI command opens, and the one line saying so.

The commands that read or write usage (`gateway rankings`, `gateway usage import|export|report`)
open the store a gateway would (GATEWAY_REDIS_URL, else the SQLite file in the data
directory) and say which one on stderr, and that it is empty when it is: an empty store
reported as "0 requests" looks like lost data, when it usually means another store. They
say it once the store is open (`opened_store`): a store that cannot be used is the one line
`gateway.cli.main` prints, not called empty above it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # imported when used: `gateway --help` should not load pydantic
    from gateway.settings import Settings
    from gateway.usage.store import UsageStore

SQLITE_FILE = "usage.sqlite3"  # the name gateway.usage.stores.store_for gives the SQLite file
KEYS_FILE = "keys.sqlite3"  # and gateway.tenants.store.open_tenant_store the key store's


# Where `default_data_dir` looks, in its order: XDG_DATA_HOME moves the store, so a help that
# named only ~/.local/share sent users with it set looking where nothing is.
DATA_DIR_HELP = (
    "embedded store directory (default: $GATEWAY_DATA_DIR, else $XDG_DATA_HOME/open-model-gateway, "
    "else ~/.local/share/open-model-gateway)"
)


def add_store_flags(p: argparse.ArgumentParser, sqlite_file: str = SQLITE_FILE) -> None:
    """The flags choosing the store; and which one the command opens (`store_file`), for
    `gateway.cli.main` to name in the line it prints when that store fails."""
    p.add_argument(
        "--data-dir",
        help=DATA_DIR_HELP,
    )
    p.add_argument("--redis-url", help="shared store (default: $GATEWAY_REDIS_URL)")
    p.set_defaults(store_file=sqlite_file)


def settings_from(args: argparse.Namespace) -> Settings:
    from gateway.settings import Settings

    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    return Settings(**overrides)


def redacted_url(url: str) -> str:
    """The URL without its password (redis://:secret@host/0 -> redis://:***@host/0)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def describe_store(settings: Settings, sqlite_file: str = SQLITE_FILE) -> str:
    """`SQLite /path/usage.sqlite3` or `Redis redis://host:6379/0`, never a password."""
    if settings.redis_url:
        return f"Redis {redacted_url(settings.redis_url)}"
    return f"SQLite {(settings.data_dir / sqlite_file).absolute()}"


def store_is_empty(settings: Settings) -> bool | None:
    """True when the store holds no usage at all; None when that cannot be told (unreachable).

    Reads without opening the store (opening the SQLite store creates its file): asked
    before the command opens it, or after (`usage export`, once its tables exist)."""
    if settings.redis_url:
        import redis

        try:
            client = redis.Redis.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
            try:
                return next(client.scan_iter(match="{usage:*", count=1000), None) is None
            finally:
                client.close()
        except redis.RedisError:
            return None
    path = settings.data_dir / SQLITE_FILE
    if not path.is_file():
        return True
    import sqlite3  # here, not at the top: every `gateway` command imports this module

    try:
        with sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None
    except sqlite3.Error:
        return None


EMPTY_NOTE = " (empty: nothing recorded there yet)"


def announce_store(settings: Settings, command: str, verb: str = "reads", *, tell_empty: bool = True) -> None:
    """One line on stderr: which store `command` uses, and whether it is empty; plus the
    pointer to a store left in ./data by an earlier version.

    `tell_empty=False` for a command that streams what it reads: the server may record its
    first event between this check and the read, and a line saying "empty" above the event
    it then prints would contradict it; such a command says so after reading instead."""
    from gateway.settings import legacy_store_notice

    line = f"{command} {verb} {describe_store(settings)}"
    if tell_empty and store_is_empty(settings):
        line += EMPTY_NOTE
    print(line, file=sys.stderr)
    if not settings.redis_url:
        notice = legacy_store_notice(settings.data_dir, "data_dir" in settings.model_fields_set)
        if notice:
            print(notice, file=sys.stderr)


@asynccontextmanager
async def opened_store(
    settings: Settings, command: str, verb: str = "reads", *, tell_empty: bool = True
) -> AsyncIterator[UsageStore]:
    """The usage store the settings name, open, once `announce_store` has said which it is.

    Opened before it is announced: a store that cannot be used (a data directory that cannot
    be made, a file that is not a database, a Redis that is down) raises here, before a line
    could call it empty, and before the command touches anything else (an output file, its
    input); an import of no events would otherwise never find out."""
    from gateway.usage.stores import open_store

    store = open_store(settings)
    try:
        await store.ensure_open()
        announce_store(settings, command, verb, tell_empty=tell_empty)
        yield store
    finally:
        await store.aclose()
