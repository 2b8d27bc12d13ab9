"""Calls in flight per backend and per process (gateway.backends.inflight): slots taken and
given back exactly once, full backends and limited models skipped, and what the client hears."""

from __future__ import annotations

import pytest

from gateway.backends.base import Backend, UpstreamRequest, UpstreamResponse
from gateway.backends.inflight import CandidateGate, InFlight, Skipped, skipped_error
from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer


class Idle(Backend):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        raise AssertionError("not called")


class Body(UpstreamResponse):
    def __init__(self) -> None:
        self.closed = 0

    async def aiter_bytes(self):
        yield b"{}"

    async def aclose(self) -> None:
        self.closed += 1


def backend(name: str, **config) -> Idle:
    return Idle(name, BackendConfig(type="openai", base_url="http://unused/v1", **config))


def offer(backend_name: str, model: str = "m/x") -> Offer:
    return Offer(model, backend_name, model, ModelOffer())


def test_a_backend_is_full_at_its_max_inflight_and_a_slot_is_given_back_once():
    inflight = InFlight()
    a = backend("a", max_inflight=2)
    first, second = inflight.enter(a), inflight.enter(a)
    assert first is not None and second is not None
    assert inflight.enter(a) is None and inflight.count("a") == 2
    first.release()
    first.release()  # a second release (the answer closed, then the attempt's error path) is a no-op
    assert inflight.count("a") == 1 and inflight.total == 1
    assert inflight.enter(a) is not None


def test_max_connections_is_the_default_bound_and_the_process_has_its_own():
    inflight = InFlight(total_limit=3)
    a, b = backend("a", max_connections=2), backend("b")
    assert [inflight.enter(a) is not None for _ in range(3)] == [True, True, False]
    assert inflight.enter(b) is not None
    assert inflight.enter(b) is None  # b has room, the process has not
    assert inflight.total == 3


async def test_closing_the_held_answer_releases_its_slot():
    inflight = InFlight()
    a = backend("a", max_inflight=1)
    slot = inflight.enter(a)
    assert slot is not None
    body = Body()
    held = slot.hold(body)
    assert await held.aread() == b"{}" and inflight.count("a") == 1
    await held.aclose()
    assert body.closed == 1 and inflight.count("a") == 0
    await held.aclose()
    assert inflight.count("a") == 0 and inflight.total == 0


async def test_the_gate_skips_full_backends_and_limited_models_and_counts_why():
    skips: list[tuple[str, str]] = []
    asked: list[tuple[str, int]] = []

    async def model_limit(model: str, rpm: int) -> float | None:
        asked.append((model, rpm))
        return 7.5 if model == "m/limited" else None

    gate = CandidateGate()
    gate.model_limit, gate.on_skip = model_limit, lambda b, r: skips.append((b, r))
    gate.model_rpm = {"m/limited": 3, "m/fine": 9}
    a = backend("a", max_inflight=1)
    got = await gate.enter(offer("a", "m/limited"), a)
    assert got == Skipped("a", "m/limited", "model_limit", 7.5)
    assert gate.inflight.count("a") == 0  # the slot taken for the check was given back
    slot = await gate.enter(offer("a", "m/fine"), a)
    assert not isinstance(slot, Skipped)
    full = await gate.enter(offer("a", "m/fine"), a)
    assert isinstance(full, Skipped) and full.reason == "full"
    assert asked == [("m/limited", 3), ("m/fine", 9)]  # a full backend spends none of the model's rpm
    assert await gate.enter(offer("b", "m/other"), backend("b")) is not None  # no limit: not asked
    assert asked == [("m/limited", 3), ("m/fine", 9)]
    assert skips == [("a", "model_limit"), ("a", "full")]
    assert gate.inflight.skipped == {("a", "model_limit"): 1, ("a", "full"): 1}


def test_the_client_gets_503_when_all_are_full_and_429_when_a_model_is_limited():
    full = skipped_error([Skipped("a", "m/x", "full", 1), Skipped("b", "m/y", "full", 1)])
    assert full.status == 503 and full.code == "backends_full" and full.headers == {"retry-after": "1"}
    assert "a/m/x (full), b/m/y (full)" in full.message
    limited = skipped_error([Skipped("a", "m/x", "model_limit", 12.2), Skipped("b", "m/y", "full", 1)])
    assert limited.status == 429 and limited.code == "rate_limit_exceeded"
    assert limited.headers == {"retry-after": "13"} and "`m/x`" in limited.message


@pytest.mark.parametrize("max_inflight", [0, -1])
def test_max_inflight_must_be_positive(max_inflight):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BackendConfig(type="openai", base_url="http://x/v1", max_inflight=max_inflight)
