"""Two tenants' traffic on one running gateway, for the rankings isolation tests (API and page)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.usage.rankings import today_utc
from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.tenants.support import bearer, cli, create_key

ADMIN = "sk-admin-visibility"
ALICE_APP = "https://alice-internal.example/secret-project-x"
ALICE_TITLE = "Alice Secret Project"
BOB_APP = "https://bob.example/tools"
BOB_TITLE = "Bob Tools"
ALICE_CALLS, BOB_CALLS = 3, 1
PER_CALL = 11 + 7  # the fake upstream's usage


@dataclass
class Tenants:
    gw: object
    alice: str
    bob: str

    def get(self, path: str, viewer: str, **params) -> httpx.Response:
        return httpx.get(self.gw.url + path, params=params, headers=bearer(viewer), timeout=10)


def chat(gw, key: str, app: str, title: str) -> None:
    answer = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers={**bearer(key), "HTTP-Referer": app, "X-Title": title},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def two_tenants(start_gateway, upstream, data: Path, env: dict[str, str] | None = None) -> Tenants:
    """alice (team red) made 3 calls from her secret project, bob (team blue) 1; all recorded."""
    for team in ("red", "blue"):
        made = cli("teams", "create", team, data_dir=data)
        assert made.returncode == 0, made.stderr
    alice = create_key("alice", "--team", "red", data_dir=data)
    bob = create_key("bob", "--team", "blue", data_dir=data)
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={
            "GATEWAY_DATA_DIR": str(data),
            "GATEWAY_ADMIN_KEY": ADMIN,
            "GATEWAY_USAGE_FLUSH_S": "0.05",
            "GATEWAY_RANKINGS_REFRESH_S": "0",
            **(env or {}),
        },
    )
    for _ in range(ALICE_CALLS):
        chat(gw, alice, ALICE_APP, ALICE_TITLE)
    for _ in range(BOB_CALLS):
        chat(gw, bob, BOB_APP, BOB_TITLE)
    tenants = Tenants(gw, alice, bob)
    poll(lambda: recorded(data) == ALICE_CALLS + BOB_CALLS, what="every call recorded")
    return tenants


def recorded(data: Path) -> int:
    """Calls in the ledger, read by the CLI from the store (not through the rankings, whose
    answers may be kept)."""
    day = today_utc().isoformat()
    done = cli("usage", "export", "--start", day, "--end", day, data_dir=data)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())
