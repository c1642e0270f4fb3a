"""The demo guide's curl | jq lines, exactly as written, against `innominatus serve --dev` on :8081."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import asyncpg
import pytest

from innominatus.workflows.postgres import object_name
from tests.conftest import PG_ADMIN_URL, REPO
from tests.e2e.server import Server, run_server

GUIDE_PORT = 8081  # the guide's lines name it


def bash(line: str) -> str:
    """Run one line of the guide from the repository root (its @tests/e2e/fixtures/... paths)."""
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {line}"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def jq_stream(text: str) -> list:
    """jq prints one JSON value after another; read them all."""
    decoder, values, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        value, end = decoder.raw_decode(text, i)
        values.append(value)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return values


@pytest.fixture(scope="module")
def guide_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", GUIDE_PORT)) == 0:
            pytest.fail(f"port {GUIDE_PORT} is taken: the guide's commands need it for this test")
    with run_server(tmp_path_factory.mktemp("guide"), args=["--dev"], port=GUIDE_PORT) as srv:
        yield srv


def wait_for(line: str, predicate: object, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while True:
        values = jq_stream(bash(line))
        if predicate(values):  # type: ignore[operator]
            return values
        assert time.monotonic() < deadline, values
        time.sleep(0.2)


def test_dev_mode_says_so(guide_server: Server) -> None:
    warnings = [ln for ln in guide_server.output().splitlines() if "DEV MODE" in ln]
    assert len(warnings) == 1


def test_quick_demo_lines(guide_server: Server) -> None:
    assert json.loads(bash("curl http://localhost:8081/health")) == {"status": "healthy"}

    providers = jq_stream(
        bash("curl http://localhost:8081/api/providers | jq '.[] | {name, version, category, capabilities}'")
    )
    assert {
        "name": "database-team",
        "version": "1.0.0",
        "category": "data",
        "capabilities": ["postgres", "postgresql", "postgres-mock"],
    } in providers

    submitted = json.loads(
        bash(
            "curl -X POST http://localhost:8081/api/specs \\\n"
            '  -H "Content-Type: application/yaml" \\\n'
            '  -H "Authorization: Bearer test" \\\n'
            "  --data-binary @tests/e2e/fixtures/postgres-mock-app.yaml"
        )
    )
    assert submitted["name"] == "demo-app-mock" and submitted["revision"] >= 1

    states = set()

    def seen(values: list) -> bool:
        states.update(v["state"] for v in values if v["resource_type"] == "postgres-mock")
        return "active" in states

    wait_for('curl -s http://localhost:8081/api/resources | jq ".[] | {id, resource_type, state}"', seen)
    assert states <= {"requested", "provisioning", "active"}

    [outputs] = jq_stream(
        bash(
            "curl -s http://localhost:8081/api/resources | \\\n"
            "  jq '.[] | select(.resource_type==\"postgres-mock\") | .provider_metadata.outputs'"
        )
    )
    assert {"connection_string", "username", "password", "host", "port", "database_name"} <= set(outputs)

    [run] = jq_stream(
        bash(
            "curl http://localhost:8081/api/workflows | \\\n"
            "  jq '.[] | select(.workflow_name==\"provision-postgres-mock\") | {id, status, steps: [.steps[] | {name, status}]}'"
        )
    )
    assert run["status"] == "completed"
    assert run["steps"] == [
        {"name": "create-mock-database", "status": "completed"},
        {"name": "wait-for-ready", "status": "completed"},
        {"name": "generate-credentials", "status": "completed"},
    ]


def test_troubleshooting_lines(guide_server: Server) -> None:
    # Catch the resource while it provisions, as the guide's "stuck in provisioning" recipe does.
    bash(
        "curl -s -X POST http://localhost:8081/api/specs -H 'Content-Type: application/yaml' "
        "--data-binary \"$(sed 's/demo-app-mock/demo-app-trouble/' tests/e2e/fixtures/postgres-mock-app.yaml)\""
    )
    deadline = time.monotonic() + 10
    resource_id = ""
    while not resource_id and time.monotonic() < deadline:
        resource_id = bash(
            'RESOURCE_ID=$(curl -s http://localhost:8081/api/resources | jq -r \'.[] | select(.state=="provisioning") '
            "| .id' | head -1); echo $RESOURCE_ID"
        ).strip()
    assert resource_id
    workflow_id = json.loads(
        bash(
            f"RESOURCE_ID={resource_id}; curl http://localhost:8081/api/resources/$RESOURCE_ID | jq '.workflow_execution_id'"
        )
    )
    assert workflow_id
    values = jq_stream(
        bash(
            f"WORKFLOW_ID={workflow_id}; curl http://localhost:8081/api/workflows/$WORKFLOW_ID | "
            "jq '.error_message, .steps[] | {name, status, error_message}'"
        )
    )
    # jq reads the guide's filter as `(.error_message, .steps[]) | {...}`: a null error_message comes out
    # as an object of nulls, then one object per step.
    assert values[0] == {"name": None, "status": None, "error_message": None}
    assert [v["name"] for v in values[1:]] == [
        "create-mock-database",
        "wait-for-ready",
        "generate-credentials",
    ]
    assert all(v["status"] in ("pending", "running", "completed") for v in values[1:])


def test_errors_are_json(guide_server: Server) -> None:
    bad = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\\n%{http_code}",
            "-X",
            "POST",
            "http://localhost:8081/api/specs",
            "-H",
            "Content-Type: application/yaml",
            "--data-binary",
            "apiVersion: score.dev/v1b1\nmetadata: {}\n",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.rsplit("\n", 1)
    body, status = json.loads(bad[0]), bad[1]
    assert status == "400"
    assert {"path": "metadata.name", "message": "is required"} in body["problems"]
    missing = subprocess.run(
        ["curl", "-s", "-w", "\\n%{http_code}", "http://localhost:8081/api/resources/nope"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.rsplit("\n", 1)
    assert missing[1] == "404" and json.loads(missing[0])["error"] == "resource 'nope' not found"


@pytest.mark.postgres
def test_advanced_demo_lines(guide_server: Server, pg_server: str) -> None:
    name = object_name("ecommerce-backend", "database")  # what the direct path names the resource

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await conn.close()

    asyncio.run(drop())
    try:
        bash(
            "curl -X POST http://localhost:8081/api/specs \\\n"
            '  -H "Content-Type: application/yaml" \\\n'
            "  --data-binary @tests/e2e/fixtures/postgres-real-app.yaml"
        )
        wait_for(
            "curl -s http://localhost:8081/api/resources | jq '[.[] | select(.resource_type==\"postgres\")]'",
            lambda v: v[0] and v[0][0]["state"] == "active",
        )
        connection = bash(
            "CONNECTION_STRING=$(curl -s http://localhost:8081/api/resources | \\\n"
            "  jq -r '.[] | select(.resource_type==\"postgres\") | .provider_metadata.outputs.connection_string')\n"
            'echo "$CONNECTION_STRING"'
        ).strip()
        assert connection.startswith(f"postgresql://{name}:")
        assert bash(f"psql '{connection}' -Atc 'SELECT 1'").strip() == "1"
    finally:
        asyncio.run(drop())
