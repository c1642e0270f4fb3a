"""Step type `postgres`: a role and a database on a PostgreSQL server the platform team configures.

Names derive from the application and resource names only; spec properties never become SQL text, and
every identifier and literal is quoted by the server itself (format %I / %L). What it creates carries a
comment naming the resource, so a re-run adopts its own objects and refuses anyone else's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import asyncpg

from innominatus.workflows.definition import DefinitionError, Step
from innominatus.workflows.policy import StepResult
from innominatus.workflows.steps import LogLine, StepLog, require_str

if TYPE_CHECKING:
    from innominatus.admin_config import AdminConfig

OPERATIONS = ("create", "update", "delete")
MAX_IDENTIFIER = 63
_UNSAFE = re.compile(r"[^a-z0-9_]")
_PLAIN = re.compile(r"[a-z0-9]+")
_STORED = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def object_name(app: str, resource: str) -> str:
    """A PostgreSQL identifier for a resource: [a-z0-9_], not pg_ or a digit first, at most 63 bytes.

    `app_resource` reads well, but only stays unique while both names are plain [a-z0-9]: app `shop`
    with resource `api-db` and app `shop-api` with resource `db` would both be `shop_api_db`. Any other
    character (or a name too long) adds a short hash of the exact pair."""
    name = _UNSAFE.sub("_", f"{app}_{resource}".lower())
    if name.startswith("pg_") or name[:1].isdigit() or not name:
        name = f"db_{name}"
    if _PLAIN.fullmatch(app) and _PLAIN.fullmatch(resource) and len(name) <= MAX_IDENTIFIER:
        return name
    suffix = hashlib.sha256(f"{app}\0{resource}".encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{suffix}"


def marker(resource_id: str) -> str:
    return f"managed by innominatus for resource {resource_id}"


def new_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


class PostgresStep:
    def template_fields(
        self, config: dict[str, Any], where: str, platform: AdminConfig
    ) -> list[tuple[str, bool]]:
        target = require_str(config, "target", where)
        if target not in platform.postgres_targets:
            known = ", ".join(sorted(platform.postgres_targets)) or "none"
            raise DefinitionError(
                f"{where}.target: unknown postgres target {target!r} (admin-config targets: {known})"
            )
        operation = require_str(config, "operation", where)
        if operation not in OPERATIONS:
            raise DefinitionError(
                f"{where}.operation: must be one of {', '.join(OPERATIONS)}, got {operation!r}"
            )
        fields = []
        if require_str(config, "connectionLimit", where, required=False) is not None:
            fields.append(("connectionLimit", False))
        return fields

    async def run(
        self, step: Step, context: Mapping[str, Any], on_log_line: LogLine | None, platform: AdminConfig
    ) -> StepResult:
        target = platform.postgres_targets[step.config["target"]]
        steplog = StepLog(on_log_line)
        say = steplog.say

        resource = context["resource"]
        # A resource provisioned before names carried hashes keeps the name it was given.
        stored = (resource.get("outputs") or {}).get("database_name")
        name = stored if isinstance(stored, str) and _STORED.fullmatch(stored) else None
        name = name or object_name(context["app"]["name"], resource["name"])
        try:
            limit = self._connection_limit(step, context)
            admin_url = target.admin_url()
        except (LookupError, ValueError) as exc:
            return StepResult(False, "", {}, str(exc))
        where = _host_port(admin_url)
        try:
            # Only pg_catalog resolves names: a function or operator another role planted in a
            # writable schema (`public.format(text, text)`) never runs with the admin's rights.
            conn = await asyncpg.connect(
                admin_url, timeout=min(step.timeout, 10), server_settings={"search_path": "pg_catalog"}
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return StepResult(
                False, "", {}, f"cannot connect to postgres target '{target.name}' at {where}: {exc}"
            )
        try:
            operation = step.config["operation"]
            if operation == "delete":
                await _delete(conn, name, resource["id"], say)
                outputs: dict[str, Any] = {"database_name": name, "status": "deleted"}
            else:
                password = (resource.get("outputs") or {}).get("password") or new_password()
                await _ensure(conn, name, resource["id"], password, limit, say)
                outputs = _outputs(admin_url, name, password)
        except _Refused as exc:
            return StepResult(False, steplog.text, {}, str(exc))
        except (asyncpg.PostgresError, OSError) as exc:
            return StepResult(False, steplog.text, {}, f"postgres target '{target.name}' at {where}: {exc}")
        finally:
            await conn.close()
        return StepResult(True, steplog.text, outputs, None)

    @staticmethod
    def _connection_limit(step: Step, context: Mapping[str, Any]) -> int:
        template = step.templates.get("connectionLimit")
        raw: Any = template.render(context) if template else context["parameters"].get("connection_limit", -1)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"connection_limit: must be a whole number, got {raw!r}") from None
        if value < -1:
            raise ValueError(f"connection_limit: must be -1 (no limit) or more, got {value}")
        return value


# Schema-qualified as well as the pinned search_path: either alone keeps planted objects out.
_ROLE_NOTE = (
    "SELECT pg_catalog.shobj_description(oid, 'pg_authid') AS note FROM pg_catalog.pg_roles "
    "WHERE rolname OPERATOR(pg_catalog.=) $1"
)
_DATABASE_NOTE = (
    "SELECT pg_catalog.shobj_description(oid, 'pg_database') AS note FROM pg_catalog.pg_database "
    "WHERE datname OPERATOR(pg_catalog.=) $1"
)
SCRAM_ITERATIONS = 4096


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677): given in ALTER ROLE
    instead of the password, it sets the same password without ever sending it."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


class _Refused(Exception):
    pass


async def _ensure(conn: Any, name: str, resource_id: str, password: str, limit: int, say: Any) -> None:
    mine = marker(resource_id)
    role = await conn.fetchrow(_ROLE_NOTE, name)
    if role is not None and role["note"] != mine:
        raise _Refused(f"role {name} already exists and was not created for this resource; not adopting it")
    if role is None:
        await say(f"creating role {name}")
        await _run(conn, "CREATE ROLE %I LOGIN", name)
        await _run(conn, "COMMENT ON ROLE %I IS %L", name, mine)
    else:
        await say(f"role {name} exists (ours): converging")
    # A SCRAM verifier, not the password: statements may end up in the server's log.
    verifier = scram_verifier(password)
    await _run(conn, f"ALTER ROLE %I WITH LOGIN CONNECTION LIMIT {int(limit)} PASSWORD %L", name, verifier)
    database = await conn.fetchrow(_DATABASE_NOTE, name)
    if database is not None and database["note"] != mine:
        raise _Refused(
            f"database {name} already exists and was not created for this resource; not adopting it"
        )
    if database is None:
        await say(f"creating database {name} owned by {name}")
        await _run(conn, "CREATE DATABASE %I OWNER %I", name, name)
        await _run(conn, "COMMENT ON DATABASE %I IS %L", name, mine)
    await _run(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", name)
    await say(f"database {name} ready (connection limit {limit})")


async def _delete(conn: Any, name: str, resource_id: str, say: Any) -> None:
    mine = marker(resource_id)
    database = await conn.fetchrow(_DATABASE_NOTE, name)
    role = await conn.fetchrow(_ROLE_NOTE, name)
    for kind, row in (("database", database), ("role", role)):
        if row is not None and row["note"] != mine:
            raise _Refused(f"{kind} {name} was not created for this resource; not dropping it")
    await conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
        "WHERE (datname OPERATOR(pg_catalog.=) $1 OR usename OPERATOR(pg_catalog.=) $1) "
        "AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()",
        name,
    )
    if database is not None:
        await say(f"dropping database {name}")
        await _run(conn, "DROP DATABASE IF EXISTS %I WITH (FORCE)", name)
    if role is not None:
        await say(f"dropping role {name}")
        await _run(conn, "DROP ROLE IF EXISTS %I", name)
    await say(f"{name} deleted")


async def _run(conn: Any, template: str, *args: str) -> None:
    """Let the server quote: format() with %I (identifier) and %L (literal), then run the result."""
    placeholders = ", ".join(f"${i + 2}::text" for i in range(len(args)))
    sql = await conn.fetchval(f"SELECT pg_catalog.format($1::text, {placeholders})", template, *args)
    await conn.execute(sql)


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def _outputs(admin_url: str, name: str, password: str) -> dict[str, str]:
    parts = urlsplit(admin_url)
    host, port = parts.hostname or "localhost", str(parts.port or 5432)
    return {
        "host": host,
        "port": port,
        "username": name,
        "password": password,
        "database_name": name,
        "connection_string": f"postgresql://{quote(name, safe='')}:{quote(password, safe='')}@{host}:{port}/"
        f"{quote(name, safe='')}",
    }
