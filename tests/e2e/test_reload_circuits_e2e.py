"""A reload that fixes a backend gives it its traffic back at once, not after its cooldown.

The operator's sequence: a backend's `base_url` is wrong, its calls fail, its circuit opens;
the operator corrects the URL and the reload succeeds. The circuit had opened on what the
old settings met, so the corrected backend starts closed: the next call reaches it. A reload
that leaves the backend's settings as they were keeps its circuit as it stood (a broken
backend is not handed traffic again by an unrelated edit).

Real gateway process, a real HTTP upstream (`FaultUpstream`, which logs every call it gets),
the circuit's long cooldown pinned so that only the reload can have closed it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import fault_upstream as fault
from tests.support.fault_upstream import FaultUpstream
from tests.support.poll import poll
from tests.support.ports import free_port

POLICY = """
backends:
  primary:
    type: openai
    base_url: {url}
    api_key: sk-primary-123456
    timeout_s: 5
    circuit: {{failure_threshold: 2, cooldown_s: 120}}
    models:
      test/small: {{}}
routes:
  auto:
    models: [test/small]
  {extra}: {{models: [test/small]}}
"""


def policy(url: str, extra: str = "spare") -> str:
    return POLICY.format(url=url, extra=extra)


def ask(gw) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)


def reloads_ok(gw) -> int:
    return httpx.get(gw.url + "/admin/status").json()["config"]["reloads_ok"]


def circuit_state(gw) -> str:
    """The circuit's line of `gateway_backend_circuit_state` (0 closed, 2 open)."""
    lines = httpx.get(gw.url + "/metrics").text.splitlines()
    return next(line for line in lines if line.startswith('gateway_backend_circuit_state{backend="primary"'))


def open_the_circuit(gw) -> None:
    """Two refused connections open it; the third call is refused by the gateway itself, and
    the metric says so (exported once a second)."""
    assert [ask(gw).status_code for _ in range(2)] == [502, 502]
    refused = ask(gw)
    assert refused.status_code == 503, refused.text
    assert "circuit open" in refused.json()["error"]["message"]
    poll(lambda: circuit_state(gw).endswith(" 2.0"), what="the circuit reported open", context=gw.log)


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "circuits-shared-through-redis"])
def test_a_reload_that_corrects_a_backend_closes_its_circuit(request, start_gateway, shared):
    # Shared, the open circuit is also in Redis, pulled back every 0.5 s: the close must go there too.
    env = {"GATEWAY_REDIS_URL": request.getfixturevalue("redis_server").url} if shared else {}
    upstream = FaultUpstream("corrected").start()
    try:
        gw = start_gateway(policy(f"http://127.0.0.1:{free_port()}/v1"), env=env)  # nothing listens there
        open_the_circuit(gw)

        gw.write_config(policy(upstream.base_url))
        poll(lambda: reloads_ok(gw) == 1, what="the corrected policy applied", context=gw.log)

        answers = [ask(gw) for _ in range(3)]
        time.sleep(1.5)  # syncs with Redis meanwhile, shared: they must not bring the old state back
        answers.append(ask(gw))
        assert [a.status_code for a in answers] == [200] * 4, answers[-1].text
        assert {a.headers["x-gateway-backend"] for a in answers} == {"primary"}
        assert len(upstream.seen) == 4  # one call each, none retried
        poll(lambda: circuit_state(gw).endswith(" 0.0"), what="the circuit reported closed", context=gw.log)
        assert "circuit of backend primary closed: its settings changed" in gw.log()
    finally:
        upstream.stop()


def test_a_reload_that_leaves_the_backend_as_it_was_keeps_its_circuit_open(start_gateway):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gw = start_gateway(policy(dead))
    open_the_circuit(gw)

    gw.write_config(policy(dead, extra="renamed"))  # another route changed; the backend did not
    poll(lambda: reloads_ok(gw) == 1, what="the edited policy applied", context=gw.log)

    refused = ask(gw)
    assert refused.status_code == 503, refused.text
    assert "circuit open" in refused.json()["error"]["message"]
    assert circuit_state(gw).endswith(" 2.0")
    assert "its settings changed" not in gw.log()


def test_calls_on_the_old_settings_failing_after_the_correction_do_not_open_its_circuit(start_gateway):
    """The operator corrects the URL while calls to the old one still hang: they time out
    after the reload, on the adapter their requests started with. Those failures are the old
    URL's: counted, the corrected backend's circuit opened on them, and after one good answer
    the route answered 503 for the whole cooldown."""
    black_hole, corrected = FaultUpstream("black-hole").start(), FaultUpstream("corrected").start()
    black_hole.always(fault.hang())
    try:
        gw = start_gateway(policy(black_hole.base_url).replace("timeout_s: 5", "timeout_s: 2"))
        with ThreadPoolExecutor(2) as pool:
            hanging = [pool.submit(ask, gw) for _ in range(2)]  # failure_threshold: 2
            poll(lambda: len(black_hole.seen) == 2, what="both calls hanging", context=gw.log)
            gw.write_config(policy(corrected.base_url).replace("timeout_s: 5", "timeout_s: 2"))
            poll(lambda: reloads_ok(gw) == 1, what="the corrected policy applied", context=gw.log)
            assert ask(gw).status_code == 200
            assert [h.result().status_code for h in hanging] == [504, 504]  # timed out after the reload

        answers = [ask(gw) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200], answers[-1].text
        assert len(corrected.seen) == 3 and len(black_hole.seen) == 2
        assert circuit_state(gw).endswith(" 0.0")
    finally:
        black_hole.stop()
        corrected.stop()
