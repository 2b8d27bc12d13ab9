"""What one replica observed about one backend+model since it last synced with the others.

With Redis configured, every observation used to be a Lua script call of its own (an
unconditional "ok" for each success, plus the latency sample): thousands of EVALSHA a
second per replica under load. Observations are now folded, per backend+model, into one
`PendingShare` that `gateway.routing.shared` sends as one script call per sync interval.

Folding keeps the shared result what applying each observation in order would give:
- circuit: a success only matters when the breaker had failures (`reset`); failures after
  the last reset are counted (`failures`) with the time and threshold of the last one;
- Retry-After: only the latest end counts (`blocked_until`);
- TTFT, latency and throughput samples stay a list, replayed in order into the shared EWMA,
  as its early samples are weighted by count. At most `MAX_SAMPLES` are kept per interval
  (the oldest go first, but still count): with the default `ewma_alpha` of 0.3 a sample
  that old weighs less than 1e-30 in the mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SAMPLES = 256


@dataclass(slots=True)
class PendingShare:
    reset: bool = False  # a success after failures: the shared breaker closes first
    failures: int = 0  # failures after the reset (or since the last sync)
    failed_at: float = 0.0  # the last failure
    threshold: int = 3  # its backend's failure_threshold when it failed
    blocked_until: float = 0.0  # latest Retry-After end; 0: none
    ttft: list[float] = field(default_factory=list)  # the latest MAX_SAMPLES, oldest first
    ttft_count: int = 0  # samples observed, kept or not
    tps: list[float] = field(default_factory=list)
    tps_count: int = 0
    latency: list[float] = field(default_factory=list)  # whole non-streamed answers
    latency_count: int = 0
    alpha: float = 0.3
    updated_at: float = 0.0

    def success(self) -> None:
        self.reset = True
        self.failures = 0

    def failure(self, now: float, threshold: int) -> None:
        self.failures += 1
        self.failed_at = now
        self.threshold = threshold

    def block(self, until: float) -> None:
        if until > self.blocked_until:
            self.blocked_until = until

    def sample_ttft(self, value: float, alpha: float, now: float) -> None:
        _append(self.ttft, value)
        self.ttft_count += 1
        self.alpha, self.updated_at = alpha, now

    def sample_latency(self, value: float, alpha: float, now: float) -> None:
        _append(self.latency, value)
        self.latency_count += 1
        self.alpha, self.updated_at = alpha, now

    def sample_tps(self, value: float, alpha: float, now: float) -> None:
        _append(self.tps, value)
        self.tps_count += 1
        self.alpha, self.updated_at = alpha, now

    def followed_by(self, newer: PendingShare) -> PendingShare:
        """This share and a later one as one (a failed sync puts its share back before the
        observations made meanwhile)."""
        merged = PendingShare(
            reset=self.reset or newer.reset,
            failures=newer.failures if newer.reset else self.failures + newer.failures,
            failed_at=newer.failed_at if newer.failures else self.failed_at,
            threshold=newer.threshold if newer.failures else self.threshold,
            blocked_until=max(self.blocked_until, newer.blocked_until),
            ttft=(self.ttft + newer.ttft)[-MAX_SAMPLES:],
            ttft_count=self.ttft_count + newer.ttft_count,
            tps=(self.tps + newer.tps)[-MAX_SAMPLES:],
            tps_count=self.tps_count + newer.tps_count,
            latency=(self.latency + newer.latency)[-MAX_SAMPLES:],
            latency_count=self.latency_count + newer.latency_count,
            alpha=newer.alpha if newer.ttft_count or newer.tps_count or newer.latency_count else self.alpha,
            updated_at=max(self.updated_at, newer.updated_at),
        )
        return merged


def _append(samples: list[float], value: float) -> None:
    if len(samples) >= MAX_SAMPLES:
        del samples[0]
    samples.append(value)
