"""Figure 2: one-step resources submitted over GraphQL/HTTP by concurrent clients, ACTIVE on a subscription.

Target: 1,000 one-step resources (one per spec; the step runs `true`) submitted by 32 concurrent clients,
ACTIVE observed on ONE admin `resourceStateChanged` subscription, at ≥ 20% of the `bash -c true` spawn
rate (8 concurrent) measured in the same run, on PostgreSQL and on SQLite; failed or lost: none.

rate = resources ACTIVE / (time from the first submit to the last ACTIVE seen on the subscription); with
nothing failed or lost that is n / elapsed. Each client is its own keep-alive HTTP connection taking the
next spec until `--n` are submitted. A resource without ACTIVE or FAILED after `--timeout` seconds is
lost; a POST that fails counts as failed (`submit_errors`). Clients are `harness.LeanHttp` connections:
the load generator shares the two cores with the server, and httpx cost about 6 ms of CPU per POST.
`--workers N` runs the PostgreSQL server as `innominatus serve --workers N`.

    python bench/throughput.py [--n 1000] [--clients 32] [--backend sqlite|postgresql|both] [--timeout 300]
                               [--workers 1]

Prints exactly one JSON line on stdout (progress on stderr); exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import BenchServer, LeanHttp, StateCollector, graphql_post, log, percentile

TARGET_RATIO = 0.20
BASH_CONCURRENCY = 8
WARMUP = 3
WARMUP_WAIT_S = 30.0
SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { resources { id } } }"


async def measure_throughput(
    srv: BenchServer,
    n: int,
    clients: int,
    prefix: str,
    timeout_s: float = 300.0,
    submit_to: list[BenchServer] | None = None,
) -> dict[str, Any]:
    """Submit `n` one-resource specs (`{prefix}-{i}`) from `clients` concurrent connections; count ACTIVE.

    The subscription is on `srv`; clients submit to `submit_to` (default: `srv`), client k to server
    k mod len (replicas of one database: the subscription then sees every replica's work).

    Returns `per_s` (ACTIVE / (last ACTIVE − first submit)), `elapsed_s`, `submit_s` (all POSTs done),
    per-resource submit → ACTIVE p50/p99 ms, and `active`, `failed`, `lost`, `submit_errors`,
    `duplicate_active`. Everything is bounded by `timeout_s` from the first submit.
    """
    collector = await StateCollector.open(srv)
    submitted: dict[str, float] = {}  # resource id → perf_counter just before its POST
    submit_errors: list[str] = []
    try:
        targets = submit_to or [srv]
        async with httpx.AsyncClient(headers=srv.headers, timeout=WARMUP_WAIT_S) as client:
            # Warm-up on every server the clients submit to (a replica's first requests pay its one-time
            # costs), and proof that the subscription is live and sees each server's work.
            for t, target in enumerate(targets):
                for i in range(WARMUP):
                    spec = harness.spec_for(f"{prefix}-w{t}-{i}")
                    data = await graphql_post(client, target.graphql, SUBMIT, {"spec": spec})
                    await collector.wait(data["submitSpec"]["resources"][0]["id"], WARMUP_WAIT_S)

        next_index = 0
        t_first = time.perf_counter()
        deadline = t_first + timeout_s

        async def client_loop(k: int) -> None:
            nonlocal next_index
            target = targets[k % len(targets)]
            client = LeanHttp(target.graphql, srv.headers)
            try:
                while next_index < n and time.perf_counter() < deadline:
                    i = next_index
                    next_index += 1
                    t0 = time.perf_counter()
                    try:
                        async with asyncio.timeout(60.0):
                            data = await client.post(SUBMIT, {"spec": harness.spec_for(f"{prefix}-{i}")})
                        submitted[data["submitSpec"]["resources"][0]["id"]] = t0
                    except (
                        RuntimeError,
                        OSError,
                        TimeoutError,
                        asyncio.IncompleteReadError,
                        KeyError,
                    ) as exc:
                        submit_errors.append(f"{prefix}-{i}: {type(exc).__name__}: {exc}")
                        await client.close()  # a broken exchange leaves the connection unusable
            finally:
                await client.close()

        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(client_loop(k) for k in range(clients)))
        except TimeoutError:
            log(f"  submitting did not finish within {timeout_s}s")
        t_submitted = time.perf_counter()
        log(f"  {len(submitted)} submitted in {t_submitted - t_first:.1f}s; waiting for ACTIVE")
        await collector.wait_all(list(submitted), deadline)
    finally:
        await collector.close()

    active = [rid for rid in submitted if rid in collector.active_at]
    failed = sum(1 for rid in submitted if rid in collector.failed_at and rid not in collector.active_at)
    not_submitted = n - len(submitted) - len(submit_errors)  # the deadline passed before their POST
    lost = len(submitted) - len(active) - failed + not_submitted
    result: dict[str, Any] = {
        "n": n,
        "clients": clients,
        "active": len(active),
        "failed": failed + len(submit_errors),
        "lost": lost,
        "submit_errors": len(submit_errors),
        "duplicate_active": collector.duplicates,
        "resubscribed": collector.resubscribed,
        "submit_s": round(t_submitted - t_first, 3),
    }
    if active:
        t_last = max(collector.active_at[rid] for rid in active)
        latencies = [collector.active_at[rid] - submitted[rid] for rid in active]
        result.update(
            elapsed_s=round(t_last - t_first, 3),
            per_s=round(len(active) / (t_last - t_first), 1),
            p50_ms=round(percentile(latencies, 50) * 1000, 1),
            p99_ms=round(percentile(latencies, 99) * 1000, 1),
        )
    else:
        result["per_s"] = 0.0
    if collector.error is not None:
        result["subscription_error"] = repr(collector.error)
    if submit_errors:
        result["errors"] = submit_errors[:5]
    return result


def run_backend(
    backend: str, providers: Path, n: int, clients: int, timeout_s: float, workers: int = 1
) -> dict[str, Any]:
    workers = workers if backend == "postgresql" else 1  # SQLite serves one process
    try:
        with harness.database(backend) as url, harness.server(url, providers, workers=workers) as srv:
            log(
                f"{backend}: {n} specs from {clients} clients, ACTIVE on one subscription ({srv.url}, "
                f"{workers} server process{'es' if workers > 1 else ''})"
            )
            result = asyncio.run(measure_throughput(srv, n, clients, f"tp-{backend[:2]}", timeout_s))
            result["server_processes"] = workers
            log(f"  {result}")
            return result
    except Exception as exc:
        log(f"{backend}: failed: {exc!r}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="specs per backend (default 1000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients (default 32)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per backend before the rest is lost (300)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="PostgreSQL: `innominatus serve --workers N` (default 1; SQLite always runs one process)",
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.clients < 1 or args.workers < 1:
        parser.error("--n, --clients and --workers must be at least 1")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]

    def bash_rate() -> float:
        log(f"measuring bash -c true spawn rate ({BASH_CONCURRENCY} concurrent)")
        rate = asyncio.run(harness.bash_true_rate(BASH_CONCURRENCY))
        log(f"  {rate:.1f}/s")
        return rate

    report: dict[str, Any] = {
        "benchmark": "throughput",
        "figure": "resources/s submitted by concurrent clients, ACTIVE on one subscription: "
        "≥ 20% of the bash -c true spawn rate (8 concurrent); failed or lost: none",
        "n": args.n,
        "clients": args.clients,
        "target_ratio": TARGET_RATIO,
        "baseline": "bash -c true rate measured just before and just after each backend's run; "
        "the ratio is against their mean (this machine's speed drifts by half within minutes)",
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="innominatus-bench-") as tmp:
        providers = harness.write_bench_provider(Path(tmp))
        after = bash_rate()
        for backend in backends:
            before = after
            result = run_backend(backend, providers, args.n, args.clients, args.timeout, args.workers)
            after = bash_rate()
            baseline = (before + after) / 2
            result.update(
                bash_true_before_per_s=round(before, 1),
                bash_true_after_per_s=round(after, 1),
                bash_true_per_s=round(baseline, 1),
            )
            if "per_s" in result:
                result["ratio"] = round(result["per_s"] / baseline, 4)
            result["target_met"] = bool(
                result.get("ratio", 0) >= TARGET_RATIO
                and result.get("failed") == 0
                and result.get("lost") == 0
            )
            ok = ok and result["target_met"]
            report[backend] = result
    harness.emit(report, ok)


if __name__ == "__main__":
    main()
