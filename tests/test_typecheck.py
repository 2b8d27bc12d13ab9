"""`make test` type-checks before it runs the tests, strictly, so a type error fails CI."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.services import REPO

MYPY = Path(sys.executable).with_name("mypy")


def test_make_test_runs_mypy_after_ruff_and_before_pytest():
    result = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    lines = result.stdout.splitlines()
    ruff = max(i for i, line in enumerate(lines) if "/ruff " in line)
    mypy = [i for i, line in enumerate(lines) if line.endswith("/mypy")]
    pytest = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert len(mypy) == 1 and ruff < mypy[0] < pytest, result.stdout


def test_the_mypy_config_is_strict_and_fails_on_an_untyped_function(tmp_path):
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    module = tmp_path / "untyped.py"
    module.write_text("def double(x):\n    return x * 2\n")
    result = subprocess.run(
        [str(MYPY), "--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"), str(module)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "untyped.py:1: error: Function is missing a type annotation  [no-untyped-def]" in result.stdout
    assert "Found 1 error in 1 file" in result.stdout


def test_every_type_ignore_names_its_error_and_says_why():
    """A bare `# type: ignore` hides whatever goes wrong on its line later: each one names the
    error it silences and gives the reason, on its line or in the comment just above."""
    unexplained = []
    for path in sorted((REPO / "gateway").rglob("*.py")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if "# type: ignore" not in line:
                continue
            code = re.search(r"# type: ignore\[[a-z-]+(, *[a-z-]+)*\]", line)
            after = line.split("]", 1)[-1] if code else ""
            above = lines[number - 2].strip() if number > 1 else ""
            explained_above = above.startswith("#") and not above.startswith("# --")
            if code is None or not (re.search(r"#\s*\w", after) or explained_above):
                unexplained.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert unexplained == []


def test_the_whole_package_is_checked_with_no_module_let_off():
    """Every module of gateway/ is checked: no list of packages that leaves new ones out, no
    override that silences a module's errors or skips following its imports."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["files"] == ["gateway"]
    assert "exclude" not in config
    for override in config.get("overrides", []):
        assert not {"ignore_errors", "follow_imports", "ignore_missing_imports"} & set(override), override
