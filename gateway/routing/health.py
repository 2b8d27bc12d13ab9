"""Whether a backend+model may take traffic: circuit breakers, upstream Retry-After, and
optional active health probes.

Circuit per backend+model: *closed* until `failure_threshold` consecutive failures, then
*open* (skipped) for `cooldown_s`, then *half-open*: the next request that reaches it is a
probe (only one at a time); its success closes the circuit, its failure re-opens it.

Only failures that say something about the backend count (connect errors, timeouts, 5xx,
broken streams). A 429 does not open the circuit: its `Retry-After` keeps the candidate at
the back of the list for that long instead. Requests the upstream judged invalid (4xx,
context too long) and client disconnects are neutral.

Active probes (`health_check.enabled`) run in the background and take a whole backend out
of routing after `unhealthy_threshold` failed probes, until one succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from gateway.routing.stats import Key

if TYPE_CHECKING:
    from gateway.backends.pool import BackendPool
    from gateway.config.snapshot import ConfigSnapshot

log = logging.getLogger("gateway.routing")

# Attempt error labels (UpstreamError.reason) that count against a backend.
_NEUTRAL = frozenset({"context_length", "client_disconnected", "cancelled", "rate_limited"})


def counts_as_failure(error: str | None) -> bool:
    if error is None or error in _NEUTRAL:
        return False
    if error.startswith("http_"):
        status = error[5:]
        return status.isdigit() and (int(status) >= 500 or int(status) == 408)
    return True  # connect, timeout, protocol, upstream_error...


class CircuitState(str, Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


@dataclass(slots=True)
class CircuitRecord:
    failures: int = 0  # consecutive
    opened_at: float = 0.0  # 0: closed
    blocked_until: float = 0.0  # upstream Retry-After
    probe_started: float = 0.0  # last attempt while open/half-open

    def state(self, now: float, cooldown_s: float) -> CircuitState:
        if not self.opened_at:
            return CircuitState.CLOSED
        return CircuitState.OPEN if now < self.opened_at + cooldown_s else CircuitState.HALF_OPEN

    def admits(self, now: float, cooldown_s: float) -> tuple[bool, str]:
        state = self.state(now, cooldown_s)
        if state is CircuitState.CLOSED:
            return True, f"closed ({self.failures} recent failures)" if self.failures else "closed"
        if state is CircuitState.OPEN:
            wait = self.opened_at + cooldown_s - now
            return False, f"circuit open after {self.failures} consecutive failures; half-open in {wait:.1f}s"
        half_open_since = self.opened_at + cooldown_s
        if self.probe_started >= half_open_since and now < self.probe_started + cooldown_s:
            return False, "circuit half-open and a probe request is in flight"
        return True, "half-open: this request probes the backend"


class CircuitBoard:
    """Circuit records per backend+model (in-memory; `shared` syncs them through Redis)."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[Key, CircuitRecord] = {}

    def get(self, key: Key) -> CircuitRecord | None:
        return self._records.get(key)

    def lookup(self) -> Callable[[Key], CircuitRecord | None]:
        """`get` without the method call, for loops over every candidate of a request."""
        return self._records.get

    def _record(self, key: Key) -> CircuitRecord:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = CircuitRecord()
        return record

    def started(self, key: Key, now: float) -> None:
        record = self._records.get(key)
        if record is not None and record.opened_at:
            record.probe_started = now

    def success(self, key: Key) -> None:
        record = self._records.get(key)
        if record is not None:
            record.failures = 0
            record.opened_at = 0.0
            record.probe_started = 0.0

    def failure(self, key: Key, now: float, threshold: int) -> None:
        record = self._record(key)
        record.failures += 1
        # A failed half-open probe re-opens at once; a closed circuit opens at the threshold.
        if record.opened_at or record.failures >= threshold:
            record.opened_at = now

    def block(self, key: Key, until: float) -> None:
        record = self._record(key)
        record.blocked_until = max(record.blocked_until, until)

    def replace(self, key: Key, failures: int, opened_at: float, blocked_until: float) -> None:
        """Adopt the shared view of one key, keeping the local probe marker."""
        record = self._record(key)
        record.failures, record.opened_at, record.blocked_until = failures, opened_at, blocked_until

    def items(self) -> list[tuple[Key, CircuitRecord]]:
        return list(self._records.items())


@dataclass(slots=True)
class ProbeRecord:
    failures: int = 0  # consecutive failed probes
    down: bool = False
    last_probe_at: float = 0.0
    last_error: str | None = None


class HealthBoard:
    """Results of active probes, per backend."""

    __slots__ = ("_backends",)

    def __init__(self) -> None:
        self._backends: dict[str, ProbeRecord] = {}

    def is_down(self, backend: str) -> bool:
        record = self._backends.get(backend)
        return record is not None and record.down

    def any_down(self) -> bool:
        """Whether some backend is out of routing (read per request: usually no probes at all)."""
        return bool(self._backends) and any(r.down for r in self._backends.values())

    def get(self, backend: str) -> ProbeRecord | None:
        return self._backends.get(backend)

    def record(self, backend: str, ok: bool, now: float, threshold: int, error: str | None = None) -> None:
        record = self._backends.setdefault(backend, ProbeRecord())
        record.last_probe_at = now
        if ok:
            if record.down:
                log.info("backend %s passed its health check again", backend)
            record.failures, record.down, record.last_error = 0, False, None
            return
        record.failures += 1
        record.last_error = error
        if not record.down and record.failures >= threshold:
            record.down = True
            log.warning("backend %s failed %d health checks: out of routing (%s)", backend, record.failures, error)


class HealthProber:
    """Background task: probe each backend with `health_check.enabled` at its interval."""

    def __init__(
        self,
        board: HealthBoard,
        snapshot: Callable[[], ConfigSnapshot],
        pool: BackendPool,
        clock: Callable[[], float] = time.time,
        tick_s: float = 0.25,
    ) -> None:
        self.board = board
        self._snapshot = snapshot
        self._pool = pool
        self._clock = clock
        self._tick_s = tick_s
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task] = {}

    async def run(self) -> None:
        try:
            while True:
                self.probe_due()
                await asyncio.sleep(self._tick_s)
        finally:
            for task in self._running.values():
                task.cancel()

    def probe_due(self) -> None:
        now = self._clock()
        for name, config in self._snapshot().backends.items():
            check = config.health_check
            if not check.enabled or name in self._running or self._due.get(name, 0.0) > now:
                continue
            backend = self._pool.get(name)
            if backend is None:
                continue
            self._due[name] = now + check.interval_s
            task = asyncio.get_running_loop().create_task(
                self._probe(name, backend, check.timeout_s, check.unhealthy_threshold)
            )
            self._running[name] = task
            task.add_done_callback(lambda _t, n=name: self._running.pop(n, None))

    async def _probe(self, name: str, backend, timeout_s: float, threshold: int) -> None:
        error = None
        try:
            async with asyncio.timeout(timeout_s):
                ok = await backend.check_health()
            if not ok:
                error = "health endpoint answered with an error"
        except TimeoutError:
            ok, error = False, f"no answer within {timeout_s}s"
        except Exception as exc:
            ok, error = False, type(exc).__name__
        self.board.record(name, ok, self._clock(), threshold, error)
