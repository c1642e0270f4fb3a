"""After `kill -9` of the server, its step host kills the steps it ran (it sees its input close). When the
host dies with it (both killed at once), the step processes live on; the server that resumes the run
kills them first, so the interrupted step never runs twice at the same time."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from gql import GraphQLRequest, gql

from tests.conftest import ProviderFactory, workflow_yaml
from tests.e2e.conftest import http_client
from tests.e2e.server import Server, run_server
from tests.processes import alive

SPEC = (
    "apiVersion: score.dev/v1b1\nmetadata:\n  name: stray-app\ncontainers:\n  main:\n    image: a\n"
    "resources:\n  db:\n    type: test-db\n"
)
SUBMIT = gql("mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }")
STEPS = gql(
    '{ workflows(application: "stray-app") { status steps { status attempts } } resources { state } }'
)


def step_host_of(server_pid: int) -> int:
    """The step host the server started (its child running innominatus.workflows.host)."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == server_pid and b"innominatus.workflows.host" in command:
            return int(entry.name)
    raise AssertionError(f"server {server_pid} has no step host")


async def poll(server: Server, until: object, timeout: float = 20) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            async with http_client(server) as session:
                data = await session.execute(STEPS)
            if until(data):  # type: ignore[operator]
                return data
            await asyncio.sleep(0.1)


async def submit_and_wait_for_child(server: Server, pidfile: Path) -> int:
    """Submit the app; the pid its step wrote once it started holding."""
    async with http_client(server) as session:
        await session.execute(GraphQLRequest(SUBMIT, variable_values={"spec": SPEC}))
    async with asyncio.timeout(10):
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.05)
    return int(pidfile.read_text())


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
            child = await submit_and_wait_for_child(first, pidfile)
            host = step_host_of(first.process.pid)
            os.kill(host, signal.SIGSTOP)  # frozen, it cannot react to the server's end
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
            os.kill(host, signal.SIGKILL)
        assert alive(child)  # the dead server's step lives on
        with run_server(tmp_path / "b", database_url=database, args=args, env=env) as second:
            data = await poll(second, lambda d: d["resources"] and d["resources"][0]["state"] == "ACTIVE")
            assert data["workflows"][0]["steps"] == [{"status": "SUCCEEDED", "attempts": 2}]
            assert not alive(child)
            assert "killed 1 leftover process group" in second.output()
    finally:
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


async def test_a_killed_servers_step_host_kills_its_steps(
    tmp_path: Path, make_provider: ProviderFactory
) -> None:
    pidfile = tmp_path / "pid"
    wf = workflow_yaml(
        "provision-test",
        f"- name: long\n  type: policy\n  config:\n    script: |\n      sleep 300 & echo $! > {pidfile}; wait\n",
    )
    providers = make_provider({"provision-test": wf})
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    (tmp_path / "a").mkdir()
    child = 0
    try:
        with run_server(
            tmp_path / "a", database_url=database, args=["--providers-dir", str(providers)]
        ) as first:
            child = await submit_and_wait_for_child(first, pidfile)
            host = step_host_of(first.process.pid)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
        async with asyncio.timeout(10):  # the host kills the step's group (SIGTERM, then SIGKILL) and ends
            while alive(child) or alive(host):
                await asyncio.sleep(0.05)
    finally:
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
