"""`gateway serve`: run the gateway under uvicorn (uvloop + httptools), one or more workers.

The HTTP protocol is uvicorn's httptools one with the gateway's limits (gateway/api/wire.py);
the open-file limit is raised to the hard limit first, so connections are not refused at 1024.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.store import DATA_DIR_HELP

if TYPE_CHECKING:
    from gateway.api.wire import ServeConfig
    from gateway.config.schema import GatewayConfig
    from gateway.settings import Settings
    from gateway.tenants.store import TenantStore

log = logging.getLogger("gateway")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve the gateway")
    p.add_argument("--config", help="routing YAML (default: $GATEWAY_CONFIG or policies/default.yaml)")
    p.add_argument("--host", help="bind address (default: $GATEWAY_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $GATEWAY_PORT or 8080)")
    p.add_argument("--workers", type=int, help="worker processes (default: $GATEWAY_WORKERS or 1)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--redis-url", help="shared store for several replicas (default: $GATEWAY_REDIS_URL)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.api.fastpath import check_middleware
    from gateway.config.loader import ConfigError, load_config
    from gateway.logs import configure_logging
    from gateway.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
    from gateway.settings import Settings, legacy_store_notice
    from gateway.tenants.store import open_tenant_store

    # SIGHUP means "re-read the policy" once a worker serves (gateway.api.app); until then its
    # default action ended the gateway, silently, when a reload came during the seconds of
    # startup (a config tool reloading right after a deploy). Startup reads the file anyway:
    # ignored until then (workers inherit it, and set their own handler when they serve).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Flags become environment so that every worker process builds the same Settings.
    for flag, env in (
        ("config", "CONFIG"),
        ("host", "HOST"),
        ("port", "PORT"),
        ("workers", "WORKERS"),
        ("data_dir", "DATA_DIR"),
        ("redis_url", "REDIS_URL"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"GATEWAY_{env}"] = str(value)
    settings = Settings()
    preset_metrics_dir = os.environ.get(MULTIPROC_ENV)
    configure_logging(settings.log_level)
    try:
        config, _ = load_config(settings.config)  # fail fast, with every problem listed, before forking workers
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        if not os.environ.get("GATEWAY_CONFIG"):  # neither --config nor the variable: the default was read
            print("pass the policy's path as --config FILE (or GATEWAY_CONFIG)", file=sys.stderr)
        return 2
    try:
        check_middleware(settings.middleware)  # the same: a missing module said here, not in a worker's traceback
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:  # the workers' lifespan makes it too; a data dir it cannot make is said here, not in a traceback
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(settings.data_dir, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write in {settings.data_dir}")
    except OSError as exc:
        print(f"GATEWAY_DATA_DIR: {exc}", file=sys.stderr)
        return 2
    try:  # the key store each worker opens first: a corrupt file said here, not in each worker's traceback
        keys = open_tenant_store(settings)
    except sqlite3.Error as exc:
        print(f"the key store in {settings.data_dir} cannot be opened: {exc}", file=sys.stderr)
        return 2
    try:
        virtual_keys = _holds_keys(keys)
    finally:
        keys.close()
    problem = None if settings.redis_url else _unusable_sqlite_store(settings.data_dir)
    if problem:  # the same for the usage ledger and the response store the workers write
        print(problem, file=sys.stderr)
        return 2
    notice = (
        None if settings.redis_url else legacy_store_notice(settings.data_dir, "data_dir" in settings.model_fields_set)
    )
    if notice:
        print(notice, file=sys.stderr)
    # uvicorn re-raises the SIGTERM it handled once it has drained and shut down; exit 0
    # then, as process managers expect of a clean stop, instead of dying by the signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        metrics_dir = prepare_multiprocess_dir(settings.workers)
    except OSError as exc:  # a file there, or a parent that is one: said, not a traceback
        where = f"{MULTIPROC_ENV}={preset_metrics_dir!r}" if preset_metrics_dir else "the workers' metrics directory"
        print(f"{where}: cannot use it: {exc.strerror}", file=sys.stderr)
        return 2
    owned_metrics_dir = None if preset_metrics_dir else metrics_dir  # made here: removed here
    try:
        return _serve(settings, config, virtual_keys)
    finally:
        if owned_metrics_dir is not None:
            shutil.rmtree(owned_metrics_dir, ignore_errors=True)


def _unusable_sqlite_store(data_dir: Path) -> str | None:
    """Why the usage ledger or the response store file in `data_dir` cannot be used, said
    before workers start. Served on, the gateway answered calls and dropped every record
    (budgets counting from zero), and every stored response."""
    from gateway.conversations.stores import FILE_NAME as RESPONSES_FILE
    from gateway.sqlite_files import unusable_database
    from gateway.usage.stores import SQLITE_FILE as USAGE_FILE

    for what, name in (("usage ledger", USAGE_FILE), ("response store", RESPONSES_FILE)):
        path = data_dir / name
        reason = unusable_database(path)
        if reason:
            return (
                f"the {what} {path} cannot be opened: {reason}; move it aside (a new one is made) "
                "or restore it from a backup"
            )
    return None


def _holds_keys(store: TenantStore) -> bool:
    """Whether the key store holds virtual keys, so that clients must send one (the banner's
    curl says so). Not known when the store cannot be read now (Redis not up yet): False, and
    the workers, which keep trying, say what they found."""
    try:
        return bool(store.all_keys())
    except Exception as exc:  # the store's own failure, met again and reported by each worker
        log.debug("key store not read for the banner: %s", exc)
        return False


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit (allowed without privileges).

    Each client connection is a descriptor; distributions often default the soft limit to
    1024 while allowing far more. Returns the (soft, hard) limits now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def server_config(settings: Settings) -> ServeConfig:
    """uvicorn's configuration for these settings: the gateway's HTTP protocol and its limits."""
    from gateway.api.wire import GatewayHttpProtocol, ServeConfig, WireLimits
    from gateway.tenants.throttle import parse_networks

    # The proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: GATEWAY_TRUSTED_PROXIES,
    # for uvicorn's rewrite of the scope's client and scheme as for the failed-auth throttle.
    # With none, uvicorn's middleware is not installed: nothing for it to believe, and on every
    # request it was a coroutine layer and a scan of the headers (0.8% of the gateway's CPU
    # under wrk); its own default (127.0.0.1) would have believed any local client's header.
    trusted = ",".join(str(network) for network in parse_networks(settings.trusted_proxies))
    return ServeConfig(
        "gateway.api.app:create_app",
        wire=WireLimits(
            max_headers=settings.max_headers,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        ),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        loop="uvloop",
        http=GatewayHttpProtocol,  # httptools, with header limits, read timeouts and JSON errors
        # No WebSocket route: an upgrade request is read as the HTTP request it also is (with
        # uvicorn's default, each worker imported `websockets` and an upgrade got a 400).
        ws="none",
        timeout_keep_alive=settings.keepalive_timeout_s,
        limit_concurrency=settings.max_connections or None,
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
        date_header=False,
        # On every answer (uvicorn adds it as it writes the head; no per-request work here):
        # browsers must not guess a type other than the one sent.
        headers=[("X-Content-Type-Options", "nosniff")],
        log_config=None,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
    )


def _serve(settings: Settings, policy: GatewayConfig, virtual_keys: bool) -> int:
    from uvicorn.config import STARTUP_FAILURE

    from gateway.cli.banner import AnnouncingServer, announce_when_healthy, banner, base_url

    soft, _ = raise_fd_limit()
    log.info("open-file limit: %d", soft)
    config = server_config(settings)
    if config.workers <= 1:
        server = AnnouncingServer(config, lambda port: banner(settings, policy, port, virtual_keys))
        server.run()
        return 0 if server.started else STARTUP_FAILURE  # e.g. the port is taken
    from gateway.cli.supervisor import GatewaySupervisor

    sockets = [config.bind_socket()]
    port = sockets[0].getsockname()[1]
    announce_when_healthy(base_url(settings.host, port), banner(settings, policy, port, virtual_keys))
    GatewaySupervisor(config, sockets=sockets).run()
    return 0
