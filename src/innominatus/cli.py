"""The `innominatus` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from innominatus.config import Settings


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        providers_dir=Path(args.providers_dir) if getattr(args, "providers_dir", None) else None,
        config_file=Path(args.config) if getattr(args, "config", None) else None,
        dev=True if getattr(args, "dev", False) else None,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from innominatus.app import create_app
    from innominatus.providers import CatalogError

    settings = _settings(args)
    try:
        app = create_app(settings)
    except CatalogError as exc:
        print(f"innominatus: cannot start: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("innominatus").info(
        "serving on http://%s:%d (database %s)",
        settings.host,
        settings.port,
        _safe_url(settings.database_url),
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, ws="websockets-sansio")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _db_upgrade(args: argparse.Namespace) -> int:
    from innominatus.db import database

    settings = _settings(args)

    async def run() -> None:
        engine = database.create_engine(settings.database_url)
        try:
            await database.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"database upgraded: {_safe_url(settings.database_url)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="innominatus", description="Platform orchestrator for Score specs")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server and the orchestration engine")
    serve.add_argument("--host", help="address to bind (INNOMINATUS_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (INNOMINATUS_PORT, default 8081)")
    serve.add_argument(
        "--providers-dir", help="provider folders (INNOMINATUS_PROVIDERS_DIR, default ./providers)"
    )
    serve.add_argument("--config", help="admin config file (INNOMINATUS_CONFIG, default ./admin-config.yaml)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="local demos: loopback only, token 'test' and no token act as admin",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply migrations (INNOMINATUS_DATABASE_URL)")
    upgrade.set_defaults(func=_db_upgrade)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin chatter is not ours to print
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"innominatus: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
