"""A candidate's admission by its circuit breaker and health checks, as routing reads it.

`LiveState.admissions` builds them (gateway.routing.live); the circuit filter and the
ranking read them (gateway.routing.filters, gateway.routing.rank). Kept apart from both so
neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.routing.health import CircuitState
from gateway.routing.reasons import Verdict


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reason: str
    state: CircuitState
    cooling_for_s: float = 0.0  # > 0: an upstream Retry-After still runs; rank it last
    # Refused by an open circuit: seconds until it half-opens and takes a request again (the
    # Retry-After of a 503 that every candidate's circuit refused). None when not known.
    opens_in_s: float | None = None

    @property
    def verdict(self) -> Verdict:
        return Verdict("circuit", self.admitted, self.reason)


CLOSED = Admission(True, "closed", CircuitState.CLOSED)
