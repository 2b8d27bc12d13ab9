"""Whether a backend+model may take traffic: circuit breakers, upstream Retry-After, and
optional active health probes.

Circuit per backend+model: *closed* until `failure_threshold` consecutive failures, then
*open* (skipped) for a cooldown, then *half-open*: the next request that reaches it is a
probe (only one at a time); its success closes the circuit, its failure re-opens it. The
cooldown starts at `cooldown_s` and doubles with each failed probe, up to `cooldown_max_s`
(`cooldown_for`): a backend down for a moment is back within seconds, one that stays down
is not asked by a client request more than once per cap. A close resets it.

Only failures that say something about the backend count (connect errors, timeouts, 5xx,
broken streams). A 429 does not open the circuit: its `Retry-After` keeps the candidate at
the back of the list for that long instead. Requests the upstream judged invalid (4xx,
context too long) and client disconnects are neutral.

Active probes (`health_check.enabled`) run in the background and take a whole backend out
of routing after `unhealthy_threshold` failed probes, until one succeeds. A passing probe
also ends the cooldown of that backend's open circuits: they turn half-open at once, so the
next request confirms the recovery (a health endpoint can pass while chat calls still
fail, so it does not close them outright: that would let `failure_threshold` requests fail
again at every probe interval).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from gateway.routing.outcomes import AttemptResult
from gateway.routing.stats import Key

if TYPE_CHECKING:
    from gateway.backends.base import Backend
    from gateway.backends.pool import BackendPool
    from gateway.config.schema import CircuitConfig
    from gateway.config.snapshot import ConfigSnapshot

log = logging.getLogger("gateway.routing")


def counts_as_failure(attempt: AttemptResult) -> bool:
    """Whether an attempt counts against its backend's circuit: its error's class said so
    (`UpstreamError.backend_fault`, carried on the attempt), nothing parsed from its label."""
    return attempt.error is not None and attempt.backend_fault


class CircuitState(str, Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


def cooldown_for(policy: CircuitConfig, trips: int) -> float:
    """The cooldown after a circuit's `trips`-th consecutive opening (the first is the
    threshold's, each later one a failed probe's): `cooldown_s`, doubled per failed probe,
    at most `cooldown_max_s` (and never below `cooldown_s`)."""
    start = policy.cooldown_s
    if trips <= 1:
        return start
    return min(max(start, policy.cooldown_max_s), start * 2.0 ** min(trips - 1, 32))


@dataclass(slots=True)
class CircuitRecord:
    failures: int = 0  # consecutive
    opened_at: float = 0.0  # 0: closed
    blocked_until: float = 0.0  # upstream Retry-After
    probe_started: float = 0.0  # last attempt while open/half-open
    trips: int = 0  # consecutive openings without a close; the cooldown doubles with each
    health_passed_at: float = 0.0  # last passed active health check while open

    def half_open_at(self, policy: CircuitConfig) -> float:
        at = self.opened_at + cooldown_for(policy, self.trips)
        if self.health_passed_at > self.opened_at:
            return min(at, self.health_passed_at)
        return at

    def state(self, now: float, policy: CircuitConfig) -> CircuitState:
        return self.check(now, policy)[0]

    def admits(self, now: float, policy: CircuitConfig) -> tuple[bool, str]:
        _, admitted, reason = self.check(now, policy)
        return admitted, reason

    def check(self, now: float, policy: CircuitConfig) -> tuple[CircuitState, bool, str]:
        """State, whether a request may go to it now, and why (one pass for routing)."""
        if not self.opened_at:
            return CircuitState.CLOSED, True, f"closed ({self.failures} recent failures)" if self.failures else "closed"
        cooldown = cooldown_for(policy, self.trips)
        half_open_since = self.opened_at + cooldown
        if self.health_passed_at > self.opened_at and self.health_passed_at < half_open_since:
            half_open_since = self.health_passed_at
        if now < half_open_since:
            wait = half_open_since - now
            reason = f"circuit open after {self.failures} consecutive failures; half-open in {wait:.1f}s"
            return CircuitState.OPEN, False, reason
        if self.probe_started >= half_open_since and now < self.probe_started + cooldown:
            return CircuitState.HALF_OPEN, False, "circuit half-open and a probe request is in flight"
        return CircuitState.HALF_OPEN, True, "half-open: this request probes the backend"


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
            record.trips = 0
            record.health_passed_at = 0.0

    def failure(self, key: Key, now: float, policy: CircuitConfig) -> None:
        record = self._record(key)
        record.failures += 1
        if record.opened_at:
            # A failed half-open probe re-opens at once, for twice as long; a failure while
            # open (a call that started before it opened) only restarts the cooldown.
            if record.probe_started >= record.half_open_at(policy):
                record.trips += 1
            record.opened_at = now
        elif record.failures >= policy.failure_threshold:
            record.opened_at = now
            record.trips = 1

    def close(self, key: Key) -> bool:
        """Close the circuit of `key` whatever its state (its evidence no longer holds); a
        Retry-After's block stays, being the upstream's own word. Whether it had anything
        against it."""
        record = self._records.get(key)
        if record is None or not (record.failures or record.opened_at):
            return False
        self.success(key)
        return True

    def health_passed(self, backend: str, now: float) -> None:
        """An active health check of `backend` passed: its open circuits may probe now."""
        for (name, _model), record in self._records.items():
            if name == backend and record.opened_at:
                record.health_passed_at = now

    def block(self, key: Key, until: float) -> None:
        record = self._record(key)
        record.blocked_until = max(record.blocked_until, until)

    def replace(self, key: Key, failures: int, opened_at: float, blocked_until: float) -> None:
        """Adopt the shared view of one key, keeping the local probe marker.

        The doubling count stays this replica's own (replicas share when a circuit opened,
        not how often): it restarts when the shared circuit is closed.
        """
        record = self._record(key)
        record.failures, record.opened_at, record.blocked_until = failures, opened_at, blocked_until
        if not opened_at:
            record.trips = 0
        elif not record.trips:
            record.trips = 1

    def items(self) -> list[tuple[Key, CircuitRecord]]:
        return list(self._records.items())


@dataclass(slots=True)
class ProbeRecord:
    failures: int = 0  # consecutive failed probes
    down: bool = False
    last_probe_at: float = 0.0
    last_error: str | None = None


class HealthBoard:
    """Results of active probes, per backend.

    `on_pass(backend, now)` hears every passing probe (LiveState ends the cooldown of that
    backend's open circuits with it).
    """

    __slots__ = ("_backends", "_on_pass")

    def __init__(self, on_pass: Callable[[str, float], None] | None = None) -> None:
        self._backends: dict[str, ProbeRecord] = {}
        self._on_pass = on_pass

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
            if self._on_pass is not None:
                self._on_pass(backend, now)
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
        self._running: dict[str, asyncio.Task[None]] = {}

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
            task.add_done_callback(functools.partial(self._probe_done, name))

    def _probe_done(self, name: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(name, None)

    async def _probe(self, name: str, backend: Backend, timeout_s: float, threshold: int) -> None:
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
