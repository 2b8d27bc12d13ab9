"""Observed performance per backend+model: EWMAs of time to first token, latency and throughput.

Time to first token comes from streamed answers only, latency (the whole answer) from
non-streamed ones: they measure different waits, and one average of both made a backend
that streams quickly look slow (or one that answers short requests whole look fast).

In-memory, updated by the routing observer after each attempt; read by the ranking on every
request, so reads are a dict lookup. With Redis configured, `gateway.routing.shared` merges
every replica's observations into the same numbers and copies them back here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Key = tuple[str, str]  # (backend, model)


@dataclass(slots=True)
class Observed:
    ttft_s: float | None = None  # EWMA of time to first token of streamed answers
    tokens_per_s: float | None = None  # EWMA of completion tokens per second
    samples: int = 0  # TTFT observations so far
    tps_samples: int = 0
    updated_at: float = 0.0
    latency_s: float | None = None  # EWMA of the whole answer's time, non-streamed answers
    latency_samples: int = 0


def ewma(previous: float | None, value: float, alpha: float, samples: int = 0) -> float:
    """Exponentially weighted mean, started as a plain mean.

    With `samples` observations so far the weight of the new one is at least 1/(samples+1):
    the first few samples are averaged, so one unlucky first call (a cold connection, a
    GC pause) does not brand a backend slow until exploration happens to retry it.
    """
    if previous is None:
        return value
    weight = max(alpha, 1.0 / (samples + 1))
    return previous + weight * (value - previous)


class StatsBook:
    """Per backend+model EWMAs. Not thread-safe: one event loop owns it."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[Key, Observed] = {}

    def get(self, key: Key) -> Observed | None:
        return self._entries.get(key)

    def lookup(self) -> Callable[[Key], Observed | None]:
        """`get` without the method call, for loops over every candidate of a request."""
        return self._entries.get

    def record_ttft(self, key: Key, ttft_s: float, alpha: float, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Observed()
        entry.ttft_s = ewma(entry.ttft_s, ttft_s, alpha, entry.samples)
        entry.samples += 1
        entry.updated_at = now

    def record_latency(self, key: Key, latency_s: float, alpha: float, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Observed()
        entry.latency_s = ewma(entry.latency_s, latency_s, alpha, entry.latency_samples)
        entry.latency_samples += 1
        entry.updated_at = now

    def record_throughput(self, key: Key, tokens_per_s: float, alpha: float, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Observed()
        entry.tokens_per_s = ewma(entry.tokens_per_s, tokens_per_s, alpha, entry.tps_samples)
        entry.tps_samples += 1
        entry.updated_at = now

    def replace(self, key: Key, observed: Observed) -> None:
        """Adopt the shared (Redis) view of one key."""
        self._entries[key] = observed

    def items(self) -> list[tuple[Key, Observed]]:
        return list(self._entries.items())
