#!/usr/bin/env python3
"""The PostgreSQL provisioning demo, against a running server.

INNOMINATUS_SERVER (default http://localhost:8081), INNOMINATUS_TOKEN (default `test`, the token of
`innominatus serve --dev`). Exits non-zero when anything is off. Safe to run again: it deletes the demo
application first, so every run shows the whole requested → provisioning → active story.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

SERVER = os.environ.get("INNOMINATUS_SERVER", "http://localhost:8081").rstrip("/")
TOKEN = os.environ.get("INNOMINATUS_TOKEN", "test")
SPEC = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "fixtures" / "postgres-mock-app.yaml"
APP = "demo-app-mock"
TIMEOUT = 30.0

SUBSCRIBE = """subscription($app: String) { resourceStateChanged(application: $app) {
  fromState toState resource { name type state outputs } } }"""
SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name revision } } }"
RESOURCES = "query($app: String) { resources(application: $app) { name type state outputs errorMessage } }"
WORKFLOWS = """query($app: String) { workflows(application: $app) { id workflowName status
  steps { name type status } } }"""
DELETE = "mutation($app: String!) { deleteApplication(name: $app) { name } }"


class DemoFailed(Exception):
    pass


def say(text: str = "") -> None:
    print(text, flush=True)


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


async def run(session: Any, query: str, **variables: Any) -> dict[str, Any]:
    return await session.execute(GraphQLRequest(query, variable_values=variables))


async def clear_previous_run(session: Any) -> None:
    try:
        await run(session, DELETE, app=APP)
    except Exception as exc:
        if "not found" not in str(exc):
            raise
        return
    say(f"  removing the previous run of {APP} ...")
    deadline = time.monotonic() + TIMEOUT
    while any(r["state"] != "DELETED" for r in (await run(session, RESOURCES, app=APP))["resources"]):
        if time.monotonic() > deadline:
            raise DemoFailed("the previous demo application did not go away")
        await asyncio.sleep(0.1)


async def demo() -> None:
    say(f"1. Server health ({SERVER})")
    async with httpx.AsyncClient(timeout=5) as client:
        health = (await client.get(f"{SERVER}/health")).json()
    if health != {"status": "healthy"}:
        raise DemoFailed(f"unexpected health answer: {health}")
    say(f"   {health}")

    http = Client(transport=HTTPXAsyncTransport(url=f"{SERVER}/graphql", headers=headers(), timeout=TIMEOUT))
    async with http as session:
        say("2. Providers")
        providers = (await run(session, "{ providers { name version capabilities } }"))["providers"]
        for provider in providers:
            say(f"   {provider['name']} {provider['version']}: {', '.join(provider['capabilities'])}")
        if not any("postgres-mock" in p["capabilities"] for p in providers):
            raise DemoFailed("no provider offers postgres-mock")
        await clear_previous_run(session)

        say(f"3. Submitting {SPEC.name} and watching the resource live")
        ws = Client(
            transport=WebsocketsTransport(
                url=SERVER.replace("http", "ws", 1) + "/graphql",
                init_payload={"Authorization": f"Bearer {TOKEN}"},
            )
        )
        async with ws as live:
            events = live.subscribe(GraphQLRequest(SUBSCRIBE, variable_values={"app": APP}))
            async with contextlib.aclosing(events):
                first = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0.2)  # the subscription is registered before the spec goes in
                submitted = (await run(session, SUBMIT, spec=SPEC.read_text()))["submitSpec"]
                say(
                    f"   submitted {submitted['application']['name']} revision {submitted['application']['revision']}"
                )
                item = await asyncio.wait_for(first, TIMEOUT)
                while True:
                    event = item["resourceStateChanged"]
                    name = event["resource"]["name"]
                    say(f"   {name}: {(event['fromState'] or '-').lower()} -> {event['toState'].lower()}")
                    if event["toState"] in ("ACTIVE", "FAILED"):
                        break
                    item = await asyncio.wait_for(anext(events), TIMEOUT)
        [resource] = [
            r for r in (await run(session, RESOURCES, app=APP))["resources"] if r["state"] != "DELETED"
        ]
        if resource["state"] != "ACTIVE":
            raise DemoFailed(
                f"resource {resource['name']} is {resource['state']}: {resource['errorMessage']}"
            )

        say("4. Credentials")
        for key in ("host", "port", "database_name", "username", "password", "connection_string"):
            if key not in resource["outputs"]:
                raise DemoFailed(f"output {key} is missing")
            say(f"   {key}: {resource['outputs'][key]}")

        say("5. Workflow")
        runs = (await run(session, WORKFLOWS, app=APP))["workflows"]
        provision = [r for r in runs if r["workflowName"] == "provision-postgres-mock"][-1]
        say(f"   {provision['workflowName']}: {provision['status'].lower()}")
        for step in provision["steps"]:
            say(f"     {step['name']} ({step['type']}): {step['status'].lower()}")
        if provision["status"] != "SUCCEEDED":
            raise DemoFailed("the workflow did not succeed")


def main() -> int:
    started = time.monotonic()
    try:
        asyncio.run(demo())
    except DemoFailed as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as exc:
        print(f"demo failed: cannot reach {SERVER}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    say(f"Demo complete in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
