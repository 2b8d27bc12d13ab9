"""Stats and circuits shared between replicas through a real redis-server."""

import asyncio
import gc
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.metrics import Metrics
from gateway.proxy.outcome import Attempt, CallOutcome
from gateway.proxy.usage import Usage
from gateway.routing.health import CircuitState
from gateway.routing.shared import KEYSET, PREFIX, SharedLiveState, member
from tests.routing.support import POLICY, Clock, answer, live_for, snapshot_from
from tests.support.poll import apoll, poll
from tests.support.ports import free_port
from tests.support.services import pool_in_use, require_binary

pytestmark = pytest.mark.redis

SNAP = snapshot_from(POLICY)
OFFER = SNAP.offer("pricey", "big/long")


def ok():
    return Attempt("pricey", "big/long", None, 200, 0.3)


def failed():
    return Attempt("pricey", "big/long", "http_503", 503, 0.1, backend_fault=True)


def streamed_call(tokens: int, seconds: float, ttft_s: float = 0.0) -> CallOutcome:
    outcome = CallOutcome("r", "auto", stream=True, offer=OFFER, usage=Usage(10, tokens), ttft_s=ttft_s)
    outcome.attempts.append(Attempt("pricey", "big/long", None, 200, seconds))
    return outcome


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
    answer(b, OFFER, 0.2)  # a success anywhere closes it everywhere
    assert await sync_b.sync_once() and await sync_a.sync_once()
    assert a.admission(OFFER, clock()).state is CircuitState.CLOSED


async def test_latency_ewma_merges_every_replicas_samples(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    answer(a, OFFER, 1.0)
    assert await sync_a.sync_once()
    answer(b, OFFER, 0.0)
    assert await sync_b.sync_once() and await sync_a.sync_once()
    for live in (a, b):
        seen = live.observed(OFFER.key)
        assert seen.samples == 2 and seen.ttft_s == pytest.approx(0.5)  # the first samples are averaged
    answer(a, OFFER, 0.5)
    answer(b, OFFER, 1.5)
    assert await sync_a.sync_once() and await sync_b.sync_once() and await sync_a.sync_once()
    for live in (a, b):
        seen = live.observed(OFFER.key)  # 0.5 -> 0.5 (weight 1/3: the mean) -> 0.8 (alpha 0.3 > 1/4)
        assert seen.samples == 4 and seen.ttft_s == pytest.approx(0.8)


async def test_ttft_and_whole_answer_latency_are_shared_apart(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    answer(a, OFFER, 0.2)
    answer(a, OFFER, stream=False, seconds=3.0)
    assert await sync_a.sync_once()
    answer(b, OFFER, stream=False, seconds=5.0)
    assert await sync_b.sync_once() and await sync_a.sync_once()
    for live in (a, b):
        seen = live.observed(OFFER.key)
        assert (seen.ttft_s, seen.samples) == (pytest.approx(0.2), 1)
        assert (seen.latency_s, seen.latency_samples) == (pytest.approx(4.0), 2)


async def test_retry_after_is_shared(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    clock = replicas[1]
    a.attempt_finished(OFFER, Attempt("pricey", "big/long", "rate_limited", 429, 0.1, 20.0), None)
    assert await sync_a.sync_once() and await sync_b.sync_once()
    assert b.admission(OFFER, clock()).cooling_for_s == pytest.approx(20.0)


async def test_redis_outage_keeps_local_routing_and_catches_up_later(replicas, redis_server):
    (a, sync_a), (b, sync_b) = replicas[0]
    redis_server.stop()
    answer(a, OFFER, 0.5)
    assert a.observed(OFFER.key).ttft_s == 0.5  # routing still learns locally
    assert not await sync_a.sync_once()
    assert sync_a.sync_failures == 1 and a.pending[OFFER.key].ttft == [0.5]  # kept for later
    redis_server.start()
    assert await sync_a.sync_once() and not a.pending
    assert await sync_b.sync_once()
    assert b.observed(OFFER.key).ttft_s == pytest.approx(0.5)


async def test_every_failed_sync_is_counted_in_the_metric(redis_server):
    """The log speaks once per outage; `gateway_routing_stats_sync_failures_total` counts every
    failed round (a failed push, and a failed pull with nothing to push), and no successful one."""
    metrics = Metrics()
    client = Redis.from_url(redis_server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    live = live_for(SNAP, Clock())
    sync = SharedLiveState(client, live, interval_s=0.05, on_sync_failure=metrics.routing_stats_sync_failed)

    def counted() -> float | None:
        return metrics.registry.get_sample_value("gateway_routing_stats_sync_failures_total")

    try:
        answer(live, OFFER, 0.5)
        assert await sync.sync_once() and counted() == 0
        redis_server.stop()
        answer(live, OFFER, 0.7)
        assert not await sync.sync_once()  # the push fails
        assert not await sync.sync_once()  # again, with the observation put back
        live.take_pending()
        assert not await sync.sync_once()  # nothing to push: the pull fails
        assert (sync.sync_failures, counted()) == (3, 3)
        redis_server.start()
        assert await sync.sync_once()
        assert (sync.sync_failures, counted()) == (0, 3)
    finally:
        await client.aclose()


async def test_a_push_that_times_out_returns_its_connection_to_the_pool(redis_server):
    """The push's pipeline checks its scripts first (SCRIPT EXISTS), holding a connection of
    the pool: when that check times out (a hung Redis), the connection goes back to the pool
    and nothing is left for the collector to warn about ("Unclosed Pipeline client")."""
    client = Redis.from_url(redis_server.url, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    live = live_for(SNAP, Clock())
    sync = SharedLiveState(client, live, interval_s=0.05)
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
    try:
        answer(live, OFFER, 0.5)
        assert await sync.sync_once() and pool_in_use(client) == 0
        answer(live, OFFER, 1.5)
        redis_server.pause(2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert not await sync.sync_once()
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert reported == []
        assert sync.sync_failures == 1 and pool_in_use(client) == 0
        await apoll(sync.sync_once, what="the paused redis-server to answer again")
        assert not live.pending and pool_in_use(client) == 0
    finally:
        loop.set_exception_handler(handler)
        await client.aclose()


def shared_record(live):
    record = live.circuits.get(OFFER.key)
    return (record.failures, record.opened_at > 0) if record else (0, False)


async def test_a_busy_offer_costs_one_script_call_per_sync(replicas, redis_server):
    (a, sync_a), (b, sync_b) = replicas[0]
    admin = Redis.from_url(redis_server.url)
    try:
        await admin.config_resetstat()
        for i in range(300):
            ttft = 0.1 + (i % 3) / 10
            a.call_finished(streamed_call(tokens=100, seconds=2.0 + ttft, ttft_s=ttft))  # 2 s generating
        assert await sync_a.sync_once()
        stats = await admin.info("commandstats")
        # One script call for the push, one for the pull (which reads every hash at once);
        # the first pull on a fresh server also meets NOSCRIPT once, then loads the script.
        evalsha = stats["cmdstat_evalsha"]
        assert evalsha["calls"] - evalsha["failed_calls"] == 2 and "cmdstat_eval" not in stats
    finally:
        await admin.aclose()
    assert await sync_b.sync_once()
    seen = b.observed(OFFER.key)
    # All 300 count, though only the latest MAX_SAMPLES are replayed into the mean.
    assert seen.samples == 300 and seen.tps_samples == 300
    assert seen.ttft_s == pytest.approx(a.observed(OFFER.key).ttft_s, abs=1e-5)
    assert seen.tokens_per_s == pytest.approx(50.0)


async def test_folded_observations_give_the_shared_state_their_sequence_gives(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    for attempt in (failed(), failed(), ok(), failed()):  # one sync interval
        answer(a, OFFER, 0.2) if attempt.error is None else a.attempt_finished(OFFER, attempt, None)
    assert await sync_a.sync_once() and await sync_b.sync_once()
    assert shared_record(b) == (1, False) and b.observed(OFFER.key).ttft_s == pytest.approx(0.2)
    for _ in range(3):
        a.attempt_finished(OFFER, failed(), None)
    assert await sync_a.sync_once() and await sync_b.sync_once()
    assert shared_record(b) == (4, True)


async def test_a_success_resets_the_shared_breaker_only_when_its_replica_knew_of_failures(replicas):
    (a, sync_a), (b, sync_b) = replicas[0]
    b.attempt_finished(OFFER, failed(), None)
    b.attempt_finished(OFFER, failed(), None)
    assert await sync_b.sync_once()
    answer(a, OFFER, 0.2)  # a has not pulled b's failures yet: nothing to reset
    assert await sync_a.sync_once() and shared_record(a) == (2, False)
    answer(a, OFFER, 0.2)  # now it knows: this success closes the breaker everywhere
    assert await sync_a.sync_once() and await sync_b.sync_once()
    assert shared_record(b) == (0, False)


async def test_observations_made_during_an_outage_are_folded_after_the_unsent_ones(replicas, redis_server):
    (a, sync_a), (b, sync_b) = replicas[0]
    redis_server.stop()
    a.attempt_finished(OFFER, failed(), None)
    a.attempt_finished(OFFER, failed(), None)
    assert not await sync_a.sync_once()
    answer(a, OFFER, 0.4)  # after the unsent failures: resets them
    a.attempt_finished(OFFER, failed(), None)
    a.attempt_finished(OFFER, Attempt("pricey", "big/long", "rate_limited", 429, 0.1, 20.0), None)
    redis_server.start()
    assert await sync_a.sync_once() and await sync_b.sync_once()
    assert shared_record(b) == (1, False) and b.admission(OFFER, replicas[1]()).cooling_for_s == pytest.approx(20.0)
    assert b.observed(OFFER.key).ttft_s == pytest.approx(0.4)


def shared_failures_in(raw: dict) -> int:
    return int(raw.get(b"failures", 0))


async def test_a_push_is_not_repeated_when_only_the_pull_failed(redis_server):
    """The push succeeded, the pull did not: the failure is in Redis once and stays once."""
    admin = Redis.from_url(redis_server.url)
    # A user that may run the push (the script) but not the pull's first read.
    await admin.execute_command("ACL", "SETUSER", "pusher", "on", ">pw", "~*", "+@all", "-smembers")
    client = Redis.from_url(f"redis://pusher:pw@127.0.0.1:{redis_server.port}/0", socket_timeout=1.0)
    live = live_for(SNAP, Clock())
    sync = SharedLiveState(client, live, interval_s=0.05)
    shared = PREFIX + "k:" + member(OFFER.key)
    try:
        live.attempt_finished(OFFER, failed(), None)
        assert not await sync.sync_once()  # pushed, then the pull was refused
        assert shared_failures_in(await admin.hgetall(shared)) == 1
        assert not await sync.sync_once()  # nothing new to push: the one failure is not sent again
        assert shared_failures_in(await admin.hgetall(shared)) == 1 and sync.sync_failures == 2
        await admin.execute_command("ACL", "SETUSER", "pusher", "+smembers")
        assert await sync.sync_once() and sync.sync_failures == 0
        assert shared_failures_in(await admin.hgetall(shared)) == 1
        assert shared_record(live) == (1, False)  # one failure of a threshold of 3: still closed
    finally:
        await client.aclose()
        await admin.aclose()


OTHER = SNAP.offer("cheap", "small/fast")


async def test_a_key_no_replica_refreshes_expires_and_leaves_the_key_set(redis_server):
    admin = Redis.from_url(redis_server.url)
    clients = [Redis.from_url(redis_server.url, socket_timeout=1.0) for _ in range(2)]
    a, b = live_for(SNAP, Clock()), live_for(SNAP, Clock())
    short = SharedLiveState(clients[0], a, ttl_s=1)  # a replica whose keys live one second
    normal = SharedLiveState(clients[1], b)
    stale = PREFIX + "k:" + member(OFFER.key)
    try:
        a.attempt_finished(OFFER, failed(), None)
        assert await short.sync_once()
        b.attempt_finished(OTHER, failed(), None)
        assert await normal.sync_once()
        assert await admin.smembers(KEYSET) == {member(OFFER.key).encode(), member(OTHER.key).encode()}
        assert await admin.ttl(stale) == 1 and 86000 < await admin.ttl(KEYSET) <= 86400

        async def expired() -> bool:
            return await admin.exists(stale) == 0

        await apoll(expired, what="the unrefreshed hash to expire", timeout=10)
        assert await normal.sync_once()
        assert await admin.smembers(KEYSET) == {member(OTHER.key).encode()}
        assert b.circuits.get(OTHER.key).failures == 1  # the refreshed key is still shared
    finally:
        for client in (*clients, admin):
            await client.aclose()


@pytest.fixture
def cluster_node():
    """A one-node Redis Cluster holding every slot: it refuses a script whose keys span slots
    (CROSSSLOT), as a real cluster does."""
    binary = require_binary("redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="gw-redis-cluster-"))
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    args += ["--appendonly", "no", "--cluster-enabled", "yes", "--logfile", str(workdir / "redis.log")]
    # The cluster bus defaults to port + 10000, which may be taken or past 65535: pick one too.
    args += ["--cluster-port", str(free_port())]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, socket_timeout=0.5)
    try:
        poll(client.ping, what="the cluster node", timeout=20, ignore=(redis.RedisError,))
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        poll(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"), what="cluster_state:ok")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_replicas_share_through_a_redis_cluster_node(cluster_node):
    clients = [Redis.from_url(cluster_node, socket_timeout=1.0) for _ in range(2)]
    a, b = live_for(SNAP, Clock()), live_for(SNAP, Clock())
    sync_a, sync_b = SharedLiveState(clients[0], a), SharedLiveState(clients[1], b)
    try:
        for _ in range(3):
            a.attempt_finished(OFFER, failed(), None)
        assert await sync_a.sync_once() and sync_a.sync_failures == 0
        assert await sync_b.sync_once() and sync_b.sync_failures == 0
        assert shared_record(b) == (3, True)
        assert all(key.startswith(b"{gw:routing}:") for key in await clients[0].keys("*"))
    finally:
        for client in clients:
            await client.aclose()
