"""`GET /metrics`: Prometheus text, no token needed, no team or application name in it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import workflow_yaml
from tests.e2e.server import ADMIN_TOKEN, Server, run_server

APP = "metrics-secret-app-name"
MANIFEST = """\
apiVersion: v1
kind: Provider
metadata: {name: metered, version: 1.0.0}
capabilities:
  resourceTypeCapabilities:
    - type: ok-db
      operations: {create: {workflow: provision-ok}}
    - type: bad-db
      operations: {create: {workflow: provision-bad}}
workflows:
  - {name: provision-ok, file: ./workflows/provision-ok.yaml, operation: create}
  - {name: provision-bad, file: ./workflows/provision-bad.yaml, operation: create}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("metered")
    folder = root / "providers" / "metered"
    (folder / "workflows").mkdir(parents=True)
    (folder / "provider.yaml").write_text(MANIFEST)
    ok = "- name: fine\n  type: policy\n  config:\n    script: 'true'\n"
    bad = "- name: broken\n  type: policy\n  config:\n    script: 'exit 3'\n"
    (folder / "workflows" / "provision-ok.yaml").write_text(workflow_yaml("provision-ok", ok))
    (folder / "workflows" / "provision-bad.yaml").write_text(workflow_yaml("provision-bad", bad))
    with run_server(root, args=["--providers-dir", str(root / "providers")]) as srv:
        yield srv


def samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(server.url + "/metrics")  # no token
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert APP not in response.text and "team" not in response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


async def test_metrics_count_this_replicas_work_and_the_databases_resources(server: Server) -> None:
    spec = (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {APP}\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  good:\n    type: ok-db\n  broken:\n    type: bad-db\n"
    )
    async with websockets.connect(
        server.websocket, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {ADMIN_TOKEN}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        subscribe = {"query": "subscription { resourceStateChanged { sequence } }"}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        await asyncio.sleep(0.3)
        assert samples(server)[("innominatus_subscriptions", ())] == 1
        answer = httpx.post(
            server.graphql,
            json={
                "query": "mutation($s: String!) { submitSpec(spec: $s) { changed } }",
                "variables": {"s": spec},
            },
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ).json()
        assert answer["data"]["submitSpec"]["changed"] is True
        deadline = time.monotonic() + 20
        while True:
            found = samples(server)
            if (
                found.get(("innominatus_resources", (("state", "ACTIVE"),))) == 1
                and found.get(("innominatus_resources", (("state", "FAILED"),))) == 1
            ):
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the runs have ended and the socket is gone
    found = samples(server)
    assert found[("innominatus_workflow_runs_total", (("operation", "create"), ("status", "SUCCEEDED")))] == 1
    assert found[("innominatus_workflow_runs_total", (("operation", "create"), ("status", "FAILED")))] == 1
    assert found[("innominatus_workflow_duration_seconds_count", (("operation", "create"),))] == 2
    assert found[("innominatus_step_duration_seconds_count", (("type", "policy"),))] == 2
    assert found[("innominatus_claim_lag_seconds_count", ())] == 2
    assert found[("innominatus_events_total", ())] >= 6  # REQUESTED, PROVISIONING and a final state, twice
    assert found[("innominatus_engine_running", ())] == 0
    assert found[("innominatus_subscriptions", ())] == 0
    assert found[("innominatus_resources", (("state", "REQUESTED"),))] == 0


def test_json_log_lines_carry_the_request_and_run_ids(tmp_path: Path) -> None:
    with run_server(tmp_path, env={"INNOMINATUS_LOG_FORMAT": "json"}) as srv:
        spec = (
            "apiVersion: score.dev/v1b1\nmetadata:\n  name: logged-app\ncontainers:\n  main:\n    image: a\n"
            "resources:\n  db:\n    type: postgres-mock\n    properties:\n      db_name: logged\n"
        )
        response = httpx.post(
            srv.graphql,
            json={
                "query": "mutation($s: String!) { submitSpec(spec: $s) { resources { id } } }",
                "variables": {"s": spec},
            },
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Request-ID": "req-42"},
        )
        assert response.headers["x-request-id"] == "req-42"
        [resource] = response.json()["data"]["submitSpec"]["resources"]
        odd = httpx.get(srv.url + "/health", headers={"X-Request-ID": "not a plain token"})
        assert odd.headers["x-request-id"] != "not a plain token" and len(odd.headers["x-request-id"]) == 32
        deadline = time.monotonic() + 30
        while "workflow_id" not in srv.output():
            assert time.monotonic() < deadline, srv.output()
            time.sleep(0.1)
        time.sleep(0.3)
        lines = [json.loads(line) for line in srv.output().splitlines() if line.strip()]  # every line JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("request_id") == "req-42" and "/graphql" in line["message"] for line in lines), lines
    [run] = [line for line in lines if "workflow_id" in line]
    assert run["application"] == "logged-app" and run["resource_id"] == resource["id"]
    assert "create workflow provision-postgres-mock SUCCEEDED" in run["message"]
    assert run["request_id"] == "req-42"  # the run its submission started carries the submission's id


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")} | {
        "INNOMINATUS_LOG_FORMAT": "xml"
    }
    done = subprocess.run(
        [sys.executable, "-m", "innominatus.cli", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "INNOMINATUS_LOG_FORMAT: must be one of text, json, got 'xml'" in done.stderr
