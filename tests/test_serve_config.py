"""gateway/cli/serve.py: the settings reach uvicorn and the HTTP protocol (gateway/api/wire.py)."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.api.wire import GatewayHttpProtocol, WireLimits
from gateway.cli.serve import server_config
from gateway.settings import Settings, default_data_dir
from tests.support.ports import free_port
from tests.support.services import REPO


def gateway_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m gateway ARGS` from the checkout, with exactly `env`."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )


def test_defaults(monkeypatch):
    for name in ("MAX_HEADERS", "MAX_HEADER_BYTES", "HEADER_TIMEOUT_S", "BODY_TIMEOUT_S", "KEEPALIVE_TIMEOUT_S"):
        monkeypatch.delenv(f"GATEWAY_{name}", raising=False)
    monkeypatch.delenv("GATEWAY_MAX_CONNECTIONS", raising=False)
    config = server_config(Settings())
    assert config.wire == WireLimits(
        max_headers=100, max_header_bytes=65536, header_timeout_s=10.0, body_timeout_s=30.0
    )
    assert (config.timeout_keep_alive, config.limit_concurrency) == (5.0, 1000)
    assert config.http is GatewayHttpProtocol
    assert config.headers == [("X-Content-Type-Options", "nosniff")]


def test_every_setting_comes_from_the_environment(monkeypatch):
    env = {
        "GATEWAY_MAX_HEADERS": "20",
        "GATEWAY_MAX_HEADER_BYTES": "4096",
        "GATEWAY_HEADER_TIMEOUT_S": "2.5",
        "GATEWAY_BODY_TIMEOUT_S": "7",
        "GATEWAY_KEEPALIVE_TIMEOUT_S": "3",
        "GATEWAY_MAX_CONNECTIONS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = server_config(Settings())
    assert config.wire == WireLimits(max_headers=20, max_header_bytes=4096, header_timeout_s=2.5, body_timeout_s=7.0)
    assert config.timeout_keep_alive == 3.0
    assert config.limit_concurrency is None  # 0: no cap
    assert config.wire.sweep_interval_s == 0.625  # a quarter of the shortest timeout


def test_the_config_pickles_for_worker_processes():
    """`--workers N` spawns workers and hands them the config by pickling it."""
    config = server_config(Settings(workers=2))
    copy = pickle.loads(pickle.dumps(config))
    assert copy.wire == config.wire and copy.http is GatewayHttpProtocol and copy.workers == 2


def test_serve_refuses_a_config_that_is_not_utf8_with_a_message(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"backends: {}\n# caf\xe9\n")
    done = gateway_cli(
        ["serve", "--config", str(path), "--port", "1"],
        {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-2:] == [
        f"{path}: 1 problem(s)",
        "  - <file>: cannot read the file: not UTF-8 text (byte 0xe9 at offset 18)",
    ]
    assert "Traceback" not in done.stderr


BROKEN_POLICIES = [
    ("backends: [\n", "  - <file> (line 2): not valid YAML: expected the node content, but found '<stream end>'"),
    (
        "backends:\n  a: {type: openai, base_url: 'http://127.0.0.1:9/v1', timeout_s: -1, models: {x/y: {}}}\n"
        "routes:\n  r: {models: [x/y]}\n",
        "  - backends.a.timeout_s (line 2): Input should be greater than 0",
    ),
]


@pytest.mark.parametrize(("text", "problem"), BROKEN_POLICIES)
@pytest.mark.parametrize("how", ["flag", "variable"])
def test_serve_with_a_broken_policy_names_the_file_and_problem_and_exits_2_unbound(tmp_path, text, problem, how):
    """What an operator sees at start (a live reload keeps the previous config instead): the
    file and each problem as `gateway validate` prints them, exit 2 before any worker starts
    (two asked for here), no traceback, and no worker left behind on the port."""
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    port = free_port()
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    args = ["serve", "--port", str(port), "--workers", "2"]
    if how == "flag":
        args += ["--config", str(path)]
    else:
        env["GATEWAY_CONFIG"] = str(path)
    done = gateway_cli(args, env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{path}: 1 problem(s)", problem]
    assert done.stdout == ""
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # no worker left behind, listening


def test_forwarded_headers_are_believed_only_from_the_trusted_proxies(monkeypatch):
    """uvicorn rewrites the scope's client and scheme from X-Forwarded-* only for
    GATEWAY_TRUSTED_PROXIES (as the failed-auth throttle reads them); with none, its
    middleware is not installed (its own default would believe any local client)."""
    monkeypatch.delenv("GATEWAY_TRUSTED_PROXIES", raising=False)
    config = server_config(Settings())
    assert config.proxy_headers is False
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "10.0.0.1, 10.1.2.3/16,::1")
    config = server_config(Settings())
    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == "10.0.0.1/32,10.1.0.0/16,::1/128"


def test_serve_refuses_a_port_or_worker_count_it_cannot_use_by_the_variables_name(tmp_path):
    """`--port 70000` served on 4464 (uvicorn wraps it) while announcing 70000; a port that is
    not a number, and any other setting pydantic refuses, was a traceback."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    cases = [
        (["serve", "--config", "policies/default.yaml", "--port", "70000"], {}, "GATEWAY_PORT='70000'"),
        (["serve", "--config", "policies/default.yaml"], {"GATEWAY_PORT": "http"}, "GATEWAY_PORT='http'"),
        (["serve", "--config", "policies/default.yaml", "--workers", "0"], {}, "GATEWAY_WORKERS='0'"),
        (["keys", "list"], {"GATEWAY_MAX_HEADERS": "0"}, "GATEWAY_MAX_HEADERS='0'"),
    ]
    for args, extra, named in cases:
        done = gateway_cli(args, {**env, **extra})
        assert done.returncode == 2, (args, done.stderr[-500:])
        assert "invalid setting(s)" in done.stderr and named in done.stderr
        assert "Traceback" not in done.stderr


def test_a_data_dir_that_is_a_file_is_named_not_a_traceback(tmp_path):
    """GATEWAY_DATA_DIR naming a regular file: every command died opening its store inside it
    (serve only in its workers' startup, exit 3 after a long traceback)."""
    afile = tmp_path / "data"
    afile.write_text("not a directory")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(afile)}
    for args in (["serve", "--config", "policies/default.yaml"], ["keys", "list"], ["rankings"]):
        done = gateway_cli(args, env)
        assert done.returncode == 2, (args, done.stderr[-500:])
        assert f"{afile} is not a directory" in done.stderr and "Traceback" not in done.stderr


def test_a_store_that_cannot_be_used_is_one_line_not_a_traceback(tmp_path):
    """Redis down, a key store file that is not SQLite, a Redis URL redis-py cannot read: each
    `gateway` command that touched the store died with a traceback (serve: in each worker's
    startup, exit 3)."""
    from tests.support.ports import free_port

    data = tmp_path / "data"
    data.mkdir()
    (data / "keys.sqlite3").write_bytes(b"not a database, " * 512)
    base = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(data)}
    down = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    cases = [
        (["keys", "list"], down, 1, "gateway keys list: the store failed: ConnectionError"),
        (["rankings"], down, 1, "gateway rankings: the store failed: ConnectionError"),
        (["usage", "report"], down, 1, "gateway usage report: the store failed: ConnectionError"),
        (["keys", "list"], {}, 1, "gateway keys list: the store failed: DatabaseError: file is not a database"),
        (["serve", "--config", "policies/default.yaml"], {}, 2, f"the key store in {data} cannot be opened"),
        (
            ["keys", "list"],
            {"GATEWAY_REDIS_URL": "localhost:6379"},
            2,
            "GATEWAY_REDIS_URL: Value error, must start with redis://",
        ),
    ]
    for args, extra, code, said in cases:
        done = gateway_cli(args, {**base, **extra})
        assert done.returncode == code, (args, done.stderr[-500:])
        assert said in done.stderr and "Traceback" not in done.stderr, (args, done.stderr[-500:])


@pytest.mark.parametrize(("name", "what"), [("usage.sqlite3", "usage ledger"), ("responses.sqlite3", "response store")])
def test_serve_refuses_a_ledger_or_response_store_that_is_not_sqlite(tmp_path, name, what):
    """A usage ledger (or response store) that is not a database: serve started and answered
    calls while its writer retried and dropped every record, budgets counting from zero (the
    key store's file was already refused)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_bytes(b"not a database, " * 512)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(data)}
    with socket.socket() as taken:  # served on, it would stop at once (the port is in use), not run on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = gateway_cli(["serve", "--config", "policies/default.yaml", "--port", port], env)
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.strip().splitlines() == [
        f"the {what} {data / name} cannot be opened: file is not a database; move it aside "
        "(a new one is made) or restore it from a backup"
    ]
    assert (data / name).read_bytes() == b"not a database, " * 512  # left as it was, for the operator


def test_a_ledger_whose_schema_pages_are_corrupt_is_unusable_though_its_header_is_sound(tmp_path):
    """Review: the check read only the 100-byte header (`PRAGMA schema_version`), so a file
    with a sound header and a corrupt schema page passed, and failed at the first write."""
    import sqlite3

    from gateway.sqlite_files import unusable_database

    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, body BLOB)")
    db.close()
    assert unusable_database(path) is None  # sound
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)
    path.write_bytes(bytes(data))
    assert unusable_database(path) == "database disk image is malformed"
    assert unusable_database(tmp_path / "none.sqlite3") is None  # made on first use


def test_the_cli_leaves_quietly_when_its_reader_does(monkeypatch):
    """`gateway ... | head`: a BrokenPipeError is exit 0, not the store failure's re-raise."""
    import argparse

    import gateway.cli

    def parser() -> argparse.ArgumentParser:
        def run(args: argparse.Namespace) -> int:
            raise BrokenPipeError

        p = argparse.ArgumentParser()
        p.set_defaults(func=run, command="explain")
        return p

    monkeypatch.setattr(gateway.cli, "build_parser", parser)
    assert gateway.cli.main([]) == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_USAGE_BATCH_SIZE", "0"),  # serve spun at startup, never answering, nothing logged
        ("GATEWAY_USAGE_BUFFER_MAX", "0"),  # every call logged an observer traceback
        ("GATEWAY_USAGE_FLUSH_S", "0"),  # these three spun a core while idle
        ("GATEWAY_KEYS_REFRESH_S", "-1"),
        ("GATEWAY_RELOAD_POLL_S", "0"),
        # Hostile testing: above 0 but as good as 0, each kept an idle gateway's core busy.
        ("GATEWAY_RELOAD_POLL_S", "0.000001"),
        ("GATEWAY_KEYS_REFRESH_S", "0.000001"),
        ("GATEWAY_USAGE_FLUSH_S", "0.000001"),
        ("GATEWAY_LIMITS_INFLIGHT_TTL_S", "0"),
        ("GATEWAY_AUTH_FAILURES_PER_MINUTE", "-1"),
        # `ops:${OPS_KEY}` unset: an empty `Authorization: Bearer ` got in as `ops`
        ("GATEWAY_API_KEYS", "ci:sk-ci,ops:"),
        ("GATEWAY_API_KEYS", ":sk-nameless"),
        # One key under two names: every call was recorded as the second's, whose limits alone applied.
        ("GATEWAY_API_KEYS", "alice:sk-same,bob:sk-same"),
        ("GATEWAY_API_KEYS", "sk-same,bob:sk-same"),
        ("GATEWAY_API_KEYS", "alice: sk-same,bob:sk-same"),  # the same key, spaces aside
        # A control character in a name: the ledger drops it from its label, recording another name.
        ("GATEWAY_API_KEYS", "ops\x1b[31m:sk-red"),
        # Not a level: `gateway serve` ended in a KeyError traceback (uvicorn's table).
        ("GATEWAY_LOG_LEVEL", "warn"),
        ("GATEWAY_LOG_LEVEL", "verbose"),
    ],
)
def test_intervals_and_sizes_the_gateway_cannot_run_with_are_refused(monkeypatch, name, value):
    from pydantic import ValidationError

    from gateway.settings import settings_problems

    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    [problem] = settings_problems(refused.value)
    if name == "GATEWAY_API_KEYS":  # secrets: named, never shown
        assert problem.startswith(f"{name}: ") and "sk-" not in problem
    else:
        assert problem.startswith(f"{name}='{value}': ")


@pytest.mark.parametrize(
    "name",
    ["GATEWAY_SHUTDOWN_GRACE_S", "GATEWAY_KEYS_REFRESH_S", "GATEWAY_USAGE_FLUSH_S", "GATEWAY_RESPONSES_RETENTION_DAYS"],
)
def test_an_infinite_interval_is_refused_by_the_variables_name(monkeypatch, name):
    """Hostile testing: `inf` passed every bound (`gt=0`), and GATEWAY_SHUTDOWN_GRACE_S=inf
    made `gateway serve` die in an OverflowError traceback; the others were taken as given."""
    from pydantic import ValidationError

    from gateway.settings import settings_problems

    monkeypatch.setenv(name, "inf")
    with pytest.raises(ValidationError) as refused:
        Settings()
    [problem] = settings_problems(refused.value)
    assert problem.startswith(f"{name}='inf': ")


def test_serve_with_an_infinite_shutdown_grace_exits_2_naming_it(tmp_path):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    done = gateway_cli(["serve", "--config", "policies/default.yaml"], {**env, "GATEWAY_SHUTDOWN_GRACE_S": "inf"})
    assert done.returncode == 2 and "GATEWAY_SHUTDOWN_GRACE_S='inf'" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_admin_key_that_is_also_a_client_key_is_refused_without_showing_it(tmp_path):
    """Hostile testing: GATEWAY_ADMIN_KEY set to one of GATEWAY_API_KEYS' keys (one secret
    pasted twice) served, and the client holding that key could mint, rotate and revoke keys
    and read everyone's usage through /admin."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    secrets = {"GATEWAY_API_KEYS": "ci:sk-ci,app:sk-shared", "GATEWAY_ADMIN_KEY": "sk-shared"}
    done = gateway_cli(["serve", "--config", "policies/default.yaml"], {**env, **secrets})
    assert done.returncode == 2, done.stderr[-500:]
    [problem] = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("GATEWAY_")]
    assert problem.startswith("GATEWAY_ADMIN_KEY: ") and "`app`" in problem, problem
    assert "sk-shared" not in done.stderr and "Traceback" not in done.stderr


def test_a_metrics_directory_that_cannot_be_made_is_named_not_a_traceback(tmp_path):
    """Hostile testing: PROMETHEUS_MULTIPROC_DIR naming a regular file (or under one) ended
    `gateway serve --workers 2` in a FileExistsError traceback, exit 1."""
    afile = tmp_path / "metrics"
    afile.write_text("not a directory")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    for where in (afile, afile / "sub"):
        done = gateway_cli(
            ["serve", "--config", "policies/default.yaml", "--workers", "2", "--port", str(free_port())],
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(where)},
        )
        assert done.returncode == 2, done.stderr[-500:]
        assert f"PROMETHEUS_MULTIPROC_DIR={str(where)!r}: cannot use it" in done.stderr, done.stderr[-500:]
        assert "Traceback" not in done.stderr


def test_a_key_listed_twice_under_one_name_and_log_levels_in_any_case_are_accepted(monkeypatch):
    monkeypatch.setenv("GATEWAY_API_KEYS", "alice:sk-1,alice:sk-1,bob:sk-2")
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "WARNING")
    settings = Settings()
    assert settings.client_keys() == {"sk-1": "alice", "sk-2": "bob"} and settings.log_level == "warning"


def test_serve_refuses_a_log_level_by_the_variables_name(tmp_path):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(tmp_path / "data")}
    done = gateway_cli(["serve", "--config", "policies/default.yaml"], {**env, "GATEWAY_LOG_LEVEL": "warn"})
    assert done.returncode == 2 and "GATEWAY_LOG_LEVEL='warn'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_variable_set_to_nothing_is_unset(monkeypatch, tmp_path):
    """Hostile testing: compose's `${GATEWAY_HOST}` with the shell's unset is an empty
    variable, and `gateway serve` bound every interface with it (uvicorn's host ""); an empty
    GATEWAY_DATA_DIR put the store in the current directory, where the CLI run elsewhere
    would not find it; an empty number or level stopped the start."""
    for name in ("HOST", "DATA_DIR", "CONFIG", "PORT", "WORKERS", "LOG_LEVEL", "REDIS_URL", "REQUIRE_KEYS"):
        monkeypatch.setenv(f"GATEWAY_{name}", "")
    settings = Settings()
    assert (settings.host, settings.port, settings.workers, settings.log_level) == ("127.0.0.1", 8080, 1, "info")
    assert settings.data_dir == default_data_dir() and settings.data_dir != Path("")
    assert (settings.config, settings.redis_url, settings.require_keys) == (Path("policies/default.yaml"), None, False)

    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GATEWAY_CONFIG": ""}
    done = gateway_cli(["models"], env)  # the CLI's own default for the policy, as serve's
    assert done.returncode == 0, done.stderr
