"""Wiring routing's live parts into a running app: the observed state, its Redis sharing,
and the active health prober. Called once from the app's lifespan."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway.routing.health import HealthProber
from gateway.routing.live import LiveState
from gateway.routing.shared import SharedLiveState

if TYPE_CHECKING:
    from gateway.api.state import AppState


def start_routing(state: "AppState") -> LiveState:
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
    return live
