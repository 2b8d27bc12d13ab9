"""The operator's middleware hook: `create_app(middleware=[...])` and `GATEWAY_MIDDLEWARE` wrap
the front door, so the fast routes (chat completions, served ahead of FastAPI) pass through an
operator's CORS or tracing middleware as every other route does."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import asynccontextmanager

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.api.fastpath import FastPathApp, check_middleware, imported_middleware
from gateway.api.routes import route_table
from gateway.settings import Settings
from tests.support.inprocess import MOCK_POLICY, lifespan
from tests.support.operator_middleware import ORIGIN, Traced
from tests.support.services import REPO

POLICY = MOCK_POLICY

UPSTREAM_POLICY = """
backends:
  up:
    type: openai
    base_url: {base_url}
    api_key: sk-upstream
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, context_length: 32768}}
routes:
  auto:
    models: [qwen/qwen3-32b]
"""


@asynccontextmanager
async def running(app: FastPathApp):
    """The app in-process with its lifespan (through the middleware, as a server runs it)."""
    async with lifespan(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield client


async def test_a_middleware_sees_the_fast_chat_route_and_the_others(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    made: list[Traced] = []

    def traced(app):
        made.append(Traced(app))
        return made[-1]

    app = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_recording=False), middleware=[traced])
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    async with running(app) as client:
        chat = await client.post("/v1/chat/completions", content=orjson.dumps(ask))
        streamed = await client.post("/v1/chat/completions", content=orjson.dumps({**ask, "stream": True}))
        listed = await client.get("/v1/models")
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    assert chat.headers["x-traced"] == "POST /v1/chat/completions"
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert streamed.headers["x-traced"] == "POST /v1/chat/completions"
    assert listed.status_code == 200 and listed.headers["x-traced"] == "GET /v1/models"
    assert len(made) == 1
    assert made[0].seen == [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ]
    assert app.state.gateway is not None  # the lifespan ran through the middleware


def test_without_middleware_nothing_wraps_the_front_door(tmp_path):
    app = create_app(Settings(config=tmp_path / "policy.yaml", data_dir=tmp_path / "data"))
    assert type(app) is FastPathApp


def test_the_setting_names_middleware_by_import_path():
    assert imported_middleware("") == []
    found = imported_middleware(" tests.support.operator_middleware:Traced , tests.support.operator_middleware:cors")
    assert found[0] is Traced and found[1].keywords["allow_origins"] == [ORIGIN]
    with pytest.raises(ValueError, match="not `module:attribute`"):
        imported_middleware("tests.support.operator_middleware")
    with pytest.raises(ValueError, match="not callable"):
        imported_middleware("tests.support.operator_middleware:ORIGIN")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        imported_middleware("tests.support.operator_middleware:nope")
    with pytest.raises(ValueError, match=r"importing 'tests\.support\.no_such_module' failed"):
        imported_middleware("tests.support.no_such_module:cors")


def test_a_middleware_that_cannot_be_imported_stops_serve_with_the_reason(tmp_path):
    """A new user following the README ran `GATEWAY_MIDDLEWARE=mycompany.gateway_middleware:cors
    gateway serve` beside a module the gateway could not import: the worker died with
    uvicorn's traceback. `serve` now says what and why before starting anything."""
    (tmp_path / "policy.yaml").write_text("backends:\n  m: {type: mock, models: {mock/mock-small: {}}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_MIDDLEWARE": "mycompany.gateway_middleware:cors"}
    env["GATEWAY_DATA_DIR"] = str(tmp_path / "data")
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "policy.yaml"), "--port", "1"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no module 'mycompany.gateway_middleware' to import" in done.stderr
    assert "PYTHONPATH" in done.stderr and "Traceback" not in done.stderr
    # Found, it is not run by `serve` itself (its workers import it): the check finds it only.
    (tmp_path / "mycompany").mkdir()
    (tmp_path / "mycompany" / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (tmp_path / "mycompany" / "gateway_middleware.py").write_text(f"open({str(marker)!r}, 'w').close()\ncors = 1\n")
    check_middleware_env = {**env, "PYTHONPATH": f"{REPO}:{tmp_path}"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from gateway.api.fastpath import check_middleware as c; c('mycompany.gateway_middleware:cors')",
        ],
        env=check_middleware_env,
        check=True,
        timeout=60,
    )
    assert not marker.exists()
    # A name the module does not define: said before any worker starts (with --workers 2,
    # each worker died at import and was restarted for ever), and the module still not run.
    cmd = [*cmd, "--workers", "2"]
    typo = {**check_middleware_env, "GATEWAY_MIDDLEWARE": "mycompany.gateway_middleware:corss"}
    done = subprocess.run(cmd, cwd=tmp_path, env=typo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "module 'mycompany.gateway_middleware' defines no 'corss'" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("def build():\n    cors = 1\n", True),  # a local of a function: not the module's
        ("import json\njson.cors = 1\n", True),  # an attribute of another module
        ("cors = 1\n", False),
        (
            "try:\n    from starlette.middleware.cors import CORSMiddleware as cors\nexcept ImportError:\n    pass\n",
            False,
        ),
        ("if True:\n    cors, other = 1, 2\n", False),
        ("from json import *\n", False),  # cannot be told: left to the worker
        ("def __getattr__(name):\n    return 1\n", False),
    ],
)
def test_the_middleware_check_reads_the_modules_top_level_names(tmp_path, monkeypatch, source, refused):
    (tmp_path / "checked_middleware.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    if refused:
        with pytest.raises(ValueError, match="defines no 'cors'"):
            check_middleware("checked_middleware:cors")
    else:
        check_middleware("checked_middleware:cors")


def test_the_route_table_serves_chat_once_on_the_fast_path():
    table = route_table()
    chat = [e for e in table if e.path == "/v1/chat/completions"]
    assert len(chat) == 1 and chat[0].fast and chat[0].methods == ("POST",)
    paths = [(e.path, m) for e in table for m in e.methods]
    assert len(paths) == len(set(paths))
    app = create_app(Settings())
    assert dict(app.routes) == {e.path: e.endpoint for e in table if e.fast}


def test_gateway_middleware_setting_serves_cors_on_the_chat_route(start_gateway, upstream):
    """The real server with `GATEWAY_MIDDLEWARE`: a browser's preflight for chat completions
    is answered, and the answer (non-streaming and streaming, through the openai SDK) carries
    the CORS header the middleware adds."""
    gw = start_gateway(
        UPSTREAM_POLICY.format(base_url=upstream.base_url),
        env={"GATEWAY_MIDDLEWARE": "tests.support.operator_middleware:cors"},
    )
    preflight = httpx.options(
        gw.url + "/v1/chat/completions",
        headers={"origin": ORIGIN, "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert len(upstream.received) == 0
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", default_headers={"origin": ORIGIN})
    ask = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}
    raw = client.chat.completions.with_raw_response.create(**ask)
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    assert raw.headers["access-control-allow-origin"] == ORIGIN
    with client.chat.completions.with_streaming_response.create(**ask, stream=True) as streamed:
        assert streamed.headers["access-control-allow-origin"] == ORIGIN
        text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    assert text.strip() == "Hello from the fake upstream."
    assert len(upstream.received) == 2
