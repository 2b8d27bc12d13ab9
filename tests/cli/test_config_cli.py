"""`gateway models --config FILE` as an admin runs it: what a policy serves, at what price,
and which backends are off (no API key), as two aligned tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from gateway.cli import main
from tests.support.services import REPO

CELL = re.compile(r"\S+(?: \S+)*")  # cells are separated by two spaces or more


def tables(text: str) -> list[list[list[str]]]:
    """The output's tables (split at blank lines), each a list of rows of cells.

    Checks on the way that every row's cells start under their column's heading.
    """
    found = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        columns = [m.start() for m in CELL.finditer(lines[0])]
        rows = []
        for line in lines:
            cells = list(CELL.finditer(line))
            assert [m.start() for m in cells] == columns[: len(cells)], f"misaligned row:\n{lines[0]}\n{line}"
            rows.append([m.group() for m in cells])
        found.append(rows)
    return found


def test_models_lists_the_default_policy(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "models", "--config", "policies/default.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    offers, routes = tables(result.stdout)
    assert offers == [
        ["MODEL", "BACKEND", "UPSTREAM ID", "CONTEXT", "IN $/1M", "OUT $/1M", "STATUS"],
        ["mock/mock-small", "mock", "mock/mock-small", "8,192", "$0.05", "$0.10", "enabled"],
        ["mock/mock-large", "mock", "mock/mock-large", "131,072", "$0.50", "$1.50", "enabled"],
        ["mock/mock-embed", "mock", "mock/mock-embed", "8,192", "$0.02", "$0.00", "enabled"],
    ]
    assert routes == [
        ["ROUTE", "STRATEGY", "MODELS", "TASKS"],
        ["auto", "cost", "mock/mock-small, mock/mock-large", "code: mock/mock-large; long_context: mock/mock-large"],
        ["embed", "cost", "mock/mock-embed", "-"],
    ]
    assert result.stderr == ""


def test_backends_without_a_key_are_listed_as_disabled_with_a_warning(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "backends:\n"
        "  local:\n"
        "    type: vllm\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "    models:\n"
        "      qwen/qwen3-32b: {upstream_id: Qwen/Qwen3-32B, context_length: 32768}\n"
        "  hosted:\n"
        "    type: openrouter\n"
        "    models:\n"
        "      deepseek/deepseek-v3.2: {context_length: 163840, input_price: 0.27, output_price: 0.4}\n"
        "routes:\n"
        "  auto:\n"
        "    strategy: ordered\n"
        "    models: [qwen/qwen3-32b, deepseek/deepseek-v3.2]\n"
        "  cheap: {models: [deepseek/deepseek-v3.2]}\n"
    )
    assert main(["models", "--config", str(policy)]) == 0
    out, err = capsys.readouterr()
    offers, routes = tables(out)
    assert offers[1:] == [
        ["qwen/qwen3-32b", "local", "Qwen/Qwen3-32B", "32,768", "$0.00", "$0.00", "enabled"],
        ["deepseek/deepseek-v3.2", "hosted", "deepseek/deepseek-v3.2", "163,840", "$0.27", "$0.40", "disabled"],
    ]
    assert routes[1:] == [
        ["auto", "ordered", "qwen/qwen3-32b, deepseek/deepseek-v3.2", "-"],
        ["cheap", "cost", "deepseek/deepseek-v3.2", "-"],
    ]
    assert err.splitlines() == [
        "warning: backend `hosted` (openrouter) has no API key (set `api_key:`, e.g. `api_key: ${OPENROUTER_API_KEY}`): disabled"
    ]


def test_an_invalid_policy_exits_1_and_says_where(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "backends:\n  a: {type: mock, models: {m/x: {}}}\nroutes:\n  r: {strategy: fastest, models: [m/x]}\n"
    )
    assert main(["models", "--config", str(policy)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "routes.r.strategy (line 4)" in err


def test_models_and_explain_report_a_policy_the_same_way(tmp_path, capsys, monkeypatch):
    """Both read the policy through one function: a broken one gets the same problems on
    stderr and exit 1 from each, a keyless backend the same warning after the output."""
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    request = tmp_path / "request.json"
    request.write_text('{"model": "m/x", "messages": [{"role": "user", "content": "hi"}]}')
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "backends:\n  a: {type: mock, models: {m/x: {}}}\nroutes:\n  r: {strategy: fastest, models: [m/x]}\n"
    )
    keyless = tmp_path / "keyless.yaml"
    keyless.write_text(
        "backends:\n  a: {type: mock, models: {m/x: {}}}\n  hosted: {type: openrouter, models: {m/y: {}}}\n"
    )
    runs = {
        "models": lambda policy: ["models", "--config", str(policy)],
        "explain": lambda policy: ["explain", "--config", str(policy), str(request)],
    }
    errors = {}
    for command, argv in runs.items():
        assert main(argv(broken)) == 1
        out, errors[command] = capsys.readouterr()
        assert out == ""
    assert errors["models"] == errors["explain"]
    assert errors["models"].splitlines() == [
        f"{broken}: 1 problem(s)",
        "  - routes.r.strategy (line 4): Input should be 'cost', 'latency', 'throughput', 'ordered' or 'weighted'",
    ]
    for command, argv in runs.items():
        assert main(argv(keyless)) == 0
        out, err = capsys.readouterr()
        assert out.strip()
        assert err.splitlines() == [
            "warning: backend `hosted` (openrouter) has no API key (set `api_key:`, e.g. `api_key: ${OPENROUTER_API_KEY}`): disabled"
        ], command


def gateway(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    """`python -m gateway ARGS` as an admin runs it, without the caller's GATEWAY_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"backends: {}\n# caf\xe9\n", "byte 0xe9 at offset 18"),  # latin-1 text
        (b"\xff\xfeb\x00a\x00c\x00k\x00", "byte 0xff at offset 0"),  # UTF-16 with its byte order mark
    ],
)
def test_a_policy_that_is_not_utf8_is_named_with_where_it_stops_not_a_traceback(tmp_path, content, where):
    """Every command reading a policy died in the decoder with a traceback (the reloader of a
    running gateway already said this); now each reports it as a problem of the file, and
    `rankings` stops before it opens the store."""
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(content)
    request = tmp_path / "request.json"
    request.write_text('{"model": "m/x", "messages": [{"role": "user", "content": "hi"}]}')
    problem = f"<file>: cannot read the file: not UTF-8 text ({where})"
    reported = [f"{policy}: 1 problem(s)", f"  - {problem}"]
    data = tmp_path / "data"
    runs = [
        (["validate", str(policy)], [f"{policy}: invalid", f"  {problem}"]),
        (["models", "--config", str(policy)], reported),
        (["explain", "--config", str(policy), str(request)], reported),
        (["rankings", "--config", str(policy), "--data-dir", str(data)], reported),
    ]
    for args, said in runs:
        done = gateway(*args)
        assert (done.returncode, done.stdout) == (1, ""), (args, done.stderr[-800:])
        assert done.stderr.splitlines() == said, args
    assert not data.exists()  # the store was neither announced nor opened


def test_validate_counts_what_the_policy_declares_in_plain_english(capsys):
    """The default policy, the first file a new user validates, was "valid (1 backends, 2
    routes)": a count of one is now singular."""
    assert main(["validate", str(REPO / "policies/default.yaml")]) == 0
    assert capsys.readouterr().out.endswith(": valid (1 backend, 2 routes)\n")


def test_validate_warns_of_an_alias_a_broader_one_listed_before_it_hides(tmp_path):
    """As an admin meets it: the file is valid (exit 0), and stderr says which alias is never
    used and why; `gateway explain` shows the broader pattern taking the name."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "backends:\n"
        "  local: {type: openai, base_url: 'http://127.0.0.1:9/v1', models: {qwen/qwen3-8b: {}, qwen/qwen3-32b: {}}}\n"
        "routes:\n"
        "  auto: {models: [qwen/qwen3-32b]}\n"
        "  fast: {models: [qwen/qwen3-8b]}\n"
        "aliases:\n"
        "  'claude-*': auto\n"
        "  'claude-haiku-*': fast\n"
    )
    result = gateway("validate", str(policy))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: aliases.claude-haiku-* (line 8): alias `claude-haiku-*` is never used: every name it matches "
        "is matched first by `claude-*` (line 7); list the narrower pattern first"
    ]
    request = tmp_path / "request.json"
    request.write_text('{"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}')
    explained = gateway("explain", "--config", str(policy), str(request))
    assert explained.stdout.startswith("model 'claude-haiku-4-5' (alias 'claude-*') -> route auto"), explained.stdout


@pytest.mark.parametrize(
    ("backend", "model", "route", "problem"),
    [
        (
            "mock",
            "acme/we\\x1fird",
            "r",
            "backends.mock.models (line 4): model id 'acme/we\\x1fird' holds a control character",
        ),
        ("mo\\nck", "acme/m", "r", "backends (line 1): backend name 'mo\\nck' holds a control character"),
        ("mock", "acme/m", "r\\x85", "routes (line 6): route name 'r\\x85' holds a control character"),
        # Empty: loaded, and never callable (hostile testing).
        ("mock", "acme/m", " ", "routes (line 6): route name ' ' is empty"),
        ("", "acme/m", "r", "backends (line 1): backend name '' is empty"),
    ],
)
def test_names_with_control_characters_are_refused_by_validate(tmp_path, backend, model, route, problem):
    """A model id holding "\\x1f" (YAML's escape) was valid: its every call was a 500 (the
    x-gateway-model header cannot carry it) and, the aggregates' separator, it made every
    `GET /v1/rankings` a 500 after its first call. Backend and route names alike."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f'backends:\n  "{backend}":\n    type: mock\n    models:\n      "{model}": {{}}\n'
        f'routes:\n  "{route}": {{models: ["{model}"]}}\n'
    )
    done = gateway("validate", str(policy))
    assert (done.returncode, done.stderr.splitlines()[1:]) == (1, ["  " + problem])


@pytest.mark.parametrize("command", [["models"], ["explain", "-"]])
def test_a_command_that_read_the_default_policy_and_failed_says_how_to_name_one(tmp_path, command):
    """Run outside the checkout, `gateway models` failed on policies/default.yaml without the
    hint `gateway serve` gives in the same case."""
    run = gateway(*command, cwd=tmp_path)
    assert run.returncode != 0 and "policies/default.yaml" in run.stderr, run.stderr
    assert run.stderr.rstrip().endswith("pass the policy's path as --config FILE (or GATEWAY_CONFIG)"), run.stderr
