"""A team's own rate limit as its keys meet it on a running gateway: shared by every key of
the team, exact under concurrency, and changed with `gateway teams update` without a restart."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.clock import clear_of_minute_edge
from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.tenants.support import bearer, cli, create_key

ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


def test_a_team_rpm_is_shared_by_its_keys_and_an_update_reaches_the_running_gateway(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    made = cli("teams", "create", "ops", "--rpm", "3", data_dir=data)
    assert made.returncode == 0, made.stderr
    keys = [create_key(name, "--team", "ops", data_dir=data) for name in ("ops-a", "ops-b")]
    gw = start_gateway(
        one_backend_policy(upstream.base_url), env={"GATEWAY_DATA_DIR": str(data), "GATEWAY_KEYS_REFRESH_S": "0.2"}
    )

    def chat(i: int) -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(keys[i % 2]), timeout=30)

    clear_of_minute_edge(margin_s=25)
    upstream.reset(delay_s=0.3)  # all six in flight together
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(chat, range(6)))
    assert sorted(r.status_code for r in answers) == [200] * 3 + [429] * 3
    refused = [r for r in answers if r.status_code == 429]
    for r in refused:
        error = r.json()["error"]
        assert error["metadata"] == {"limit": "rpm", "scope": "team", "name": "ops"}, error
        assert "team `ops`: rpm (3 requests per minute)" in error["message"] and int(r.headers["retry-after"]) > 0
    assert len(upstream.received) == 3

    upstream.reset()
    updated = cli("teams", "update", "ops", "--rpm", "5", data_dir=data)
    assert updated.returncode == 0, updated.stderr
    poll(lambda: chat(0).status_code == 200, what="the team's new rpm", timeout=10)  # the 4th of 5
    assert chat(1).status_code == 200  # the 5th
    assert chat(0).status_code == 429 and chat(1).status_code == 429
    assert len(upstream.received) == 2  # refusals never reach the upstream
    listed = json.loads(cli("teams", "list", "--json", data_dir=data).stdout)
    assert [(t["name"], t["rpm"]) for t in listed] == [("ops", 5)]
