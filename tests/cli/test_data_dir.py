"""One store for the server and the CLI, wherever each is started: the data directory is
per user (GATEWAY_DATA_DIR, else $XDG_DATA_HOME/open-model-gateway, else
~/.local/share/open-model-gateway), never ./data of the current directory; and every CLI
command that opens the store says which one, and that it is empty when it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.support.poll import poll
from tests.support.ports import free_port
from tests.support.services import REPO, wait_http

POLICY = "backends:\n  m: {type: mock, models: {mock/mock-small: {}}}\nroutes:\n  auto: {models: [mock/mock-small]}\n"
EMPTY = " (empty: nothing recorded there yet)"


def environment(xdg: Path, **extra: str) -> dict[str, str]:
    """The user's environment with no GATEWAY_* setting: the defaults decide."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") or k == "GATEWAY_TEST_STRICT"}
    return {**inherited, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8", "XDG_DATA_HOME": str(xdg), **extra}


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def served(tmp_path):
    """A `gateway serve` started from the checkout with no GATEWAY_DATA_DIR, as `make run` does."""
    xdg = tmp_path / "xdg"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    port = free_port()
    env = environment(xdg, GATEWAY_USAGE_FLUSH_S="0.1")
    log = open(tmp_path / "gateway.log", "wb")
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(policy), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
        yield f"http://127.0.0.1:{port}", xdg
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_the_cli_run_from_another_directory_reads_the_servers_store(served, tmp_path):
    url, xdg = served
    answer = httpx.post(
        url + "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer.status_code == 200
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = environment(xdg)
    store = xdg / "open-model-gateway" / "usage.sqlite3"
    day = datetime.now(UTC).date().isoformat()

    def exported() -> subprocess.CompletedProcess | None:
        done = cli("usage", "export", "--start", day, "--end", day, cwd=elsewhere, env=env)
        return done if done.stdout else None

    done = poll(exported, what="the call to be exported")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["model"], e["status"]) for e in events] == [("mock/mock-small", 200)]
    assert done.stderr.splitlines() == [f"gateway usage export reads SQLite {store}", "1 events exported"]

    ranked = cli("rankings", "--window", "day", "--json", cwd=elsewhere, env=env)
    assert ranked.returncode == 0, ranked.stderr
    assert json.loads(ranked.stdout)["totals"]["requests"] == 1
    assert ranked.stderr.splitlines() == [f"gateway rankings reads SQLite {store}"]
    assert not (elsewhere / "data").exists()  # nothing made in the current directory either


def test_an_empty_store_is_called_empty(tmp_path):
    env = environment(tmp_path / "xdg")
    store = tmp_path / "xdg" / "open-model-gateway" / "usage.sqlite3"
    ranked = cli("rankings", "--window", "day", cwd=tmp_path, env=env)
    assert ranked.returncode == 0, ranked.stderr
    assert ranked.stderr.splitlines() == [f"gateway rankings reads SQLite {store}{EMPTY}"]
    exported = cli("usage", "export", "--start", "2025-03-01", "--end", "2025-03-02", cwd=tmp_path, env=env)
    assert exported.stderr.splitlines() == [f"gateway usage export reads SQLite {store}", f"0 events exported{EMPTY}"]


@pytest.mark.parametrize(
    "command", [("keys", "list"), ("rankings",), ("usage", "report", "--by", "key"), ("teams", "list")]
)
def test_a_data_directory_the_cli_makes_is_private(tmp_path, command):
    """README: "The data directory is created 0700" (it holds the ledger, keys' hashes and
    stored conversations). A new user found the CLI made it 0755 when it ran first."""
    data = tmp_path / "new" / "data"
    done = cli(*command, cwd=tmp_path, env=environment(tmp_path / "xdg", GATEWAY_DATA_DIR=str(data)))
    assert done.returncode == 0, done.stderr
    assert data.stat().st_mode & 0o777 == 0o700


def test_gateway_data_dir_wins_and_an_explicit_flag_over_it(tmp_path):
    env = environment(tmp_path / "xdg", GATEWAY_DATA_DIR=str(tmp_path / "configured"))
    ranked = cli("rankings", cwd=tmp_path, env=env)
    assert ranked.stderr.splitlines() == [
        f"gateway rankings reads SQLite {tmp_path / 'configured' / 'usage.sqlite3'}{EMPTY}"
    ]
    flagged = cli("rankings", "--data-dir", str(tmp_path / "flag"), cwd=tmp_path, env=env)
    assert flagged.stderr.splitlines() == [
        f"gateway rankings reads SQLite {tmp_path / 'flag' / 'usage.sqlite3'}{EMPTY}"
    ]


def test_without_xdg_the_store_is_under_the_home_directory(tmp_path):
    env = environment(tmp_path, HOME=str(tmp_path / "home"))
    del env["XDG_DATA_HOME"]
    ranked = cli("rankings", cwd=tmp_path, env=env)
    store = tmp_path / "home" / ".local" / "share" / "open-model-gateway" / "usage.sqlite3"
    assert ranked.stderr.splitlines() == [f"gateway rankings reads SQLite {store}{EMPTY}"]


def test_a_data_dir_starting_with_a_tilde_is_under_the_home_directory(tmp_path):
    """Hostile testing: `GATEWAY_DATA_DIR=~/gw` as an env file, a systemd unit or a quoted
    shell value gives it (no shell expands it there), or `--data-dir=~/gw`, made a directory
    named `~` in the current directory and kept the store in it: the server and the CLI
    started elsewhere each used their own."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    env = environment(tmp_path / "xdg", HOME=str(home), GATEWAY_DATA_DIR="~/gw")
    ranked = cli("rankings", cwd=work, env=env)
    assert ranked.stderr.splitlines() == [f"gateway rankings reads SQLite {home / 'gw' / 'usage.sqlite3'}{EMPTY}"]
    listed = cli("keys", "list", "--data-dir=~/flag", cwd=work, env=env)
    assert listed.returncode == 0, listed.stderr
    assert (home / "flag" / "keys.sqlite3").is_file()
    assert list(work.iterdir()) == []


def test_a_store_left_in_dot_data_is_pointed_out_not_silently_ignored(tmp_path):
    import sqlite3

    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "usage.sqlite3").close()
    env = environment(tmp_path / "xdg")
    ranked = cli("rankings", cwd=tmp_path, env=env)
    store_dir = tmp_path / "xdg" / "open-model-gateway"
    assert ranked.stderr.splitlines() == [
        f"gateway rankings reads SQLite {store_dir / 'usage.sqlite3'}{EMPTY}",
        f"note: {tmp_path / 'data' / 'usage.sqlite3'} (where earlier versions kept usage) is not used; the store is in "
        f"{store_dir}. To keep that history, move it there or set GATEWAY_DATA_DIR={tmp_path / 'data'}",
    ]


def test_a_data_dir_the_operator_chose_gets_no_note_about_dot_data(tmp_path):
    """GATEWAY_DATA_DIR (or --data-dir) set, and a ./data/usage.sqlite3 in the current
    directory: every command printed that earlier versions kept usage there. They did only by
    default; an operator who names the directory has nothing there to miss."""
    import sqlite3

    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data" / "usage.sqlite3").close()
    chosen = tmp_path / "chosen"
    ranked = cli("rankings", cwd=tmp_path, env=environment(tmp_path / "xdg", GATEWAY_DATA_DIR=str(chosen)))
    assert ranked.stderr.splitlines() == [f"gateway rankings reads SQLite {chosen / 'usage.sqlite3'}{EMPTY}"]
    flagged = cli("rankings", "--data-dir", str(chosen), cwd=tmp_path, env=environment(tmp_path / "xdg"))
    assert flagged.stderr.splitlines() == [f"gateway rankings reads SQLite {chosen / 'usage.sqlite3'}{EMPTY}"]


@pytest.mark.redis
def test_a_redis_store_is_named_and_its_emptiness_checked(tmp_path, redis_server):
    env = environment(tmp_path / "xdg", GATEWAY_REDIS_URL=redis_server.url)
    ranked = cli("rankings", cwd=tmp_path, env=env)
    assert ranked.stderr.splitlines() == [f"gateway rankings reads Redis {redis_server.url}{EMPTY}"]
    from tests.e2e.usage_helpers import write_fixture

    imported = cli("usage", "import", str(write_fixture(tmp_path / "fixture.jsonl")), cwd=tmp_path, env=env)
    assert imported.stderr.splitlines() == [f"gateway usage import writes to Redis {redis_server.url}{EMPTY}"]
    ranked = cli("rankings", cwd=tmp_path, env=env)
    assert ranked.stderr.splitlines() == [f"gateway rankings reads Redis {redis_server.url}"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6380/1", "Redis redis://:***@cache:6380/1"),
        ("rediss://app:s3cret@cache/0", "Redis rediss://app:***@cache/0"),
        ("redis://cache:6379/0", "Redis redis://cache:6379/0"),
    ],
)
def test_a_redis_store_is_named_without_its_password(url, shown):
    from gateway.cli.store import describe_store
    from gateway.settings import Settings

    assert describe_store(Settings(redis_url=url)) == shown


def test_the_deployments_set_the_data_directory_themselves():
    """The per-user default is for people at a shell: the image (hence compose) and the k8s
    manifest name their data directory, on the volume they mount, so they are unaffected."""
    import re

    import yaml

    image = re.search(r"^\s*GATEWAY_DATA_DIR=(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert image and image.group(1) == "/data"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["gateway"]
    assert "GATEWAY_DATA_DIR" not in compose["environment"]  # so the image's /data holds
    assert "gateway-data:/data" in compose["volumes"]
    docs = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "deployment.yaml").read_text()))
    pod = next(d for d in docs if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if any(e["name"] == "GATEWAY_DATA_DIR" for e in c.get("env", [])))
    data_dir = next(e["value"] for e in container["env"] if e["name"] == "GATEWAY_DATA_DIR")
    assert any(m["mountPath"] == data_dir for m in container["volumeMounts"])


def test_data_files_are_private_in_a_data_directory_that_already_existed(tmp_path):
    """The data directory is made 0700, but one the operator made (a volume, `mkdir data`)
    keeps its mode, and SQLite made the ledger, the key store and the stored conversations
    with the umask's 0644: readable by every local user. Each file, journals included, is
    now 0600 whatever the directory's mode and the umask."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    env = environment(tmp_path / "xdg", GATEWAY_DATA_DIR=str(data), GATEWAY_USAGE_FLUSH_S="0.1")
    created = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--name", "app", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        umask=0o022,
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(policy), "--port", str(port)]
    with open(tmp_path / "gateway.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, umask=0o022)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/health", proc=proc)
            auth = {"Authorization": f"Bearer {key}"}
            asked = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(url + "/v1/chat/completions", json=asked, headers=auth).status_code == 200
            stored = {"model": "auto", "input": "hi", "store": True}
            assert httpx.post(url + "/v1/responses", json=stored, headers=auth).status_code == 200
            day = datetime.now(UTC).date().isoformat()
            poll(
                lambda: (
                    cli("usage", "export", "--start", day, "--end", day, cwd=tmp_path, env=env).stdout.count("\n") == 2
                ),
                what="both calls in the ledger",
            )
        finally:
            proc.terminate()
            proc.wait(30)
    files = sorted(p.name for p in data.iterdir() if ".sqlite3" in p.name)
    assert {"usage.sqlite3", "keys.sqlite3", "responses.sqlite3"} <= set(files), files
    modes = {name: oct((data / name).stat().st_mode & 0o777) for name in files}
    assert set(modes.values()) == {"0o600"}, modes


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_a_data_directory_that_cannot_be_made_is_one_line_naming_it(tmp_path, where):
    """A data directory under a regular file, or in /proc: every store command died with
    mkdir's traceback. Now one line naming the directory and the store, exit 1."""
    if where == "proc":
        data, reason = Path("/proc/gateway-no-such-dir"), "No such file or directory"
    else:
        (tmp_path / "file").write_text("")
        data, reason = tmp_path / "file" / "data", "Not a directory"
    env = environment(tmp_path / "xdg", GATEWAY_DATA_DIR=str(data))
    failed = f"the store failed: cannot use {data}: {reason}"
    for command, said in (
        (("keys", "list"), [f"gateway keys list: {failed} (SQLite {data / 'keys.sqlite3'})"]),
        (("teams", "create", "t"), [f"gateway teams create: {failed} (SQLite {data / 'keys.sqlite3'})"]),
        # Not announced first: the line said "(empty: nothing recorded there yet)" of it.
        (("rankings",), [f"gateway rankings: {failed} (SQLite {data / 'usage.sqlite3'})"]),
        (
            ("usage", "export", "--start", "2025-03-01", "--end", "2025-03-01"),
            [f"gateway usage export: {failed} (SQLite {data / 'usage.sqlite3'})"],
        ),
    ):
        done = cli(*command, cwd=tmp_path, env=env)
        assert (done.returncode, done.stdout) == (1, ""), (command, done.stderr[-800:])
        assert done.stderr.splitlines() == said, command


def test_a_redis_url_with_a_port_out_of_range_is_a_setting_refused_by_name(tmp_path):
    """redis://host:99999/0: redis-py's URL parser raised ValueError, a traceback from each
    command (the server's workers too). Refused as an invalid setting, exit 2; the URL itself
    is not printed (it may hold a password)."""
    env = environment(tmp_path / "xdg", GATEWAY_REDIS_URL="redis://:s3cret@127.0.0.1:99999/0")
    for command in (("keys", "list"), ("rankings",), ("usage", "report")):
        done = cli(*command, cwd=tmp_path, env=env)
        assert (done.returncode, done.stdout) == (2, ""), (command, done.stderr[-800:])
        assert done.stderr.splitlines() == [
            f"gateway {' '.join(command)}: invalid setting(s):",
            "  GATEWAY_REDIS_URL: Value error, not a Redis URL: Port out of range 0-65535",
        ]


def test_a_redis_that_does_not_answer_is_named_in_the_one_line(tmp_path):
    """Nothing listening: `gateway keys` said only redis-py's "Error 111 connecting to host:port",
    no store named (rankings names it in the line above; keys prints none)."""
    from tests.support.ports import free_port

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    shown = url.replace("s3cret", "***")
    env = environment(tmp_path / "xdg", GATEWAY_REDIS_URL=url)
    for command in (("keys", "list"), ("teams", "list"), ("rankings",)):
        done = cli(*command, cwd=tmp_path, env=env)
        assert (done.returncode, done.stdout) == (1, ""), (command, done.stderr[-800:])
        [last] = done.stderr.splitlines()  # rankings names its store once it has opened it: not here
        assert last.startswith(f"gateway {' '.join(command)}: the store failed: ConnectionError: ") and last.endswith(
            f" (Redis {shown})"
        )
        assert "s3cret" not in done.stderr


def test_a_data_directory_this_user_cannot_search_is_a_setting_refused_not_a_traceback(monkeypatch, tmp_path, capsys):
    """Review: under a directory the user may not search, `Path.exists` raises EACCES (Python
    3.11), the settings' own check died with it, and the store commands' handler, naming the
    store through the same settings, raised it again inside itself: a chained traceback. The
    tests run as root, whom no directory refuses, so the refusal is the kernel's answer given
    here."""
    import pathlib

    import gateway.cli

    locked = tmp_path / "locked" / "data"
    real_exists = pathlib.Path.exists

    def exists(self: pathlib.Path, *args, **kwargs) -> bool:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "exists", exists)
    assert gateway.cli.main(["keys", "list", "--data-dir", str(locked)]) == 2
    said = capsys.readouterr().err
    assert f"cannot use {locked}: Permission denied" in said and "Traceback" not in said


@pytest.mark.parametrize("command", [["serve"], ["rankings"], ["usage", "export"], ["keys", "list"]])
def test_the_data_dir_flags_help_names_where_the_store_is_with_xdg_set(tmp_path, command):
    """With XDG_DATA_HOME set the store is under it (test_the_cli_run_from_another_directory...):
    a `--help` that named only ~/.local/share sent the user looking where nothing is."""
    env = environment(tmp_path / "xdg", COLUMNS="200")
    shown = cli(*command, "--help", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    data_dir_help = next(line for line in shown.stdout.splitlines() if line.lstrip().startswith("--data-dir"))
    assert "$GATEWAY_DATA_DIR, else $XDG_DATA_HOME/open-model-gateway, else ~/.local/share" in data_dir_help
