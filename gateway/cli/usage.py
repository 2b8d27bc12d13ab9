"""`gateway usage import FILE.jsonl`, `gateway usage export --start --end` and `gateway usage
report` (spend per key, team or model: gateway.cli.usage_report).

Both work on the configured store, as a gateway would: Redis when GATEWAY_REDIS_URL (or
--redis-url) is set, else the SQLite file in GATEWAY_DATA_DIR (or --data-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, BinaryIO

from gateway.cli import usage_report
from gateway.cli.store import EMPTY_NOTE, add_store_flags, opened_store, settings_from, store_is_empty

if TYPE_CHECKING:
    from gateway.usage.jsonl import ImportReport
    from gateway.usage.store import UsageStore


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("usage", help="import or export usage events (JSON Lines), spend reports")
    usage_sub = p.add_subparsers(dest="usage_command", required=True)
    i = usage_sub.add_parser("import", help="load events from a JSONL file (idempotent by id)")
    i.add_argument("file", help="JSONL file, one event per line; - for stdin")
    add_store_flags(i)
    i.set_defaults(func=run_import)
    e = usage_sub.add_parser("export", help="write the events of a range of UTC days as JSONL")
    e.add_argument("--start", required=True, help="first UTC day, YYYY-MM-DD")
    e.add_argument("--end", required=True, help="last UTC day (included), YYYY-MM-DD")
    e.add_argument("--output", "-o", help="file to write (default: stdout)")
    add_store_flags(e)
    e.set_defaults(func=run_export)
    usage_report.add_parser(usage_sub)


def run_import(args: argparse.Namespace) -> int:
    from gateway.usage.jsonl import import_lines

    settings = settings_from(args)
    try:  # before the store: a missing file is the operator's to fix, said as such (exit 2)
        source = nullcontext(sys.stdin.buffer) if args.file == "-" else open(args.file, "rb")
    except OSError as exc:
        print(f"gateway usage import: {exc}", file=sys.stderr)
        return 2

    async def main(lines: Iterator[bytes]) -> ImportReport:
        # Opened even for a file of no events: its "0 imported" is said of a store that works.
        async with opened_store(settings, "gateway usage import", "writes to") as store:
            return await import_lines(store, lines)

    with source as lines:
        try:
            report = asyncio.run(main(_read(lines)))
        except _Unreadable as failed:
            print(
                f"gateway usage import: cannot read {args.file}: {failed.error} (the lines before it are "
                "imported; importing the file again skips them)",
                file=sys.stderr,
            )
            return 2
        except _Overlong as overlong:
            print(
                f"gateway usage import: {args.file}: line {overlong.number} is longer than 1 MiB, which no event "
                "is: not JSON Lines (the lines before it are imported; importing the file again skips them)",
                file=sys.stderr,
            )
            return 2
    for bad in report.bad:
        print(f"{args.file}:{bad.number}: {bad.reason}", file=sys.stderr)
    if report.bad_lines > len(report.bad):
        print(f"... and {report.bad_lines - len(report.bad)} more bad lines", file=sys.stderr)
    if report.binary:
        print(f"{args.file} does not look like JSON Lines: it holds binary data", file=sys.stderr)
    print(f"{report.imported} imported, {report.duplicates} already present, {report.bad_lines} bad lines")
    return 1 if report.bad_lines else 0


class _Unreadable(Exception):
    """The input failed to read (EIO, a vanished network file): the operator's file, not
    the store, which `gateway.cli.main` would blame for an OSError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Overlong(Exception):
    """A line longer than any event's: not JSON Lines (/dev/zero, a file with no newlines)."""

    def __init__(self, number: int) -> None:
        super().__init__(f"line {number}")
        self.number = number


# An event's line is well under 4 KB (its text fields are bounded); read whole, a line with
# no end (`usage import /dev/zero`) was read until a MemoryError.
MAX_LINE_BYTES = 2**20


def _read(lines: BinaryIO) -> Iterator[bytes]:
    """The input's lines, a failure to read them raised as `_Unreadable`, a line longer than
    `MAX_LINE_BYTES` as `_Overlong` (read no further)."""
    number = 0
    while True:
        try:
            line = lines.readline(MAX_LINE_BYTES + 1)
        except OSError as exc:
            raise _Unreadable(exc) from None
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise _Overlong(number)
        yield line


def run_export(args: argparse.Namespace) -> int:
    from datetime import date

    from gateway.usage.jsonl import event_line

    try:
        start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    except ValueError as exc:
        print(f"gateway usage export: --start and --end must be YYYY-MM-DD ({exc})", file=sys.stderr)
        return 2
    if end < start:
        print("gateway usage export: --end is before --start", file=sys.stderr)
        return 2

    settings = settings_from(args)

    async def main() -> int | None:
        """How many events were written; None when the output file could not be opened."""
        async with opened_store(settings, "gateway usage export", tell_empty=False) as store:
            # The file only once the store is open: one that cannot be used leaves it as it was.
            if not args.output:
                return await write(store, sys.stdout.buffer)
            try:
                out = open(args.output, "wb")
            except OSError as exc:  # the operator's path, not the store's
                print(f"gateway usage export: {exc}", file=sys.stderr)
                return None
            with out:
                return await write(store, out)

    async def write(store: UsageStore, out: BinaryIO) -> int:
        count = 0
        async for event in store.export(start, end):
            out.write(event_line(event))
            count += 1
        out.flush()
        return count

    count = asyncio.run(main())
    if count is None:
        return 2
    # "empty" only when nothing came out: checked after the read, so it never contradicts it
    note = EMPTY_NOTE if count == 0 and store_is_empty(settings) else ""
    print(f"{count} events exported{note}", file=sys.stderr)
    return 0
