"""Adapters per config snapshot: a request keeps the adapters it started with across reloads,
and a replaced adapter is closed as soon as its last user is done (issue 11, item 17)."""

from __future__ import annotations

import asyncio

from gateway.backends.pool import BackendPool
from tests.routing.support import snapshot_from


def policy(a_url: str, b_url: str = "http://b.test/v1") -> str:
    return f"""
    backends:
      a: {{type: openai, base_url: "{a_url}", models: {{m/x: {{}}}}}}
      b: {{type: openai, base_url: "{b_url}", models: {{m/x: {{}}}}}}
    routes:
      auto: {{models: [m/x]}}
    """


def closes(pool_backends, log: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Spy on aclose() of the adapters not yet spied on: name -> base_url of each close, in order."""
    log = {} if log is None else log
    for backend in pool_backends:
        if getattr(backend, "spied", False):
            continue
        backend.spied = True
        original = backend.aclose

        async def aclose(backend=backend, original=original) -> None:
            log.setdefault(backend.name, []).append(backend.config.base_url)
            await original()

        backend.aclose = aclose
    return log


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_lease_keeps_the_adapters_of_its_snapshot_across_a_reload():
    pool = BackendPool()
    pool.apply(snapshot_from(policy("http://a1.test/v1")))
    lease = pool.acquire()
    old_a, old_b = lease.get("a"), lease.get("b")
    pool.apply(snapshot_from(policy("http://a2.test/v1")))
    assert lease.get("a") is old_a and old_a.config.base_url == "http://a1.test/v1"
    fresh = pool.acquire()
    assert fresh.get("a") is not old_a and fresh.get("a").config.base_url == "http://a2.test/v1"
    assert fresh.get("b") is old_b  # unchanged: the same adapter and its warm connections
    lease.release()
    fresh.release()
    await pool.aclose()


async def test_a_replaced_adapter_is_closed_right_after_its_last_user_and_not_before():
    pool = BackendPool()
    pool.apply(snapshot_from(policy("http://a1.test/v1")))
    closed = closes(pool)
    first, second = pool.acquire(), pool.acquire()
    pool.apply(snapshot_from(policy("http://a2.test/v1")))
    await settle()
    assert closed == {}  # two requests still use the old `a`
    first.release()
    await settle()
    assert closed == {}
    second.release()
    await settle()
    assert closed == {"a": ["http://a1.test/v1"]}  # once, and only the replaced one (b is shared)
    await pool.aclose()


async def test_an_unused_replaced_adapter_is_closed_at_once_and_shared_ones_at_shutdown():
    pool = BackendPool()
    pool.apply(snapshot_from(policy("http://a1.test/v1")))
    closed = closes(pool)
    pool.apply(snapshot_from(policy("http://a2.test/v1")))
    await settle()
    assert closed == {"a": ["http://a1.test/v1"]}
    closes(pool, closed)  # spy on the new `a` too
    pool.apply(snapshot_from(policy("http://a2.test/v1", "http://b2.test/v1")))
    await settle()
    assert closed == {"a": ["http://a1.test/v1"], "b": ["http://b.test/v1"]}
    await pool.aclose()


async def test_leases_across_several_reloads_each_close_their_own_adapters():
    pool = BackendPool()
    pool.apply(snapshot_from(policy("http://a1.test/v1")))
    closed = closes(pool)
    one = pool.acquire()
    pool.apply(snapshot_from(policy("http://a2.test/v1")))
    closes(pool, closed)
    two = pool.acquire()
    pool.apply(snapshot_from(policy("http://a3.test/v1")))
    two.release()
    await settle()
    assert closed == {"a": ["http://a2.test/v1"]}  # a2's last user left; a1 is still in use
    one.release()
    await settle()
    assert closed == {"a": ["http://a2.test/v1", "http://a1.test/v1"]}
    await pool.aclose()


def test_a_snapshot_whose_adapters_cannot_be_built_leaves_the_gate_as_it_was(monkeypatch):
    """Hostile testing (reading the reload path): `apply` gave the new snapshot's per-model
    limits to the gate before building its adapters, so a snapshot rejected there (the reload
    counts it failed, the old one keeps serving) still put its limits in force."""
    import gateway.backends.pool as pool_module

    pool = BackendPool()
    pool.apply(snapshot_from(policy("http://a.test/v1")))
    serving = pool.acquire()
    limited = snapshot_from(policy("http://a2.test/v1").rstrip() + "\n    rate_limits: {routes: {m/x: 1}}\n")

    def cannot_build(name, config):
        raise ValueError("cannot build the adapter")

    monkeypatch.setattr(pool_module, "create_backend", cannot_build)
    try:
        pool.apply(limited)
    except ValueError:
        pass
    assert pool.gate.model_rpm == {}
    assert pool.acquire().get("a") is serving.get("a")  # the old adapters still serve
