"""The state Redis of deploy/k8s and docker-compose: `noeviction` under a `maxmemory` sized
from what a usage event measurably costs (issue 11 item 19; the README's "Usage retention")."""

from __future__ import annotations

import subprocess

import pytest
import redis
import yaml

from bench.usage_redis_memory import realistic
from gateway.usage.redis_store import RedisUsageStore
from tests.deploy.artifacts import DEPLOY, REPO
from tests.support.poll import poll
from tests.support.ports import free_port
from tests.support.services import require_binary

# The figures the README's arithmetic and the manifests use (bench/usage_redis_memory.py):
STREAM_BYTES_PER_EVENT = 549  # MEMORY USAGE of a day's stream / events
MARKER_BYTES_PER_EVENT = 121  # used_memory per event minus the stream's share
DEDUPE_DAYS = 7  # RedisUsageStore.dedupe_ttl_s
OTHER_STATE_BYTES = 100 * 1024 * 1024  # a year of aggregates, rate-limit and routing state, with room
EVENTS_PER_DAY = 86_400  # 1 request/s: what the manifests are sized for

REDIS = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "redis.yaml").read_text()) if d["kind"] == "StatefulSet")
CONTAINER = REDIS["spec"]["template"]["spec"]["containers"][0]
DEPLOYMENT = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def redis_bytes(value: str) -> int:
    """Redis's memory units: `mb` is 1024 * 1024 bytes."""
    units = {"gb": 1024**3, "mb": 1024**2, "kb": 1024}
    for unit, factor in units.items():
        if value.lower().endswith(unit):
            return int(value[: -len(unit)]) * factor
    return int(value)


def kube_bytes(value: str) -> int:
    return int(value[:-2]) * {"Mi": 1024**2, "Gi": 1024**3}[value[-2:]]


def test_the_state_redis_never_evicts_and_compose_runs_it_the_same_way():
    k8s, compose = CONTAINER["args"], COMPOSE["redis"]["command"]
    assert flag(k8s, "--maxmemory-policy") == flag(compose, "--maxmemory-policy") == "noeviction"
    assert flag(k8s, "--maxmemory") == flag(compose, "--maxmemory")


def test_maxmemory_leaves_the_container_room_for_copy_on_write():
    maxmemory = redis_bytes(flag(CONTAINER["args"], "--maxmemory"))
    assert maxmemory <= 0.65 * kube_bytes(CONTAINER["resources"]["limits"]["memory"])


def test_maxmemory_holds_the_configured_retention_at_one_request_a_second():
    env = {e["name"]: e.get("value") for e in DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["env"]}
    days = int(env["GATEWAY_USAGE_EVENTS_RETENTION_DAYS"])
    compose_days = COMPOSE["gateway"]["environment"]["GATEWAY_USAGE_EVENTS_RETENTION_DAYS"]
    assert compose_days == f"${{GATEWAY_USAGE_EVENTS_RETENTION_DAYS:-{days}}}"
    need = EVENTS_PER_DAY * (STREAM_BYTES_PER_EVENT * days + MARKER_BYTES_PER_EVENT * DEDUPE_DAYS) + OTHER_STATE_BYTES
    assert need <= redis_bytes(flag(CONTAINER["args"], "--maxmemory"))


@pytest.mark.redis
async def test_an_event_costs_no_more_than_the_sizing_assumes(redis_server):
    # Measured like bench/usage_redis_memory.py, on fewer events: a field added to the events
    # (or a fatter encoding) that would outgrow the manifests' sizing fails here.
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    store = RedisUsageStore(client)
    events = realistic(8500)
    # The first batch pays what does not grow with the events (the script, the day's keys and
    # its set of apps): 8,000 events are too few to spread that thin, so it is left out.
    await store.record(events[:500])
    measured = events[500:]
    before = (await client.info("memory"))["used_memory"]
    for i in range(0, len(measured), 500):
        await store.record(measured[i : i + 500])
    grown = (await client.info("memory"))["used_memory"] - before
    stream = await client.memory_usage(store.key(events[0].day, "events"), samples=0)
    await client.aclose()
    assert stream / len(events) <= STREAM_BYTES_PER_EVENT * 1.02
    assert grown / len(measured) <= (STREAM_BYTES_PER_EVENT + MARKER_BYTES_PER_EVENT) * 1.05


@pytest.mark.redis
def test_redis_server_runs_with_the_manifests_memory_flags(tmp_path):
    args = CONTAINER["args"]
    port = free_port()
    proc = subprocess.Popen(
        [require_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
        + [
            "--save",
            "",
            "--maxmemory",
            flag(args, "--maxmemory"),
            "--maxmemory-policy",
            flag(args, "--maxmemory-policy"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        poll(client.ping, what="redis-server", ignore=(redis.RedisError,))
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(client.config_get("maxmemory")["maxmemory"]) == redis_bytes(flag(args, "--maxmemory"))
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
