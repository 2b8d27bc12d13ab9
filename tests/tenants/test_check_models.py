"""Which names a key restricted to some models may ask for (ratelimit.check_models): as sent
or as resolved, except that an alias is judged by where it goes."""

from __future__ import annotations

import orjson
import pytest

from gateway.config.schema import GatewayConfig
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.chat import parse_chat_request
from gateway.protocol.errors import GatewayError
from gateway.ratelimit import check_models
from gateway.tenants.keys import VirtualKey
from gateway.tenants.principal import Principal

CONFIG = {
    "backends": {
        "b": {
            "type": "openai",
            "base_url": "http://b/v1",
            "models": {"qwen/qwen3-32b": {}, "moonshotai/kimi-k2.5": {}},
        }
    },
    "routes": {"cheap": {"models": ["qwen/qwen3-32b"]}, "premium": {"models": ["moonshotai/kimi-k2.5"]}},
    "aliases": {"gpt-*": "premium"},
}


def allowed(globs: tuple[str, ...], model: str) -> bool:
    snapshot = ConfigSnapshot.build(GatewayConfig.model_validate(CONFIG))
    principal = Principal("k", key=VirtualKey("k", (), models=globs))
    chat = parse_chat_request(orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
    try:
        check_models(principal, chat, snapshot)
    except GatewayError as exc:
        assert exc.status == 403 and exc.code == "model_not_allowed"
        return False
    return True


CASES = [
    (("cheap",), "cheap", True),  # a route by its name
    (("qwen/*",), "qwen/qwen3-32b", True),  # a model by a glob
    (("cheap",), "premium", False),
    (("*-mini",), "gpt-x-mini", False),
    (("premium",), "gpt-x-mini", True),
]


@pytest.mark.parametrize(("globs", "model", "expected"), CASES)
def test_get_models_id_shows_a_key_exactly_what_it_may_call(globs, model, expected):
    """Hostile testing: GET /v1/models/ID answered 200 for an alias whose name the key's glob
    matched though the route it maps to was not the key's (every call with it a 403)."""
    from gateway.api.models import model_entry

    snapshot = ConfigSnapshot.build(GatewayConfig.model_validate(CONFIG))
    principal = Principal("k", key=VirtualKey("k", (), models=globs))
    try:
        model_entry(snapshot, model, principal)
        shown = True
    except GatewayError as exc:
        assert exc.status == 404
        shown = False
    assert shown == expected == allowed(globs, model)


@pytest.mark.parametrize(
    ("globs", "model", "expected"),
    [
        (("cheap",), "cheap", True),  # a route by its name
        (("qwen/*",), "qwen/qwen3-32b", True),  # a model by a glob
        (("cheap",), "premium", False),
        # An alias is judged by its target: a glob matching the name as sent does not open
        # the route the alias leads to...
        (("*-mini",), "gpt-x-mini", False),
        # ...and a key given that route may use the alias.
        (("premium",), "gpt-x-mini", True),
    ],
)
def test_a_restricted_key(globs, model, expected):
    assert allowed(globs, model) is expected
