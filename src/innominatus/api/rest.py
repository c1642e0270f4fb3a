"""The demo guide's REST calls (`/api/...`), as upstream innominatus answers them: a thin layer over the
same services as GraphQL, with the same tokens and team scoping. States are lowercase, as upstream
writes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from innominatus.api.guard import UNAUTHENTICATED_MESSAGE
from innominatus.auth import Principal, bearer
from innominatus.db import models
from innominatus.problems import Problem
from innominatus.service import BadInput, ServiceError, Services, changes, reads

WORKFLOW_STATUS = {
    "RUNNING": "running",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
}
STEP_STATUS = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUCCEEDED": "completed",
    "FAILED": "failed",
    "SKIPPED": "skipped",
}

SPEC_MEDIA_TYPES = frozenset(
    {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "application/json"}
)

Handler = Callable[[Request, Services, Principal], Awaitable[Response]]


def error(status: int, message: str, problems: list[dict[str, str]] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "problems": problems or []}, status_code=status)


def authenticated(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        principal = await services.authenticator.principal(bearer(request.headers.get("authorization")))
        if principal is None:
            return error(401, UNAUTHENTICATED_MESSAGE)
        try:
            return await handler(request, services, principal)
        except ServiceError as exc:
            return error(
                exc.status, exc.message, [{"path": p.path, "message": p.message} for p in exc.problems]
            )

    return endpoint


def _resource(row: models.Resource, services: Services) -> dict[str, Any]:
    return {
        "id": row.id,
        "application_name": row.application_name,
        "resource_name": row.name,
        "resource_type": row.type,
        "state": row.state.lower(),
        "provider": row.provider,
        "error_message": row.error_message,
        "workflow_execution_id": row.workflow_execution_id,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "provider_metadata": {"outputs": services.store.box.open(row.outputs), "properties": row.properties},
    }


def _workflow(row: models.WorkflowExecution, steps: list[models.WorkflowStep]) -> dict[str, Any]:
    return {
        "id": row.id,
        "workflow_name": row.workflow_name,
        "operation": row.operation,
        "application_name": row.application_name,
        "resource_id": row.resource_id,
        "status": WORKFLOW_STATUS[row.status],
        "error_message": row.error_message,
        "started_at": row.started_at.isoformat(),
        "completed_at": row.finished_at.isoformat() if row.finished_at else None,
        "steps": [
            {
                "name": s.name,
                "type": s.type,
                "status": STEP_STATUS[s.status],
                "error_message": s.error_message,
                "attempts": s.attempts,
            }
            for s in steps
        ],
    }


def _page(request: Request) -> dict[str, Any]:
    """`?first=N&after=<id>`, as the GraphQL lists take them."""
    first = request.query_params.get("first")
    if first is not None and not first.strip().isdigit():
        raise BadInput(
            f"first: must be a whole number, got {first!r}", [Problem("first", "must be a whole number")]
        )
    return {"first": int(first) if first is not None else None, "after": request.query_params.get("after")}


@authenticated
async def list_providers(request: Request, services: Services, caller: Principal) -> Response:
    return JSONResponse(
        [
            {
                "name": p.name,
                "version": p.version,
                "category": p.category,
                "description": p.description,
                "capabilities": p.capabilities,
            }
            for p in reads.providers(services, caller)
        ]
    )


@authenticated
async def submit_spec(request: Request, services: Services, caller: Principal) -> Response:
    # A YAML or JSON type, never one a cross-site form or "simple" request may send (text/plain, ...).
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in SPEC_MEDIA_TYPES:
        return error(
            415,
            f"Content-Type must be one of {', '.join(sorted(SPEC_MEDIA_TYPES))}, not {media_type or 'none'!r}",
        )
    body = await request.body()  # the body limit middleware already refused anything over 1 MiB
    result = await changes.submit(services, caller, body)
    return JSONResponse(
        {
            "name": result.application.name,
            "revision": result.application.revision,
            "changed": result.changed,
            "resources": [_resource(r, services) for r in result.resources],
        },
        status_code=201,
    )


@authenticated
async def list_resources(request: Request, services: Services, caller: Principal) -> Response:
    rows = await reads.resources(
        services, caller, application=request.query_params.get("application"), **_page(request)
    )
    return JSONResponse([_resource(r, services) for r in rows])


@authenticated
async def get_resource(request: Request, services: Services, caller: Principal) -> Response:
    row = await reads.resource(services, caller, request.path_params["id"])
    return JSONResponse(_resource(row, services))


@authenticated
async def list_workflows(request: Request, services: Services, caller: Principal) -> Response:
    rows = await reads.workflows(
        services, caller, application=request.query_params.get("application"), **_page(request)
    )
    steps = await reads.steps(services, [r.id for r in rows])
    return JSONResponse([_workflow(r, steps[r.id]) for r in rows])


@authenticated
async def get_workflow(request: Request, services: Services, caller: Principal) -> Response:
    row = await reads.workflow(services, caller, request.path_params["id"])
    steps = await reads.steps(services, [row.id])
    return JSONResponse(_workflow(row, steps[row.id]))


routes = [
    Route("/api/providers", list_providers, methods=["GET"]),
    Route("/api/specs", submit_spec, methods=["POST"]),
    Route("/api/resources", list_resources, methods=["GET"]),
    Route("/api/resources/{id}", get_resource, methods=["GET"]),
    Route("/api/workflows", list_workflows, methods=["GET"]),
    Route("/api/workflows/{id}", get_workflow, methods=["GET"]),
]
