"""Hot reload: the current config snapshot, swapped atomically when the file changes.

Each worker process watches the file itself (inotify via watchfiles, plus a periodic
content check that catches ConfigMap symlink swaps), so several workers converge on the
same file within seconds without talking to each other. SIGHUP and the admin endpoint
force a re-read. A file that fails validation is rejected whole: the old snapshot keeps
serving and the problems are kept for the status endpoint.

Each valid file is also kept as `last_good` (in the data directory), once it has been applied
(a file the backend pool cannot use is rejected like an invalid one, and never kept). A worker
process that starts while the file on disk is broken (uvicorn replacing a crashed worker, say)
serves that copy instead of failing to start, and reports the file's problems like a rejected
reload. The copy may hold literal upstream keys, so it is written 0600 (atomically: a private
temporary file renamed over it), in a directory created 0700.

The watcher never dies of a bad file: whatever a reload raises is logged and counted as a
failed reload, and watching goes on (the app also runs it under `gateway.supervise`).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.loader import ConfigError, Problem, not_utf8, parse_config, read_policy
from gateway.config.snapshot import ConfigSnapshot

log = logging.getLogger("gateway.config")


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A changed file that parsed: the snapshot to apply and the text to keep."""

    snapshot: ConfigSnapshot
    text: str


@dataclass(slots=True)
class ReloadStatus:
    ok: int = 0
    failed: int = 0
    last_attempt_at: float | None = None
    last_error: list[str] = field(default_factory=list)  # problems of the last rejected file


class ConfigHolder:
    def __init__(
        self,
        path: Path,
        on_swap: Callable[[ConfigSnapshot], None] | None = None,
        last_good: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.status = ReloadStatus()
        self._on_swap = on_swap
        self._digest = ""
        self._listeners: list[Callable[[str], None]] = []
        self._last_good = Path(last_good) if last_good else None
        self._reloading = asyncio.Lock()
        # The first snapshot is applied here too (on_swap), and kept only once applied.
        try:
            self.current, text = self._load_or_raise()
        except ConfigError as exc:
            self.current = self._load_last_good(exc)
            self._apply_at_start(self.current)  # raises if the last good copy cannot serve either
        else:
            self._keep(text)

    def on_result(self, listener: Callable[[str], None]) -> None:
        """Called with 'success' or 'failure' after each reload attempt (metrics hook)."""
        self._listeners.append(listener)

    def _load_or_raise(self) -> tuple[ConfigSnapshot, str]:
        text = self._read()
        config, warnings = parse_config(text, str(self.path))
        for w in warnings:
            log.warning("%s", w)
        self._digest = hashlib.sha256(text.encode()).hexdigest()
        snapshot = ConfigSnapshot.build(config, str(self.path), warnings, text)
        self._apply_at_start(snapshot)
        return snapshot, text

    def _apply_at_start(self, snapshot: ConfigSnapshot) -> None:
        if self._on_swap is None:
            return
        try:
            self._on_swap(snapshot)
        except Exception as exc:
            log.exception("applying the config from %s failed", self.path)
            problem = Problem("", None, f"cannot apply the config: {type(exc).__name__}: {exc}")
            raise ConfigError(str(self.path), [problem]) from None

    def _load_last_good(self, error: ConfigError) -> ConfigSnapshot:
        if self._last_good is None or not self._last_good.is_file():
            raise error
        try:  # written as UTF-8 (`write_private`), so read as UTF-8 whatever the locale
            text = self._last_good.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("the last good copy %s cannot be read (%s): not served", self._last_good, exc)
            raise error from None
        config, warnings = parse_config(text, str(self.path))  # raises if that copy is broken too
        try:
            self._digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            self._digest = ""
        self.status.failed += 1
        self.status.last_attempt_at = time.time()
        self.status.last_error = [str(p) for p in error.problems]
        log.error(
            "%s is invalid; serving the last good copy %s:\n  %s",
            self.path,
            self._last_good,
            "\n  ".join(self.status.last_error),
        )
        return ConfigSnapshot.build(config, str(self.path), warnings, text)

    def _read(self) -> str:
        """The file's text, for startup; ConfigError when it cannot be read or is not UTF-8."""
        try:
            raw = read_policy(self.path)
            return raw.decode("utf-8")
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror}"
        except UnicodeDecodeError as exc:
            reason = f"cannot read the file: {not_utf8(exc)}"
        raise ConfigError(str(self.path), [Problem("", None, reason)])

    def _keep(self, text: str) -> None:
        """Keep `text` as the last good copy, if the file still holds it.

        The workers of one gateway share the copy, and each keeps what it applied. A worker
        that read the file before another reloaded a newer one (a slow start, say) wrote its
        older text over the newer copy; when the file then turned broken, a restarted worker
        came up on a config two generations old. So the copy is written under a lock the
        workers share, and only while the file on disk still holds what is being kept: a
        worker that is behind keeps nothing, and its own reload of the newer file follows."""
        if self._last_good is None:
            return
        tmp = self._last_good.with_name(f".{self._last_good.name}.{os.getpid()}.tmp")
        try:
            self._last_good.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock = os.open(self._last_good.with_name(f".{self._last_good.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self._still_on_disk(text):
                    log.info("%s changed since it was read: not kept as the last good copy", self.path)
                    return
                write_private(tmp, text)
                tmp.replace(self._last_good)
            finally:
                os.close(lock)  # and with it the lock
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("cannot keep a last-good copy of the config at %s: %s", self._last_good, exc.strerror)

    def _still_on_disk(self, text: str) -> bool:
        try:
            return self.path.read_bytes() == text.encode("utf-8")
        except OSError:
            return False

    def reload(self, force: bool = False) -> bool:
        """Re-read the file; swap if valid, applicable and changed. Returns whether a new snapshot serves."""
        return self._apply(self._read_new(force))

    async def reload_async(self, force: bool = False) -> bool:
        """`reload`, with the file read and parsed in a thread: on the event loop a large
        policy's parse (0.55 s for a thousand models) stopped every request and stream of the
        worker. Applying it (the pool, the swap, the last good copy) stays on the loop."""
        async with self._reloading:  # one at a time: the watcher, SIGHUP and /admin/reload
            return self._apply(await asyncio.to_thread(self._read_new, force))

    def _read_new(self, force: bool) -> _Parsed | list[str] | None:
        """The file, parsed, when it changed (or `force`): a snapshot to apply, the problems
        that reject it, or None when it is the file already served. No I/O but the read."""
        self.status.last_attempt_at = time.time()
        try:
            raw = read_policy(self.path)
        except OSError as exc:
            problem = f"cannot read {self.path}: {exc.strerror}"
            if problem == self._digest and not force:
                return None  # the same unreadable file: logged and counted once, as a broken one
            # And the file that comes back is read anew even if it is the one serving: its
            # digest matched, so the error stayed on /admin/status after the file was restored.
            self._digest = problem
            return [problem]
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest and not force:
            return None
        self._digest = digest  # whatever comes of it, do not re-log the same file every poll
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [f"cannot read {self.path}: {not_utf8(exc)}"]
        try:
            config, warnings = parse_config(text, str(self.path))
        except ConfigError as exc:
            return [str(p) for p in exc.problems]
        return _Parsed(ConfigSnapshot.build(config, str(self.path), warnings, text), text)

    def _apply(self, read: _Parsed | list[str] | None) -> bool:
        if read is None:
            return False
        if isinstance(read, list):
            return self._failed(read)
        snapshot, text = read.snapshot, read.text
        for w in snapshot.warnings:
            log.warning("%s", w)
        if self._on_swap:
            try:
                self._on_swap(snapshot)
            except Exception as exc:
                log.exception("applying the config from %s failed", self.path)
                return self._failed([f"cannot apply the new config: {type(exc).__name__}: {exc}"])
        self.current = snapshot  # one reference swap: requests in flight keep their own
        self._keep(text)  # only once applied: a copy that cannot serve is no fallback
        self.status.ok += 1
        self.status.last_error = []
        log.info("config reloaded from %s (version %s)", self.path, snapshot.version)
        self._emit("success")
        return True

    async def reload_safely(self, force: bool = False) -> None:
        """`reload_async`, for the watcher and SIGHUP: an unexpected error is logged and
        counted, never raised."""
        try:
            await self.reload_async(force)
        except Exception as exc:
            log.exception("config reload of %s failed unexpectedly", self.path)
            self._failed([f"reload failed: {type(exc).__name__}: {exc}"])

    def _failed(self, problems: list[str]) -> bool:
        self.status.failed += 1
        self.status.last_error = problems
        log.error(
            "config reload rejected, still serving version %s:\n  %s", self.current.version, "\n  ".join(problems)
        )
        self._emit("failure")
        return False

    def _emit(self, result: str) -> None:
        for listener in self._listeners:
            try:
                listener(result)
            except Exception:
                log.exception("reload listener failed")

    async def watch(self, poll_s: float = 2.0) -> None:
        """Reload on file events, and poll as a backstop (network filesystems, ConfigMaps)."""
        from watchfiles import awatch

        async def poll() -> None:
            while True:
                await asyncio.sleep(poll_s)
                await self.reload_safely()

        name = self.path.name

        def relevant(change: object, path: str) -> bool:
            # The file itself, or a ConfigMap's `..data` symlink swap; not logs or other files
            # that happen to share the directory.
            base = os.path.basename(path)
            return base == name or base.startswith("..")

        poller = asyncio.create_task(poll())
        try:
            # Watch the directory: editors and ConfigMaps replace the file rather than write it.
            async for _ in awatch(self.path.parent, watch_filter=relevant, debounce=200, step=50, recursive=False):
                await self.reload_safely()
        finally:
            poller.cancel()


def last_good_path(data_dir: Path, config: Path) -> Path:
    """Where the last good copy of the policy at `config` is kept: one per policy file (its
    absolute path's digest in the name). The data directory is per user, so two gateways of
    one user serving different policies share it: with one copy per directory, a worker of
    one restarted on a broken file came up serving the other's routes and backends.

    The path is made absolute without following symlinks: a ConfigMap's `policy.yaml` leads
    through `..data` into a directory named for each generation, so the resolved path of a
    new (broken) generation named a copy nobody had kept, and the worker restarted on it
    failed to start."""
    digest = hashlib.sha256(os.path.abspath(config).encode()).hexdigest()[:16]
    return data_dir / f"last-good-config-{digest}.yaml"


def write_private(path: Path, text: str) -> None:
    """Write `text` to a new file only its owner can read (0600 whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT; make sure
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            fd = -1
            out.write(text)
    finally:
        if fd >= 0:
            os.close(fd)
