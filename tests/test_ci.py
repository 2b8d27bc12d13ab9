"""CI cannot pass by skipping: .ci/run installs every binary a test requires, then runs the
README's test command in strict mode, where a missing binary fails its test."""

from __future__ import annotations

import ast
import re
import subprocess

import pytest

from tests.support.services import REPO

CI_RUN = REPO / ".ci" / "run"
SYSTEM_DEPS = REPO / "scripts" / "install-system-deps.sh"


def required_binaries() -> dict[str, list[str]]:
    """Every `require_binary(NAME)` call in the tests: NAME -> the files calling it."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "require_binary"
            ):
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                arg = node.args[0] if node.args else None
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{where}: name the binary literally"
                )
                found.setdefault(arg.value, []).append(where)
    return found


def installed_by_system_deps() -> dict[str, str]:
    """binary -> Debian package, from the script's `command -v BINARY ... || need+=(PACKAGE)` lines."""
    return dict(re.findall(r"^command -v (\S+) >/dev/null \|\| need\+=\((\S+)\)$", SYSTEM_DEPS.read_text(), re.M))


def command_lines(path) -> list[str]:
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_ci_runs_make_test_strictly_after_installing_the_system_deps():
    lines = command_lines(CI_RUN)
    assert "set -euo pipefail" in lines  # a failed install stops the run
    install = lines.index("./scripts/install-system-deps.sh")
    strict = lines.index("export GATEWAY_TEST_STRICT=1")
    make_test = next(i for i, line in enumerate(lines) if re.fullmatch(r"make test( .*)?", line))
    assert install < make_test and strict < make_test


def test_ci_installs_the_coding_agents_before_make_test():
    """tests/e2e/test_coding_agents_e2e.py never installs Claude Code and Codex CLI itself (too
    large for a test's time); under GATEWAY_TEST_STRICT it fails without them, so CI installs them."""
    lines = command_lines(CI_RUN)
    make_test = next(i for i, line in enumerate(lines) if re.fullmatch(r"make test( .*)?", line))
    assert lines.index("make agent-deps") < make_test
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^agent-deps: \$\(AGENT_DEPS\)$", makefile, re.M)
    assert "npm ci --prefix tests/agents" in makefile


def test_every_binary_a_test_requires_is_installed_by_the_system_deps_script():
    required = required_binaries()
    assert {"redis-server", "chromium", "prometheus"} <= set(required)  # the finder finds what it should
    installed = installed_by_system_deps()
    missing = {name: where for name, where in required.items() if name not in installed}
    assert missing == {}, f"required by tests but not installed by {SYSTEM_DEPS.name}: {missing}"


@pytest.mark.parametrize("script", [CI_RUN, SYSTEM_DEPS], ids=lambda p: p.name)
def test_ci_scripts_are_executable_bash_that_parses(script):
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
