"""`gateway explain` and `gateway validate` as an admin runs them."""

from __future__ import annotations

import json
import subprocess
import sys

from gateway.cli import main
from tests.support.services import REPO


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=REPO, capture_output=True, text=True, input=stdin
    )


def test_explain_prints_the_candidates_with_scores_and_verdicts(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": "Write a Python function to add two numbers."}]}
        )
    )
    result = run("explain", "--config", "policies/default.yaml", str(request))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("model 'auto' -> route auto, task code")
    assert lines[3].split()[:3] == ["RANK", "MODEL", "BACKEND"]
    assert lines[4].split()[:3] == ["1", "mock/mock-large", "mock"]
    assert "passes every filter" in lines[4] and "per 1M" in lines[4]


def test_explain_json_from_stdin_with_a_task_header():
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello"}]})
    result = run(
        "explain",
        "--config",
        "policies/default.yaml",
        "--json",
        "--header",
        "X-Gateway-Task: long_context",
        "-",
        stdin=body,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["task"] == "long_context" and doc["task_reason"] == "X-Gateway-Task header"
    assert doc["try_order"][0] == {"backend": "mock", "model": "mock/mock-large"}


def test_a_header_without_its_colon_is_refused_not_ignored(capsys):
    """`--header X-Gateway-Task` (no colon, no value) was dropped without a word, so the
    explanation was of another request than the one asked about (hostile testing)."""
    for bad in ("X-Gateway-Task code", ": code"):
        assert main(["explain", "--config", "policies/default.yaml", "--header", bad, "-"]) == 1
        said = capsys.readouterr()
        assert said.out == "" and f"--header {bad!r}: expected 'NAME: VALUE'" in said.err


def test_explain_exits_2_and_says_why_when_nothing_fits(tmp_path, capsys):
    request = tmp_path / "huge.json"
    request.write_text(json.dumps({"model": "mock/mock-small", "messages": [{"role": "user", "content": "x" * 30000}]}))
    assert main(["explain", "--config", "policies/default.yaml", str(request)]) == 2
    last = capsys.readouterr().out.splitlines()[-1]
    # Each candidate named as `model on backend`, not `mock/mock/mock-small`.
    assert last == (
        "error 400 context_length_exceeded: The request does not fit the context window of any candidate for "
        "`mock/mock-small`: mock/mock-small on mock: ~10,007 prompt + 1,024 completion tokens exceed the context of 8,192"
    )


def test_explain_rejects_unknown_models_and_bad_files(tmp_path, capsys):
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"model": "who/knows", "messages": [{"role": "user", "content": "x"}]}))
    assert main(["explain", "--config", "policies/default.yaml", str(request)]) == 1
    assert "error 404 model_not_found" in capsys.readouterr().err
    assert main(["explain", "--config", "policies/default.yaml", str(tmp_path / "missing.json")]) == 1


def test_client_text_an_error_quotes_reaches_the_terminal_escaped(tmp_path, capsys):
    """Hostile testing: explain is run on a client's request as captured, and its error lines
    quoted the client's model name or task header as they were: an escape sequence in them
    cleared and recoloured the admin's terminal."""
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"model": "who\x1b[2J/knows", "messages": [{"role": "user", "content": "x"}]}))
    assert main(["explain", "--config", "policies/default.yaml", str(request)]) == 1
    said = capsys.readouterr().err
    assert "\x1b" not in said and "who\\x1b[2J/knows" in said, said
    request.write_text(json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x"}]}))
    task = "X-Gateway-Task: co\x9b31mde"
    assert main(["explain", "--config", "policies/default.yaml", "--header", task, str(request)]) == 1
    said = capsys.readouterr().err
    assert "\x9b" not in said and "co\\x9b31mde" in said, said


def test_validate_reports_routing_problems_with_lines(tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "backends:\n"
        "  a: {type: mock, models: {m/x: {}}}\n"
        "routes:\n"
        "  r:\n"
        "    models: [m/x]\n"
        "    weights: {nobody: 2}\n"
        "gateway:\n"
        "  classifier: {kind: 'no_such_module_xyz:f'}\n"
    )
    assert main(["validate", str(policy)]) == 1
    err = capsys.readouterr().err
    assert "routes.r.weights.nobody (line 6): `nobody` is none of this route's models" in err
    assert "gateway.classifier.kind (line 8): cannot import classifier module `no_such_module_xyz`" in err


def test_validate_rejects_a_duplicate_key_instead_of_passing_it(tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "backends:\n  a: {type: mock, models: {m/x: {}, m/y: {}}}\nroutes:\n  r: {models: [m/x]}\n  r: {models: [m/y]}\n"
    )
    assert main(["validate", str(policy)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{policy}: invalid",
        "  routes.r (line 5): `r` is defined twice, on lines 4 and 5: YAML would keep only the second; remove or rename one",
    ]


def test_explain_shows_the_default_policy_sending_tools_to_the_model_that_declares_them(tmp_path):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    request = tmp_path / "tools.json"
    request.write_text(json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": tools}))
    result = run("explain", "--config", "policies/default.yaml", str(request))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "model 'auto' -> route auto, task tool_use (offers tools), strategy cost"
    assert lines[1].endswith(", needs tools")
    assert lines[4].split()[:3] == ["1", "mock/mock-large", "mock"] and lines[4].endswith("passes every filter")
    assert lines[5].split()[:3] == ["-", "mock/mock-small", "mock"]
    assert lines[5].endswith("  capabilities: does not declare tools")


def test_explain_takes_another_endpoints_request_and_shows_the_alias(tmp_path):
    request = tmp_path / "embed.json"
    request.write_text(json.dumps({"model": "text-embedding-3-small", "input": ["a cat", "a dog"]}))
    result = run("explain", "--config", "policies/default.yaml", "--endpoint", "embeddings", str(request))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "model 'text-embedding-3-small' (alias 'text-embedding-*') -> route embed, task embeddings "
        "(embeddings endpoint), strategy cost"
    )
    assert lines[4].split()[:3] == ["1", "mock/mock-embed", "mock"]
    messages = tmp_path / "messages.json"
    messages.write_text(
        json.dumps({"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
    )
    result = run("explain", "--config", "policies/default.yaml", "--endpoint", "messages", str(messages))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(
        "model 'claude-haiku-4-5' (alias 'claude-*') -> route auto, task chat"
    )
