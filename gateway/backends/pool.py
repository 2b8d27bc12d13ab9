"""Building adapters from a config snapshot, and keeping their connection pools across reloads.

A hot reload that leaves a backend's settings unchanged keeps its adapter (and its warm
connections); a changed or removed backend's adapter is closed once requests still using
it have had time to finish.
"""

from __future__ import annotations

import asyncio
import importlib
import logging

from gateway.backends.base import Backend
from gateway.backends.registry import VENDORS
from gateway.config.schema import BackendConfig
from gateway.config.snapshot import ConfigSnapshot

log = logging.getLogger("gateway.backends")

_ADAPTERS = {
    "openai_compat": ("gateway.backends.openai_compat", "OpenAICompatBackend"),
    "mock": ("gateway.backends.mock", "MockBackend"),
    "anthropic": ("gateway.backends.anthropic", "AnthropicBackend"),
}

# How long a replaced adapter stays open for requests that started before a reload.
DRAIN_SECONDS = 300.0


def create_backend(name: str, config: BackendConfig) -> Backend:
    module_name, class_name = _ADAPTERS[VENDORS[config.type].adapter]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(name, config)


class BackendPool:
    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}
        self._retiring: dict[asyncio.Task, Backend] = {}

    def get(self, name: str) -> Backend | None:
        return self._backends.get(name)

    def __iter__(self):
        return iter(self._backends.values())

    def apply(self, snapshot: ConfigSnapshot) -> None:
        """Make the pool match the snapshot's enabled backends."""
        current = dict(self._backends)
        fresh: dict[str, Backend] = {}
        for name, config in snapshot.backends.items():
            old = current.pop(name, None)
            if old is not None and old.config == config:
                fresh[name] = old
            else:
                fresh[name] = create_backend(name, config)
                if old is not None:
                    current[name] = old
        self._backends = fresh
        for old in current.values():
            self._retire(old)

    def _retire(self, backend: Backend) -> None:
        async def later() -> None:
            await asyncio.sleep(DRAIN_SECONDS)
            await backend.aclose()

        try:
            task = asyncio.get_running_loop().create_task(later())
        except RuntimeError:
            return
        self._retiring[task] = backend
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def aclose(self) -> None:
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
        for backend in [*self._backends.values(), *(b for _, b in retiring)]:
            await backend.aclose()
        self._backends = {}
