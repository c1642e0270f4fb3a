"""Submit-to-ACTIVE latency and throughput of the engine, on SQLite and PostgreSQL.

Submits N specs (one `bench-db` resource each) whose create workflow is a single `policy` step running
`true`, against a real Engine and a fresh database, and measures per resource the time from just before
`specs.submit` is called to the moment the ACTIVE event is published on the store's hub.

    python bench/submit_to_active.py [--n 100] [--backend sqlite|postgresql|both] [--concurrency 16]

Prints exactly one JSON line on stdout; progress goes to stderr. Never run by the test suite.
Env: INNOMINATUS_BENCH_POSTGRES_URL (admin URL, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from innominatus import specs
from innominatus.db import database
from innominatus.engine import Engine
from innominatus.events import EventHub, StateEvent
from innominatus.providers import Catalog, load_catalog
from innominatus.store import Store

PG_ADMIN_URL = os.environ.get(
    "INNOMINATUS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RESOURCE_TYPE = "bench-db"
WAIT_TIMEOUT = 120.0  # seconds for one phase before the run is declared stuck

PROVIDER_YAML = f"""\
apiVersion: v1
kind: Provider
metadata:
  name: bench-team
  version: 1.0.0
  category: test
capabilities:
  resourceTypeCapabilities:
    - type: {RESOURCE_TYPE}
      operations:
        create:
          workflow: provision-bench
workflows:
  - name: provision-bench
    file: ./workflows/provision-bench.yaml
    operation: create
"""

WORKFLOW_YAML = """\
apiVersion: innominatus.io/v1alpha1
kind: Workflow
metadata:
  name: provision-bench
steps:
  - name: noop
    type: policy
    config:
      script: 'true'
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def spec_for(app: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\n"
        "containers:\n  main:\n    image: nginx\n"
        f"resources:\n  database:\n    type: {RESOURCE_TYPE}\n"
    )


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def make_catalog(root: Path) -> Catalog:
    folder = root / "providers" / "bench-team"
    (folder / "workflows").mkdir(parents=True)
    (folder / "provider.yaml").write_text(PROVIDER_YAML)
    (folder / "workflows" / "provision-bench.yaml").write_text(WORKFLOW_YAML)
    return load_catalog(root / "providers", None)


# ------------------------------------------------------------------------------------ bash baseline


async def bash_true_p50_ms(samples: int = 50) -> float:
    """The bare cost of `bash -c true` through asyncio's subprocess machinery."""
    times: list[float] = []
    for _ in range(samples + 5):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            "true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await proc.communicate()
        times.append(time.perf_counter() - t0)
    return ms(statistics.median(times[5:]))  # the first few warm up the child watcher and page cache


# ------------------------------------------------------------------------------------- measurement


class ActiveWatcher:
    """A hub listener: the perf_counter at which each resource's ACTIVE (or FAILED) event is published."""

    def __init__(self) -> None:
        self.done_at: dict[str, float] = {}
        self.failed: dict[str, str | None] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}

    def __call__(self, event: StateEvent) -> None:
        if event.to_state == "ACTIVE":
            now = time.perf_counter()
            self.done_at[event.resource_id] = now
            waiter = self._waiters.pop(event.resource_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(now)
        elif event.to_state == "FAILED":
            self.failed[event.resource_id] = event.reason
            waiter = self._waiters.pop(event.resource_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(RuntimeError(f"resource {event.resource_id} FAILED: {event.reason}"))

    async def wait(self, resource_id: str) -> float:
        if resource_id in self.done_at:
            return self.done_at[resource_id]
        if resource_id in self.failed:
            raise RuntimeError(f"resource {resource_id} FAILED: {self.failed[resource_id]}")
        waiter = self._waiters.setdefault(resource_id, asyncio.get_running_loop().create_future())
        return await waiter


async def submit_one(store: Store, catalog: Catalog, watcher: ActiveWatcher, app: str) -> float:
    """Seconds from just before `specs.submit` to the publication of the resource's ACTIVE event."""
    t0 = time.perf_counter()
    result = await specs.submit(store, catalog, spec_for(app))
    [resource] = result.resources
    done = await watcher.wait(resource.id)
    return done - t0


async def sequential(store: Store, catalog: Catalog, watcher: ActiveWatcher, n: int) -> dict[str, float]:
    latencies: list[float] = []
    for i in range(n):
        latencies.append(await submit_one(store, catalog, watcher, f"bench-{i}"))
    return {
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies)),
    }


async def concurrent(store: Store, catalog: Catalog, watcher: ActiveWatcher, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    latencies = await asyncio.gather(*(submit_one(store, catalog, watcher, f"bench-{i}") for i in range(n)))
    total = time.perf_counter() - t0
    return {
        "total_s": round(total, 3),
        "per_s": round(n / total, 1),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
    }


async def run_phase(
    name: str, url: str, catalog: Catalog, n: int, concurrency: int, measure: Callable[..., Awaitable[Any]]
) -> dict[str, float]:
    """A fresh store and engine per phase, on a database emptied beforehand by the caller."""
    engine = database.create_engine(url)
    store = Store(engine, EventHub())
    watcher = ActiveWatcher()
    store.hub.add_listener(watcher)
    orchestrator = Engine(store, catalog, concurrency=concurrency)
    await orchestrator.start()
    try:
        # warm the pool, the catalog and the subprocess machinery outside the measurement
        await submit_one(store, catalog, watcher, f"warmup-{name}")
        async with asyncio.timeout(WAIT_TIMEOUT):
            return await measure(store, catalog, watcher, n)
    finally:
        await orchestrator.stop()
        await store.close()


async def bench_backend(url: str, catalog: Catalog, n: int, concurrency: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for phase, measure in (("sequential", sequential), ("concurrent", concurrent)):
        engine = database.create_engine(url)
        await database.upgrade(engine)
        await truncate(engine)
        await engine.dispose()
        log(f"{url.split('://', 1)[0]}: {phase} ({n} specs, concurrency {concurrency})")
        results[phase] = await run_phase(phase, url, catalog, n, concurrency, measure)
        log(f"  {results[phase]}")
    return results


async def truncate(engine: Any) -> None:
    """Each phase starts with no applications, so bench-0..bench-N are first submissions again."""
    tables = (
        "events, resource_transitions, workflow_steps, workflow_executions, resources, "
        "application_revisions, applications"
    )
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        else:  # children first (foreign keys are on)
            for table in tables.split(", "):
                await conn.exec_driver_sql("DELETE FROM " + table)  # noqa: S608 - fixed table names


# ---------------------------------------------------------------------------------------- backends


async def bench_sqlite(tmp: Path, catalog: Catalog, n: int, concurrency: int) -> dict[str, Any]:
    return await bench_backend(f"sqlite+aiosqlite:///{tmp / 'bench.db'}", catalog, n, concurrency)


async def bench_postgresql(catalog: Catalog, n: int, concurrency: int) -> dict[str, Any]:
    name = f"innominatus_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except Exception as exc:
        return {"error": f"PostgreSQL unreachable at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"}
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        await admin.close()
        return {"error": f"cannot create database {name}: {type(exc).__name__}: {exc}"}
    await admin.close()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        return await bench_backend(url, catalog, n, concurrency)
    except Exception as exc:
        logging.getLogger("bench").exception("PostgreSQL run failed")
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        try:
            admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
        except Exception as exc:
            log(f"could not drop database {name}: {type(exc).__name__}: {exc}")


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="specs per mode (default 100)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--concurrency", type=int, default=16, help="engine concurrency (default 16)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")

    report: dict[str, Any] = {
        "benchmark": "submit_to_active",
        "n": args.n,
        "concurrency": args.concurrency,
    }
    log("measuring bash -c true")
    report["bash_true_p50_ms"] = await bash_true_p50_ms()
    with tempfile.TemporaryDirectory(prefix="innominatus-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        catalog = make_catalog(tmp)
        if args.backend in ("sqlite", "both"):
            report["sqlite"] = await bench_sqlite(tmp, catalog, args.n, args.concurrency)
        if args.backend in ("postgresql", "both"):
            report["postgresql"] = await bench_postgresql(catalog, args.n, args.concurrency)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(asyncio.run(main())), flush=True)
