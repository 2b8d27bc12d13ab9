"""What `gateway serve` prints last: the URLs, the policy, the store and a curl to try,
from a real `gateway serve` process, for the host and port it actually serves on."""

from __future__ import annotations

import json
import shlex

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
