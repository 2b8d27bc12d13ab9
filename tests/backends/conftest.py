"""Fixtures for adapter tests: real local upstreams, and adapters closed after each test."""

from __future__ import annotations

import pytest

from tests.backends.wire import WireUpstream


@pytest.fixture
async def wire():
    server = await WireUpstream().start()
    yield server
    await server.stop()


@pytest.fixture
async def closing():
    """closing(backend) -> backend, closed (its connection pool too) when the test ends."""
    backends = []

    def track(backend):
        backends.append(backend)
        return backend

    yield track
    for backend in backends:
        await backend.aclose()
