"""The README's `gateway ...` commands exist, reached the way the README says: through the
virtualenv `make run` installs into (`. .venv/bin/activate`, then `gateway`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import build_parser
from tests.support.services import REPO

README = (REPO / "README.md").read_text()
VENV = REPO / ".venv"


def _groups() -> dict[str, set[str]]:
    """Top-level command -> its own subcommands (empty for a plain command)."""
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    groups = {}
    for name, parser in top.choices.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        groups[name] = set(nested[0].choices) if nested else set()
    return groups


def readme_commands() -> list[tuple[str, ...]]:
    """Each command the README shows as code (a `gateway ...` span, or a line of a shell block
    starting with `gateway`): `gateway usage export --start ...` -> ("usage", "export")."""
    shown = re.findall(r"`gateway ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", README)
    for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL):
        shown += re.findall(r"^gateway ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", block, re.MULTILINE)
    groups = _groups()
    found: list[tuple[str, ...]] = []
    for words in shown:
        first, *rest = words.split()
        command = (first, rest[0]) if groups.get(first) and rest else (first,)
        if command not in found:
            found.append(command)
    return found


def test_the_readme_shows_every_command():
    groups = _groups()
    expected = [(name, sub) for name, subs in groups.items() for sub in sorted(subs)]
    expected += [(name,) for name, subs in groups.items() if not subs]
    assert sorted(readme_commands()) == sorted(expected)


@pytest.mark.skipif(not (VENV / "bin" / "activate").exists(), reason="no .venv: run `make install`")
@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_each_readme_command_answers_help_after_activating_the_venv(command):
    assert "\n. .venv/bin/activate " in README  # the line the README tells a new user to run
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # a fresh shell: no venv on the PATH until the README's line
    env["PYTHONPATH"] = str(REPO)  # this checkout's code behind the venv's script
    done = subprocess.run(
        ["bash", "-c", f". .venv/bin/activate && command -v gateway && gateway {' '.join(command)} --help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    where, *usage = done.stdout.splitlines()
    assert Path(where).resolve() == (VENV / "bin" / "gateway").resolve()  # .venv may be a symlink
    assert usage[0].startswith(f"usage: gateway {' '.join(command)} ")


def test_serve_outside_the_checkout_says_where_it_looked_for_the_default_policy(tmp_path):
    """`gateway serve` with no --config reads GATEWAY_CONFIG's default `policies/default.yaml`,
    relative to the current directory: from elsewhere it said only "policies/default.yaml:
    cannot read the file", leaving a new user to guess relative to what."""
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    env["PYTHONPATH"] = str(REPO)
    env["GATEWAY_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert (
        f"cannot read the file: No such file or directory (looked for {tmp_path.resolve()}/policies/default.yaml;"
        in done.stderr
    )
    assert "--config" in done.stderr  # what to do about it


def test_the_readme_says_how_make_run_takes_another_port_and_the_makefile_obeys():
    """8080 is often taken; the README's `make run` line shows the variables that change it."""
    shown = re.search(r"^make run .*\((make run [^)]*)\)$", README, re.MULTILINE)
    assert shown, "the README's `make run` line names no PORT/HOST/CONFIG"
    done = subprocess.run(
        ["make", "-n", *shown.group(1).split()[2:], "run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    serve = [line for line in done.stdout.splitlines() if " serve " in line]
    assert serve == [".venv/bin/gateway serve --config my.yaml --host 0.0.0.0 --port 8081"]


@pytest.mark.parametrize(("command", "package"), [("claude", "@anthropic-ai/claude-code"), ("codex", "@openai/codex")])
def test_the_readme_says_where_make_agent_deps_puts_each_agents_command(command, package):
    """The README's agent sections run `claude` and `codex`; a new user has neither on the PATH,
    and `make agent-deps` installs them only under tests/agents: the README names that path."""
    assert f"`make agent-deps` installs the pinned version as\n`tests/agents/node_modules/.bin/{command}`" in README
    lock = json.loads((REPO / "tests" / "agents" / "package-lock.json").read_text())
    assert command in lock["packages"][f"node_modules/{package}"]["bin"]  # the lock installs that command
