"""Everything a running gateway holds, created in the app's lifespan and handed to routes.

No module-level mutable state: two apps in one process (tests do this) share nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.api.auth import Authenticator
from gateway.backends.pool import BackendPool
from gateway.config.reload import ConfigHolder
from gateway.ids import RequestIds, SecretTokens
from gateway.metrics import Metrics
from gateway.proxy.outcome import Observers
from gateway.ratelimit import RateLimiter
from gateway.routing.live import LiveState
from gateway.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.conversations.store import ResponseStore
    from gateway.tenants.admin import TenantAdmin
    from gateway.usage.recorder import UsageRecorder
    from gateway.usage.store import UsageStore


@dataclass
class AppState:
    settings: Settings
    config: ConfigHolder
    backends: BackendPool
    auth: Authenticator
    observers: Observers = field(default_factory=Observers)
    request_ids: RequestIds = field(default_factory=RequestIds)
    response_ids: SecretTokens = field(default_factory=SecretTokens)  # of the Responses the gateway writes
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # background work to cancel at shutdown
    # Hooks run (in order) at shutdown, after in-flight requests drain; e.g. flush usage.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    stats: LiveState | None = None  # observed backend stats and circuits (routing), set in the lifespan
    metrics: Metrics = field(default_factory=Metrics)
    limiter: RateLimiter = field(default_factory=RateLimiter)  # replaced in the lifespan once Redis is known
    # Shared state for several replicas (usage aggregates, routing stats, rate limits);
    # None when GATEWAY_REDIS_URL is unset and everything is embedded.
    redis: Redis | None = None
    # The usage ledger (SQLite, or Redis when configured) and the observer writing to it.
    usage_store: UsageStore | None = None
    usage_recorder: UsageRecorder | None = None
    # Responses the gateway produced, for previous_response_id and GET/DELETE /v1/responses/{id}.
    response_store: ResponseStore | None = None
    # Virtual keys and teams (gateway/tenants): the admin actions over the key store.
    tenant_admin: TenantAdmin | None = None
