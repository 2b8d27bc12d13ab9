"""/openapi.json describes every route the gateway serves, and the running gateway keeps to it:
schemathesis fuzzes each served operation (no 5xx, no status, content type or body outside the
document), and hypothesis fuzzes the chat request parser (a GatewayError 400 or a request,
never anything else)."""

from __future__ import annotations

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.api.openapi import PATHS, document
from gateway.protocol.chat import ChatRequest, parse_chat_request
from gateway.protocol.errors import GatewayError
from tests.support.fake_upstream import FakeUpstream
from tests.support.policies import one_backend_policy
from tests.support.services import GatewayProcess

ADMIN = "sk-admin-openapi"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Paths the app answers that are spelled differently in the document: aliases and page assets.
UNDOCUMENTED = {
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/messages",
    "/messages/count_tokens",
    "/rankings/rankings.js",
    "/rankings/rankings.css",
}


def served_routes() -> set[tuple[str, str]]:
    """(path, method) of every route in the route table, path parameters named as OpenAPI does;
    the app serves exactly those (no route registered around the table)."""
    from gateway.api.app import create_app
    from gateway.api.routes import route_table
    from gateway.settings import Settings

    out = {(entry.path.replace(":path}", "}"), method.lower()) for entry in route_table() for method in entry.methods}
    registered = set()
    for route in create_app(Settings()).app.router.routes:
        path = getattr(route, "path", "").replace(":path}", "}")
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                registered.add((path, method.lower()))
    assert registered == out
    return out


def test_every_route_is_documented_and_the_gateway_serves_the_document(start_gateway, upstream):
    documented = {(path, method) for path, item in PATHS.items() for method in item if method != "parameters"}
    missing = {(p, m) for p, m in served_routes() if p not in UNDOCUMENTED} - documented
    assert not missing, f"routes missing from gateway/api/openapi.py: {sorted(missing)}"
    gw = start_gateway(one_backend_policy(upstream.base_url))
    served = httpx.get(gw.url + "/openapi.json")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json() == orjson.loads(orjson.dumps(document()))
    assert served.json()["openapi"] == "3.1.0"


@pytest.fixture(scope="module")
def fuzzed_gateway():
    """An open gateway (no client keys) with an admin key, in front of a fake upstream."""
    upstream = FakeUpstream("fuzz").start()
    gw = GatewayProcess(
        one_backend_policy(upstream.base_url), env={"GATEWAY_ADMIN_KEY": ADMIN, "GATEWAY_USAGE_FLUSH_S": "0.05"}
    ).start()
    yield gw
    gw.stop()
    upstream.stop()


def _unserved_paths() -> list[str]:
    served = {path for path, _ in served_routes()}
    return [path for path in PATHS if path not in served]


SCHEMA = schemathesis.openapi.from_dict(document()).exclude(path=_unserved_paths() or ["/nothing-excluded"])


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_gateway_keeps_to_its_document(case, fuzzed_gateway):
    case.call_and_validate(
        base_url=fuzzed_gateway.url, headers={"authorization": f"Bearer {ADMIN}"}, checks=CHECKS, timeout=30
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
CHAT_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "model": JSON_VALUES,
        "models": JSON_VALUES,
        "messages": st.lists(st.dictionaries(st.sampled_from(["role", "content"]), JSON_VALUES), max_size=3)
        | JSON_VALUES,
        "stream": JSON_VALUES,
        "stream_options": JSON_VALUES,
        "max_tokens": JSON_VALUES,
        "n": JSON_VALUES,
        "temperature": JSON_VALUES,
        "top_p": JSON_VALUES,
        "tools": JSON_VALUES,
        "usage": JSON_VALUES,
    },
)


@given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(orjson.dumps), CHAT_LIKE.map(orjson.dumps)))
@settings(max_examples=300, deadline=None)
def test_the_chat_parser_answers_a_request_or_a_400_and_nothing_else(body):
    try:
        parsed = parse_chat_request(body)
    except GatewayError as exc:
        assert exc.status == 400 and exc.message
        return
    assert isinstance(parsed, ChatRequest) and isinstance(parsed.model, str) and parsed.model
    assert isinstance(parsed.payload["messages"], list) and parsed.payload["messages"]
    assert parsed.include_usage is False or parsed.stream is True
