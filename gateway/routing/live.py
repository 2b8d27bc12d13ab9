"""What the running gateway has observed about its backends, in one object.

`LiveState` is both the call observer that learns (attempt results feed the circuit breakers,
answered calls the EWMA stats) and the read-only view the routing pipeline consults on every
request. Timings are learnt from `call_finished`, the one event that says whether the call
streamed: a stream's time to first token and a non-streamed call's whole latency go to
separate statistics.
It lives in AppState (`state.stats`), survives config reloads, and holds no I/O: sharing it
between replicas is `gateway.routing.shared`'s job, which reads what this object folds into
`pending` (one `PendingShare` per backend+model) once per sync interval.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config.schema import BackendConfig, CircuitConfig
from gateway.routing.admission import CLOSED, Admission
from gateway.routing.deltas import PendingShare
from gateway.routing.health import CircuitBoard, CircuitState, HealthBoard, counts_as_failure
from gateway.routing.outcomes import AttemptResult, FinishedCall
from gateway.routing.stats import Key, Observed, StatsBook

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.config.snapshot import ConfigSnapshot, Offer
    from gateway.routing.candidates import Candidate


@dataclass(frozen=True, slots=True)
class CircuitStatus:
    """One row for `gateway_backend_circuit_state`: health-check-down backends show as open."""

    backend: str
    model: str
    state: str  # closed | half_open | open


log = logging.getLogger("gateway.routing")

DEFAULT_CIRCUIT = CircuitConfig()  # for an offer whose backend left the config meanwhile


class LiveState:
    """Observed stats + circuit state. One event loop owns it (no locks needed)."""

    def __init__(
        self,
        snapshot: Callable[[], ConfigSnapshot],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.clock = clock
        self.rng = rng or random.Random()
        self.stats = StatsBook()
        self.circuits = CircuitBoard()
        self.health = HealthBoard(on_pass=self.circuits.health_passed)
        # Observations not yet pushed to the shared store, per backend+model; None when
        # nothing shares them (no Redis).
        self.pending: dict[Key, PendingShare] | None = None
        # Each enabled backend's settings as of the config last applied (`config_applied`),
        # and when those of a backend last changed (clock time).
        self._backend_settings: dict[str, BackendConfig] | None = None
        self._settings_changed_at: dict[str, float] = {}

    def share_with_replicas(self) -> None:
        """From now on, keep what is observed for `gateway.routing.shared` to push."""
        if self.pending is None:
            self.pending = {}

    def take_pending(self) -> dict[Key, PendingShare]:
        """What was observed since the last call, for one push."""
        taken = self.pending or {}
        self.pending = {} if self.pending is not None else None
        return taken

    def put_back(self, taken: dict[Key, PendingShare]) -> None:
        """A push failed: keep its observations, before the ones made meanwhile."""
        if self.pending is None:
            return
        for key, older in taken.items():
            newer = self.pending.get(key)
            self.pending[key] = older if newer is None else older.followed_by(newer)

    def config_applied(self, snapshot: ConfigSnapshot) -> None:
        """A config was applied (at start, and on each successful reload): the circuits of a
        backend whose settings changed since the last one are closed.

        They opened on what the old settings met (a wrong `base_url`, key or `upstream_id`, a
        `timeout_s` too short), and the operator who corrects it and reloads expects the
        backend to be asked again at once, not once a cooldown of up to `cooldown_max_s` has
        run out while the route answered 503. A backend the correction did not mend fails
        again and opens again after `failure_threshold` calls. With several replicas the
        close is shared like a success. A backend whose settings stayed as they were keeps
        its circuits as they stood: an unrelated edit hands a failing backend no traffic.

        Calls still in flight on the old settings (their requests keep the adapters they
        started with) end after it; their failures are not the corrected backend's, and
        `attempt_finished` leaves them out of its circuits."""
        previous, current = self._backend_settings, dict(snapshot.backends)
        self._backend_settings = current
        if previous is None:
            return  # the first config: nothing was observed under another one
        changed = {name for name, settings in current.items() if previous.get(name) != settings}
        now = self.clock()
        kept = {name: at for name, at in self._settings_changed_at.items() if name in current}
        self._settings_changed_at = kept | dict.fromkeys(changed, now)  # bounded by the config
        closed: dict[str, list[str]] = {}
        for key, _record in self.circuits.items():
            if key[0] in changed and self.circuits.close(key):
                closed.setdefault(key[0], []).append(key[1])
                pending = self._pending(key)
                if pending is not None:
                    pending.success()
        for backend, models in closed.items():
            log.info("circuit of backend %s closed: its settings changed (%s)", backend, ", ".join(sorted(models)))

    # -- the pipeline's view -------------------------------------------------------------
    def observed(self, key: Key) -> Observed | None:
        return self.stats.get(key)

    def admissions(self, candidates: Sequence[Candidate], now: float, snapshot: ConfigSnapshot) -> list[Admission]:
        """`admission()` of each candidate; the common case (no record, or a closed circuit
        with nothing against it) costs one dictionary lookup."""
        record_of = self.circuits.lookup()
        some_backend_down = self.health.any_down()
        out = []
        for candidate in candidates:
            record = record_of(candidate.key)
            if not some_backend_down and (
                record is None or (not record.opened_at and not record.failures and record.blocked_until <= now)
            ):
                out.append(CLOSED)
            else:
                out.append(self.admission(candidate.offer, now, snapshot))
        return out

    def admission(self, offer: Offer, now: float, snapshot: ConfigSnapshot | None = None) -> Admission:
        backend = offer.backend
        if self.health.is_down(backend):
            probe = self.health.get(backend)
            detail = f": {probe.last_error}" if probe and probe.last_error else ""
            return Admission(False, f"backend failed its health checks{detail}", CircuitState.OPEN)
        record = self.circuits.get(offer.key)
        if record is None or (not record.opened_at and not record.failures and record.blocked_until <= now):
            return CLOSED  # the common case, read for every candidate of every request
        config = (snapshot or self._snapshot()).backends.get(backend)
        policy = config.circuit if config else DEFAULT_CIRCUIT
        state, admitted, reason = record.check(now, policy)
        cooling = record.blocked_until - now
        opens_in = record.half_open_at(policy) - now if state is CircuitState.OPEN else None
        return Admission(admitted, reason, state, cooling if cooling > 0 else 0.0, opens_in)

    # -- metrics' view ----------------------------------------------------------------
    def circuit_states(self) -> list[CircuitStatus]:
        """Every offer of the current config with its circuit state."""
        snapshot = self._snapshot()
        now = self.clock()
        rows = []
        for offers in snapshot.offers.values():
            for offer in offers:
                rows.append(CircuitStatus(offer.backend, offer.model, self.admission(offer, now, snapshot).state.value))
        return sorted(rows, key=lambda r: (r.backend, r.model))

    # -- CallObserver -------------------------------------------------------------------
    def attempt_started(self, offer: Offer) -> None:
        self.circuits.started(offer.key, self.clock())

    def attempt_finished(self, offer: Offer, attempt: AttemptResult, ttft_s: float | None) -> None:
        now = self.clock()
        key = offer.key
        pending = self._pending(key) if self.pending is not None else None  # None: nothing shares them
        if attempt.error is None:
            record = self.circuits.get(key)
            if record is not None and (record.failures or record.opened_at):
                self.circuits.success(key)
                if pending is not None:
                    pending.success()  # a success after no failure changes nothing shared: not sent
            return
        changed_at = self._settings_changed_at.get(offer.backend)
        if changed_at is not None and now - attempt.duration_s < changed_at:
            return  # made with the backend's settings before a reload changed them: not its doing now
        # The config is read for failures only: a success (most attempts) needs none of it.
        snapshot = self._snapshot()
        routing = snapshot.config.gateway.routing
        retry_after = attempt.retry_after_s
        if attempt.error == "rate_limited" and retry_after:
            until = now + min(retry_after, routing.retry_after_cap_s)
            self.circuits.block(key, until)
            if pending is not None:
                pending.block(until)
        if counts_as_failure(attempt):
            config = snapshot.backends.get(offer.backend)
            policy = config.circuit if config else DEFAULT_CIRCUIT
            self.circuits.failure(key, now, policy)
            if pending is not None:
                pending.failure(now, policy.failure_threshold)

    def call_finished(self, outcome: FinishedCall) -> None:
        offer, usage = outcome.offer, outcome.usage
        if offer is None or outcome.status >= 400 or not outcome.attempts or outcome.attempts[-1].error is not None:
            return
        alpha = self._snapshot().config.gateway.routing.ewma_alpha
        now = self.clock()
        key = offer.key
        pending = self._pending(key) if self.pending is not None else None
        duration = outcome.attempts[-1].duration_s  # the attempt that answered, not the earlier ones
        if outcome.stream:
            if outcome.ttft_s is not None and outcome.ttft_s >= 0:
                self.stats.record_ttft(key, outcome.ttft_s, alpha, now)
                if pending is not None:
                    pending.sample_ttft(outcome.ttft_s, alpha, now)
        elif duration >= 0:
            self.stats.record_latency(key, duration, alpha, now)
            if pending is not None:
                pending.sample_latency(duration, alpha, now)
        if usage is None or usage.completion_tokens <= 0:
            return
        generating = duration - (outcome.ttft_s or 0.0) if outcome.stream else duration
        if generating < 0.005:
            return  # too short to say anything about speed
        tokens_per_s = usage.completion_tokens / generating
        self.stats.record_throughput(key, tokens_per_s, alpha, now)
        if pending is not None:
            pending.sample_tps(tokens_per_s, alpha, now)

    def _pending(self, key: Key) -> PendingShare | None:
        pending = self.pending
        if pending is None:
            return None
        share = pending.get(key)
        if share is None:
            share = pending[key] = PendingShare()
        return share
