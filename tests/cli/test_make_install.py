"""`make install` (and so `make run`) installs once, quietly, and again only when what it
installs from changed: run against a stand-in venv whose pip records its calls, so the test
neither downloads anything nor touches the real .venv."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.services import REPO


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The Makefile with the two files it installs from, and a venv whose pip only logs."""
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "pip.log"}\n')
    for name in ("pip", "python", "gateway"):
        path = bin_dir / name
        if not path.exists():
            path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return tmp_path


def make_install(checkout: Path) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    done = subprocess.run(
        [make, "--no-print-directory", "install", f"VENV={checkout / 'venv'}"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def pip_calls(checkout: Path) -> list[str]:
    log = checkout / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def test_install_runs_once_quietly_and_again_only_when_its_inputs_change(checkout):
    venv = checkout / "venv"
    assert make_install(checkout).splitlines() == [
        f"installing into {venv} ...",
        f"installed. The gateway command: . {venv}/bin/activate, then gateway --help (or {venv}/bin/gateway)",
    ]
    quiet = "install -q --disable-pip-version-check"
    assert pip_calls(checkout) == [f"{quiet} --upgrade pip", f"{quiet} -r requirements.lock", f"{quiet} --no-deps -e ."]

    assert make_install(checkout) == ""  # nothing changed: nothing printed, pip not run
    os.utime(checkout / "requirements.lock")  # a checkout touching the file, same content
    assert make_install(checkout) == ""
    assert len(pip_calls(checkout)) == 3

    with open(checkout / "requirements.lock", "a") as lock:
        lock.write("# a new pin\n")
    assert make_install(checkout).startswith(f"installing into {venv} ...")
    assert len(pip_calls(checkout)) == 6
