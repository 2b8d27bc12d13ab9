"""Process settings from the environment (GATEWAY_*): where things are, not how to route.

Routing policy lives in the YAML file; these are the knobs an operator sets per deployment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    config: Path = Path("policies/default.yaml")
    data_dir: Path = Path("data")
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"
    # Client keys as `name:key,name2:key2`; empty means the gateway is open (no auth).
    api_keys: str = ""
    # Key for /admin endpoints; empty means admin endpoints accept the client keys (or are open).
    admin_key: str = ""
    # Seconds between checks of the config file for edits (besides inotify events).
    reload_poll_s: float = 2.0
    # Seconds in-flight requests get to finish on SIGTERM.
    shutdown_grace_s: float = 30.0
    # Usage ledger: events are written in batches of this size, or every `usage_flush_s`;
    # at most `usage_buffer_max` wait in memory while the store is unreachable.
    # Off only to measure what recording costs (`make bench`); rankings then see no new calls.
    usage_recording: bool = True
    usage_batch_size: int = 500
    usage_flush_s: float = 1.0
    usage_buffer_max: int = 100_000
    usage_shutdown_flush_s: float = 10.0
    # Apps (HTTP-Referer) with a row of their own in a day's aggregates; later ones count as `others`.
    usage_max_apps_per_day: int = Field(default=1000, ge=1)
    # Seconds a /v1/rankings answer is served from memory before a background refresh; 0: none kept.
    rankings_refresh_s: float = Field(default=5.0, ge=0)
    # Who writes usage to the store: a child process (`process`: the writes' CPU stays off the
    # proxy's event loop) or the gateway process itself (`inline`: one process, for a
    # one-core container where a second process would only compete for the same core).
    usage_writer: Literal["process", "inline"] = "process"
    # CPUs the writer process runs on (e.g. `0` or `0,2`), when the gateway is pinned to
    # others with taskset or a cpuset; empty: the gateway's own (the process inherits them).
    usage_writer_cpus: str = ""

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
        keys: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.api_keys.split(","))):
            name, sep, key = item.partition(":")
            keys[key if sep else name] = name if sep else "default"
        return keys
