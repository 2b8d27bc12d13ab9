"""Claude Code and Codex CLI, headless, through a real gateway to a scripted open model.

The agents are the npm packages users install, pinned in tests/agents/package-lock.json and
installed by `make agent-deps` (never by a test: they are about 800 MB; .ci/run installs them
before `make test`). Each runs one turn that must use a tool: the model behind the gateway (a
fake OpenAI-compatible upstream, tests/support/agent_upstream.py) asks for the agent's shell
tool, the agent runs the command, sends the result back, and the model answers quoting it.

What each test checks, beyond "the CLI exited 0":
- the agent's final answer holds the command's output, which only a shell produces;
- the model saw the tool result under the call id it issued (ids intact across the two APIs);
- exactly two calls went upstream, and the usage ledger holds exactly those two, on the
  agent's endpoint, with category `programming` (agent traffic carries tools on every request),
  the upstream's token counts (not estimates) and the `code` route their names alias to;
- nothing left the machine: every variable and config key that turns telemetry, update checks
  and plugin sync off is set (the README's sections name them), and a proxy that refuses and
  records every connection stands in for the internet.

One more test runs both agents against backends that speak their API (a `type: anthropic`
backend, a Responses backend), passed through untranslated: what each agent sends must reach
them whole (its fields, Claude Code's betas, the thinking block with its signature, the ids).

The agents use their own model names (Claude Code its default model, Codex `gpt-5.5`); the
policy's `aliases:` (`claude-*`, `gpt-5*`) send them to the `code` route, as the README says.
Until the branch that adds `aliases:` and the classifier that recognises coding agents (issue 9,
engineer "endpoints") is merged, routes named like the agents' names stand in for the aliases
and the tests are a strict xfail on the ledger's category; both switch by themselves once the
config schema knows `aliases`.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from gateway.config.schema import GatewayConfig
from gateway.protocol.errors import SDK_WAIT_MAX_S
from tests.e2e.usage_helpers import gateway_cli
from tests.support import agent_upstream
from tests.support.agent_upstream import (
    COMMAND,
    COMPLETION_TOKENS,
    FINAL_PREFIX,
    PLAIN_ANSWER,
    PROMPT_TOKENS,
    REASONING,
    TOOL_OUTPUT,
    AgentUpstream,
    _text,
)
from tests.support.fake_anthropic import AnthropicBehaviour, FakeAnthropic, signature
from tests.support.fake_responses import FakeResponses, ResponsesBehaviour
from tests.support.fault_upstream import FaultUpstream, status
from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.ports import free_port
from tests.support.services import REPO
from tests.tenants.support import create_key

AGENTS_BIN = REPO / "tests" / "agents" / "node_modules" / ".bin"
CLIENT_KEY = "sk-agents-test-key"
MODEL = "qwen/qwen3-coder"
CODEX_MODEL = "gpt-5.5"  # a name in Codex's own catalogue
ALIASES = "aliases" in GatewayConfig.model_fields  # merged with the coding-agent classifier
# Without aliases: routes named like what each agent sends stand in for them.
CLAUDE_MODEL = "claude-sonnet-4-5"
ROUTE = "code" if ALIASES else None  # the route each call is recorded on (None: named like the model)
PROMPT = "Run a shell command that prints a greeting, then tell me exactly what it printed."
TURN_TIMEOUT_S = 120
PENDING_CLASSIFIER = pytest.mark.xfail(
    not ALIASES,
    strict=True,
    raises=AssertionError,
    reason="waits for aliases and the classifier that records coding-agent traffic as code (engineer endpoints)",
)
GATEWAY_ENV = {"GATEWAY_USAGE_FLUSH_S": "0.05", "GATEWAY_API_KEYS": f"agents:{CLIENT_KEY}"}


def agent_binary(name: str) -> Path:
    """The installed CLI; a skip when `make agent-deps` has not run, a failure under GATEWAY_TEST_STRICT."""
    path = AGENTS_BIN / name
    if path.exists() and os.access(path, os.X_OK):
        return path
    message = f"`{name}` is not installed in tests/agents (run `make agent-deps`)"
    if os.environ.get("GATEWAY_TEST_STRICT") == "1":
        pytest.fail(message + "; GATEWAY_TEST_STRICT=1 forbids skipping")
    pytest.skip(message)


class RefusingProxy:
    """An HTTP proxy that records the first line of every connection (`CONNECT host:443 ...`)
    and closes it: set as HTTPS_PROXY, it shows any request an agent makes to the internet."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        self._socket = socket.create_server(("127.0.0.1", self.port))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n")[0].decode(errors="replace"))
                except OSError:
                    self.requests.append("(connection without a request line)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


@pytest.fixture
def agent_model():
    server = AgentUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def internet():
    proxy = RefusingProxy()
    yield proxy
    proxy.close()


def agent_policy(base_url: str) -> str:
    """One backend serving the coding model, a `code` route, and the agents' names aliased to it."""
    models = {MODEL: {"upstream_id": "Qwen/Qwen3-Coder-480B-A35B-Instruct", "input_price": 0.4, "output_price": 1.6}}
    # Qwen3-Coder's real window: Claude Code alone sends ~40k prompt tokens and asks for 32k out.
    models[MODEL] |= {"context_length": 262144, "max_output_tokens": 65536}
    # A thinking model: sent its reasoning back (the scripted model refuses a tool loop without it).
    models[MODEL] |= {"reasoning_history": True}
    routes = {"code": [MODEL]} if ALIASES else {CLAUDE_MODEL: [MODEL], CODEX_MODEL: [MODEL]}
    policy = yaml.safe_load(one_backend_policy(base_url, models=models, routes=routes))
    if ALIASES:
        policy["aliases"] = {"claude-*": "code", "gpt-5*": "code"}
    return yaml.safe_dump(policy, sort_keys=False)


def offline_env(home: Path, proxy: RefusingProxy, **extra: str) -> dict[str, str]:
    """A clean environment: a throwaway HOME, only loopback reachable directly."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "HTTPS_PROXY": proxy.url,
        "HTTP_PROXY": proxy.url,
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }


def claude_env(gw, internet, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Claude Code's environment against `gw`, offline, as the README gives it; and its work dir."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = offline_env(
        home,
        internet,
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        ANTHROPIC_BASE_URL=gw.url,
        ANTHROPIC_API_KEY=CLIENT_KEY,
        # One switch for all non-essential traffic; the four it implies are set too, as the README says.
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_BUG_COMMAND="1",
    )
    return env, work


def run_agent(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TURN_TIMEOUT_S
    )
    assert done.returncode == 0, f"{argv[0]} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def ledger(gw, expected: int) -> list[dict]:
    """The gateway's usage events of today, read with its own CLI, once `expected` are written."""
    data_dir = gw.dir / "data"

    def exported() -> list[dict] | None:
        done = gateway_cli(
            "usage", "export", "--start", "2000-01-01", "--end", "2100-01-01", "--data-dir", str(data_dir)
        )
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        return rows if len(rows) >= expected else None

    return poll(exported, what=f"{expected} usage events in the ledger", timeout=30)


def assert_tool_round_trip(agent_model: AgentUpstream) -> str:
    """One call issued, its result returned under its id with the shell's output; its id."""
    assert len(agent_model.calls_issued) == 1, agent_model.calls_issued
    call_id = agent_model.calls_issued[0]["id"]
    assert list(agent_model.tool_results) == [call_id]
    assert TOOL_OUTPUT in agent_model.tool_results[call_id]
    # The model's reasoning went to the agent (a thinking block, a reasoning item) and came back
    # on the call's turn: the scripted model, as DeepSeek's thinking mode, refuses it otherwise.
    answered = agent_model.chat_requests()[-1]["messages"]
    calls = [m for m in answered if m.get("role") == "assistant" and m.get("tool_calls")]
    assert [m.get("reasoning_content") for m in calls] == [REASONING], calls
    return call_id


def assert_strict_chat(messages: list[dict]) -> None:
    """What the strictest chat backends take: DeepSeek's API refuses "successive user or
    assistant messages" and content that is an array ("invalid type: sequence, expected a
    string"), Qwen3.5-3.8's chat templates a system message anywhere but first ("System
    message must be at the beginning"). The agents send all three: Claude Code a turn of
    several text blocks and a system turn after the first user turn, Codex its environment
    context and the prompt as two user messages, its instructions and a developer message."""
    roles = [m["role"] for m in messages if m["role"] in ("user", "assistant")]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    assert all(type(m.get("content")) in (str, type(None)) for m in messages), messages
    assert "system" not in [m["role"] for m in messages[1:]], [m["role"] for m in messages]


def assert_ledger(rows: list[dict], endpoint: str, route: str) -> None:
    """The turn's two calls, as the ledger holds them: on the agent's endpoint, counted as
    programming, on the route the agent's model name resolves to, with the upstream's usage."""
    assert len(rows) == 2, rows
    for row in rows:
        assert row["endpoint"] == endpoint
        assert row["category"] == "programming"
        assert (row["route"], row["model"], row["backend"]) == (route, MODEL, "up")
        assert (row["status"], row["attempts"], row["final"]) == (200, 1, True)
        assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (
            PROMPT_TOKENS,
            COMPLETION_TOKENS,
            False,
        )
        assert row["key"] == "agents"


@PENDING_CLASSIFIER
@pytest.mark.timeout(TURN_TIMEOUT_S + 60)
def test_claude_code_runs_a_tool_turn_through_the_gateway(start_gateway, agent_model, internet, tmp_path):
    claude = agent_binary("claude")
    gw = start_gateway(agent_policy(agent_model.base_url), env=GATEWAY_ENV)
    env, work = claude_env(gw, internet, tmp_path)
    argv = [str(claude), "-p", PROMPT] + ([] if ALIASES else ["--model", CLAUDE_MODEL])
    done = run_agent(argv + ["--allowedTools", "Bash", "--output-format", "json"], env, work)

    result = json.loads(done.stdout)
    assert result["is_error"] is False and result["subtype"] == "success"
    assert result["num_turns"] == 2  # the tool call, then the answer
    assert result["result"].startswith(FINAL_PREFIX) and TOOL_OUTPUT in result["result"]
    call_id = assert_tool_round_trip(agent_model)
    first, second = agent_model.chat_requests()
    assert first["model"] == second["model"] == "Qwen/Qwen3-Coder-480B-A35B-Instruct"
    assert "Bash" in {tool["function"]["name"] for tool in first["tools"]}
    assert [m.get("tool_call_id") for m in second["messages"] if m["role"] == "tool"] == [call_id]
    assert_strict_chat(first["messages"])
    assert_strict_chat(second["messages"])
    assert agent_model.other_requests == []
    assert_ledger(ledger(gw, 2), "messages", ROUTE or CLAUDE_MODEL)
    assert internet.requests == []


@PENDING_CLASSIFIER
@pytest.mark.timeout(TURN_TIMEOUT_S + 60)
def test_codex_cli_runs_a_tool_turn_through_the_gateway(start_gateway, agent_model, internet, tmp_path):
    gw = start_gateway(agent_policy(agent_model.base_url), env=GATEWAY_ENV)
    events, items = codex_turn(gw, internet, tmp_path / "codex-home", tmp_path / "work")
    commands = [item for item in items if item["type"] == "command_execution"]
    assert len(commands) == 1 and commands[0]["exit_code"] == 0
    assert commands[0]["aggregated_output"].strip() == TOOL_OUTPUT
    answers = [item["text"] for item in items if item["type"] == "agent_message"]
    assert len(answers) == 1 and answers[0].startswith(FINAL_PREFIX) and TOOL_OUTPUT in answers[0]
    assert events[-1]["type"] == "turn.completed"
    assert events[-1]["usage"]["output_tokens"] == 2 * COMPLETION_TOKENS
    call_id = assert_tool_round_trip(agent_model)
    first, second = agent_model.chat_requests()
    assert "exec_command" in {tool["function"]["name"] for tool in first["tools"]}
    assert [m.get("tool_call_id") for m in second["messages"] if m["role"] == "tool"] == [call_id]
    assert_strict_chat(first["messages"])
    assert_strict_chat(second["messages"])
    # Its instructions and developer message are one system message, the first.
    assert second["messages"][0]["role"] == "system"
    assert agent_model.other_requests == []
    assert_ledger(ledger(gw, 2), "responses", ROUTE or CODEX_MODEL)
    assert internet.requests == []


@pytest.mark.timeout(TURN_TIMEOUT_S + 60)
def test_claude_code_on_haiku_completes_a_tool_turn_on_the_default_policys_mock(start_gateway, internet, tmp_path):
    """The README's promise for `make run`, with Claude Code's Haiku: it ends each tool
    result's turn with a system note (`<total_tokens>... left`); a mock that reads that note
    as the last turn answers with another tool call, every step, until the turn limit."""
    claude = agent_binary("claude")
    gw = start_gateway((REPO / "policies" / "default.yaml").read_text(), env=GATEWAY_ENV)
    env, work = claude_env(gw, internet, tmp_path)
    argv = [str(claude), "-p", PROMPT, "--model", "haiku", "--max-turns", "4", "--allowedTools", "Bash"]
    done = run_agent(argv + ["--output-format", "json"], env, work)

    result = json.loads(done.stdout)
    assert (result["is_error"], result["subtype"], result["num_turns"]) == (False, "success", 2)
    assert result["result"].startswith("This is a synthetic reply from the gateway's mock backend")
    rows = ledger(gw, 2)
    assert [(r["endpoint"], r["route"], r["model"], r["status"]) for r in rows] == [
        ("messages", "auto", "mock/mock-large", 200)
    ] * 2
    assert internet.requests == []


def codex_turn(gw, internet, home: Path, work: Path) -> tuple[list, list]:
    """The events of `codex exec --json` for one turn of PROMPT through the gateway, run in a
    fresh CODEX_HOME (its config pointing at the gateway) and working directory, and the
    items it completed."""
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(codex_config(gw.url + "/v1"))
    env = offline_env(home, internet, CODEX_HOME=str(home), GATEWAY_API_KEY=CLIENT_KEY)
    done = run_agent([str(agent_binary("codex")), "exec", "--json", "--skip-git-repo-check", PROMPT], env, work)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return events, [e["item"] for e in events if e["type"] == "item.completed"]


def codex_turn_failing_within(gw, key: str, internet, tmp_path: Path, waiting_on: str, seconds: float = 60) -> list:
    """`codex exec`'s events for a turn that fails; a test failure if it still waits after
    `seconds` (it and the native child the npm wrapper starts are killed, a process group)."""
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(codex_config(gw.url + "/v1"))
    env = offline_env(home, internet, CODEX_HOME=str(home), GATEWAY_API_KEY=key)
    argv = [str(agent_binary("codex")), "exec", "--json", "--skip-git-repo-check", PROMPT]
    agent = subprocess.Popen(
        argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, _ = agent.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.communicate()
        pytest.fail(f"codex exec still waiting on {waiting_on} after {seconds:g} s")
    assert agent.returncode == 1
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.timeout(TURN_TIMEOUT_S + 60)
def test_codex_gives_up_at_once_when_every_upstream_says_retry_in_an_hour(start_gateway, internet, tmp_path):
    """An upstream's 429 with `Retry-After: 3600` (a provider's hourly quota) was relayed as
    it came: Codex CLI slept the hour before its first retry. Past what a client should sit
    out, the wait is in the message, `x-should-retry: false` in the headers."""
    agent_binary("codex")
    upstream = FaultUpstream().start()
    try:
        upstream.always(status(429, retry_after=3600))
        gw = start_gateway(agent_policy(upstream.base_url), env=GATEWAY_ENV)
        events = codex_turn_failing_within(gw, CLIENT_KEY, internet, tmp_path, "an upstream's hour")
        assert events[-1]["type"] == "turn.failed" and "429" in events[-1]["error"]["message"]
        tried = len(upstream.arrivals())
        assert tried >= 1  # each of Codex's tries reached the backend once (it is skipped past its wait)
        refused = httpx.post(
            gw.url + "/v1/responses",
            json={"model": CODEX_MODEL, "input": "hi"},
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "retry-after" not in refused.headers and refused.headers["x-should-retry"] == "false"
        assert refused.json()["error"]["message"].endswith("Retry after 3600s.")
        assert internet.requests == []
    finally:
        upstream.stop()


@pytest.mark.timeout(TURN_TIMEOUT_S + 60)
def test_codex_gives_up_at_once_on_a_used_up_budget(start_gateway, agent_model, internet, tmp_path, monkeypatch):
    """A key's used-up daily budget is refused until the day ends, hours away. Codex CLI does
    not read `x-should-retry: false`: it slept the whole Retry-After before its first retry
    (measured with 0.171.0: "retrying sampling request (1/5 in 30390s)"), a turn hung for
    hours. Without a Retry-After it retries five times at its own pace and shows the failure."""
    agent_binary("codex")
    if 86400 - time.time() % 86400 < SDK_WAIT_MAX_S + 90:
        pytest.skip("the day's budget resets within a wait the clients may sit out")
    key = create_key("tiny", "--budget-usd", "0.1", "--budget-period", "day", data_dir=tmp_path / "data")
    policy = yaml.safe_load(agent_policy(agent_model.base_url))
    policy["backends"]["up"]["models"][MODEL]["max_output_tokens"] = 1000  # each call reserves under $0.01
    gw = start_gateway(yaml.safe_dump(policy), env=GATEWAY_ENV, workdir=tmp_path)
    # A call that reserves little and costs nearly the whole budget: 249,000 prompt tokens billed.
    monkeypatch.setattr(agent_upstream, "PROMPT_TOKENS", 249_000)
    ask = {"model": CODEX_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    spend = httpx.post(gw.url + "/v1/chat/completions", json=ask, headers={"Authorization": f"Bearer {key}"})
    assert spend.status_code == 200
    events = codex_turn_failing_within(gw, key, internet, tmp_path, "a used-up budget")
    assert events[-1]["type"] == "turn.failed" and "429" in events[-1]["error"]["message"]
    # What it was told: no time to wait, not to retry, the budget in words.
    refused = httpx.post(
        gw.url + "/v1/responses", json={"model": CODEX_MODEL, "input": "hi"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert "retry-after" not in refused.headers and refused.headers["x-should-retry"] == "false"
    assert "key `tiny`: budget ($0.10 per day, $0.0996272 spent)" in refused.json()["error"]["message"]
    assert len(agent_model.received) == 1  # the call that spent the budget; nothing after it
    assert [row["status"] for row in ledger(gw, 1)] == [200]
    assert internet.requests == []


# -- the same turns passed through natively (no translation) -------------------------------

NATIVE_THINKING = "The shell answers this natively."


class NativeClaude(FakeAnthropic):
    """Anthropic's Messages API played as a model driving Claude Code: a request whose last turn
    holds no tool result gets a thinking block and a `Bash` call; one that does, an answer."""

    async def _messages(self, request):
        body = orjson.loads(await request.body())
        last = body["messages"][-1].get("content")
        results = [b for b in last if b.get("type") == "tool_result"] if isinstance(last, list) else []
        if results or not body.get("tools"):
            self.behaviour = AnthropicBehaviour(content=f"{FINAL_PREFIX} {_block_text(results)}")
        else:
            call = {"id": f"toolu_native_{len(self.received) + 1}", "name": "Bash", "input": {"command": COMMAND}}
            self.behaviour = AnthropicBehaviour(content="", thinking=NATIVE_THINKING, tool_use=call)
        return await super()._messages(request)


class NativeCodex(FakeResponses):
    """OpenAI's Responses API played as a model driving Codex: an `exec_command` call, then an
    answer quoting the `function_call_output` it is sent back."""

    async def _responses(self, request):
        body = orjson.loads(await request.body())
        last = (body.get("input") or [{}])[-1]
        if last.get("type") == "function_call_output" or not body.get("tools"):
            self.behaviour = ResponsesBehaviour(content=f"{FINAL_PREFIX} {last.get('output', '')}")
        else:
            call = {"call_id": f"call_native_{len(self.received) + 1}", "name": "exec_command"}
            self.behaviour = ResponsesBehaviour(function_call={**call, "arguments": json.dumps({"cmd": COMMAND})})
        return await super()._responses(request)


def _block_text(results: list[dict]) -> str:
    parts = [r["content"] if isinstance(r["content"], str) else _text(r["content"]) for r in results]
    return " | ".join(parts)


def native_policy(anthropic_url: str, responses_url: str) -> str:
    """A `type: anthropic` backend for Claude Code's names, a Responses backend for Codex's:
    each agent's requests go to its backend as they came."""
    offer = {"context_length": 200000, "max_output_tokens": 64000, "input_price": 1.0, "output_price": 2.0}
    backends = {
        "anth": {
            "type": "anthropic",
            "base_url": anthropic_url,
            "api_key": FakeAnthropic().api_key,
            "models": {"native/claude": {"upstream_id": "claude-native", **offer}},
        },
        "resp": {
            "type": "openai",
            "base_url": responses_url,
            "api_key": FakeResponses().api_key,
            "apis": ["chat", "responses"],
            "models": {"native/gpt": {"upstream_id": "gpt-native", **offer}},
        },
    }
    routes = {"claude-code": {"models": ["native/claude"]}, "codex": {"models": ["native/gpt"]}}
    policy = {"backends": backends, "routes": routes, "aliases": {"claude-*": "claude-code", "gpt-5*": "codex"}}
    return yaml.safe_dump(policy, sort_keys=False)


@pytest.mark.skipif(not ALIASES, reason="needs the policy's aliases")
@pytest.mark.timeout(2 * TURN_TIMEOUT_S + 60)
def test_both_agents_run_a_tool_turn_on_backends_that_speak_their_api(start_gateway, internet, tmp_path):
    """Claude Code to an Anthropic backend, Codex to a Responses backend, passed through: each
    agent's fields reach a backend that takes them (Claude Code's `output_config`, Codex's
    `client_metadata`), the thinking block goes back with its signature, ids stay intact."""
    claude = agent_binary("claude")
    anthropic, responses = NativeClaude().start(), NativeCodex().start()
    try:
        gw = start_gateway(native_policy(anthropic.base_url, responses.base_url), env=GATEWAY_ENV)
        (tmp_path / "claude").mkdir()
        env, work = claude_env(gw, internet, tmp_path / "claude")
        done = run_agent([str(claude), "-p", PROMPT, "--allowedTools", "Bash", "--output-format", "json"], env, work)
        result = json.loads(done.stdout)
        assert (result["is_error"], result["num_turns"]) == (False, 2), result
        assert result["result"] == f"{FINAL_PREFIX} {TOOL_OUTPUT}"
        first, second = (seen.body for seen in anthropic.received)
        assert first["model"] == second["model"] == "claude-native"
        assert {"output_config", "context_management"} <= set(first)  # and the beta that field needs:
        assert "context-management-2025-06-27" in anthropic.received[0].headers["anthropic-beta"].split(",")
        call = second["messages"][-2]["content"]
        assert [block["type"] for block in call] == ["thinking", "tool_use"]
        assert call[0]["thinking"] == NATIVE_THINKING and call[0]["signature"] == signature("claude-native")
        (result_block,) = second["messages"][-1]["content"]
        assert result_block["tool_use_id"] == call[1]["id"] == "toolu_native_1"

        _, items = codex_turn(gw, internet, tmp_path / "codex-home", tmp_path / "codex-work")
        assert [i["type"] for i in items] == ["command_execution", "agent_message"], items
        assert items[0]["aggregated_output"].strip() == TOOL_OUTPUT and TOOL_OUTPUT in items[1]["text"]
        first, second = (seen.body for seen in responses.received)
        assert first["model"] == second["model"] == "gpt-native" and "client_metadata" in first
        assert first["store"] is False and "previous_response_id" not in second
        assert [(i["type"], i.get("call_id")) for i in second["input"][-2:]] == [
            ("function_call", "call_native_1"),
            ("function_call_output", "call_native_1"),
        ]

        rows = ledger(gw, 4)
        assert [(r["endpoint"], r["route"], r["backend"], r["category"]) for r in rows] == [
            ("messages", "claude-code", "anth", "programming")
        ] * 2 + [("responses", "codex", "resp", "programming")] * 2
        assert all((r["status"], r["attempts"], r["final"], r["estimated"]) == (200, 1, True, False) for r in rows)
        assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(13, 9)] * 2 + [(17, 5)] * 2
        assert internet.requests == []
    finally:
        anthropic.stop()
        responses.stop()


def codex_config(base_url: str) -> str:
    """Codex's config.toml as the README gives it, plus what a throwaway CI run needs:
    no approval prompts, and no sandbox (the command runs in the test's own temp dir; CI
    containers may forbid the namespaces Codex's sandbox needs)."""
    return f"""\
model = "{CODEX_MODEL}"
model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "danger-full-access"
web_search = "disabled"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false

[model_providers.gateway]
name = "open-model gateway"
base_url = "{base_url}"
wire_api = "responses"
env_key = "GATEWAY_API_KEY"
"""


# -- the scripted model itself, through the openai SDK (runs without the agents installed) ----

BASH_TOOL = {
    "type": "function",
    "function": {
        "name": "Bash",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
            "required": ["command"],
        },
    },
}
SHELL_ARGV_TOOL = {
    "type": "function",
    "function": {
        "name": "shell",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "array", "items": {"type": "string"}}, "workdir": {"type": "string"}},
            "required": ["command", "workdir"],
        },
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_the_scripted_model_calls_the_shell_tool_then_quotes_its_result(agent_model, stream):
    import openai

    client = openai.OpenAI(base_url=agent_model.base_url, api_key="unused", max_retries=0, timeout=10)

    def ask(messages: list, tools: list | None = None):
        extra = {"tools": tools} if tools else {}
        if not stream:
            return client.chat.completions.create(model="m", messages=messages, **extra).choices[0].message
        with client.chat.completions.stream(model="m", messages=messages, **extra) as events:
            return events.get_final_completion().choices[0].message

    question = [{"role": "user", "content": "list the files"}]
    first = ask(question, [BASH_TOOL])
    (call,) = first.tool_calls
    assert call.function.name == "Bash" and json.loads(call.function.arguments) == {
        "command": "echo tool-says-$((6*7))"
    }
    shell = subprocess.run(
        ["bash", "-c", json.loads(call.function.arguments)["command"]], capture_output=True, text=True
    )
    assert shell.stdout.strip() == TOOL_OUTPUT  # the output exists only once a shell ran the command

    turn = [
        *question,
        first.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": shell.stdout},
    ]
    final = ask(turn, [BASH_TOOL])
    assert final.tool_calls is None and final.content == f"{FINAL_PREFIX} {TOOL_OUTPUT}"
    assert agent_model.tool_results == {call.id: shell.stdout}

    argv = ask(question, [SHELL_ARGV_TOOL]).tool_calls[0]
    assert json.loads(argv.function.arguments) == {
        "command": ["bash", "-lc", "echo tool-says-$((6*7))"],
        "workdir": "Print a greeting (workdir)",
    }
    assert ask([{"role": "user", "content": "a title for this chat"}]).content == PLAIN_ANSWER
    assert len(agent_model.received) == 4 and all(
        seen.body.get("stream", False) == stream for seen in agent_model.received
    )


def test_the_scripted_model_answers_tool_results_a_system_note_follows(agent_model):
    """Claude Code's turns to Haiku end with a system note after the tool results: the
    scripted model still answers them (another call would loop until the turn limit)."""
    import openai

    client = openai.OpenAI(base_url=agent_model.base_url, api_key="unused", max_retries=0, timeout=10)
    question = [{"role": "user", "content": "list the files"}]
    call = client.chat.completions.create(model="m", messages=question, tools=[BASH_TOOL]).choices[0].message
    turn = [
        *question,
        call.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": TOOL_OUTPUT},
        {"role": "system", "content": "<total_tokens>14999863 tokens left</total_tokens>"},
    ]
    final = client.chat.completions.create(model="m", messages=turn, tools=[BASH_TOOL]).choices[0].message
    assert final.tool_calls is None and final.content == f"{FINAL_PREFIX} {TOOL_OUTPUT}"
    # The note as the gateway's translation of a Messages request sends it: user text.
    turn[-1] = {"role": "user", "content": turn[-1]["content"]}
    final = client.chat.completions.create(model="m", messages=turn, tools=[BASH_TOOL]).choices[0].message
    assert final.tool_calls is None and final.content == f"{FINAL_PREFIX} {TOOL_OUTPUT}"
    assert len(agent_model.calls_issued) == 1
