"""What `gateway serve` prints last: the URLs, the policy, the store and a curl to try,
from a real `gateway serve` process, for the host and port it actually serves on."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import httpx

from tests.support.poll import poll
from tests.support.services import REPO, GatewayProcess

DEFAULT_POLICY = (REPO / "policies" / "default.yaml").read_text()
POLICY = """
backends:
  m: {type: mock, models: {mock/mock-small: {}}}
"""


def expected_banner(gw: GatewayProcess, model: str, auth: str = "") -> list[str]:
    url = gw.url
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hi"}]}, separators=(",", ":"))
    return [
        f"open-model-gateway is serving on {url}",
        f"  OpenAI base_url  {url}/v1",
        f"  rankings         {url}/rankings",
        f"  metrics          {url}/metrics",
        f"  policy           {gw.config_path}",
        f"  store            SQLite {gw.dir / 'data' / 'usage.sqlite3'}",
        f"  try              curl -s {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d '{body}'",
    ]


def test_the_banner_is_the_last_thing_printed_once_the_server_answers(start_gateway):
    gw = start_gateway(DEFAULT_POLICY)  # returns once /health answers
    lines = gw.log().splitlines()
    assert lines[-7:] == expected_banner(gw, "auto"), gw.log()
    assert sum(line.startswith("open-model-gateway is serving") for line in lines) == 1
    # It comes after uvicorn's own start lines, not buried among them.
    assert any("Uvicorn running on" in line for line in lines[:-7])


def replay_curl(line: str) -> httpx.Response:
    """The request the banner's curl command sends, sent (no curl binary needed): its URL,
    each -H header and the -d body, exactly as a shell would split them."""
    words = shlex.split(line.split("try", 1)[1])
    assert words[:2] == ["curl", "-s"]
    url, rest = words[2], words[3:]
    headers, body = {}, None
    while rest:
        flag, value, *rest = rest
        if flag == "-H":
            name, _, header = value.partition(": ")
            headers[name] = header
        else:
            assert flag == "-d", flag
            body = value
    assert body is not None
    return httpx.post(url, headers=headers, content=body.encode())


def test_the_banners_curl_gets_an_answer(start_gateway):
    gw = start_gateway(DEFAULT_POLICY)
    answer = replay_curl(gw.log().splitlines()[-1])
    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "chat.completion" and answer.json()["model"] == "mock/mock-small"


def test_a_policy_without_routes_offers_a_model_and_keys_are_asked_for(start_gateway):
    gw = start_gateway(POLICY, env={"GATEWAY_API_KEYS": "ops:sk-ops"})
    lines = gw.log().splitlines()
    assert lines[-7:] == expected_banner(gw, "mock/mock-small", auth=" -H 'Authorization: Bearer YOUR_KEY'")
    assert replay_curl(lines[-1]).status_code == 401  # YOUR_KEY is to be replaced
    assert replay_curl(lines[-1].replace("YOUR_KEY", "sk-ops")).json()["model"] == "mock/mock-small"


def test_several_workers_print_one_banner(start_gateway):
    gw = start_gateway(DEFAULT_POLICY, workers=2)
    banner = expected_banner(gw, "auto")

    def printed() -> list[str] | None:
        lines = gw.log().splitlines()
        return lines if banner[-1] in lines else None

    lines = poll(printed, what="the banner", context=gw.log)
    at = lines.index(banner[0])
    assert lines[at : at + 7] == banner
    assert sum(line.startswith("open-model-gateway is serving") for line in lines) == 1


def _new_key(tmp_path) -> str:
    """The secret of a key made with `gateway keys create` in `tmp_path`'s data directory."""
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--name", "dev", "--json"],
        cwd=REPO,
        env={**os.environ, "GATEWAY_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(made.stdout)["key"]


def test_virtual_keys_alone_are_asked_for_too(start_gateway, tmp_path):
    """Keys made with `gateway keys create` and no GATEWAY_API_KEYS: the banner's curl had no
    Authorization header, and its first call got a 401."""
    secret = _new_key(tmp_path)
    gw = start_gateway(POLICY, workdir=tmp_path)
    lines = gw.log().splitlines()
    assert lines[-7:] == expected_banner(gw, "mock/mock-small", auth=" -H 'Authorization: Bearer YOUR_KEY'")
    assert replay_curl(lines[-1]).status_code == 401
    assert replay_curl(lines[-1].replace("YOUR_KEY", secret)).json()["model"] == "mock/mock-small"


def test_a_gateway_that_requires_keys_asks_for_one_before_any_exists(start_gateway, tmp_path):
    """GATEWAY_REQUIRE_KEYS=true with no key made yet: the banner's curl had no Authorization
    header, so a new operator's first call got 401 `missing_api_key` from the line meant to work."""
    gw = start_gateway(POLICY, workdir=tmp_path, env={"GATEWAY_REQUIRE_KEYS": "true", "GATEWAY_KEYS_REFRESH_S": "0.1"})
    lines = gw.log().splitlines()
    assert lines[-7:] == expected_banner(gw, "mock/mock-small", auth=" -H 'Authorization: Bearer YOUR_KEY'")
    curl = lines[-1].replace("YOUR_KEY", _new_key(tmp_path))
    answer = poll(lambda: (r := replay_curl(curl)).status_code == 200 and r, what="the new key accepted", timeout=15)
    assert answer.json()["model"] == "mock/mock-small"


EMBEDDING_FIRST = """
backends:
  m:
    type: mock
    models:
      mock/embed: {kind: embedding, dimensions: 8}
      mock/mock-small: {}
routes:
  embed: {models: [mock/embed]}
  chat: {models: [mock/mock-small]}
"""

EMBEDDINGS_ONLY = """
backends:
  m: {type: mock, models: {mock/embed: {kind: embedding, dimensions: 8}}}
"""


def test_the_banners_call_is_one_the_policy_answers(start_gateway):
    """A policy whose first route leads to embeddings: the banner sent a chat completion to it
    (a 400, wrong endpoint). The first route that leads to a chat model is offered; with no
    chat model at all, an embedding."""
    gw = start_gateway(EMBEDDING_FIRST)
    assert gw.log().splitlines()[-7:] == expected_banner(gw, "chat")
    answer = replay_curl(gw.log().splitlines()[-1])
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "mock/mock-small"

    only = start_gateway(EMBEDDINGS_ONLY)
    line = only.log().splitlines()[-1]
    assert line.endswith(
        f"curl -s {only.url}/v1/embeddings -H 'Content-Type: application/json' "
        """-d '{"model":"mock/embed","input":"Say hi"}'"""
    )
    answer = replay_curl(line)
    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "list" and len(answer.json()["data"][0]["embedding"]) == 8
