"""Helpers for tenant tests: keys made with the real CLI, on the store a gateway reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.services import REPO


def cli(*args: str, data_dir: Path, redis_url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_DATA_DIR": str(data_dir)}
    env.pop("GATEWAY_REDIS_URL", None)
    if redis_url:
        env["GATEWAY_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def create_key(name: str, *flags: str, data_dir: Path, redis_url: str | None = None) -> str:
    """The plain key of a new virtual key."""
    made = cli("keys", "create", "--name", name, *flags, "--json", data_dir=data_dir, redis_url=redis_url)
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)["key"]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
