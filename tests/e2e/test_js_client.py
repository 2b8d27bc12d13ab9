"""The official `openai` npm package as a caller: tests/js/client_check.mjs against the real
gateway and a fake upstream. Its dependencies come from the committed package-lock.json;
`make test` installs them beforehand (`make js-deps`), so this test normally finds them."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.fake_endpoints import vector
from tests.support.policies import one_backend_policy
from tests.support.services import REPO, require_binary

JS_DIR = REPO / "tests" / "js"
NPM_CI_TIMEOUT_S = 300


def _install_js_deps(npm: str) -> None:
    """`npm ci` unless node_modules already holds the locked openai version.

    A fallback for running this test on its own: `make test` has run `make js-deps` already.
    """
    locked = json.loads((JS_DIR / "package-lock.json").read_text())["packages"]["node_modules/openai"]["version"]
    installed = JS_DIR / "node_modules" / "openai" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == locked:
        return
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + 120)  # room for the fallback `npm ci`, then the check itself
def test_openai_npm_client_against_the_gateway(start_gateway, upstream):
    node = require_binary("node")
    _install_js_deps(require_binary("npm"))
    gw = start_gateway(
        one_backend_policy(
            upstream.base_url, api_key=None, models={"qwen/qwen3-32b": {"upstream_id": "Qwen/Qwen3-32B"}}
        )
    )
    env = {**os.environ, "GATEWAY_BASE_URL": gw.url + "/v1", "GATEWAY_MODEL": "auto"}
    done = subprocess.run([node, "client_check.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"client_check.mjs failed:\n{done.stdout}\n{done.stderr}\n{gw.log()}"
    report = json.loads(done.stdout)

    plain = report["non_stream"]
    assert plain["object"] == "chat.completion"
    assert plain["content"] == "Hello from the fake upstream."
    assert plain["finish_reason"] == "stop"
    assert plain["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert plain["backend"] == "up" and plain["request_id"]
    assert upstream.received[0].body["model"] == "Qwen/Qwen3-32B" and upstream.received[0].body["temperature"] == 0.2

    streamed = report["stream_with_usage"]
    assert streamed["text"].strip() == "Hello from the fake upstream."
    assert streamed["finish_reasons"] == ["stop"]
    assert streamed["last_choices"] == 0 and streamed["usage"]["total_tokens"] == 18
    assert streamed["chunks_with_usage"] == 1

    bare = report["stream_without_usage"]
    assert bare["text"] == streamed["text"]
    assert bare["chunks_with_usage"] == 0 and bare["last_choices"] == 1

    unknown = report["unknown_model"]
    assert unknown["thrown"] and unknown["class"] == "NotFoundError"
    assert unknown["status"] == 404 and unknown["code"] == "model_not_found"

    missing = report["missing_messages"]
    assert missing["thrown"] and missing["class"] == "BadRequestError"
    assert missing["status"] == 400 and missing["param"] == "messages"


def test_npm_embeddings_get_base64_from_an_upstream_that_answers_floats(start_gateway, upstream):
    """Hostile testing: the npm SDK asks for base64 when the app names no encoding and decodes
    what comes back as base64 without looking. An upstream that ignores `encoding_format`
    (several OpenAI-compatible servers answer floats whatever is asked) was relayed as it
    came, and the SDK read each JSON float list as bytes: vectors of a quarter of the
    dimensions, silently wrong (LocalAI's fix for the same, mudler/LocalAI#9135)."""
    node = require_binary("node")
    _install_js_deps(require_binary("npm"))
    upstream.reset(ignore_encoding_format=True)
    gw = start_gateway(
        one_backend_policy(
            upstream.base_url,
            api_key=None,
            models={"acme/embed": {"upstream_id": "acme-embed-v1", "kind": "embedding"}},
            routes={"embed": ["acme/embed"]},
        )
    )
    env = {**os.environ, "GATEWAY_BASE_URL": gw.url + "/v1", "GATEWAY_MODEL": "embed"}
    check = JS_DIR / "embeddings_check.mjs"
    done = subprocess.run([node, check.name], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{check.name} failed:\n{done.stdout}\n{done.stderr}\n{gw.log()}"
    report = json.loads(done.stdout)
    # float32 values the fake's vectors are exact in: what the SDK decodes equals what was sent.
    assert report["default"] == [vector(0, 3), vector(1, 3)]
    assert report["float"] == [vector(0, 3), vector(1, 3)]
    assert report["usage"] == {"prompt_tokens": 11, "total_tokens": 11}
    assert [r.body["encoding_format"] for r in upstream.received] == ["base64", "float"]  # one call each
