"""Wiring routing's live parts into a running app: the observed state, its Redis sharing,
the active health prober, and the circuit-state gauge. Called once from the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gateway.routing.health import HealthProber
from gateway.routing.live import LiveState
from gateway.routing.shared import SharedLiveState

if TYPE_CHECKING:
    from gateway.api.state import AppState

log = logging.getLogger("gateway.routing")


def start_routing(state: AppState) -> LiveState:
    """Create the LiveState the pipeline reads, register it as an observer, start its tasks."""

    def current():
        return state.config.current

    live = LiveState(current)
    state.stats = live
    state.observers.add(live)
    prober = HealthProber(live.health, current, state.backends)
    state.tasks.append(asyncio.create_task(prober.run()))
    if state.redis is not None:
        interval = current().config.gateway.routing.shared_sync_s
        state.tasks.append(asyncio.create_task(SharedLiveState(state.redis, live, interval).run()))
    state.tasks.append(asyncio.create_task(export_circuit_states(live, state.metrics)))
    return live


async def export_circuit_states(live: LiveState, metrics, interval_s: float = 1.0) -> None:
    """Copy circuit states into `gateway_backend_circuit_state` (0 closed, 1 half-open, 2 open).

    Polled rather than pushed on transitions because open -> half-open happens by the clock,
    not on an event; a few offers a second, off the request path.
    """
    codes = {"closed": 0, "half_open": 1, "open": 2}
    while True:
        try:
            for row in live.circuit_states():
                metrics.set_circuit_state(row.backend, row.model, codes[row.state])
        except Exception:
            log.exception("exporting circuit states failed")
        await asyncio.sleep(interval_s)
