"""Background tasks that outlive their own bugs: run, and restart after an unexpected exception.

The gateway's background loops (the config watcher, the health prober, shared-state sync,
the circuit-state export, the usage recorder's writer) each catch the failures they expect.
A failure nobody expected used to end the task silently: no more reloads, no more probes,
usage piling up in memory, while requests still answered. `supervise` runs such a loop,
and when it raises anything but cancellation, logs the traceback, reports the restart (the
app counts it in `gateway_background_task_restarts_total{task}`), waits with a doubling
backoff and runs a fresh one. Cancellation (shutdown) ends it; a loop that returns has
finished its work and is not restarted.

This module knows nothing of metrics or the app: callers hand it a callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway.supervise")

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# A task that ran this long before failing starts again from the initial backoff.
HEALTHY_RUN_S = 60.0


async def supervise(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    on_restart: Callable[[str], None] | None = None,
    initial_backoff_s: float = INITIAL_BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> None:
    """Await `factory()` until it returns; after an exception, restart it with backoff."""
    loop = asyncio.get_running_loop()
    backoff = initial_backoff_s
    while True:
        started = loop.time()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if loop.time() - started >= HEALTHY_RUN_S:
                backoff = initial_backoff_s
            log.exception("background task %s failed; restarting it in %.1fs", name, backoff)
        if on_restart is not None:
            try:
                on_restart(name)
            except Exception:
                log.exception("restart hook of background task %s failed", name)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)


def start_supervised(
    name: str,
    factory: Callable[[], Awaitable[None]],
    on_restart: Callable[[str], None] | None = None,
    **backoff: float,
) -> asyncio.Task[None]:
    """`supervise` as a task named `name`, for the app to cancel at shutdown."""
    return asyncio.create_task(supervise(name, factory, on_restart=on_restart, **backoff), name=name)
