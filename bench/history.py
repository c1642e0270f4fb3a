"""Figure 5: figures 1 and 2 with history in the database, against the same on an empty database.

Target: with 10,000 REQUESTED resources parked behind a FAILED dependency and 100,000 stored events,
figures 1 (latency p50) and 2 (throughput) stay within 20% of their values on an empty database:
seeded/empty latency p50 ≤ 1.2 and seeded/empty throughput ≥ 1/1.2, on every backend measured, with
nothing failed or lost.

Per backend, two fresh databases, each with its own server:
- seeded: first the history. The parked resources go through the real API: `--apps` specs, each with a
  `broken` resource of type `bench-fail` (its workflow runs `exit 1`, so it ends FAILED) and
  `--parked-per-app` `bench-db` resources whose params reference it (`host: ${resources.broken.host}`),
  so they stay REQUESTED. Then the server stops and `seed_events` tops the `events` table up to
  `--events` rows with SQL (application `history-filler`, which no benchmark subscribes to);
- then a fresh server on each database, both up, and `--rounds` turns each, the order alternating
  (empty first in even rounds): a turn is latency (bench/latency.py's measure_latency, sequential specs),
  then throughput (bench/throughput.py's measure_throughput, specs from `--clients` clients), with
  `--latency-n` and `--throughput-n` split among the rounds. A side's latency p50 and throughput are
  the means of its rounds'. The machine's speed drifts within minutes by more than the 20% measured, so
  the two sides take turns rather than one after the other.

The default sample sizes (100 latency specs, 500 throughput specs) are smaller than the single figures'
(100 and 1,000) to keep the run time reasonable; the report says which were used.

    python bench/history.py [--backend sqlite|postgresql|both] [--latency-n 100] [--throughput-n 500]
        [--rounds 2] [--clients 32] [--apps 100] [--parked-per-app 100] [--events 100000]
        [--latency-budget 45] [--throughput-timeout 90] [--seed-timeout 180]

Prints exactly one JSON line on stdout (progress on stderr); exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import BenchServer, StateCollector, graphql_post, log
from latency import measure_latency
from throughput import measure_throughput

MAX_RATIO = 1.2
FILLER_APP = "history-filler"
SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { resources { id name } } }"


def parked_spec(app: str, parked: int) -> str:
    """`broken` (bench-fail → FAILED) and `parked` bench-db resources whose params reference it."""
    lines = [
        "apiVersion: score.dev/v1b1",
        "metadata:",
        f"  name: {app}",
        "containers:",
        "  main:",
        "    image: nginx",
        "resources:",
        "  broken:",
        "    type: bench-fail",
    ]
    for i in range(parked):
        lines += [f"  p{i}:", "    type: bench-db", "    params:", '      host: "${resources.broken.host}"']
    return "\n".join(lines) + "\n"


async def requested_rows(database_url: str) -> tuple[int, int]:
    """(parked, not yet looked at) REQUESTED resources, read from the database itself."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE waiting_for IS NOT NULL), "
                        "count(*) FILTER (WHERE waiting_for IS NULL) FROM resources WHERE state = 'REQUESTED'"
                    )
                )
            ).one()
            return int(row[0]), int(row[1])
    finally:
        await engine.dispose()


async def seed_parked(
    srv: BenchServer, database_url: str, apps: int, parked: int, timeout_s: float, clients: int = 4
) -> dict[str, Any]:
    """Submit the parked specs and wait (at most `timeout_s` in all) until every `broken` is FAILED and
    the engine has parked every dependent (so the measurement does not include that work).

    FAILED is seen on a subscription and, as a cross-check every few seconds, through the
    `resources(state: FAILED)` query: `failed_missed_by_subscription` counts the `broken` resources the
    database has as FAILED but whose FAILED event the subscription never delivered.
    """
    collector = await StateCollector.open(srv)
    broken: list[str] = []
    t0 = time.perf_counter()
    deadline = t0 + timeout_s
    failed_in_db: set[str] = set()
    async with httpx.AsyncClient(headers=srv.headers, timeout=120.0) as client:

        async def failed_ids() -> set[str]:
            found: set[str] = set()
            after = None
            while True:  # lists come in pages
                data = await graphql_post(
                    client,
                    srv.graphql,
                    "query($a: ID) { resources(state: FAILED, first: 1000, after: $a) { id } }",
                    {"a": after},
                )
                found |= {r["id"] for r in data["resources"]}
                if len(data["resources"]) < 1000:
                    return found
                after = data["resources"][-1]["id"]

        try:
            queue = list(range(apps))

            async def client_loop() -> None:
                async with httpx.AsyncClient(headers=srv.headers, timeout=120.0) as own:
                    while queue:
                        i = queue.pop(0)
                        spec = parked_spec(f"parked-{i}", parked)
                        data = await graphql_post(own, srv.graphql, SUBMIT, {"spec": spec})
                        resources = data["submitSpec"]["resources"]
                        broken.extend(r["id"] for r in resources if r["name"] == "broken")

            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(client_loop() for _ in range(clients)))
            submitted_s = time.perf_counter() - t0
            log(f"  {apps} parked specs submitted in {submitted_s:.1f}s; waiting for every `broken` to fail")
            while time.perf_counter() < deadline:
                await collector.wait_all(broken, min(deadline, time.perf_counter() + 5))
                if all(rid in collector.failed_at for rid in broken):
                    break
                failed_in_db = await failed_ids()
                if failed_in_db.issuperset(broken):
                    break
                if collector.error is not None:
                    await asyncio.sleep(2)  # no events to wait for any more: poll gently
            failed_in_db = await failed_ids()
            not_failed = [rid for rid in broken if rid not in failed_in_db]
            if not_failed:
                raise RuntimeError(
                    f"{len(not_failed)} of {len(broken)} `broken` resources not FAILED within {timeout_s:g}s"
                )
            seen_s = time.perf_counter() - t0
            if not all(rid in collector.failed_at for rid in broken):  # a last chance for late events
                await collector.wait_all(broken, time.perf_counter() + 2)
        finally:
            await collector.close()
        while True:
            parked_rows, unparked = await requested_rows(database_url)
            if unparked == 0:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{unparked} REQUESTED resources still not parked after {timeout_s:g}s")
            await asyncio.sleep(0.5)
    missed = sum(1 for rid in broken if rid not in collector.failed_at)
    if missed:
        log(
            f"  the subscription never delivered FAILED for {missed} `broken` resource(s) the database has FAILED"
        )
    return {
        "parked_requested": parked_rows,
        "failed_dependencies": len(failed_in_db),
        "failed_missed_by_subscription": missed,
        "submit_s": round(submitted_s, 1),
        "seed_s": round(seen_s, 1),
    }


async def seed_events(database_url: str, count: int) -> int:
    """Top the `events` table up to `count` rows with plain SQL; returns how many rows were inserted.

    THE ONE PLACE THAT KNOWS THE `events` COLUMNS (src/innominatus/db/models.py, class Event); adapt it
    here when they change. Run it only while no server uses the database. Rows: application
    `history-filler` (no benchmark subscribes to it), team `history`, PROVISIONING → ACTIVE, a made-up
    resource id per row.
    Two layouts exist:
    - up to migration 0003: `sequence` is the autoincrement primary key (left to the database);
    - from migration 0004: `id` is the autoincrement primary key and `sequence` (the stream position,
      given after commit by the sequencer) a nullable unique column. Seeded rows are stored as already
      sequenced history, the way 0004 migrates old rows: id = sequence, continuing after the largest
      of both, and on PostgreSQL the `id` sequence is moved past them as 0004 does.
    """
    engine = create_async_engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    try:
        async with engine.begin() as conn:
            existing = (await conn.execute(text("SELECT count(*) FROM events"))).scalar_one()
            missing = max(0, count - existing)
            if missing == 0:
                return 0
            if postgres:
                columns = await conn.execute(
                    text("SELECT column_name FROM information_schema.columns WHERE table_name = 'events'")
                )
            else:
                columns = await conn.execute(text("SELECT name FROM pragma_table_info('events')"))
            positions = "id" in {row[0] for row in columns}  # the 0004 layout
            base = 0
            if positions:
                larger = "greatest" if postgres else "max"  # SQLite's two-argument max()
                query = f"SELECT {larger}(coalesce(max(id), 0), coalesce(max(sequence), 0)) FROM events"  # noqa: S608
                base = (await conn.execute(text(query))).scalar_one()
            head = "id, sequence, " if positions else ""
            values = ":base + i, :base + i, " if positions else ""
            # Rows 1..missing: a numbers series (generate_series on PostgreSQL, a recursive CTE on SQLite).
            if postgres:
                sql = f"""
                    INSERT INTO events ({head}resource_id, application_name, team, from_state, to_state, reason, at)
                    SELECT {values}'00000000-0000-4000-8000-' || lpad(i::text, 12, '0'), :app, 'history',
                           'PROVISIONING', 'ACTIVE', 'seeded history', now()
                    FROM generate_series(1, :missing) AS i
                """  # noqa: S608 - column lists are constants of this function
            else:
                sql = f"""
                    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :missing)
                    INSERT INTO events ({head}resource_id, application_name, team, from_state, to_state, reason, at)
                    SELECT {values}printf('00000000-0000-4000-8000-%012d', i), :app, 'history',
                           'PROVISIONING', 'ACTIVE', 'seeded history', :at
                    FROM n
                """  # noqa: S608 - column lists are constants of this function
            # SQLite keeps UTC datetimes as text in SQLAlchemy's format; PostgreSQL takes now().
            at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            await conn.execute(text(sql), {"missing": missing, "app": FILLER_APP, "base": base, "at": at})
            if positions and postgres:
                await conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('events', 'id'), coalesce(max(id), 0) + 1, false) "
                        "FROM events"
                    )
                )
    finally:
        await engine.dispose()
    # A system that grew this history has long been vacuumed and analysed: measure that state, not the
    # autovacuum pass a bulk insert triggers.
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))
    finally:
        await engine.dispose()
    return missing


async def measure_both(srv: BenchServer, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    latency = await measure_latency(srv, args.latency_n // args.rounds, f"lat{prefix}", args.latency_budget)
    log(f"    latency: {latency}")
    throughput = await measure_throughput(
        srv, args.throughput_n // args.rounds, args.clients, f"tp{prefix}", args.throughput_timeout
    )
    log(f"    throughput: {throughput}")
    return {"latency": latency, "throughput": throughput}


def combined(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds as one measurement: latency p50 and throughput are the means over the rounds
    (each round the same size), counts are summed; the rounds themselves are kept."""
    out: dict[str, Any] = {}
    for kind, figure in (("latency", "p50_ms"), ("throughput", "per_s")):
        parts = [r[kind] for r in rounds]
        values = [p.get(figure) for p in parts]
        merged: dict[str, Any] = {
            figure: round(sum(values) / len(values), 2) if all(v is not None for v in values) else None,
            "rounds": parts,
        }
        for count in ("failed", "lost", "skipped"):
            merged[count] = sum(p.get(count, 0) for p in parts)
        errors = [p["error"] for p in parts if "error" in p]
        if errors:
            merged["error"] = "; ".join(errors)
        out[kind] = merged
    return out


def clean(measured: dict[str, Any]) -> bool:
    return all(
        m.get("failed") == 0 and m.get("lost") == 0 and m.get("skipped", 0) == 0 and "error" not in m
        for m in (measured["latency"], measured["throughput"])
    )


def run_backend(backend: str, providers: Path, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with harness.database(backend) as empty_url, harness.database(backend) as url:
            with harness.server(url, providers) as srv:
                log(
                    f"{backend}: seeding {args.apps} × {args.parked_per_app} parked resources behind "
                    f"{args.apps} FAILED ones ({srv.url})"
                )
                seed = asyncio.run(seed_parked(srv, url, args.apps, args.parked_per_app, args.seed_timeout))
            t0 = time.perf_counter()
            inserted = asyncio.run(seed_events(url, args.events))
            seed["events_inserted"] = inserted
            seed["events_insert_s"] = round(time.perf_counter() - t0, 1)
            log(f"  {seed}")
            # Both servers stay up and take turns, round by round (the order alternating): this machine's
            # speed drifts by more than the 20% measured within minutes, so one side measured after the
            # other compared two moments more than two databases.
            rounds: dict[str, list[dict[str, Any]]] = {"empty": [], "seeded": []}
            with (
                harness.server(empty_url, providers) as empty_srv,
                harness.server(url, providers) as seeded_srv,
            ):
                for r in range(args.rounds):
                    turns = [("empty", empty_srv), ("seeded", seeded_srv)]
                    for side, srv in turns if r % 2 == 0 else reversed(turns):
                        log(f"{backend}: {side} database, round {r + 1} of {args.rounds} ({srv.url})")
                        rounds[side].append(asyncio.run(measure_both(srv, args, f"{r}")))
            result["empty"] = combined(rounds["empty"])
            result["seeded"] = {"history": seed, **combined(rounds["seeded"])}
    except Exception as exc:
        log(f"{backend}: failed: {exc!r}")
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    empty, seeded = result["empty"], result["seeded"]
    e_p50, s_p50 = empty["latency"].get("p50_ms"), seeded["latency"].get("p50_ms")
    e_rate, s_rate = empty["throughput"].get("per_s"), seeded["throughput"].get("per_s")
    result["latency_p50_ratio"] = round(s_p50 / e_p50, 3) if e_p50 and s_p50 else None
    result["throughput_ratio"] = round(s_rate / e_rate, 3) if e_rate else None
    history = seeded["history"]
    result["target_met"] = bool(
        result["latency_p50_ratio"] is not None
        and result["latency_p50_ratio"] <= MAX_RATIO
        and result["throughput_ratio"] is not None
        and result["throughput_ratio"] >= 1 / MAX_RATIO
        and clean(empty)
        and clean(seeded)
        and history["parked_requested"] >= args.apps * args.parked_per_app
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--latency-n", type=int, default=100, help="sequential specs for figure 1 (100)")
    parser.add_argument(
        "--throughput-n", type=int, default=500, help="specs for figure 2 (500; figure 2: 1000)"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients for figure 2 (32)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="turns each database takes, the samples split among them (2)"
    )
    parser.add_argument("--apps", type=int, default=100, help="specs with a FAILED `broken` resource (100)")
    parser.add_argument("--parked-per-app", type=int, default=100, help="REQUESTED resources per spec (100)")
    parser.add_argument("--events", type=int, default=100_000, help="rows in `events` after seeding (100000)")
    parser.add_argument(
        "--latency-budget",
        type=float,
        default=45.0,
        help="seconds per latency measurement; the rest is skipped (45)",
    )
    parser.add_argument(
        "--seed-timeout", type=float, default=180.0, help="seconds for the parked resources' seeding (180)"
    )
    parser.add_argument(
        "--throughput-timeout", type=float, default=90.0, help="seconds per throughput measurement (90)"
    )
    args = parser.parse_args(argv)
    if min(args.latency_n, args.throughput_n, args.clients, args.apps, args.parked_per_app, args.rounds) < 1:
        parser.error("sizes must be at least 1")
    if min(args.latency_n, args.throughput_n) < args.rounds:
        parser.error("--latency-n and --throughput-n must be at least --rounds")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]

    report: dict[str, Any] = {
        "benchmark": "history",
        "figure": "with 10,000 REQUESTED resources parked behind a FAILED dependency and 100,000 stored "
        "events, figures 1 and 2 stay within 20% of their empty-database values",
        "rounds": args.rounds,
        "latency_n": args.latency_n,
        "throughput_n": args.throughput_n,
        "clients": args.clients,
        "parked": args.apps * args.parked_per_app,
        "events": args.events,
        "latency_budget_s": args.latency_budget,
        "throughput_timeout_s": args.throughput_timeout,
        "seed_timeout_s": args.seed_timeout,
        "max_ratio": MAX_RATIO,
        "note": "latency_p50_ratio = seeded/empty p50 (≤ 1.2); throughput_ratio = seeded/empty resources/s "
        f"(≥ {1 / MAX_RATIO:.3f}); sample sizes are smaller than figures 1 and 2 use alone "
        "(--latency-n/--throughput-n)",
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="innominatus-bench-") as tmp:
        providers = harness.write_bench_provider(Path(tmp))
        for backend in backends:
            result = run_backend(backend, providers, args)
            result.setdefault("target_met", False)
            ok = ok and result["target_met"]
            report[backend] = result
            log(
                f"{backend}: latency p50 ratio {result.get('latency_p50_ratio')}, "
                f"throughput ratio {result.get('throughput_ratio')}"
            )
    harness.emit(report, ok)


if __name__ == "__main__":
    main()
