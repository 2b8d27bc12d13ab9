"""Building adapters from a config snapshot, and keeping their connection pools across reloads.

Each config snapshot gets a `BackendSet`: its adapters by name. A request leases the
current set when it starts (`BackendPool.acquire`, in the same step as it takes the config
snapshot) and releases it when it ends, so every attempt of that request, fallbacks
included, uses the adapters of the config it was routed with, whatever reloads happen
meanwhile. A reload that leaves a backend's settings unchanged keeps its adapter (and its
warm connections) in the new set; an adapter no set uses any more (changed or removed,
and the last request holding an older set finished) is closed at once.

The pool also holds the process's `CandidateGate` (gateway/backends/inflight.py: calls in
flight per backend and in total, and per-model limits); every set hands out the same one,
so counts carry across reloads.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Iterator

from gateway.backends.base import Backend
from gateway.backends.inflight import CandidateGate
from gateway.config.schema import BackendConfig
from gateway.config.snapshot import ConfigSnapshot
from gateway.config.vendors import VENDORS

log = logging.getLogger("gateway.backends")


def create_backend(name: str, config: BackendConfig) -> Backend:
    module_name, _, class_name = VENDORS[config.type].adapter_class.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls(name, config)


class BackendSet:
    """The adapters of one config snapshot, leased by the requests routed with it."""

    __slots__ = ("_backends", "_pool", "gate", "retired", "users")

    def __init__(
        self, backends: dict[str, Backend], pool: BackendPool | None, gate: CandidateGate | None = None
    ) -> None:
        self._backends = backends
        self._pool = pool
        self.gate = gate or CandidateGate()  # what the fallback loop asks before each call
        self.users = 0  # requests holding this set
        self.retired = False  # a newer snapshot replaced it

    def get(self, name: str) -> Backend | None:
        return self._backends.get(name)

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._backends.values())

    def release(self) -> None:
        """The request that acquired this set is done with it (call exactly once per acquire)."""
        self.users -= 1
        if self.users == 0 and self.retired and self._pool is not None:
            self._pool._drop(self)


class BackendPool:
    def __init__(self, gate: CandidateGate | None = None) -> None:
        self.gate = gate or CandidateGate()
        self._current = BackendSet({}, self, self.gate)
        self._holders: dict[Backend, int] = {}  # adapter -> live sets (current or leased) holding it
        self._closing: set[asyncio.Task[None]] = set()

    def acquire(self) -> BackendSet:
        """The current set, leased until `release()`: take it with the config snapshot, in one step."""
        current = self._current
        current.users += 1
        return current

    def get(self, name: str) -> Backend | None:
        return self._current.get(name)

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._current)

    def apply(self, snapshot: ConfigSnapshot) -> None:
        """Make the current set match the snapshot's enabled backends. Its adapters are built
        before anything changes: one that cannot be built fails the reload, and the gate keeps
        the limits of the snapshot that still serves."""
        old = self._current
        fresh: dict[str, Backend] = {}
        for name, config in snapshot.backends.items():
            kept = old.get(name)
            fresh[name] = kept if kept is not None and kept.config == config else create_backend(name, config)
        self.gate.configure(snapshot)
        for backend in fresh.values():
            self._holders[backend] = self._holders.get(backend, 0) + 1
        self._current = BackendSet(fresh, self, self.gate)
        old.retired = True
        if old.users == 0:
            self._drop(old)

    def _drop(self, retired: BackendSet) -> None:
        retired._pool = None  # dropped once
        for backend in retired:
            left = self._holders[backend] - 1
            if left:
                self._holders[backend] = left
                continue
            del self._holders[backend]
            self._close(backend)

    def _close(self, backend: Backend) -> None:
        try:
            task = asyncio.get_running_loop().create_task(backend.aclose())
        except RuntimeError:
            return  # no loop (a reload outside the server, e.g. in tests): nothing was opened
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("closing a replaced backend failed: %r", task.exception())

    async def aclose(self) -> None:
        """Shutdown: close every adapter still held, and wait for closes under way."""
        backends = list(self._holders)
        self._holders.clear()
        self._current = BackendSet({}, None, self.gate)
        for backend in backends:
            await backend.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
