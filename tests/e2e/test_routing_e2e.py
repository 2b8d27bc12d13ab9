"""Routing as apps meet it: the real gateway process, real fake upstreams, the openai client."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.services import GatewayProcess

DECISIONS = """
backends:
  cheap:
    type: openai
    base_url: {a}
    timeout_s: 5
    circuit: {{failure_threshold: 100}}
    models:
      gen/small: {{context_length: 2048, input_price: 0.1, output_price: 0.2}}
      gen/big: {{context_length: 131072, input_price: 1.0, output_price: 2.0}}
  pricey:
    type: openai
    base_url: {b}
    timeout_s: 5
    circuit: {{failure_threshold: 100}}
    models:
      gen/big: {{context_length: 131072, input_price: 3.0, output_price: 6.0}}
  coder:
    type: openai
    base_url: {c}
    timeout_s: 5
    circuit: {{failure_threshold: 100}}
    models:
      code/coder: {{context_length: 65536, input_price: 2.0, output_price: 4.0}}
routes:
  auto:
    strategy: cost
    models: [gen/small, gen/big]
    tasks:
      code: [code/coder]
"""


@pytest.fixture(scope="module")
def trio():
    servers = [FakeUpstream(name).start() for name in ("a", "b", "c")]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def decisions_gw(trio):
    a, b, c = trio
    gw = GatewayProcess(DECISIONS.format(a=a.base_url, b=b.base_url, c=c.base_url)).start()
    yield gw
    gw.stop()


@pytest.fixture
def clean(trio):
    for server in trio:
        server.reset()
    return trio


def ask(content="What is the capital of Australia?", model="auto", **extra):
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def served_by(raw) -> tuple[str, str]:
    return raw.headers["x-gateway-backend"], raw.headers["x-gateway-model"]


def test_the_cheapest_candidate_wins_under_cost(decisions_gw, clean, openai_client):
    a, b, _ = clean
    client = openai_client(decisions_gw)
    raw = client.chat.completions.with_raw_response.create(**ask(model="gen/big"))
    assert served_by(raw) == ("cheap", "gen/big") and raw.parse().choices[0].message.content
    raw = client.chat.completions.with_raw_response.create(**ask())
    assert served_by(raw) == ("cheap", "gen/small")
    assert raw.headers["x-gateway-route"] == "auto" and raw.headers["x-gateway-task"] == "chat"
    assert [r.body["model"] for r in a.received] == ["gen/big", "gen/small"] and b.received == []


def test_an_over_long_prompt_skips_the_short_context_model(decisions_gw, clean, openai_client):
    a, _, _ = clean
    long_prompt = "Please summarise the following notes. " + "lorem ipsum dolor sit amet " * 300  # ~2,800 tokens
    raw = openai_client(decisions_gw).chat.completions.with_raw_response.create(**ask(long_prompt))
    assert served_by(raw) == ("cheap", "gen/big")
    assert a.received[-1].body["model"] == "gen/big"


def test_a_code_prompt_goes_to_the_code_model_and_trivia_does_not(decisions_gw, clean, openai_client):
    _, _, c = clean
    client = openai_client(decisions_gw)
    raw = client.chat.completions.with_raw_response.create(
        **ask("Write a Python function that parses ISO dates and add unit tests.")
    )
    assert served_by(raw) == ("coder", "code/coder") and raw.headers["x-gateway-task"] == "code"
    with client.chat.completions.with_streaming_response.create(
        **ask("Fix this:\n```js\nlet x = y.z;\n```", stream=True)
    ) as stream:
        assert stream.headers["x-gateway-backend"] == "coder"
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices).strip()
    raw = client.chat.completions.with_raw_response.create(**ask("Who wrote the novel Moby-Dick?"))
    assert served_by(raw)[1] != "code/coder" and raw.headers["x-gateway-task"] == "chat"
    raw = client.chat.completions.with_raw_response.create(
        **ask("Who wrote Moby-Dick?"), extra_headers={"X-Gateway-Task": "code"}
    )
    assert served_by(raw) == ("coder", "code/coder")
    assert len(c.received) == 3


def test_provider_order_models_array_and_floor(decisions_gw, clean, openai_client):
    a, b, c = clean
    client = openai_client(decisions_gw)
    raw = client.chat.completions.with_raw_response.create(
        **ask(model="gen/big"), extra_body={"provider": {"order": ["pricey"]}}
    )
    assert served_by(raw) == ("pricey", "gen/big")
    assert "provider" not in b.received[-1].body  # routing fields are the gateway's, not forwarded
    raw = client.chat.completions.with_raw_response.create(
        **ask(model="gen/big"), extra_body={"provider": {"sort": "price", "only": ["PRICEY"]}}
    )
    assert served_by(raw) == ("pricey", "gen/big")
    raw = client.chat.completions.with_raw_response.create(**ask(model="gen/big:floor"))
    assert served_by(raw) == ("cheap", "gen/big") and a.received[-1].body["model"] == "gen/big"
    c.reset(status=503)
    raw = client.chat.completions.with_raw_response.create(
        **ask(model="code/coder"), extra_body={"models": ["gen/big"]}
    )
    assert served_by(raw) == ("cheap", "gen/big") and len(c.received) == 1
    assert "models" not in a.received[-1].body


def test_impossible_requests_say_why(decisions_gw, clean, openai_client):
    client = openai_client(decisions_gw)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(**ask(model="gen/huge"))
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**ask("word " * 120_000))
    assert e.value.code == "context_length_exceeded"
    assert "gen/small on cheap: ~" in e.value.message and "gen/big on pricey: ~" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:  # under every price: no retry would help
        client.chat.completions.create(**ask(model="gen/big"), extra_body={"provider": {"max_price": {"prompt": 0.5}}})
    assert e.value.status_code == 400 and e.value.code == "no_backend_available"
    assert {c["backend"] for c in e.value.body["metadata"]["candidates"]} == {"cheap", "pricey"}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**ask(), extra_body={"provider": {"sort": "vibes"}})
    assert e.value.param == "provider.sort"
    assert all(not server.received for server in clean)


def test_explain_returns_every_verdict_without_calling_a_backend(decisions_gw, clean):
    body = ask("Write a Rust function to reverse a string.", max_tokens=100)
    r = httpx.post(decisions_gw.url + "/v1/route/explain", json=body)
    assert r.status_code == 200
    doc = r.json()
    assert doc["route"] == "auto" and doc["task"] == "code" and doc["strategy"] == "cost"
    assert doc["try_order"][0] == {"backend": "coder", "model": "code/coder"}
    assert len(doc["candidates"]) == 4
    for candidate in doc["candidates"]:
        assert [f["filter"] for f in candidate["filters"]] == [
            "provider",
            "context_length",
            "capabilities",
            "max_price",
            "circuit",
        ]
        assert candidate["eligible"] and candidate["score"] is not None and candidate["rank"]
    assert all(not server.received for server in clean)
    r = httpx.post(decisions_gw.url + "/v1/route/explain", json=ask("x " * 250_000))
    assert r.status_code == 200 and r.json()["error"]["code"] == "context_length_exceeded"
    assert httpx.post(decisions_gw.url + "/v1/route/explain", json=ask(model="nope/nope")).status_code == 404


FALLBACK = """
backends:
  first:
    type: openai
    base_url: {a}
    timeout_s: 1
    first_byte_timeout_s: 0.5
    circuit: {{failure_threshold: {threshold}, cooldown_s: 60}}
    models:
      m/x: {{input_price: 0.1, output_price: 0.1}}
  second:
    type: openai
    base_url: {b}
    timeout_s: 5
    models:
      m/x: {{input_price: 1.0, output_price: 1.0}}
routes:
  auto:
    models: [m/x]
"""


@pytest.fixture
def pair(upstream, upstream_b):
    return upstream, upstream_b


@pytest.fixture
def fallback_gw(start_gateway, pair):
    a, b = pair
    return start_gateway(FALLBACK.format(a=a.base_url, b=b.base_url, threshold=100))


def stream_text(client, **extra) -> tuple[str, str]:
    with client.chat.completions.with_streaming_response.create(**ask(stream=True, **extra)) as response:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices)
        return response.headers["x-gateway-backend"], text


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500},
        {"status": 503},
        # Longer than gateway.routing.retry_after_cap_s (60 s): the cooldown is the cap, so it
        # outlives the test however slow the machine (with 1 s it could end between requests).
        {"status": 429, "headers": {"retry-after": "3600"}},
        {"delay_s": 3.0},  # hangs past timeout_s (non-streamed) and first_byte_timeout_s (streamed)
        {
            "status": 400,
            "error_body": {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "code": "context_length_exceeded",
                }
            },
        },
    ],
    ids=["500", "503", "429", "hang", "context-length"],
)
def test_a_failing_backend_is_skipped_and_the_client_still_gets_200(fallback_gw, pair, openai_client, failure):
    a, b = pair
    a.reset(**failure)
    client = openai_client(fallback_gw)
    raw = client.chat.completions.with_raw_response.create(**ask())
    assert raw.status_code == 200 and served_by(raw) == ("second", "m/x")
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    backend, text = stream_text(client)
    assert backend == "second" and text.strip() == "Hello from the fake upstream."
    # A 429's Retry-After also puts that backend last for the next requests, so it is not asked again meanwhile;
    # a 500 is asked once more on the same candidate (issue 12) before the next one answers.
    expected = {429: 1, 500: 4}.get(failure.get("status"), 2)
    assert len(a.received) == expected and len(b.received) == 2


def test_an_unreachable_backend_is_skipped(start_gateway, upstream_b, openai_client):
    from tests.support.ports import free_port

    gw = start_gateway(FALLBACK.format(a=f"http://127.0.0.1:{free_port()}/v1", b=upstream_b.base_url, threshold=100))
    client = openai_client(gw)
    assert served_by(client.chat.completions.with_raw_response.create(**ask())) == ("second", "m/x")
    assert stream_text(client)[0] == "second"


def test_a_200_stream_whose_first_event_is_an_error_falls_back(fallback_gw, pair, openai_client):
    a, b = pair
    a.reset(stream_error_before_content=True)
    backend, text = stream_text(openai_client(fallback_gw))
    assert backend == "second" and text.strip() == "Hello from the fake upstream."
    assert len(a.received) == 1 and len(b.received) == 1


def test_a_stream_that_breaks_after_content_is_not_retried(fallback_gw, pair, openai_client):
    a, b = pair
    a.reset(break_after_events=3)
    with pytest.raises(openai.APIError):
        stream_text(openai_client(fallback_gw))
    assert len(a.received) == 1 and b.received == []


def test_an_unhealthy_backend_trips_its_circuit_and_stops_being_called(start_gateway, pair, openai_client):
    a, b = pair
    gw = start_gateway(FALLBACK.format(a=a.base_url, b=b.base_url, threshold=2))
    a.reset(status=502)
    client = openai_client(gw)
    for _ in range(5):
        assert served_by(client.chat.completions.with_raw_response.create(**ask())) == ("second", "m/x")
    assert len(a.received) == 2  # open after two consecutive failures: skipped since
    circuits = {(c["backend"], c["model"]): c["state"] for c in httpx.get(gw.url + "/admin/status").json()["circuits"]}
    assert circuits == {("first", "m/x"): "open", ("second", "m/x"): "closed"}
    explained = httpx.post(gw.url + "/v1/route/explain", json=ask()).json()
    first = next(c for c in explained["candidates"] if c["backend"] == "first")
    assert not first["eligible"] and "circuit open after 2 consecutive failures" in str(first["filters"])
    deadline = time.time() + 10  # exported to the gauge within a second
    while 'gateway_backend_circuit_state{backend="first",model="m/x"} 2.0' not in httpx.get(gw.url + "/metrics").text:
        assert time.time() < deadline, "circuit state not exported"
        time.sleep(0.05)
    assert 'gateway_backend_circuit_state{backend="second",model="m/x"} 0.0' in httpx.get(gw.url + "/metrics").text


LATENCY = """
backends:
  slow:
    type: openai
    base_url: {a}
    models: {{m/x: {{}}}}
  fast:
    type: openai
    base_url: {b}
    models: {{m/x: {{}}}}
routes:
  quick:
    strategy: latency
    models: [m/x]
gateway:
  routing: {{exploration: {exploration}, explore_min_samples: 3}}
"""


def latency_route(start_gateway, pair, openai_client, *, slow_s: float, exploration: float):
    """A client of a gateway whose `quick` route ranks `slow` (answering after `slow_s`) and
    `fast` by latency, with that share of exploration."""
    a, b = pair
    a.reset(delay_s=slow_s)
    return openai_client(start_gateway(LATENCY.format(a=a.base_url, b=b.base_url, exploration=exploration)))


def whole_from(client) -> str:
    """The backend that served one non-streamed request to `quick`."""
    return served_by(client.chat.completions.with_raw_response.create(**ask(model="quick")))[0]


def test_after_warm_up_latency_sends_all_traffic_to_the_fast_backend(start_gateway, pair, openai_client):
    # Exploration off, so every count is exact (a share of 5% left the count to chance, and a
    # bound loose enough for chance failed on a loaded machine).
    client = latency_route(start_gateway, pair, openai_client, slow_s=0.4, exploration=0)
    warm_up = [whole_from(client) for _ in range(6)]
    # Every untried backend is measured first, `explore_min_samples` times, in policy order.
    assert warm_up == ["slow"] * 3 + ["fast"] * 3
    streamed, whole = [], []
    for i in range(20):  # streamed (ranked by TTFT) and not (by whole latency): fast wins both
        if i % 2:
            streamed.append(stream_text(client, model="quick")[0])
        else:
            whole.append(whole_from(client))
    assert whole == ["fast"] * 10
    # Streams are ranked by TTFT, which the warm-up's whole answers did not measure: the
    # fast one leads on their latency standing in until it has its three TTFT samples, then
    # the slow one is measured three times, then the fast one leads.
    assert streamed == ["fast"] * 3 + ["slow"] * 3 + ["fast"] * 4


def test_exploration_tries_the_leaders_peer_first_for_a_share_of_requests(start_gateway, pair, openai_client):
    # With exploration off the slow backend serves exactly its three warm-up requests (the
    # test above). At the largest share, one half, it is also tried first on about half the
    # requests once both are measured; which ones is the gateway's random draw, so the count
    # is not exact: more than the warm-up's three of 22 has odds of failing under 1 in 10,000.
    client = latency_route(start_gateway, pair, openai_client, slow_s=0.1, exploration=0.5)
    served = [whole_from(client) for _ in range(22)]
    assert served.count("slow") > 3 and served[-10:].count("fast") > 0, served


SHARED = """
backends:
  flaky:
    type: openai
    base_url: {a}
    timeout_s: 5
    circuit: {{failure_threshold: 2, cooldown_s: 60}}
    models: {{m/x: {{input_price: 0.1}}}}
  steady:
    type: openai
    base_url: {b}
    models: {{m/x: {{input_price: 1.0}}}}
routes:
  auto: {{models: [m/x]}}
gateway:
  routing: {{shared_sync_s: 0.1}}
"""


@pytest.mark.redis
def test_replicas_share_circuit_state_through_redis(redis_server, start_gateway, pair, openai_client):
    # redis_server first: torn down last, after the gateways have stopped using it.
    a, b = pair
    config = SHARED.format(a=a.base_url, b=b.base_url)
    env = {"GATEWAY_REDIS_URL": redis_server.url}
    one, two = start_gateway(config, env=env), start_gateway(config, env=env)
    a.reset(status=500)
    for _ in range(2):
        assert served_by(openai_client(one).chat.completions.with_raw_response.create(**ask()))[0] == "steady"
    deadline = time.time() + 10
    while True:
        circuits = {c["backend"]: c["state"] for c in httpx.get(two.url + "/admin/status").json()["circuits"]}
        if circuits["flaky"] == "open":
            break
        assert time.time() < deadline, circuits
        time.sleep(0.05)
    calls = len(a.received)
    assert served_by(openai_client(two).chat.completions.with_raw_response.create(**ask()))[0] == "steady"
    assert len(a.received) == calls  # the second replica never tried the broken backend


ONE_CIRCUIT = """
backends:
  flaky:
    type: openai
    base_url: {a}
    circuit: {{failure_threshold: 2, cooldown_s: 2}}
    models: {{m/x: {{}}}}
routes:
  auto: {{models: [m/x]}}
"""


def test_a_503_of_open_circuits_says_when_the_first_half_opens_and_the_sdk_waits_for_it(
    start_gateway, upstream, openai_client
):
    import anthropic

    upstream.reset(status=500)
    gw = start_gateway(ONE_CIRCUIT.format(a=upstream.base_url))
    with pytest.raises(openai.InternalServerError):  # a 500, then its one retry: the circuit opens
        openai_client(gw).chat.completions.create(**ask())
    assert len(upstream.received) == 2
    upstream.reset()  # recovered; its circuit half-opens 2 s after it opened
    with pytest.raises(openai.APIStatusError) as refused:
        openai_client(gw).chat.completions.create(**ask())
    assert refused.value.status_code == 503 and refused.value.response.headers["retry-after"] in ("1", "2")
    claude = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        claude.messages.create(model="auto", max_tokens=16, messages=[{"role": "user", "content": "Hi"}])
    assert overloaded.value.status_code == 529 and overloaded.value.response.headers["retry-after"] in ("1", "2")
    assert upstream.received == []
    # The SDK's own retries (two, its default) came 0.5 and 1 s apart and found the circuit
    # still open; told when it half-opens, the SDK waits that long and its retry is the probe.
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=2, timeout=30)
    started = time.monotonic()
    answer = sdk.chat.completions.create(**ask())
    assert answer.choices[0].message.content and time.monotonic() - started >= 0.9
    assert len(upstream.received) == 1
