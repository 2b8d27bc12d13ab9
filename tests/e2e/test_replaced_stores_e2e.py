"""A usage ledger or stored-responses file replaced under a running gateway (moved aside and
made anew by the CLI, or restored from a backup) is the one the gateway uses from then on:
real gateway processes, the `openai` SDK and the `gateway` CLI, as an operator meets them."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import openai
import pytest

from gateway.usage.rankings import today_utc
from tests.e2e.test_usage_e2e import FAST_FLUSH, LIVE_CONFIG, MESSAGES
from tests.e2e.usage_helpers import gateway_cli, rankings
from tests.support.policies import one_backend_policy
from tests.support.poll import poll


def _move_aside(data_dir: Path, name: str, aside: Path) -> None:
    aside.mkdir()
    for part in data_dir.glob(name + "*"):  # the file and its -wal, -shm
        part.rename(aside / part.name)


def _exported(data_dir: Path) -> list[dict]:
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_calls_after_the_ledger_was_moved_aside_go_to_the_new_file(
    start_gateway, upstream, upstream_b, openai_client, tmp_path
):
    """Hostile testing: after `mv usage.sqlite3* elsewhere/` and a CLI command that made a
    new ledger at the path, the gateway (its writer process, and its own reads) kept the file
    it had opened: every later call went into the moved file, so `gateway usage export` and
    `gateway rankings` never saw them, while the gateway's /v1/rankings counted calls the
    file at the path does not hold."""
    gw = start_gateway(LIVE_CONFIG.format(a=upstream.base_url, b=upstream_b.base_url), env=FAST_FLUSH)
    client = openai_client(gw)
    data_dir = gw.dir / "data"
    first = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    poll(lambda: len(_exported(data_dir)) == 1, what="the first call in the ledger")

    aside = tmp_path / "aside"
    _move_aside(data_dir, "usage.sqlite3", aside)
    assert _exported(data_dir) == []  # the CLI makes a new, empty ledger at the path
    later = [client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES) for _ in range(2)]
    # Wherever they went, both are written once the moved file and the new one hold three rows.
    poll(
        lambda: len(_exported(data_dir)) + len(_exported(aside)) == 3,
        what="the two later calls written to one of the files",
    )

    assert [e["request_id"] for e in _exported(data_dir)] == [r.headers["x-request-id"] for r in later]
    assert [e["request_id"] for e in _exported(aside)] == [first.headers["x-request-id"]]
    assert rankings(gw.url)["totals"]["requests"] == 2  # the gateway reads the new file too


def test_a_response_store_restored_from_a_backup_is_the_one_served(start_gateway, upstream, openai_client, tmp_path):
    """Hostile testing: a responses.sqlite3 restored from a backup under a running gateway
    was never read: the gateway went on serving (and storing into) the file it had opened at
    start, so a response the backup does not hold was still served, and responses stored
    after the restore were in no file at the path."""
    gw = start_gateway(one_backend_policy(upstream.base_url), env=FAST_FLUSH)
    client = openai_client(gw)
    data_dir = gw.dir / "data"
    kept = client.responses.create(model="auto", input="Before the backup.")
    backup = tmp_path / "backup.sqlite3"
    with sqlite3.connect(data_dir / "responses.sqlite3") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    lost = client.responses.create(model="auto", input="After the backup.")

    _move_aside(data_dir, "responses.sqlite3", tmp_path / "aside")
    shutil.copyfile(backup, data_dir / "responses.sqlite3.tmp")
    (data_dir / "responses.sqlite3.tmp").rename(data_dir / "responses.sqlite3")

    assert client.responses.retrieve(kept.id).id == kept.id
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(lost.id)
    after = client.responses.create(model="auto", input="After the restore.", previous_response_id=kept.id)
    assert client.responses.retrieve(after.id).previous_response_id == kept.id
    with sqlite3.connect(data_dir / "responses.sqlite3") as restored:
        ids = sorted(row[0] for row in restored.execute("SELECT id FROM responses"))
    assert ids == sorted([kept.id, after.id])
