"""`innominatus serve --workers N`: N server processes on one port, each a replica of the same
PostgreSQL database. Work submitted to any of them runs once and streams to a subscriber on any of
them; a worker that dies is replaced; SIGTERM stops them all. SQLite, and --dev, refuse."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gql import gql

from tests.conftest import fresh_pg_database, workflow_yaml, write_provider
from tests.e2e.conftest import http_client, ws_client
from tests.e2e.server import Server, run_server
from tests.processes import alive

SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { resources { id } } }"
WORKFLOWS = gql("query { workflows { runner status } }")
STATE_CHANGED = gql("subscription { resourceStateChanged { resourceId toState } }")


def _providers(root: Path) -> Path:
    return write_provider(
        root / "providers",
        {
            "wk-create": workflow_yaml(
                "wk-create", "- name: noop\n  type: policy\n  config:\n    script: 'true'\n"
            )
        },
        name="worker-team",
        types={"wk-thing": {"create": "wk-create"}},
    )


def _spec(app: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx\n"
        "resources:\n  db:\n    type: wk-thing\n"
    )


def workers_of(server: Server) -> list[int]:
    """The server processes the supervisor started (multiprocessing's resource tracker is a child too)."""
    pid = server.process.pid
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in command and alive(int(child)):
            found.append(int(child))
    return sorted(found)


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def workers(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("workers")
    url = fresh_pg_database(pg_server).replace("postgresql://", "postgresql+asyncpg://", 1)
    with run_server(
        root / "server",
        database_url=url,
        args=["--providers-dir", str(_providers(root)), "--workers", "2"],
        ready_timeout=60,
    ) as server:
        wait_until(lambda: len(workers_of(server)) == 2, 30, "two worker processes")
        yield server


@pytest.mark.postgres
async def test_work_spreads_over_the_workers_and_streams_to_one_subscriber(workers: Server) -> None:
    seen: dict[str, list[str]] = {}
    submitted: list[str] = []

    async def watch() -> None:
        async with ws_client(workers) as session:
            async for event in session.subscribe(STATE_CHANGED):
                change = event["resourceStateChanged"]
                seen.setdefault(change["resourceId"], []).append(change["toState"])

    async def submit(i: int) -> None:
        # A connection of its own each time, so the kernel hands them to either process.
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {workers.admin_token}"}) as client:
            response = await client.post(
                workers.graphql, json={"query": SUBMIT, "variables": {"spec": _spec(f"wk-{i}")}}
            )
            submitted.append(response.json()["data"]["submitSpec"]["resources"][0]["id"])

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(1.0)  # the subscription is live (it lands on one of the two)
        runners: set[str] = set()
        batch = 0
        while len(runners) < 2 and batch < 6:
            await asyncio.gather(*(submit(batch * 20 + i) for i in range(20)))
            batch += 1
            async with asyncio.timeout(60):
                while any(seen.get(r, [])[-1:] != ["ACTIVE"] for r in submitted):
                    await asyncio.sleep(0.1)
            async with http_client(workers) as session:
                runs = (await session.execute(WORKFLOWS))["workflows"]
            runners = {run["runner"] for run in runs}
    finally:
        watcher.cancel()
    assert len(runners) == 2, f"one process did all the work: {runners}"
    assert all(run["status"] == "SUCCEEDED" for run in runs)
    assert len(runs) == len(submitted), "a resource ran twice, or not at all"
    # One subscriber saw every resource's whole lifecycle, whichever worker ran it.
    assert all(seen[r] == ["REQUESTED", "PROVISIONING", "ACTIVE"] for r in submitted)


@pytest.mark.postgres
def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(workers: Server) -> None:
    before = workers_of(workers)
    os.kill(before[0], signal.SIGKILL)
    wait_until(
        lambda: len(workers_of(workers)) == 2 and before[0] not in workers_of(workers), 30, "a new worker"
    )
    wait_until(lambda: httpx.get(f"{workers.url}/ready").status_code == 200, 30, "ready again")
    last = workers_of(workers)
    workers.process.send_signal(signal.SIGTERM)
    workers.process.wait(timeout=20)
    assert workers.process.returncode == 0
    wait_until(lambda: not any(alive(pid) for pid in last), 10, "every worker gone after SIGTERM")


@pytest.mark.parametrize(
    ("database", "extra", "message"),
    [
        ("sqlite:///{tmp}/one.db", [], "workers: 2 processes need PostgreSQL"),
        ("postgresql://nobody@127.0.0.1:1/none", ["--dev"], "--dev runs one worker"),
    ],
)
def test_what_cannot_run_several_workers_says_so(
    tmp_path: Path, database: str, extra: list[str], message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    env["INNOMINATUS_DATABASE_URL"] = database.format(tmp=tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "innominatus.cli", "serve", "--workers", "2", *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "one.db").exists(), "nothing is created when the server cannot start"
