"""After `kill -9`, the dead server's step processes live on; the server that resumes the run kills them
first, so the interrupted step never runs twice at the same time."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from gql import GraphQLRequest, gql

from tests.conftest import ProviderFactory, workflow_yaml
from tests.e2e.conftest import http_client
from tests.e2e.server import Server, run_server

SPEC = (
    "apiVersion: score.dev/v1b1\nmetadata:\n  name: stray-app\ncontainers:\n  main:\n    image: a\n"
    "resources:\n  db:\n    type: test-db\n"
)
SUBMIT = gql("mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }")
STEPS = gql(
    '{ workflows(application: "stray-app") { status steps { status attempts } } resources { state } }'
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def poll(server: Server, until: object, timeout: float = 20) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            async with http_client(server) as session:
                data = await session.execute(STEPS)
            if until(data):  # type: ignore[operator]
                return data
            await asyncio.sleep(0.1)


async def test_resume_kills_what_the_dead_server_left_running(
    tmp_path: Path, make_provider: ProviderFactory
) -> None:
    first_run, pidfile = tmp_path / "first-run", tmp_path / "pid"
    wf = workflow_yaml(
        "provision-test",
        "- name: long\n  type: policy\n  config:\n    script: |\n"
        f"      if [ -e {first_run} ]; then echo resumed; exit 0; fi\n"
        f"      touch {first_run}; sleep 300 & echo $! > {pidfile}; wait\n",
    )
    providers = make_provider({"provision-test": wf})
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    args = ["--providers-dir", str(providers)]
    env = {"INNOMINATUS_LEASE_SECONDS": "1"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    child = 0
    try:
        with run_server(tmp_path / "a", database_url=database, args=args, env=env) as first:
            async with http_client(first) as session:
                await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": SPEC}))
            async with asyncio.timeout(10):
                while not pidfile.exists() or not pidfile.read_text().strip():
                    await asyncio.sleep(0.05)
            child = int(pidfile.read_text())
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
        assert alive(child)  # the dead server's step lives on
        with run_server(tmp_path / "b", database_url=database, args=args, env=env) as second:
            data = await poll(second, lambda d: d["resources"] and d["resources"][0]["state"] == "ACTIVE")
            assert data["workflows"][0]["steps"] == [{"status": "SUCCEEDED", "attempts": 2}]
            assert not alive(child)
            assert "killed 1 leftover process group" in second.output()
    finally:
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
