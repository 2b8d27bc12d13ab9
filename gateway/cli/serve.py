"""`gateway serve`: run the gateway under uvicorn (uvloop + httptools), one or more workers."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the gateway")
    p.add_argument("--config", help="routing YAML (default: $GATEWAY_CONFIG or policies/default.yaml)")
    p.add_argument("--host", help="bind address (default: $GATEWAY_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $GATEWAY_PORT or 8080)")
    p.add_argument("--workers", type=int, help="worker processes (default: $GATEWAY_WORKERS or 1)")
    p.add_argument("--data-dir", help="embedded store directory (default: $GATEWAY_DATA_DIR or ./data)")
    p.add_argument("--redis-url", help="shared store for several replicas (default: $GATEWAY_REDIS_URL)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.config.loader import ConfigError, load_config
    from gateway.logs import configure_logging
    from gateway.settings import Settings

    # Flags become environment so that every worker process builds the same Settings.
    for flag, env in (("config", "CONFIG"), ("host", "HOST"), ("port", "PORT"), ("workers", "WORKERS"),
                      ("data_dir", "DATA_DIR"), ("redis_url", "REDIS_URL")):
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"GATEWAY_{env}"] = str(value)
    settings = Settings()
    configure_logging(settings.log_level)
    try:
        load_config(settings.config)  # fail fast, with every problem listed, before forking workers
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    options = dict(
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        server_header=False,
        date_header=False,
        log_config=None,
    )
    if settings.workers <= 1:
        uvicorn.run("gateway.api.app:create_app", **options)
        return 0
    from gateway.cli.supervisor import ConfigReloadingMultiprocess

    config = uvicorn.Config("gateway.api.app:create_app", workers=settings.workers, **options)
    ConfigReloadingMultiprocess(config, sockets=[config.bind_socket()]).run()
    return 0
