"""Issue 12: the throughput figure with two replicas on one PostgreSQL database, next to one replica, in
the same run.

Both measure figure 2's workload (`--n` one-step specs from `--clients` concurrent clients, ACTIVE seen
on one subscription): once against one replica, once with the clients alternating between two replicas
of a second, fresh database while the subscription sits on the first replica (so every ACTIVE the second
replica produces must cross over). On this 2-core machine the replicas share the cores: the point is that
the second replica costs little, not that it doubles the rate. Target: two replicas reach at least 90% of
one replica's rate, with nothing failed or lost.

    python bench/replicas.py [--n 1000] [--clients 32] [--timeout 300]

Prints exactly one JSON line on stdout (progress on stderr); exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import log
from throughput import measure_throughput

TARGET_RATIO = 0.9


def measure(providers: Path, replicas: int, n: int, clients: int, timeout_s: float) -> dict[str, Any]:
    key = {"INNOMINATUS_SECRET_KEY": Fernet.generate_key().decode()}  # replicas share the key
    with harness.database("postgresql") as url, contextlib.ExitStack() as stack:
        servers = [stack.enter_context(harness.server(url, providers, env=key)) for _ in range(replicas)]
        log(f"{replicas} replica(s): {n} specs from {clients} clients ({', '.join(s.url for s in servers)})")
        result = asyncio.run(
            measure_throughput(servers[0], n, clients, f"rp{replicas}", timeout_s, submit_to=servers)
        )
        log(f"  {result}")
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="innominatus-bench-") as tmp:
        providers = harness.write_bench_provider(Path(tmp))
        one = measure(providers, 1, args.n, args.clients, args.timeout)
        two = measure(providers, 2, args.n, args.clients, args.timeout)
    ratio = round(two.get("per_s", 0.0) / one["per_s"], 3) if one.get("per_s") else 0.0
    clean = all(r.get("failed") == 0 and r.get("lost") == 0 for r in (one, two))
    ok = ratio >= TARGET_RATIO and clean
    report = {
        "benchmark": "replicas",
        "figure": "throughput with two replicas on one PostgreSQL database / with one, same run: ≥ 0.9",
        "n": args.n,
        "clients": args.clients,
        "one_replica": one,
        "two_replicas": two,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ok,
    }
    harness.emit(report, ok)


if __name__ == "__main__":
    main()
