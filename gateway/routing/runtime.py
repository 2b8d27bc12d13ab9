"""Wiring routing's live parts into a running app: the observed state, its Redis sharing,
the active health prober, and the circuit-state gauge. Called once from the app's lifespan.

Each loop runs under `gateway.supervise`: one that dies of an unexpected error is logged,
counted and restarted instead of silently leaving routing without probes or sharing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.routing.health import HealthProber
from gateway.routing.live import LiveState
from gateway.routing.shared import SharedLiveState
from gateway.supervise import start_supervised

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.backends.pool import BackendPool
    from gateway.config.snapshot import ConfigSnapshot

log = logging.getLogger("gateway.routing")


def start_routing(
    current: Callable[[], ConfigSnapshot],
    backends: BackendPool,
    redis: Redis | None,
    *,
    on_restart: Callable[[str], None],
    set_circuit_state: Callable[[str, str, int], None],
    on_sync_failure: Callable[[], None] | None = None,
) -> tuple[LiveState, list[asyncio.Task[None]]]:
    """The LiveState the pipeline reads (the caller registers it as an observer) and the tasks
    that keep it: health probes, Redis sharing, the circuit-state gauge. Given the few things
    it needs (the current snapshot, the adapters, Redis, three metrics hooks) rather than the
    app's state, so routing depends on nothing above it."""
    live = LiveState(current)
    live.config_applied(current())  # the settings later reloads are compared with
    prober = HealthProber(live.health, current, backends)
    tasks = [start_supervised("health_prober", prober.run, on_restart)]
    if redis is not None:
        interval = current().config.gateway.routing.shared_sync_s
        shared = SharedLiveState(redis, live, interval, on_sync_failure=on_sync_failure)
        tasks.append(start_supervised("shared_state_sync", shared.run, on_restart))
    tasks.append(
        start_supervised("circuit_state_export", lambda: export_circuit_states(live, set_circuit_state), on_restart)
    )
    return live, tasks


async def export_circuit_states(
    live: LiveState, set_circuit_state: Callable[[str, str, int], None], interval_s: float = 1.0
) -> None:
    """Copy circuit states into `gateway_backend_circuit_state` (0 closed, 1 half-open, 2 open).

    Polled rather than pushed on transitions because open -> half-open happens by the clock,
    not on an event; a few offers a second, off the request path.
    """
    codes = {"closed": 0, "half_open": 1, "open": 2}
    while True:
        try:
            for row in live.circuit_states():
                set_circuit_state(row.backend, row.model, codes[row.state])
        except Exception:
            log.exception("exporting circuit states failed")
        await asyncio.sleep(interval_s)
