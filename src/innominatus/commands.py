"""The CLI's application commands, over the GraphQL API (never the database): submit with live
progress, status, resources, providers, workflows, delete, retry, and offline validation.

Progress and messages go to stderr; results to stdout (`--output json` makes stdout machine-readable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from innominatus.client import ApiClient, ClientError

FINAL = ("ACTIVE", "FAILED", "DELETED")
LOG_TAIL = 10
RESOURCE_FIELDS = "id application name type state errorMessage outputs workflowExecution { id }"
EVENTS = (
    "subscription($app: String) { resourceStateChanged(application: $app) { toState resource { name } } }"
)

err = Console(stderr=True)


class CommandFailed(Exception):
    """Exit 1: something the user asked for did not work out (a FAILED resource, a timeout)."""


class BadInput(Exception):
    """Exit 2."""

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.server, args.token)


def emit(
    args: argparse.Namespace, rows: Any, columns: list[str] | None = None, title: str | None = None
) -> None:
    if args.output == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    items = rows if isinstance(rows, list) else [rows]
    columns = columns or (list(items[0]) if items else [])
    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.upper())
    for item in items:
        table.add_row(*(_cell(item.get(c)) for c in columns))
    Console(soft_wrap=True).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read it: {exc}") from None


# -------------------------------------------------------------------------------------------- submit


def submit(args: argparse.Namespace) -> int:
    text = _read(args.file)
    return asyncio.run(_submit(args, text))


async def _submit(args: argparse.Namespace, text: str) -> int:
    api = client(args)
    try:
        result = (
            await api.execute_async(
                "mutation($spec: String!) { submitSpec(spec: $spec) { changed "
                f"application {{ name revision }} resources {{ {RESOURCE_FIELDS} }} }} }}",
                spec=text,
            )
        )["submitSpec"]
    except ClientError as exc:
        if exc.code == "BAD_USER_INPUT":
            raise BadInput(str(exc), exc.problems) from None
        raise
    app = result["application"]
    err.print(
        f"submitted {app['name']} revision {app['revision']}" + ("" if result["changed"] else " (unchanged)")
    )
    if not args.watch:
        emit(
            args,
            [_row(r) for r in result["resources"] if r["state"] != "DELETED"],
            ["name", "type", "state", "id"],
        )
        return 0
    return await watch(args, app["name"], nothing_new=not result["changed"])


def _row(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        k: resource.get(k) for k in ("application", "name", "type", "state", "errorMessage", "id", "outputs")
    }


async def watch(
    args: argparse.Namespace, app: str, *, nothing_new: bool = False, until: tuple[str, ...] = FINAL
) -> int:
    """Follow an application's resources live until each one is final; exit 0 if none FAILED."""
    api = client(args)
    started = time.monotonic()
    states: dict[str, str] = {}
    done = asyncio.Event()

    async def refresh() -> list[dict[str, Any]]:
        rows = (
            await api.execute_async(
                f"query($app: String) {{ resources(application: $app) {{ {RESOURCE_FIELDS} }} }}", app=app
            )
        )["resources"]
        latest: dict[str, dict[str, Any]] = {}
        for row in rows:  # a name may have a DELETED past and a live present: the live one counts
            if row["name"] not in latest or latest[row["name"]]["state"] == "DELETED":
                latest[row["name"]] = row
        states.update({name: row["state"] for name, row in latest.items()})
        return list(latest.values())

    def table() -> Table:
        view = Table(show_edge=False, header_style="bold", title=f"{app} ({time.monotonic() - started:.0f}s)")
        view.add_column("RESOURCE")
        view.add_column("STATE")
        for name, state in sorted(states.items()):
            colour = {"ACTIVE": "green", "FAILED": "red", "DELETED": "dim"}.get(state, "yellow")
            view.add_row(name, f"[{colour}]{state}[/{colour}]")
        return view

    async def follow() -> None:
        async for item in api.subscribe(EVENTS, app=app):
            event = item["resourceStateChanged"]
            states[event["resource"]["name"]] = event["toState"]
            if all(s in until for s in states.values()):
                done.set()
                return

    follower = asyncio.ensure_future(follow())
    try:
        await asyncio.sleep(0.2)  # subscribed before the first look, so no change falls in between
        rows = await refresh()
        if all(s in until for s in states.values()):
            if nothing_new:
                err.print("nothing to do: every resource is already in its final state")
            return await _finish(args, rows)
        with Live(table(), console=err, refresh_per_second=8, transient=not err.is_terminal) as live:
            deadline = started + args.timeout
            while not done.is_set():
                if follower.done():
                    follower.result()  # raises the subscription's error
                    break
                if time.monotonic() > deadline:
                    raise CommandFailed(f"timed out after {args.timeout:g}s waiting for {app}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.25)
                live.update(table())
        return await _finish(args, await refresh())
    finally:
        follower.cancel()
        with contextlib.suppress(BaseException):
            await follower


async def _finish(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    emit(args, [_row(r) for r in rows], ["name", "type", "state", "id"])
    failed = [r for r in rows if r["state"] == "FAILED"]
    for resource in failed:
        err.print(f"[red]{resource['name']} FAILED[/red]: {resource['errorMessage']}")
        execution = (resource.get("workflowExecution") or {}).get("id")
        if execution:
            run = (
                await client(args).execute_async(
                    "query($id: ID!) { workflow(id: $id) { steps { name status errorMessage logs } } }",
                    id=execution,
                )
            )["workflow"]
            for step in run["steps"]:
                if step["status"] == "FAILED":
                    tail = step["logs"].rstrip("\n").splitlines()[-LOG_TAIL:]
                    err.print(f"  failed step: {step['name']}: {step['errorMessage']}")
                    for line in tail:
                        err.print(f"    | {line}", markup=False)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------- read commands


def status(args: argparse.Namespace) -> int:
    api = client(args)
    if args.app is None:
        apps = api.execute("{ applications { name revision resources { name state } } }")["applications"]
        rows = [
            {
                "name": a["name"],
                "revision": a["revision"],
                "resources": ", ".join(
                    f"{r['name']}={r['state']}" for r in a["resources"] if r["state"] != "DELETED"
                )
                or "-",
            }
            for a in apps
        ]
        emit(args, rows, ["name", "revision", "resources"])
        return 0
    app = api.execute(
        f"query($name: String!) {{ application(name: $name) {{ name revision pendingResources workloadErrors "
        f"resources {{ {RESOURCE_FIELDS} }} }} }}",
        name=args.app,
    )["application"]
    if args.output == "json":
        emit(args, app)
        return 0
    err.print(f"{app['name']} revision {app['revision']}")
    emit(args, [_row(r) for r in app["resources"]], ["name", "type", "state", "errorMessage", "id"])
    if app["pendingResources"]:
        err.print(f"workload waits for: {', '.join(app['pendingResources'])}")
    for problem in app["workloadErrors"]:
        err.print(f"[yellow]workload:[/yellow] {problem}")
    return 0


def resources(args: argparse.Namespace) -> int:
    rows = client(args).execute(f"{{ resources {{ {RESOURCE_FIELDS} }} }}")["resources"]
    emit(args, [_row(r) for r in rows], ["application", "name", "type", "state", "id"])
    return 0


def providers(args: argparse.Namespace) -> int:
    if args.action == "reload":
        result = client(args).execute(
            "mutation { reloadProviders { ok error providers { name version category capabilities } } }"
        )["reloadProviders"]
        if not result["ok"]:
            raise CommandFailed(f"reload refused, the previous providers stay loaded: {result['error']}")
        err.print(f"reloaded {len(result['providers'])} provider(s)")
        emit(args, result["providers"], ["name", "version", "category", "capabilities"])
        return 0
    rows = client(args).execute("{ providers { name version category capabilities } }")["providers"]
    emit(args, rows, ["name", "version", "category", "capabilities"])
    return 0


def workflows(args: argparse.Namespace) -> int:
    rows = client(args).execute(
        "query($app: String) { workflows(application: $app) { id application: applicationName workflowName "
        "operation status startedAt finishedAt errorMessage } }",
        app=args.app,
    )["workflows"]
    emit(args, rows, ["id", "application", "workflowName", "operation", "status", "startedAt"])
    return 0


def workflow(args: argparse.Namespace) -> int:
    run = client(args).execute(
        "query($id: ID!) { workflow(id: $id) { id applicationName workflowName operation provider status "
        "errorMessage startedAt finishedAt retryOf { id } steps { name type status attempts errorMessage logs } } }",
        id=args.id,
    )["workflow"]
    if args.output == "json":
        if not args.logs:
            for step in run["steps"]:
                step.pop("logs")
        emit(args, run)
        return 0
    err.print(f"{run['workflowName']} ({run['operation']}) for {run['applicationName']}: {run['status']}")
    if run["errorMessage"]:
        err.print(f"[red]{run['errorMessage']}[/red]")
    emit(args, run["steps"], ["name", "type", "status", "attempts", "errorMessage"])
    if args.logs:
        for step in run["steps"]:
            print(f"--- {step['name']} ({step['status']}) ---")
            print(step["logs"], end="" if step["logs"].endswith("\n") else "\n")
    return 0


# --------------------------------------------------------------------------------- change commands


def delete(args: argparse.Namespace) -> int:
    api = client(args)
    api.execute("mutation($name: String!) { deleteApplication(name: $name) { name } }", name=args.app)
    err.print(f"deleting {args.app}")
    if not args.watch:
        return 0
    return asyncio.run(watch(args, args.app, until=("DELETED", "FAILED")))


def retry(args: argparse.Namespace) -> int:
    try:
        row = client(args).execute(
            f"mutation($id: ID!) {{ retryResource(id: $id) {{ {RESOURCE_FIELDS} }} }}", id=args.id
        )["retryResource"]
    except ClientError as exc:
        if exc.code == "BAD_USER_INPUT":
            raise BadInput(str(exc), exc.problems) from None
        raise
    err.print(f"retrying {row['name']}: now {row['state']}")
    emit(args, _row(row), ["name", "type", "state", "id"])
    return 0


def validate(args: argparse.Namespace) -> int:
    """Offline: the server's own checks, with providers loaded as `serve` loads them."""
    from innominatus.config import Settings
    from innominatus.providers import CatalogError, load_catalog
    from innominatus.score import SpecError
    from innominatus.specs import validate as check

    text = _read(args.file)
    settings = Settings.from_env(
        providers_dir=Path(args.providers_dir) if args.providers_dir else None,
        config_file=Path(args.config) if args.config else None,
    )
    catalog = None
    if settings.providers_dir.is_dir() or settings.resolved_config_file() is not None:
        try:
            catalog = load_catalog(
                settings.providers_dir if settings.providers_dir.is_dir() else None,
                settings.resolved_config_file(),
            )
        except CatalogError as exc:
            raise BadInput(f"cannot load providers: {exc}") from None
    try:
        spec = check(text, catalog)
    except SpecError as exc:
        raise BadInput(str(exc), [{"path": p.path, "message": p.message} for p in exc.problems]) from None
    checked = (
        "resource types checked"
        if catalog is not None and catalog.providers
        else "no providers found: resource types not checked"
    )
    err.print(f"{args.file}: valid ({checked})")
    emit(
        args,
        {"name": spec.name, "resources": sorted(spec.resources), "valid": True},
        ["name", "resources", "valid"],
    )
    return 0


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, BadInput):
        return 2
    return 1


def report(exc: BaseException) -> None:
    print(f"innominatus: {exc}", file=sys.stderr)
    for problem in getattr(exc, "problems", []) or []:
        print(f"  {problem.get('path') or '(spec)'}: {problem.get('message')}", file=sys.stderr)
