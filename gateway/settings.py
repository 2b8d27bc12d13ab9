"""Process settings from the environment (GATEWAY_*): where things are, not how to route.

Routing policy lives in the YAML file; these are the knobs an operator sets per deployment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

APP_DIR_NAME = "open-model-gateway"
# Where the data directory was before it was per user; a store left there is pointed out, not used.
LEGACY_DATA_DIR = Path("data")
# The shortest poll a setting may ask for: 0.000001 is above 0, and the poll loops then kept an
# idle gateway's core busy (10 ms costs a few percent of one).
MIN_INTERVAL_S = 0.01


def default_data_dir() -> Path:
    """Per user, not per current directory: `gateway serve` started from the checkout and
    `gateway rankings` run from anywhere else must open the same store. XDG's data home,
    as other command-line tools keep their state."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP_DIR_NAME
    try:
        return Path.home() / ".local" / "share" / APP_DIR_NAME
    except RuntimeError:  # no home directory at all (a bare container user): the old place
        return LEGACY_DATA_DIR.absolute()


def legacy_store_notice(data_dir: Path, chosen: bool = False) -> str | None:
    """One line when ./data/usage.sqlite3 (where earlier versions kept usage) exists in the
    current directory but is not the store in use: its history is not lost, just not read.
    None when the data directory was `chosen` (GATEWAY_DATA_DIR or --data-dir): earlier
    versions used ./data only by default, so an operator who names a directory has no
    history there to miss, and was told it on every command."""
    if chosen:
        return None
    legacy = LEGACY_DATA_DIR / "usage.sqlite3"
    if not legacy.is_file() or legacy.resolve() == (data_dir / "usage.sqlite3").resolve():
        return None
    return (
        f"note: {legacy.absolute()} (where earlier versions kept usage) is not used; the store is in "
        f"{data_dir}. To keep that history, move it there or set GATEWAY_DATA_DIR={LEGACY_DATA_DIR.absolute()}"
    )


class Settings(BaseSettings):
    # A variable set to nothing is unset: what compose makes of `${GATEWAY_HOST}` when the
    # shell has none. Taken as its value, an empty GATEWAY_HOST bound every interface and an
    # empty GATEWAY_DATA_DIR put the store in the current directory.
    # `inf` passes every `gt=0`: GATEWAY_SHUTDOWN_GRACE_S=inf was an OverflowError traceback
    # from `gateway serve`, an infinite flush interval never wrote usage. Seconds are finite.
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", env_ignore_empty=True, allow_inf_nan=False)

    config: Path = Path("policies/default.yaml")
    # Unset: default_data_dir(), the same for the server and the CLI wherever they run.
    data_dir: Path = Field(default_factory=default_data_dir)
    redis_url: str | None = None
    host: str = "127.0.0.1"
    # Bounded here so a bad value stops the start with its name: uvicorn took port 70000 as
    # 70000 mod 65536 and announced one port while serving another.
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: str = "info"
    # Client keys as `name:key,name2:key2`; empty means the gateway is open (no auth).
    api_keys: str = ""
    # Never open: with no client key at all (none made yet, or a key store that lost them and
    # a process restarted since), every request is refused rather than served to anyone.
    require_keys: bool = False
    # Key for /admin endpoints. Empty: key management over HTTP is off, and /admin/status and
    # /admin/reload accept the static client keys (or anyone, when the gateway is open).
    admin_key: str = ""
    # Operator ASGI middleware (CORS, tracing), comma-separated `module:attribute` import paths,
    # outermost first; each wraps every route, the fast ones too (gateway.api.fastpath).
    middleware: str = ""
    # Seconds between checks of the config file for edits (besides inotify events).
    reload_poll_s: float = Field(default=2.0, ge=MIN_INTERVAL_S)
    # Seconds in-flight requests get to finish on SIGTERM.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # Usage ledger: events are written in batches of this size, or every `usage_flush_s`;
    # at most `usage_buffer_max` wait in memory while the store is unreachable.
    # Off only to measure what recording costs (`make bench`); rankings then see no new calls.
    usage_recording: bool = True
    usage_batch_size: int = Field(default=500, ge=1)
    usage_flush_s: float = Field(default=1.0, ge=MIN_INTERVAL_S)
    usage_buffer_max: int = Field(default=100_000, ge=1)
    usage_shutdown_flush_s: float = Field(default=10.0, ge=0)
    # Apps (HTTP-Referer) with a row of their own in a day's aggregates; later ones count as `others`.
    usage_max_apps_per_day: int = Field(default=1000, ge=1)
    # Seconds a /v1/rankings answer is served from memory before a background refresh; 0: none kept.
    rankings_refresh_s: float = Field(default=5.0, ge=0)
    # Who writes usage to the store: a child process (`process`: the writes' CPU stays off the
    # proxy's event loop) or the gateway process itself (`inline`: one process, for a
    # one-core container where a second process would only compete for the same core).
    usage_writer: Literal["process", "inline"] = "process"
    # Usage retention in days (0 keeps them): raw events (SQLite's `events` rows, deleted
    # hourly in small batches; Redis's per-day event streams, expired by age) and the per-day
    # aggregates rankings read (kept by default: small, and what every ranking needs).
    usage_events_retention_days: int = Field(default=35, ge=0)
    usage_aggregates_retention_days: int = Field(default=0, ge=0)
    # A second Redis for the raw event streams only: evictable data, for a Redis run with
    # `allkeys-lru`, so that the state Redis (GATEWAY_REDIS_URL) can run with `noeviction`.
    redis_events_url: str | None = None
    # CPUs the writer process runs on (e.g. `0` or `0,2`), when the gateway is pinned to
    # others with taskset or a cpuset; empty: the gateway's own (the process inherits them).
    usage_writer_cpus: str = ""
    # The HTTP front door (gateway/api/wire.py): what one client may hold or send.
    # Request heads over these limits get a 431.
    max_headers: int = Field(default=100, ge=1)
    max_header_bytes: int = Field(default=65536, ge=1024)
    # A request head must arrive within this of the connection opening (or of its first byte
    # on a kept-alive connection); a body may pause at most this long. Else 408 and close.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    # Idle seconds a kept-alive connection is held between requests.
    keepalive_timeout_s: float = Field(default=5.0, gt=0)
    # Open connections plus requests in progress, per worker process; past it requests get a
    # 503 (except /health, /ready and /metrics). 0: no cap.
    max_connections: int = Field(default=1000, ge=0)
    # Upstream calls in flight per worker process, all backends together; past it every
    # backend is full (gateway/backends/inflight.py). 0: max_connections (0 there: no cap).
    max_upstream_inflight: int = Field(default=0, ge=0)

    # -- stored responses (POST /v1/responses, previous_response_id): gateway/conversations --
    # Days a stored response is kept (then it expires: its id answers 404), and the largest
    # record kept (the response plus the conversation it continues; larger ones are not stored).
    responses_retention_days: float = Field(default=30, gt=0)
    responses_max_record_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # One key's stored responses together (its oldest are evicted past it).
    responses_max_bytes_per_key: int = Field(default=256 * 1024 * 1024, ge=1024)

    # -- tenants (virtual keys, limits): gateway/tenants ------------------------------------
    # Seconds between checks of the key store for new, changed or revoked keys.
    keys_refresh_s: float = Field(default=2.0, ge=MIN_INTERVAL_S)
    # Failed authentications per client address per minute before they get 429s.
    auth_failures_per_minute: int = Field(default=30, ge=1)
    # Addresses / networks whose X-Forwarded-For is believed (`10.0.0.1,10.1.0.0/16`).
    trusted_proxies: str = ""
    # Seconds after which a call that never settled (its replica died) frees its slot.
    limits_inflight_ttl_s: float = Field(default=600.0, gt=0)

    @field_validator("api_keys")
    @classmethod
    def _no_empty_key(cls, value: str) -> str:
        # `ops:${OPS_KEY}` with the variable unset is `ops:`: a key of "" that an empty
        # `Authorization: Bearer ` matched, letting anyone in as `ops` (admin status included).
        seen: dict[str, str] = {}
        for name, key, named in _api_key_entries(value):
            if named and not key:
                raise ValueError(f"the entry named `{name}` has no key (name:key)")
            if named and not name:
                raise ValueError("an entry has a key but no name (name:key)")  # the key is not repeated
            if not name.isprintable():
                # The name is the ledger's `key` label, which drops control characters: the
                # calls would be recorded under another name than the one limits name.
                raise ValueError(f"the name {name!r} holds a control character")
            # One key under two names: its calls were all recorded as the last name's, and
            # the other name's limits never applied (the key itself is not repeated here).
            if key in seen and seen[key] != name:
                raise ValueError(f"the entries `{seen[key]}` and `{name}` have the same key: give each its own")
            seen[key] = name
        return value

    @field_validator("admin_key")
    @classmethod
    def _an_admin_key(cls, value: str, info: ValidationInfo) -> str:
        # `GATEWAY_ADMIN_KEY= sk-admin` (an env file's space after `=`): a key no client can
        # send, a header's value losing its surrounding spaces; every admin call was a 401.
        value = value.strip()
        # One secret pasted into both: whoever holds that client key could mint, rotate and
        # revoke keys and read everyone's usage (api_keys is validated first; if it was
        # refused, it is not in `data` and that refusal is the one said).
        if value and "api_keys" in info.data:
            owner = Settings.client_keys_of(info.data["api_keys"]).get(value)
            if owner is not None:
                raise ValueError(
                    f"it is also the client key of `{owner}` in GATEWAY_API_KEYS: give the admin a key of its own"
                )
        return value

    @field_validator("log_level")
    @classmethod
    def _a_log_level(cls, value: str) -> str:
        # `warn` or `verbose` was a KeyError traceback from `gateway serve` (uvicorn's table).
        if value.lower() not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return value.lower()

    @field_validator("redis_url", "redis_events_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if value:
            # A port out of range or a bad option: said here, by the variable's name, rather
            # than as a traceback from the first command that connects. redis-py's own parser
            # reads it (a pool connects only when first used).
            from redis import ConnectionPool

            try:
                ConnectionPool.from_url(value)
            except ValueError as exc:
                raise ValueError(f"not a Redis URL: {exc}") from None
        return value

    @field_validator("data_dir")
    @classmethod
    def _a_directory(cls, value: Path) -> Path:
        # `~/gw` from an env file, a systemd unit or `--data-dir=~/gw` reaches us unexpanded
        # (no shell did it): taken as given it made a directory named `~` in the current one.
        try:
            value = value.expanduser()
        except RuntimeError:  # no home directory to expand it to: the path as given
            pass
        # Every store opens a file in it: a regular file there was a traceback from each command.
        try:
            if value.exists() and not value.is_dir():
                raise ValueError(f"{value} is not a directory")
        except OSError as exc:  # a parent this user may not search (EACCES): said, not a traceback
            raise ValueError(f"cannot use {value}: {exc.strerror}") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for item in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
        return value

    @field_validator("usage_writer_cpus")
    @classmethod
    def _cpu_list(cls, value: str) -> str:
        if not re.fullmatch(r"\s*(\d+\s*(,\s*\d+\s*)*)?", value):
            raise ValueError("expected CPU numbers separated by commas, e.g. 0 or 0,2")
        return value

    def writer_cpus(self) -> list[int]:
        return [int(cpu) for cpu in self.usage_writer_cpus.split(",") if cpu.strip()]

    def client_keys(self) -> dict[str, str]:
        """key -> name."""
        return self.client_keys_of(self.api_keys)

    @staticmethod
    def client_keys_of(api_keys: str) -> dict[str, str]:
        """GATEWAY_API_KEYS' `name:key,...` as key -> name."""
        return {key: name for name, key, _ in _api_key_entries(api_keys)}


def _api_key_entries(api_keys: str) -> list[tuple[str, str, bool]]:
    """GATEWAY_API_KEYS' entries as (name, key, whether the entry named itself): `name:key`,
    or a bare key, which is `default`'s. Spaces around either part are not theirs: `ops: sk-1`
    as lists are written made a key " sk-1" no client can send (a header's value loses its
    leading space), booked as "ops " when the space was before the colon."""
    entries = []
    for item in filter(None, (p.strip() for p in api_keys.split(","))):
        name, sep, key = item.partition(":")
        if sep:
            entries.append((name.strip(), key.strip(), True))
        else:
            entries.append(("default", name, False))
    return entries


def settings_problems(exc: ValidationError) -> list[str]:
    """A Settings validation error as one line per variable (`GATEWAY_PORT: ...`), for the
    CLI to print instead of pydantic's traceback."""
    out = []
    for error in exc.errors(include_url=False):
        field = "_".join(str(part) for part in error["loc"])
        shown = "" if field in _SECRET_FIELDS else f"={error.get('input')!r}"  # never a key on stderr
        out.append(f"GATEWAY_{field.upper()}{shown}: {error['msg']}")
    return out


_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_SECRET_FIELDS = frozenset({"api_keys", "admin_key", "redis_url", "redis_events_url"})  # keys, passwords
