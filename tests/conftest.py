"""Shared fixtures: fake upstreams, the real gateway process, real redis-server, the openai client."""

from __future__ import annotations

import textwrap

import pytest

from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_responses import FakeResponses
from tests.support.fake_upstream import FakeUpstream
from tests.support.services import GatewayProcess, RedisServer


@pytest.fixture
def upstream():
    server = FakeUpstream("a").start()
    yield server
    server.stop()


@pytest.fixture
def upstream_b():
    server = FakeUpstream("b").start()
    yield server
    server.stop()


@pytest.fixture
def claude():
    """A fake Anthropic upstream, taking its default key (sk-ant-test-key-123456)."""
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def native():
    """A fake upstream serving OpenAI's Responses API natively (key sk-fake-responses-123456)."""
    server = FakeResponses().start()
    yield server
    server.stop()


@pytest.fixture
def start_gateway(request):
    """Factory: start_gateway(config_yaml, **kwargs) -> running GatewayProcess; stopped after the test.

    A failed test's report shows each gateway's log (their directories are removed).
    """
    started: list[GatewayProcess] = []
    request.node.started_gateways = started  # for pytest_runtest_makereport

    def start(config_text: str, **kwargs) -> GatewayProcess:
        gw = GatewayProcess(textwrap.dedent(config_text), **kwargs).start()
        started.append(gw)
        return gw

    yield start
    for gw in reversed(started):  # last first: a later gateway may run in an earlier one's directory
        gw.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        for gw in getattr(item, "started_gateways", ()):
            report.sections.append((f"gateway {gw.url} log ({report.when})", gw.log()[-20_000:]))


@pytest.fixture
def redis_server(request):
    """A redis-server of the test's own. The test's gateways are stopped before it: a test that
    asks for it after `start_gateway` would have it torn down first, and each gateway then
    spent its shutdown waiting on the Redis it flushes to (7 s a test, 14 s under load)."""
    server = RedisServer().start()
    yield server
    for gw in reversed(getattr(request.node, "started_gateways", ())):
        gw.stop()
    server.cleanup()


@pytest.fixture
def openai_client():
    """Factory: openai_client(gateway) -> openai.OpenAI pointed at its /v1, no retries."""
    import openai

    clients = []

    def make(gw: GatewayProcess, api_key: str = "sk-test", **kwargs) -> openai.OpenAI:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0, timeout=30, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
