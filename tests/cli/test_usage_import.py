"""`gateway usage import` as an operator runs it, on files with many bad lines: the first
20 are named by number and reason, the rest counted in one line (a binary file given by
mistake printed a line for each of its hundreds)."""

from __future__ import annotations

import json

from gateway.usage.jsonl import event_line
from tests.e2e.usage_helpers import gateway_cli
from tests.usage.fixtures import EVENTS


def exported(data) -> list[str]:
    done = gateway_cli("usage", "export", "--start", "2000-01-01", "--end", "2100-01-01", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["id"] for line in done.stdout.splitlines()]


def test_thirty_bad_lines_show_the_first_twenty_then_a_count(tmp_path):
    good = [event_line(e) for e in EVENTS[:2]]
    path = tmp_path / "history.jsonl"
    path.write_bytes(good[0] + b"".join(b'{"id": "bad-%d"}\n' % i for i in range(30)) + good[1])
    data = tmp_path / "data"

    done = gateway_cli("usage", "import", str(path), "--data-dir", str(data))

    assert done.returncode == 1
    assert done.stdout.decode() == "2 imported, 0 already present, 30 bad lines\n"
    errors = done.stderr.decode().splitlines()[1:]  # after the line naming the store
    assert [line.split(": ")[0] for line in errors[:20]] == [f"{path}:{n}" for n in range(2, 22)]
    assert all("timestamp" in line for line in errors[:20])  # each with its reason
    assert errors[20:] == ["... and 10 more bad lines"]
    assert exported(data) == [EVENTS[0].id, EVENTS[1].id]


def test_a_binary_file_is_said_not_to_be_json_lines(tmp_path):
    path = tmp_path / "ls"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\n" * 100)
    data = tmp_path / "data"

    done = gateway_cli("usage", "import", str(path), "--data-dir", str(data))

    assert done.returncode == 1
    assert done.stdout.decode() == "0 imported, 0 already present, 100 bad lines\n"
    errors = done.stderr.decode().splitlines()[1:]
    assert errors[:20] == [f"{path}:{n}: binary data (a NUL byte), not JSON" for n in range(1, 21)]
    assert errors[20:] == ["... and 80 more bad lines", f"{path} does not look like JSON Lines: it holds binary data"]
    assert exported(data) == []


def test_a_file_that_fails_to_read_is_said_so_not_a_traceback(tmp_path):
    """A read error midway (here EIO: /proc/self/mem opens, then cannot be read from its
    start) is the input's, exit 2 as for a missing file; it was a traceback, exit 1."""
    data = tmp_path / "data"

    done = gateway_cli("usage", "import", "/proc/self/mem", "--data-dir", str(data))

    assert done.returncode == 2
    assert done.stdout == b""
    errors = done.stderr.decode().splitlines()
    assert "Traceback" not in done.stderr.decode()
    assert errors[-1] == (
        "gateway usage import: cannot read /proc/self/mem: [Errno 5] Input/output error "
        "(the lines before it are imported; importing the file again skips them)"
    )


def test_a_line_longer_than_any_event_stops_the_import_after_the_lines_before_it(tmp_path):
    """Hostile testing: `gateway usage import /dev/zero` (or a file with no newline in GBs)
    read its first line until it died of a MemoryError, a traceback."""
    good = [event_line(e) for e in EVENTS[:2]]
    path = tmp_path / "history.jsonl"
    path.write_bytes(good[0] + good[1] + b'{"id": "' + b"x" * (2 << 20) + b'"}\n')
    data = tmp_path / "data"
    for source, imported in ((path, [EVENTS[0].id, EVENTS[1].id]), ("/dev/zero", [EVENTS[0].id, EVENTS[1].id])):
        done = gateway_cli("usage", "import", str(source), "--data-dir", str(data))
        assert done.returncode == 2, done.stderr[-500:]
        number = 3 if source == path else 1
        assert done.stderr.decode().splitlines()[-1] == (
            f"gateway usage import: {source}: line {number} is longer than 1 MiB, which no event is: "
            "not JSON Lines (the lines before it are imported; importing the file again skips them)"
        )
        assert exported(data) == imported
