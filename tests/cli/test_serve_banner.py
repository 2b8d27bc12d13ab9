"""What `gateway serve` prints last: the URLs, the policy, the store and a curl to try,
from a real `gateway serve` process, for the host and port it actually serves on."""

from __future__ import annotations

import json
import shlex
import subprocess

import httpx

from tests.support.poll import poll
from tests.support.services import REPO, GatewayProcess, require_binary

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


def test_the_banners_curl_gets_an_answer(start_gateway):
    curl = require_binary("curl")
    gw = start_gateway(DEFAULT_POLICY)
    command = shlex.split(gw.log().splitlines()[-1].split("try", 1)[1])
    assert command[0] == "curl"
    done = subprocess.run([curl, *command[1:]], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    answer = httpx.Response(200, content=done.stdout).json()
    assert answer["object"] == "chat.completion" and answer["model"] == "mock/mock-small"


def test_a_policy_without_routes_offers_a_model_and_keys_are_asked_for(start_gateway):
    gw = start_gateway(POLICY, env={"GATEWAY_API_KEYS": "ops:sk-ops"})
    assert gw.log().splitlines()[-7:] == expected_banner(
        gw, "mock/mock-small", auth=" -H 'Authorization: Bearer YOUR_KEY'"
    )


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
