"""The usage commands against a store that cannot be used: a data directory that cannot be
made, a usage.sqlite3 that is not a database, a Redis that is down. Each says so in one
line on stderr, exits 1, prints no result, and leaves what it was given as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.usage_helpers import gateway_cli
from tests.support.ports import free_port

NOT_A_DATABASE = b"not a database, " * 512


def unusable(kind: str, tmp_path: Path) -> tuple[dict[str, str], str]:
    """The environment naming an unusable store of `kind`, and the end of the line saying why."""
    if kind == "under-a-file":
        (tmp_path / "file").write_text("")
        data = tmp_path / "file" / "data"
        return {"GATEWAY_DATA_DIR": str(data)}, f"cannot use {data}: Not a directory (SQLite {data}/usage.sqlite3)"
    if kind == "not-a-database":
        data = tmp_path / "data"
        data.mkdir()
        (data / "usage.sqlite3").write_bytes(NOT_A_DATABASE)
        return {"GATEWAY_DATA_DIR": str(data)}, f"DatabaseError: file is not a database (SQLite {data}/usage.sqlite3)"
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    return {"GATEWAY_REDIS_URL": url, "GATEWAY_DATA_DIR": str(tmp_path / "data")}, f"(Redis {url})"


KINDS = ["under-a-file", "not-a-database", "redis-down"]


def failure_line(stderr: bytes) -> str:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines  # the failure alone: no line about the store above it
    return lines[0]


GOOD_LINE = (
    b'{"id": "e1", "timestamp": "2025-03-10T12:00:00Z", "model": "a/b", "prompt_tokens": 1, "completion_tokens": 1}\n'
)


@pytest.mark.parametrize("kind", KINDS)
def test_an_import_into_a_store_that_cannot_be_used_says_the_store_failed(tmp_path, kind):
    """An empty file (or stdin) never reached the store: "0 imported", exit 0, as if the
    store were fine, so a cron job importing an empty day never learned its store was gone;
    a file of bad lines only listed them, the store unmentioned; and a data directory that
    could not be made was reported as if the input were missing ("gateway usage import:
    [Errno 20] Not a directory: ...", exit 2)."""
    env, why = unusable(kind, tmp_path)
    empty, bad, good = tmp_path / "empty.jsonl", tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    empty.write_bytes(b"")
    bad.write_bytes(b'{"id": 1}\n')
    good.write_bytes(GOOD_LINE)
    for file, stdin in ((empty, None), ("-", b""), (bad, None), (good, None)):
        done = gateway_cli("usage", "import", str(file), env=env, stdin=stdin)
        assert (done.returncode, done.stdout) == (1, b""), (file, done.stderr[-800:])
        line = failure_line(done.stderr)
        assert line.startswith("gateway usage import: the store failed: ") and line.endswith(why), line
    if kind == "not-a-database":
        assert (tmp_path / "data" / "usage.sqlite3").read_bytes() == NOT_A_DATABASE


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "command",
    [("rankings",), ("usage", "report"), ("usage", "export", "--start", "2025-03-01", "--end", "2025-03-01")],
)
def test_a_reading_command_says_only_that_the_store_failed(tmp_path, kind, command):
    """A data directory that cannot be made was announced as "(empty: nothing recorded there
    yet)" on the line above the failure: a store nobody could have written to, called empty."""
    env, why = unusable(kind, tmp_path)
    done = gateway_cli(*command, env=env)
    assert (done.returncode, done.stdout) == (1, b""), done.stderr[-800:]
    line = failure_line(done.stderr)
    assert line.startswith(f"gateway {' '.join(command[:2])}: the store failed: ") and line.endswith(why), line


@pytest.mark.parametrize("kind", KINDS)
def test_an_export_from_a_store_that_cannot_be_used_keeps_the_output_file(tmp_path, kind):
    """`--output march.jsonl` was truncated before the store was read: a store that was down
    emptied last month's export the operator meant to overwrite only with a new one."""
    env, why = unusable(kind, tmp_path)
    kept = tmp_path / "march.jsonl"
    kept.write_bytes(b'{"id": "from an earlier export"}\n')
    done = gateway_cli("usage", "export", "--start", "2025-03-01", "--end", "2025-03-31", "-o", str(kept), env=env)
    assert (done.returncode, done.stdout) == (1, b""), done.stderr[-800:]
    assert failure_line(done.stderr).endswith(why)
    assert kept.read_bytes() == b'{"id": "from an earlier export"}\n'
