"""Several `innominatus serve` processes on one PostgreSQL database (issue 12): they start together,
stream each other's events and step events, replay the same history, share the work without doing it
twice, take over a dead replica's runs, fence a paused one out, and carry cancellations across.

Replicas A and B serve the whole module; tests that kill or pause a replica start their own (C). Leases
last 3 s here so takeovers are quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from gql import GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError

from tests.conftest import create_pg_database, fresh_pg_database, workflow_yaml, write_provider
from tests.e2e.conftest import http_client, ws_client
from tests.e2e.server import Server, start_server, stop_server, wait_ready
from tests.processes import alive

pytestmark = pytest.mark.postgres

LEASE = 3.0
SUBMIT = gql("mutation($spec: String!) { submitSpec(spec: $spec) { resources { id name state } } }")
DELETE_APP = gql("mutation($name: String!) { deleteApplication(name: $name) { name } }")
RESOURCES = gql(
    "query($app: String) { resources(application: $app) { id state errorMessage "
    "transitions { fromState toState } } }"
)
WORKFLOWS = gql(
    "query($app: String) { workflows(application: $app) { id operation status runner errorMessage "
    "steps { name status attempts logs } } }"
)
STATE_CHANGED = gql(
    "subscription($app: String, $after: Int) { resourceStateChanged(application: $app, afterSequence: $after) "
    "{ sequence resourceId fromState toState } }"
)
STEP_CHANGED = gql(
    "subscription($app: String) { workflowStepChanged(application: $app) { step { name status } logLine } }"
)


@dataclass
class Cluster:
    a: Server
    b: Server
    url: str  # the shared database (asyncpg form)
    root: Path
    providers: Path

    def runs(self) -> list[str]:
        path = self.root / "runs"
        return path.read_text().split() if path.exists() else []

    def start(self, name: str, **env: str) -> Server:
        server = start_server(
            self.root / name,
            database_url=self.url,
            args=["--providers-dir", str(self.providers)],
            env={"INNOMINATUS_LEASE_SECONDS": str(LEASE), **env},
        )
        wait_ready(server)
        return server


def _write_providers(root: Path) -> Path:
    providers = root / "providers"
    folder = providers / "replica-team"
    (folder / "workflows").mkdir(parents=True)
    runs, pids, deletes = root / "runs", root / "pids", root / "deletes"
    quick = f"""\
- name: record
  type: policy
  config:
    script: |
      echo {{{{ app.name | shell_quote }}}} >> '{runs}'
      echo "line one"
      echo "line two"
"""
    # The first attempt holds (its pid recorded for the test); a resumed attempt finishes at once.
    hold = """\
- name: hold
  type: policy
  timeout: 120
  {flag}config:
    script: |
      if mkdir '{root}/first-'{{{{ app.name | shell_quote }}}} 2>/dev/null; then
        echo $$ > '{pids}/'{{{{ app.name | shell_quote }}}}
        sleep 60
      fi
      echo "held and done"
"""
    delete = f"""\
- name: remove
  type: policy
  config:
    script: |
      echo {{{{ app.name | shell_quote }}}} >> '{deletes}'
"""
    pids.mkdir()
    files = {
        "rep-create": workflow_yaml("rep-create", quick),
        "rep-hold": workflow_yaml("rep-hold", hold.format(flag="", root=root, pids=pids)),
        "rep-fragile": workflow_yaml(
            "rep-fragile", hold.format(flag="idempotent: false\n  ", root=root, pids=pids)
        ),
        "rep-delete": workflow_yaml("rep-delete", delete),
    }
    for name, body in files.items():
        (folder / "workflows" / f"{name}.yaml").write_text(body)
    (folder / "provider.yaml").write_text(
        "apiVersion: v1\nkind: Provider\nmetadata:\n  name: replica-team\n  version: 1.0.0\n  category: test\n"
        "capabilities:\n  resourceTypeCapabilities:\n"
        "    - type: rep-thing\n      operations:\n        create:\n          workflow: rep-create\n"
        "        delete:\n          workflow: rep-delete\n"
        "    - type: rep-hold\n      operations:\n        create:\n          workflow: rep-hold\n"
        "        delete:\n          workflow: rep-delete\n"
        "    - type: rep-fragile\n      operations:\n        create:\n          workflow: rep-fragile\n"
        "workflows:\n"
        + "".join(
            f"  - name: {name}\n    file: ./workflows/{name}.yaml\n    operation: {op}\n"
            for name, op in [
                ("rep-create", "create"),
                ("rep-hold", "create"),
                ("rep-fragile", "create"),
                ("rep-delete", "delete"),
            ]
        )
    )
    return providers


def _spec(app: str, rtype: str = "rep-thing") -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: nginx:latest\n"
        f"resources:\n  thing:\n    type: {rtype}\n"
    )


@pytest.fixture(scope="module")
def cluster(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("replicas")
    url = fresh_pg_database(pg_server).replace("postgresql://", "postgresql+asyncpg://", 1)
    providers = _write_providers(root)
    env = {"INNOMINATUS_LEASE_SECONDS": str(LEASE)}
    args = ["--providers-dir", str(providers)]
    a = start_server(root / "a", database_url=url, args=args, env=env)
    b = start_server(root / "b", database_url=url, args=args, env=env)
    try:
        wait_ready(a)
        wait_ready(b)
        yield Cluster(a, b, url, root, providers)
    finally:
        stop_server(a)
        stop_server(b)
        _kill_held(root / "pids")


def _kill_held(pids: Path) -> None:
    for path in pids.glob("*") if pids.exists() else ():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(path.read_text()), signal.SIGKILL)


async def _execute(server: Server, document: Any, **variables: Any) -> dict[str, Any]:
    async with http_client(server) as session:
        return await session.execute(GraphQLRequest(document, variable_values=variables))


async def _resource(server: Server, app: str, states: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = (await _execute(server, RESOURCES, app=app))["resources"]
        if found and found[0]["state"] in states:
            return found[0]
        if time.monotonic() > deadline:
            pytest.fail(f"{app}: not {states} within {timeout}s: {found}\n{server.output()[-3000:]}")
        await asyncio.sleep(0.05)


async def _until(condition: Any, timeout: float, what: str) -> float:
    """Seconds it took until `condition()` held (fails after `timeout`)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _subscriptions(server: Server) -> int:
    """Live subscriptions on the server (its /metrics gauge): a subscription counts once it is live."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{server.url}/metrics", timeout=10)).text
    [line] = [line for line in text.splitlines() if line.startswith("innominatus_subscriptions ")]
    return int(float(line.split()[1]))


@contextlib.asynccontextmanager
async def _collect(
    server: Server, document: Any, into: list[tuple[float, dict[str, Any]]], **variables: Any
) -> AsyncIterator[None]:
    """Subscribe (live on the server before the body runs) and collect (arrival time, payload) meanwhile."""
    client = ws_client(server)
    session = await client.connect_async()
    before = await _subscriptions(server)

    async def read() -> None:
        async for item in session.subscribe(GraphQLRequest(document, variable_values=variables)):
            into.append((time.monotonic(), item))

    task = asyncio.create_task(read())
    deadline = time.monotonic() + 10
    while await _subscriptions(server) <= before:
        assert time.monotonic() < deadline and not task.done(), "the subscription never became live"
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await client.close_async()


# ------------------------------------------------------------------------------------------ promise 1


async def test_replicas_started_together_migrate_and_bootstrap_once(pg_server: str, tmp_path: Path) -> None:
    url = (await create_pg_database(pg_server)).replace("postgresql://", "postgresql+asyncpg://", 1)
    # No INNOMINATUS_ADMIN_TOKEN: the first start creates one token, and only one replica may.
    servers = [
        start_server(tmp_path / f"r{i}", database_url=url, env={"INNOMINATUS_ADMIN_TOKEN": ""})
        for i in range(3)
    ]
    try:
        for server in servers:
            wait_ready(server)
        outputs = [server.output() for server in servers]
        assert sum("created admin token" in out for out in outputs) == 1, outputs
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            assert await conn.fetchval("SELECT count(*) FROM tokens") == 1
            assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 1
        finally:
            await conn.close()
    finally:
        for server in servers:
            stop_server(server)


# ------------------------------------------------------------------------------------------ promise 2


async def test_a_lone_replica_relays_step_events_only_once_another_listens(
    pg_server: str, tmp_path: Path, cluster: Cluster
) -> None:
    url = (await create_pg_database(pg_server)).replace("postgresql+asyncpg://", "postgresql://", 1)
    lone = start_server(
        tmp_path / "lone",
        database_url=url.replace("postgresql://", "postgresql+asyncpg://", 1),
        args=["--providers-dir", str(cluster.providers)],
    )
    relayed: list[str] = []
    watcher = await asyncpg.connect(url)
    try:
        wait_ready(lone)
        await watcher.add_listener("innominatus_steps", lambda *args: relayed.append(args[3]))
        await _execute(lone, SUBMIT, spec=_spec("alone-1"))
        await _resource(lone, "alone-1", {"ACTIVE"})
        await asyncio.sleep(0.5)
        assert relayed == [], "step events went out with no other replica listening"
        await watcher.execute("SELECT pg_notify('innominatus_hello', 'another-replica')")
        await asyncio.sleep(0.5)
        await _execute(lone, SUBMIT, spec=_spec("alone-2"))
        await _resource(lone, "alone-2", {"ACTIVE"})
        await _until(lambda: any("alone-2" in payload for payload in relayed), 5, "step events relayed")
    finally:
        await watcher.close()
        stop_server(lone)


async def test_state_and_step_events_of_work_on_a_reach_subscribers_on_b(cluster: Cluster) -> None:
    app = "cross-events"
    on_a: list[tuple[float, dict[str, Any]]] = []
    on_b: list[tuple[float, dict[str, Any]]] = []
    steps_b: list[tuple[float, dict[str, Any]]] = []
    async with (
        _collect(cluster.a, STATE_CHANGED, on_a, app=app),
        _collect(cluster.b, STATE_CHANGED, on_b, app=app),
        _collect(cluster.b, STEP_CHANGED, steps_b, app=app),
    ):
        await _execute(cluster.a, SUBMIT, spec=_spec(app))
        await _until(lambda: len(on_b) >= 3 and len(steps_b) >= 4, 10, "B hears of A's work")
        await _until(lambda: len(on_a) >= 3, 5, "A hears of its own work")
    events_a = [e["resourceStateChanged"] for _, e in on_a]
    events_b = [e["resourceStateChanged"] for _, e in on_b]
    assert [(e["fromState"], e["toState"]) for e in events_b] == [
        (None, "REQUESTED"),
        ("REQUESTED", "PROVISIONING"),
        ("PROVISIONING", "ACTIVE"),
    ]
    assert events_b == events_a  # the same events, the same positions
    sequences = [e["sequence"] for e in events_b]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    for (arrived_a, _), (arrived_b, _) in zip(on_a, on_b, strict=True):
        assert arrived_b - arrived_a < 1.0
    step_events = [e["workflowStepChanged"] for _, e in steps_b]
    assert [(e["step"]["status"], e["logLine"]) for e in step_events] == [
        ("RUNNING", None),
        ("RUNNING", "line one"),
        ("RUNNING", "line two"),
        ("SUCCEEDED", None),
    ]


# ------------------------------------------------------------------------------------------ promise 3


async def test_replay_is_the_same_on_every_replica_and_a_client_can_move(cluster: Cluster) -> None:
    for i in range(3):
        await _execute(cluster.a if i % 2 else cluster.b, SUBMIT, spec=_spec(f"replay-{i}"))
    for i in range(3):
        await _resource(cluster.b, f"replay-{i}", {"ACTIVE"})
    conn = await asyncpg.connect(cluster.url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        top = await conn.fetchval("SELECT max(sequence) FROM events")
    finally:
        await conn.close()

    async def replay(server: Server, after: int) -> list[dict[str, Any]]:
        seen: list[tuple[float, dict[str, Any]]] = []
        async with _collect(server, STATE_CHANGED, seen, after=after):
            await _until(
                lambda: bool(seen) and seen[-1][1]["resourceStateChanged"]["sequence"] >= top, 10, "replay"
            )
        return [e["resourceStateChanged"] for _, e in seen]

    from_a, from_b = await replay(cluster.a, 0), await replay(cluster.b, 0)
    assert from_a == from_b
    assert [e["sequence"] for e in from_a] == list(range(1, top + 1))  # none missing, in order
    middle = from_a[len(from_a) // 2]["sequence"]
    assert await replay(cluster.b, middle) == [e for e in from_a if e["sequence"] > middle]


# ------------------------------------------------------------------------------------------ promise 4


async def test_two_hundred_specs_on_two_replicas_each_step_runs_once(cluster: Cluster) -> None:
    apps = [f"once-{i}" for i in range(200)]
    gate = asyncio.Semaphore(20)

    async def submit(i: int, app: str) -> None:
        async with gate:
            await _execute(cluster.a if i % 2 == 0 else cluster.b, SUBMIT, spec=_spec(app))

    await asyncio.gather(*(submit(i, app) for i, app in enumerate(apps)))
    for app in apps:
        await _resource(cluster.a, app, {"ACTIVE"}, timeout=60)
    runs = [name for name in cluster.runs() if name.startswith("once-")]
    assert sorted(runs) == sorted(apps)  # each step ran exactly once
    runners: set[str] = set()
    for app in apps[::10]:
        [workflow] = (await _execute(cluster.b, WORKFLOWS, app=app))["workflows"]
        assert workflow["steps"][0]["attempts"] == 1
        runners.add(workflow["runner"])
    all_runners = set()
    conn = await asyncpg.connect(cluster.url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        for row in await conn.fetch(
            "SELECT DISTINCT runner FROM workflow_executions WHERE application_name LIKE 'once-%'"
        ):
            all_runners.add(row["runner"])
    finally:
        await conn.close()
    assert len(all_runners) == 2, all_runners  # both replicas did part of the work
    assert runners <= all_runners


# ------------------------------------------------------------------------------------------ promise 5


@pytest.mark.parametrize("rtype", ["rep-hold", "rep-fragile"])
async def test_a_killed_replicas_run_is_resumed_after_its_lease(cluster: Cluster, rtype: str) -> None:
    app = f"takeover-{rtype}"
    c = cluster.start(f"c-{rtype}")
    try:
        await _execute(c, SUBMIT, spec=_spec(app, rtype))
        pid_file = cluster.root / "pids" / app
        await _until(pid_file.exists, 10, "the step holds on C")
        [running] = (await _execute(c, WORKFLOWS, app=app))["workflows"]
        c.process.send_signal(signal.SIGKILL)
        c.process.wait()
        killed = time.monotonic()
        final = await _resource(cluster.a, app, {"ACTIVE", "FAILED"}, timeout=LEASE + 15)
        took = time.monotonic() - killed
    finally:
        stop_server(c)
    assert took < LEASE + 4, f"resumed {took:.1f}s after the kill (lease {LEASE}s)"
    [workflow] = (await _execute(cluster.a, WORKFLOWS, app=app))["workflows"]
    assert workflow["runner"] not in (None, running["runner"])
    transitions = [(t["fromState"], t["toState"]) for t in final["transitions"]]
    if rtype == "rep-hold":
        assert transitions == [(None, "REQUESTED"), ("REQUESTED", "PROVISIONING"), ("PROVISIONING", "ACTIVE")]
        assert workflow["steps"][0]["attempts"] == 2
        assert "held and done" in workflow["steps"][0]["logs"]
    else:
        assert transitions == [(None, "REQUESTED"), ("REQUESTED", "PROVISIONING"), ("PROVISIONING", "FAILED")]
        assert "interrupted, not safe to re-run" in final["errorMessage"]
    assert not alive(int(pid_file.read_text()))  # the dead replica's step went with the takeover


# ------------------------------------------------------------------------------------------ promise 6


async def test_a_paused_replica_is_fenced_out_and_keeps_serving(cluster: Cluster) -> None:
    app = "fenced"
    c = cluster.start("c-paused")
    try:
        await _execute(c, SUBMIT, spec=_spec(app, "rep-hold"))
        pid_file = cluster.root / "pids" / app
        await _until(pid_file.exists, 10, "the step holds on C")
        held = int(pid_file.read_text())
        c.process.send_signal(signal.SIGSTOP)
        await _resource(cluster.a, app, {"ACTIVE"}, timeout=LEASE + 15)  # taken over, finished by A or B
        [before] = (await _execute(cluster.a, WORKFLOWS, app=app))["workflows"]
        c.process.send_signal(signal.SIGCONT)
        # C learns it lost the lease and kills its step at once: the held process goes.
        await _until(lambda: not alive(held), 5, "C kills the step it no longer owns")
        [after] = (await _execute(cluster.a, WORKFLOWS, app=app))["workflows"]
        assert after == before  # nothing C did late was accepted
        assert after["status"] == "SUCCEEDED" and after["steps"][0]["attempts"] == 2
        await _execute(c, SUBMIT, spec=_spec("after-pause"))  # and C serves on
        await _resource(c, "after-pause", {"ACTIVE"})
    finally:
        stop_server(c)


# ------------------------------------------------------------------------------------------ promise 7


async def test_delete_on_b_stops_a_run_on_a_at_once(cluster: Cluster) -> None:
    app = "cancel-across"
    await _execute(cluster.a, SUBMIT, spec=_spec(app, "rep-hold"))  # A claims and runs it
    pid_file = cluster.root / "pids" / app
    await _until(pid_file.exists, 10, "the step holds on A")
    held = int(pid_file.read_text())
    await _execute(cluster.b, DELETE_APP, name=app)
    took = await _until(lambda: not alive(held), 2, "A kills the step's process group")
    assert took < 2
    deletes = cluster.root / "deletes"
    await _until(lambda: deletes.exists() and app in deletes.read_text().split(), 10, "the delete workflow")
    deadline = time.monotonic() + 10
    while (found := (await _execute(cluster.b, RESOURCES, app=app))["resources"]) and found[0][
        "state"
    ] != "DELETED":
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------- providers

RELOAD = gql("mutation { reloadProviders { ok error providers { name } } }")
PROVIDERS = gql("query { providers { name } }")


async def test_a_provider_reload_on_a_reloads_b_too(cluster: Cluster) -> None:
    write_provider(
        cluster.providers,
        {"late": workflow_yaml("late", "- name: n\n  type: policy\n  config:\n    script: 'true'\n")},
        name="late-team",
        types={"late-thing": {"create": "late"}},
    )
    folder = cluster.providers / "late-team"

    async def names(server: Server) -> set[str]:
        return {p["name"] for p in (await _execute(server, PROVIDERS))["providers"]}

    try:
        assert "late-team" not in await names(cluster.b)
        reloaded = (await _execute(cluster.a, RELOAD))["reloadProviders"]
        assert reloaded["ok"] is True and "late-team" in {p["name"] for p in reloaded["providers"]}
        deadline = time.monotonic() + 5
        while "late-team" not in await names(cluster.b):
            assert time.monotonic() < deadline, "B kept its old catalog after A's reload"
            await asyncio.sleep(0.05)
    finally:
        shutil.rmtree(folder)
        await _execute(cluster.b, RELOAD)  # and back, on both
    deadline = time.monotonic() + 5
    while "late-team" in await names(cluster.a):
        assert time.monotonic() < deadline, "A kept the removed provider after B's reload"
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------- rate limit

CREATE_TOKEN = gql('mutation { createToken(team: "rate-team", description: "spread") { token } }')


async def test_the_rate_limit_holds_for_the_whole_system(cluster: Cluster) -> None:
    token = (await _execute(cluster.a, CREATE_TOKEN))["createToken"]["token"]
    limited = [cluster.start(f"limited-{i}", INNOMINATUS_RATE_LIMIT="4/60") for i in range(2)]
    try:
        answers = []
        for i in range(6):  # spread over two replicas: each alone would allow 4
            try:
                async with http_client(limited[i % 2], token=token) as session:
                    await session.execute(
                        GraphQLRequest(SUBMIT, variable_values={"spec": _spec(f"rate-{i}")})
                    )
                answers.append("OK")
            except TransportQueryError as exc:
                answers.append((exc.errors or [{}])[0].get("extensions", {}).get("code"))
    finally:
        for server in limited:
            stop_server(server)
    assert answers == ["OK"] * 4 + ["RATE_LIMITED"] * 2


# ---------------------------------------------------------------------------- promise 6: cut off


class Partition:
    """A TCP relay to PostgreSQL that can be cut the way a network partition cuts: bytes stop flowing
    both ways, nothing is closed or refused; and healed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self.flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


async def test_a_replica_cut_off_from_the_database_stops_its_runs(cluster: Cluster) -> None:
    app = "cut-off"
    partition = Partition(5432)
    port = await partition.start()
    url = cluster.url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{port}/", 1)
    assert url != cluster.url
    c = start_server(
        cluster.root / "c-cut",
        database_url=url,
        args=["--providers-dir", str(cluster.providers)],
        env={"INNOMINATUS_LEASE_SECONDS": str(LEASE)},
    )
    try:
        await asyncio.to_thread(wait_ready, c)
        await _execute(c, SUBMIT, spec=_spec(app, "rep-hold"))
        pid_file = cluster.root / "pids" / app
        await _until(pid_file.exists, 10, "the step holds on C")
        held = int(pid_file.read_text())
        partition.flowing.clear()
        # C cannot renew: within a lease (and one renewal period) it stops the run and kills the step.
        took = await _until(lambda: not alive(held), LEASE * 2 + 3, "C stops the run it cannot renew")
        assert took <= LEASE  # before its lease could run out: nobody else resumes a run it still runs
        final = await _resource(cluster.a, app, {"ACTIVE"}, timeout=LEASE + 10)  # taken over
        [workflow] = (await _execute(cluster.a, WORKFLOWS, app=app))["workflows"]
        assert workflow["steps"][0]["attempts"] == 2
        transitions = [(t["fromState"], t["toState"]) for t in final["transitions"]]
        assert transitions == [(None, "REQUESTED"), ("REQUESTED", "PROVISIONING"), ("PROVISIONING", "ACTIVE")]
        partition.flowing.set()
    finally:
        partition.flowing.set()
        await asyncio.to_thread(stop_server, c)
        await partition.close()


# ------------------------------------------------------------------ the listening connection drops


async def test_a_replica_whose_listening_connection_dropped_catches_up(cluster: Cluster) -> None:
    app = "relisten"
    on_b: list[tuple[float, dict[str, Any]]] = []
    conn = await asyncpg.connect(cluster.url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        async with _collect(cluster.b, STATE_CHANGED, on_b, app=app):
            # Every replica's LISTEN connection is cut (as a restarted PgBouncer or a failover would);
            # work done meanwhile must still reach B's subscriber once B has listened again.
            cut = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'innominatus-listen' AND datname = current_database()"
            )
            assert cut >= 2
            await _execute(cluster.a, SUBMIT, spec=_spec(app))
            await _until(lambda: len(on_b) >= 3, 15, "B hears of A's work after listening again")
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'innominatus-listen' AND datname = current_database()"
            )
            assert listening >= 2
    finally:
        await conn.close()
    events = [e["resourceStateChanged"] for _, e in on_b]
    assert [e["toState"] for e in events] == ["REQUESTED", "PROVISIONING", "ACTIVE"]
