"""Backpressure: a bound on upstream calls in flight, per backend and for the whole process.

Without it a slow backend collects every request sent its way (each holding a connection
and a task) until the process runs out of something. Here a backend with `max_inflight`
calls under way (default: its `max_connections`) is *full*: the fallback loop skips it
like a backend that answered 429, so the next candidate serves the call; past
`GATEWAY_MAX_UPSTREAM_INFLIGHT` calls in the process every backend is full. A client
whose every candidate is full gets 503 with `Retry-After` at once rather than a queue
without bound.

A slot is taken before the upstream is called and given back when its answer is closed
(a non-streamed body read, a stream relayed to its end) or the attempt fails: `Slot.hold`
wraps the answer so that closing it releases, and a release happens once whatever calls
it. Taking one is two dict reads and two additions: O(1), no lock (one event loop).

A per-model limit of the routing YAML (`rate_limits.routes` naming a model) acts on the
same seam: `CandidateGate.enter` asks the gate's `model_limit` (the rate limiter), and a
model at its limit is skipped the same way, for the next candidate's model.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from gateway.backends.base import Backend, UpstreamResponse
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.errors import GatewayError

FULL_RETRY_AFTER_S = 1  # what a client whose every candidate is full is told to wait

# (model, rpm) -> None (admitted: counted) or the seconds until it has room.
ModelLimit = Callable[[str, int], Awaitable[float | None]]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A candidate passed over without calling it: `full` (backpressure) or `model_limit`."""

    backend: str
    model: str
    reason: str
    retry_after: float


class Slot:
    """One upstream call's place in its backend's and the process's count."""

    __slots__ = ("_backend", "_inflight")

    def __init__(self, inflight: InFlight, backend: str) -> None:
        self._inflight: InFlight | None = inflight
        self._backend = backend

    def release(self) -> None:
        inflight = self._inflight
        if inflight is not None:
            self._inflight = None
            inflight.leave(self._backend)

    def hold(self, response: UpstreamResponse) -> UpstreamResponse:
        """The answer, releasing this slot when it is closed."""
        return _Held(response, self)


class _Held(UpstreamResponse):
    __slots__ = ("_response", "_slot")

    def __init__(self, response: UpstreamResponse, slot: Slot) -> None:
        self._response = response
        self._slot = slot
        self.status = response.status
        self.media_type = response.media_type
        self.max_bytes = response.max_bytes

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._response.aiter_bytes()  # the adapter's own iterator: nothing added per chunk

    async def aread(self) -> bytes:
        return await self._response.aread()

    @property
    def exhausted(self) -> bool:
        return self._response.exhausted

    def stream_started(self, idle_s: float) -> None:
        self._response.stream_started(idle_s)  # the idle limit is the adapter's to arm

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            self._slot.release()


class InFlight:
    """Counts of upstream calls in flight: per backend (by name, so a reload that replaces an
    adapter keeps counting the calls its predecessor still serves) and in total."""

    def __init__(self, total_limit: int = 0) -> None:
        self.total_limit = total_limit  # 0: no process-wide bound
        self.total = 0
        self._counts: dict[str, int] = {}
        self.skipped: dict[tuple[str, str], int] = {}  # (backend, reason) -> candidates skipped

    def count(self, backend: str) -> int:
        return self._counts.get(backend, 0)

    def enter(self, backend: Backend) -> Slot | None:
        """A slot, or None when the backend (or the process) is full."""
        name = backend.name
        held = self._counts.get(name, 0)
        limit = backend.config.max_inflight or backend.config.max_connections
        if held >= limit or (self.total_limit and self.total >= self.total_limit):
            return None
        self._counts[name] = held + 1
        self.total += 1
        return Slot(self, name)

    def leave(self, backend: str) -> None:
        left = self._counts[backend] - 1
        if left:
            self._counts[backend] = left
        else:
            del self._counts[backend]
        self.total -= 1


class CandidateGate:
    """What the fallback loop asks before calling a candidate: a slot for the call, or why it
    is skipped. One per process (on the `BackendPool`), shared by every config snapshot."""

    def __init__(self, inflight: InFlight | None = None) -> None:
        self.inflight = inflight or InFlight()
        self.model_limit: ModelLimit | None = None  # set by the app once the rate limiter exists
        self.model_rpm: dict[str, int] = {}  # models with a limit (from the config): only they pay the call
        self.on_skip: Callable[[str, str], None] | None = None  # metrics: (backend, reason)

    async def enter(self, offer: Offer, backend: Backend) -> Slot | Skipped:
        slot = self.inflight.enter(backend)
        if slot is None:
            return self._skip(offer, "full", FULL_RETRY_AFTER_S)
        rpm = self.model_rpm.get(offer.model)
        if rpm is not None and self.model_limit is not None:
            # Counted only for a call that will be made: a full backend spends none of it.
            try:
                wait = await self.model_limit(offer.model, rpm)
            except BaseException:
                slot.release()
                raise
            if wait is not None:
                slot.release()
                return self._skip(offer, "model_limit", wait)
        return slot

    def configure(self, snapshot: ConfigSnapshot) -> None:
        """The per-model limits of a new config: `rate_limits.routes` entries that name a model
        (a route's own limit is the rate limiter's, at admission: it has no next candidate)."""
        config = snapshot.config
        self.model_rpm = {name: rpm for name, rpm in config.rate_limits.routes.items() if name not in config.routes}

    def _skip(self, offer: Offer, reason: str, retry_after: float) -> Skipped:
        key = (offer.backend, reason)
        self.inflight.skipped[key] = self.inflight.skipped.get(key, 0) + 1
        if self.on_skip is not None:
            self.on_skip(offer.backend, reason)
        return Skipped(offer.backend, offer.model, reason, retry_after)


def skipped_error(skipped: list[Skipped]) -> GatewayError:
    """The client's answer when every candidate was skipped and none was called: 429 when a
    model limit stopped any of them (the client may slow down), else 503 (the gateway is
    full; the client may retry shortly), with Retry-After either way."""
    limited = [s for s in skipped if s.reason == "model_limit"]
    tried = ", ".join(f"{s.backend}/{s.model} ({s.reason})" for s in skipped)
    if limited:
        seconds = max(1, math.ceil(min(s.retry_after for s in limited)))
        models = ", ".join(dict.fromkeys(f"`{s.model}`" for s in limited))
        return GatewayError(
            429,
            f"Rate limit reached for model {models}: rpm, on every candidate (tried: {tried}). Retry after {seconds}s.",
            code="rate_limit_exceeded",
            headers={"retry-after": str(seconds)},
            metadata={"limit": "rpm", "scope": "model", "name": limited[0].model},
        )
    seconds = max(1, math.ceil(min(s.retry_after for s in skipped)))
    return GatewayError(
        503,
        f"Every backend for this request is at its limit of calls in flight (tried: {tried}). Retry after {seconds}s.",
        code="backends_full",
        headers={"retry-after": str(seconds)},
    )
