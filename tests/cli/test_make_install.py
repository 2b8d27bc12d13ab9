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


def make_run(checkout: Path, *assignments: str, **environment: str) -> str:
    """The arguments `make run` gives `gateway`, with the stand-in gateway recording them."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make")
    log = checkout / "gateway.log"
    gateway = checkout / "venv" / "bin" / "gateway"
    gateway.write_text(f'#!/bin/sh\necho "$*" > {log}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k not in ("HOST", "PORT", "CONFIG")}
    done = subprocess.run(
        [make, "--no-print-directory", "run", f"VENV={checkout / 'venv'}", *assignments],
        cwd=checkout,
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return log.read_text().strip()


def test_make_run_leaves_the_gateway_variables_and_a_stray_host_alone(checkout):
    """README: GATEWAY_CONFIG, GATEWAY_HOST and GATEWAY_PORT choose what `gateway serve` serves.
    `make run` passed --config/--host/--port always, so they were ignored, and a HOST or PORT
    the shell exported (tcsh's HOST is the host name) was taken as the bind address or port."""
    assert make_run(checkout, GATEWAY_CONFIG="my.yaml", GATEWAY_PORT="9000", HOST="build-box", PORT="3000") == "serve"


def test_make_run_passes_what_its_command_line_gives(checkout):
    """The README's `make run PORT=8081 HOST=0.0.0.0 CONFIG=my.yaml`."""
    given = make_run(checkout, "PORT=8081", "HOST=0.0.0.0", "CONFIG=my.yaml", GATEWAY_PORT="9000")
    assert given == "serve --config my.yaml --host 0.0.0.0 --port 8081"
