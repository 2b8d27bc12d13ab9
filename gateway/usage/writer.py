"""The usage writer process: the store's writes run in a child process, not on the proxy's core.

Recording a call costs the proxy a tuple and an append (`UsageRecorder.call_finished`); the
rest of it, building events and writing them to SQLite or Redis, is CPU work: 20-30 µs a
call, which in the proxy's process would compete with the proxied requests for the event loop
(and, in a thread, for the GIL). So each gateway process starts one writer process and hands
it batches of finished calls; the writer builds the events and writes them with the ordinary
store (`gateway.usage.stores`), on whatever core is free. SQLite's retention deletes run
there too (hourly, in small batches).

Protocol, over the child's stdin and stdout (pipes private to the two processes):
- parent -> child: a frame per batch, `>II` (sequence number, length) then the calls as a
  JSON array of `FinishedCall` arrays (orjson: faster than pickle, and data, not code);
- child -> parent: one JSON line per frame, `{"seq", "new", "bad"}` once the store accepted
  the batch, or `{"seq", "error"}` when it did not.

The parent's `record` returns only on that acknowledgement, so the recorder's guarantees hold
unchanged: a batch leaves its buffer once stored, and a failure (the store's, or the writer
process dying) is retried with backoff against a writer restarted on demand. Ids are given
when a call finishes, so a batch written just before a writer died and sent again is not
counted twice. Reads (rankings, export) do not come here: the gateway reads the store itself.

The writer runs at nice 10 and ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C reaches the whole process group): it
exits when its stdin closes, which the gateway does at shutdown after the last flush, and
which the kernel does if the gateway is killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.usage.aggregates import MAX_APPS_PER_DAY
from gateway.usage.events import FinishedCall, UsageEvent
from gateway.usage.store import KEEP_EVERYTHING, Retention

log = logging.getLogger("gateway.usage")

_HEADER = struct.Struct(">II")
# The child's settings travel in its environment, not its command line: a command line is
# anyone's to read (`ps`, /proc/PID/cmdline), and the Redis URLs carry the password.
_SPEC_ENV = "OPEN_MODEL_GATEWAY_WRITER_SPEC"


class UsageWriterError(Exception):
    """The writer process did not store a batch: the recorder keeps it and retries."""


class WriterProcess:
    """The gateway's side: `record(calls)` returns how many were new once the child stored them.

    Not a `UsageStore`: it only writes, and takes `FinishedCall`s, which the recorder then
    buffers and sends as they are, without building events on the loop."""

    name = "writer process"

    def __init__(
        self,
        redis_url: str | None,
        data_dir: Path,
        *,
        log_level: str = "info",
        cpus: Sequence[int] = (),
        ack_timeout_s: float = 60.0,
        retention: Retention = KEEP_EVERYTHING,
        events_redis_url: str | None = None,
        max_apps_per_day: int = MAX_APPS_PER_DAY,
    ) -> None:
        self.spec = {
            "redis_url": redis_url,
            "data_dir": str(data_dir),
            "log_level": log_level,
            "cpus": list(cpus),
            "retention": [retention.events_days, retention.aggregates_days],
            "redis_events_url": events_redis_url,
            "max_apps_per_day": max_apps_per_day,
        }
        self.ack_timeout_s = ack_timeout_s  # longer than the stores' own retries (SQLite: 30 s busy)
        self.on_rejected: Callable[[int], None] | None = None  # calls the writer could not turn into events
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._exit_code: int | None = None
        self._seq = 0
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def exit_code(self) -> int | None:
        """How the last writer process this object stopped exited (0: it closed its store and
        exited on its own); None until one has been stopped."""
        return self._exit_code

    async def _process(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        if self._proc is not None:
            log.warning("usage writer process exited (code %s); starting another", self._proc.returncode)
        _inherit_nothing()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.usage.writer",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, _SPEC_ENV: orjson.dumps(self.spec).decode()},
        )
        self.starts += 1
        return self._proc

    async def record(self, calls: Sequence[FinishedCall]) -> int:
        if not calls:
            return 0
        async with self._lock:
            proc = await self._process()
            assert proc.stdin is not None and proc.stdout is not None
            payload = orjson.dumps(calls)
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            try:
                proc.stdin.write(_HEADER.pack(seq, len(payload)))
                proc.stdin.write(payload)
                await proc.stdin.drain()
                line = await asyncio.wait_for(proc.stdout.readline(), self.ack_timeout_s)
            except (ConnectionError, TimeoutError) as exc:
                await self._stop(kill=True)
                raise UsageWriterError(f"the writer process did not answer ({type(exc).__name__})") from exc
            if not line:
                code = await proc.wait()
                raise UsageWriterError(f"the writer process exited (code {code})")
            reply = orjson.loads(line)
            if reply.get("seq") != seq:  # the answer to a batch whose sender was cancelled: start afresh
                await self._stop(kill=True)
                raise UsageWriterError(f"the writer process answered batch {reply.get('seq')}, not {seq}")
        if "error" in reply:
            raise UsageWriterError(reply["error"])
        if reply.get("bad") and self.on_rejected is not None:
            self.on_rejected(reply["bad"])
        new: int = reply["new"]  # the child's answer to a stored batch (see `_serve`)
        return new

    async def _stop(self, kill: bool, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is not None:
            self._exit_code = proc.returncode
            return
        if kill:
            proc.kill()
        else:
            assert proc.stdin is not None
            proc.stdin.close()  # the writer's signal to finish and exit
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            log.error("usage writer process did not exit in %.0fs; killing it", timeout_s)
            proc.kill()
            await proc.wait()
        self._exit_code = proc.returncode

    async def aclose(self) -> None:
        """Let the writer close its store and exit (after the recorder's last flush)."""
        async with self._lock:
            await self._stop(kill=False)


# -- the child ---------------------------------------------------------------------------------


def _events(calls: list[list[Any]]) -> tuple[list[UsageEvent], int]:
    events, bad = [], 0
    for call in calls:
        try:
            # JSON brings each FinishedCall tuple back as a list; from_call only unpacks it, and
            # copying every call into a tuple would cost the writer for nothing.
            events.append(UsageEvent.from_call(call))  # type: ignore[arg-type]
        except Exception:
            log.exception("could not build a usage event")
            bad += 1
    return events, bad


async def _serve(spec: dict[str, Any], out: Any) -> None:
    from gateway.usage.stores import store_for

    store = store_for(
        spec["redis_url"],
        Path(spec["data_dir"]),
        retention=Retention(*spec.get("retention", (0, 0))),
        events_redis_url=spec.get("redis_events_url"),
        max_apps_per_day=spec.get("max_apps_per_day", MAX_APPS_PER_DAY),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    log.info("usage writer process %d: %s store", os.getpid(), store.name)
    try:
        while True:
            try:
                seq, size = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                payload = await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                return  # the gateway closed the pipe: shutdown, or it is gone
            events, bad = _events(orjson.loads(payload))
            try:
                reply = {"seq": seq, "new": await store.record(events), "bad": bad}
            except Exception as exc:
                reply = {"seq": seq, "error": f"{type(exc).__name__}: {exc}"}
            out.write(orjson.dumps(reply) + b"\n")
            out.flush()
    finally:
        await store.aclose()


def _inherit_nothing() -> None:
    """Mark every descriptor of this process past stdio close-on-exec before the writer is
    spawned. uvloop's subprocess spawn (libuv's) closes no inherited descriptor, whatever
    `close_fds` says, and a worker of `--workers N` holds its listening socket inheritably (as
    it came from the supervisor): a writer holding it too kept the port accepting connections
    nobody would serve while its worker drained (a rolling restart's new calls hung, then
    reset). Only exec is affected; the spawn's own pipes become the child's stdin and stdout.
    Where /proc is not there, nothing is done."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now


def main() -> None:
    from gateway.logs import configure_logging

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # The protocol owns the original stdout; anything else printed goes to stderr, with the logs.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # On the command line: what a worker started before an in-place upgrade sends the writer
    # it spawns from the upgraded files (events kept, not retried against a writer that fails).
    spec = orjson.loads(os.environ.pop(_SPEC_ENV, "") or sys.argv[1])
    configure_logging(spec.get("log_level", "info"))
    # Background work: where it shares a core with the proxy (or, in the bench, with the
    # upstream), the scheduler runs it when that core would idle, and the proxy first. At
    # nice 10 it still gets about a tenth of a contended core, several times what it needs.
    os.nice(10)
    if spec.get("cpus"):  # GATEWAY_USAGE_WRITER_CPUS: off the cores the proxy was pinned to
        try:
            os.sched_setaffinity(0, spec["cpus"])
        except OSError as exc:
            log.warning("usage writer: cannot run on CPUs %s (%s); running on the gateway's", spec["cpus"], exc)
    asyncio.run(_serve(spec, out))


if __name__ == "__main__":
    main()
