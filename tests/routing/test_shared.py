"""Stats and circuits shared between replicas through a real redis-server."""

import pytest
from redis.asyncio import Redis

from gateway.proxy.outcome import Attempt
from gateway.routing.health import CircuitState
from gateway.routing.shared import SharedLiveState
from tests.routing.support import POLICY, Clock, live_for, snapshot_from

pytestmark = pytest.mark.redis

SNAP = snapshot_from(POLICY)
OFFER = SNAP.offer("pricey", "big/long")


def ok():
    return Attempt("pricey", "big/long", None, 200, 0.3)


def failed():
    return Attempt("pricey", "big/long", "http_503", 503, 0.1)


@pytest.fixture
async def replicas(redis_server):
    clock = Clock()
    clients = [Redis.from_url(redis_server.url, socket_timeout=1.0, socket_connect_timeout=1.0) for _ in range(2)]
    pairs = []
    for client in clients:
        live = live_for(SNAP, clock)
        pairs.append((live, SharedLiveState(client, live, interval_s=0.05)))
    yield pairs, clock
    for client in clients:
        await client.aclose()


async def test_failures_seen_by_two_replicas_open_the_circuit_for_both(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    clock = replicas[1]
    a.attempt_finished(OFFER, failed(), None)
    a.attempt_finished(OFFER, failed(), None)
    b.attempt_finished(OFFER, failed(), None)  # neither alone reached the threshold of 3
    assert a.admission(OFFER, clock()).admitted and b.admission(OFFER, clock()).admitted
    assert await sync_a.sync_once() and await sync_b.sync_once() and await sync_a.sync_once()
    for live in (a, b):
        admission = live.admission(OFFER, clock())
        assert not admission.admitted and admission.state is CircuitState.OPEN
    b.attempt_finished(OFFER, ok(), 0.2)  # a success anywhere closes it everywhere
    assert await sync_b.sync_once() and await sync_a.sync_once()
    assert a.admission(OFFER, clock()).state is CircuitState.CLOSED


async def test_latency_ewma_merges_every_replicas_samples(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    a.attempt_finished(OFFER, ok(), 1.0)
    assert await sync_a.sync_once()
    b.attempt_finished(OFFER, ok(), 0.0)
    assert await sync_b.sync_once() and await sync_a.sync_once()
    for live in (a, b):
        seen = live.observed(OFFER.key)
        assert seen.samples == 2 and seen.ttft_s == pytest.approx(0.5)  # the first samples are averaged
    a.attempt_finished(OFFER, ok(), 0.5)
    b.attempt_finished(OFFER, ok(), 1.5)
    assert await sync_a.sync_once() and await sync_b.sync_once() and await sync_a.sync_once()
    for live in (a, b):
        seen = live.observed(OFFER.key)  # 0.5 -> 0.5 (weight 1/3: the mean) -> 0.8 (alpha 0.3 > 1/4)
        assert seen.samples == 4 and seen.ttft_s == pytest.approx(0.8)


async def test_retry_after_is_shared(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    clock = replicas[1]
    a.attempt_finished(OFFER, Attempt("pricey", "big/long", "rate_limited", 429, 0.1, 20.0), None)
    assert await sync_a.sync_once() and await sync_b.sync_once()
    assert b.admission(OFFER, clock()).cooling_for_s == pytest.approx(20.0)


async def test_redis_outage_keeps_local_routing_and_catches_up_later(replicas, redis_server):
    (a, sync_a), (b, sync_b) = replicas[0]
    redis_server.stop()
    a.attempt_finished(OFFER, ok(), 0.5)
    assert a.observed(OFFER.key).ttft_s == 0.5  # routing still learns locally
    assert not await sync_a.sync_once()
    assert sync_a.sync_failures == 1 and len(a.outbox) == 2  # kept for later
    redis_server.start()
    assert await sync_a.sync_once() and not a.outbox
    assert await sync_b.sync_once()
    assert b.observed(OFFER.key).ttft_s == pytest.approx(0.5)
