"""The `innominatus` command: the server, database maintenance, and API tokens (over GraphQL)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from innominatus import logs
from innominatus.config import Settings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
LOG_LEVEL = "INNOMINATUS_LOG_LEVEL"
LOG_LEVELS = ("debug", "info", "warning", "error")
# uvicorn's httptools and sans-I/O websocket protocols, a loop turn's writes written together (api/corked.py)
HTTP_PROTOCOL = "innominatus.api.corked:CorkedHttpProtocol"
WEBSOCKET_PROTOCOL = "innominatus.api.corked:CorkedWebSocketProtocol"


class UsageError(Exception):
    """Bad input from the command line (exit code 2)."""


# ------------------------------------------------------------------------------------------- server


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        providers_dir=Path(args.providers_dir) if getattr(args, "providers_dir", None) else None,
        config_file=Path(args.config) if getattr(args, "config", None) else None,
        dev=True if getattr(args, "dev", False) else None,
        workers=getattr(args, "workers", None),
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from innominatus.app import MAX_BODY_BYTES, create_app
    from innominatus.db import embedded
    from innominatus.providers import CatalogError

    settings = _settings(args)
    try:
        lock = embedded.hold(settings.database_url)  # noqa: F841 - held for the process's life
    except embedded.InUse as exc:
        print(f"innominatus: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        app = create_app(settings)
    except CatalogError as exc:
        print(f"innominatus: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.getLogger("innominatus").info(
        "serving on http://%s:%d (database %s)",
        settings.host,
        settings.port,
        _safe_url(settings.database_url),
    )
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        http=HTTP_PROTOCOL,
        ws=WEBSOCKET_PROTOCOL,
        ws_max_size=MAX_BODY_BYTES,  # a websocket message obeys the HTTP body limit (else closed, 1009)
        # The stock asyncio loop: every workflow step spawns bash, and uvloop's spawn measured slower
        # here (bench: 3.8 ms against 2.2 ms per `bash -c true`), while HTTP and websockets measured the same.
        loop="asyncio",
        # JSON lines: uvicorn's own loggers go through ours (its config would give them text handlers).
        **({"log_config": None} if _log_format() == "json" else {}),
    )
    if settings.workers == 1:
        uvicorn.run(app, **options)
        return EXIT_OK
    # Several processes on one socket, each a complete replica (PostgreSQL carries events, work and
    # cancellation between them; see "Running several replicas"). uvicorn's supervisor starts them,
    # restarts one that dies and passes signals on; each builds its app from these same settings.
    del app
    os.environ.update(settings.as_environment())
    os.environ[LOG_LEVEL] = options["log_level"]
    uvicorn.run("innominatus.cli:worker_app", factory=True, workers=settings.workers, **options)
    return EXIT_OK


def worker_app() -> Any:
    """The app of one of `serve --workers N`'s processes: a fresh interpreter, configured from the
    environment the supervisor set up."""
    from innominatus.app import create_app

    _configure_logging(os.environ.get(LOG_LEVEL, "info"))
    return create_app()


def _safe_url(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


def _db_upgrade(args: argparse.Namespace) -> int:
    from innominatus.db import database

    settings = _settings(args)

    async def run() -> None:
        engine = database.create_engine(settings.database_url)
        try:
            async with database.startup_lock(engine):
                await database.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"database upgraded: {_safe_url(settings.database_url)}")
    return EXIT_OK


# -------------------------------------------------------------------------------------------- tokens

TOKEN_FIELDS = "id team role description createdAt expiresAt revokedAt"  # noqa: S105 - field names


def _client(args: argparse.Namespace) -> Any:
    from innominatus.client import ApiClient

    return ApiClient(args.server, args.token)


def _token_create(args: argparse.Namespace) -> int:
    from innominatus.auth import parse_expiry

    try:
        parse_expiry(args.expires)  # bad input is refused here, before asking the server
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None
    data = _client(args).execute(
        f"mutation($team: String!, $role: String!, $expires: String, $description: String) {{ "
        f"createToken(team: $team, role: $role, expiresIn: $expires, description: $description) {{ "
        f"token info {{ {TOKEN_FIELDS} }} }} }}",
        team=args.team,
        role=args.role,
        expires=args.expires,
        description=args.description,
    )["createToken"]
    info = data["info"]
    expiry = f", expires {info['expiresAt']}" if info["expiresAt"] else ", never expires"
    print(f"created {info['role']} token {info['id']} for team {info['team']}{expiry}", file=sys.stderr)
    print(data["token"])  # alone on the last line of stdout, for scripts
    return EXIT_OK


def _token_list(args: argparse.Namespace) -> int:
    rows = _client(args).execute(f"{{ tokens {{ {TOKEN_FIELDS} }} }}")["tokens"]
    keys = ["id", "team", "role", "createdAt", "expiresAt", "revokedAt"]
    _print_rows(args, [{k: row[k] for k in keys} for row in rows], keys)
    return EXIT_OK


def _token_revoke(args: argparse.Namespace) -> int:
    row = _client(args).execute(
        f"mutation($id: ID!) {{ revokeToken(id: $id) {{ {TOKEN_FIELDS} }} }}", id=args.id
    )["revokeToken"]
    print(f"revoked token {row['id']} of team {row['team']}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(row))
    return EXIT_OK


def _print_rows(args: argparse.Namespace, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return
    widths = {k: max([len(k), *(len(str(r[k] or "-")) for r in rows)]) for k in keys}
    print("  ".join(k.upper().ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(str(row[k] or "-").ljust(widths[k]) for k in keys))


# ------------------------------------------------------------------------------------------- parsing


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--server/--token/--output, accepted before or after the subcommand."""
    kw: Callable[[Any], dict[str, Any]] = (
        (lambda d: {"default": d}) if defaults else (lambda d: {"default": argparse.SUPPRESS})
    )
    parser.add_argument(
        "--server",
        help="innominatus server URL (INNOMINATUS_SERVER, default http://localhost:8081)",
        **kw(os.environ.get("INNOMINATUS_SERVER") or "http://localhost:8081"),
    )
    parser.add_argument(
        "--token", help="API token (INNOMINATUS_TOKEN)", **kw(os.environ.get("INNOMINATUS_TOKEN"))
    )
    parser.add_argument("--output", choices=["table", "json"], help="result format on stdout", **kw("table"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="innominatus", description="Platform orchestrator for Score specs")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
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
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes on the port, each a replica (INNOMINATUS_WORKERS, default 1; PostgreSQL only)",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="INNOMINATUS_LOG_LEVEL, default info",
    )
    serve.set_defaults(func=_serve)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations (INNOMINATUS_DATABASE_URL)").set_defaults(
        func=_db_upgrade
    )

    from innominatus import commands

    submit = sub.add_parser("submit", parents=[common], help="submit a Score spec; --watch follows it live")
    submit.add_argument("file")
    submit.add_argument("--watch", action="store_true", help="show each resource's state live until final")
    submit.add_argument("--timeout", type=float, default=600, help="seconds --watch waits (default 600)")
    submit.set_defaults(func=commands.submit)
    status = sub.add_parser("status", parents=[common], help="applications, or one application's resources")
    status.add_argument("app", nargs="?")
    status.set_defaults(func=commands.status)
    sub.add_parser("resources", parents=[common], help="every resource you may see").set_defaults(
        func=commands.resources
    )
    providers = sub.add_parser(
        "providers", parents=[common], help="loaded providers; `reload` re-reads sources"
    )
    providers.add_argument("action", nargs="?", choices=["reload"])
    providers.set_defaults(func=commands.providers)
    workflows = sub.add_parser("workflows", parents=[common], help="workflow runs")
    workflows.add_argument("app", nargs="?")
    workflows.set_defaults(func=commands.workflows)
    workflow = sub.add_parser("workflow", parents=[common], help="one workflow run and its steps")
    workflow.add_argument("id")
    workflow.add_argument("--logs", action="store_true", help="print every step's logs")
    workflow.set_defaults(func=commands.workflow)
    delete = sub.add_parser("delete", parents=[common], help="delete an application and its resources")
    delete.add_argument("app")
    delete.add_argument("--watch", action="store_true")
    delete.add_argument("--timeout", type=float, default=600)
    delete.set_defaults(func=commands.delete)
    retry = sub.add_parser("retry", parents=[common], help="retry a FAILED resource from its failed step")
    retry.add_argument("id")
    retry.set_defaults(func=commands.retry)
    validate = sub.add_parser("validate", parents=[common], help="check a spec offline, as the server would")
    validate.add_argument("file")
    validate.add_argument("--providers-dir", help="provider folders (default ./providers)")
    validate.add_argument("--config", help="admin config file (default ./admin-config.yaml)")
    validate.set_defaults(func=commands.validate)

    token = sub.add_parser("token", parents=[common], help="API tokens (admin token required)")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", parents=[common], help="create a token; prints it once")
    create.add_argument("--team", required=True)
    create.add_argument("--role", choices=["member", "admin"], default="member")
    create.add_argument("--expires", help="lifetime like 30m, 12h, 7d (default: never expires)")
    create.add_argument("--description")
    create.set_defaults(func=_token_create)
    token_sub.add_parser(
        "list", parents=[common], help="list tokens (never the tokens themselves)"
    ).set_defaults(func=_token_list)
    revoke = token_sub.add_parser("revoke", parents=[common], help="revoke a token at once")
    revoke.add_argument("id")
    revoke.set_defaults(func=_token_revoke)
    return parser


def _configure_logging(level: str) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin chatter is not ours to print
    logs.configure(level, _log_format())


def _log_format() -> str:
    return os.environ.get("INNOMINATUS_LOG_FORMAT", "text").strip().lower() or "text"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return EXIT_USAGE if exc.code else EXIT_OK
    if args.command == "serve" and args.log_level is None:
        args.log_level = os.environ.get(LOG_LEVEL, "").strip().lower() or "info"
        if args.log_level not in LOG_LEVELS:
            print(f"innominatus: {LOG_LEVEL}: must be one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
            return EXIT_USAGE
    try:
        _configure_logging(getattr(args, "log_level", "warning"))
    except ValueError as exc:
        print(f"innominatus: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from innominatus import commands
    from innominatus.client import ClientError

    try:
        return int(args.func(args))
    except (UsageError, ValueError, commands.BadInput) as exc:
        commands.report(exc)
        return EXIT_USAGE
    except (ClientError, commands.CommandFailed) as exc:
        commands.report(exc)
        return EXIT_USAGE if getattr(exc, "code", None) == "BAD_USER_INPUT" else EXIT_FAILURE
    except KeyboardInterrupt:
        print("innominatus: interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
