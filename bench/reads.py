"""Figure 4: requests/s of the `resources` query, ours (database) against stock Strawberry (memory).

Ours: a real `innominatus serve` on a fresh database gets one spec for `reads-app` with R (default 50)
`bench-db` resources; once all are ACTIVE, wrk loads `POST /graphql` with

    {"query": "query($app: String!) { resources(application: $app) { id name type state } }",
     "variables": {"app": "reads-app"}}

and `Authorization: Bearer <admin token>`. Baseline: bench/baselines/stock_reads.py, a stock Strawberry
app whose async resolver returns the same rows (fetched from our server once, passed in a JSON file)
from memory; no caches, no extensions, no auth (the header is sent and ignored). Both run on uvicorn
with one worker, http=auto (httptools), log-level info (access log to a file); the baseline on
loop=auto (uvloop), ours on the asyncio loop that `innominatus serve` chooses.

The same wrk command (Lua script: method, body, headers; every response is checked for `"errors"` and
for the expected body length) loads each server; rounds alternate the order (ours first in even rounds,
the baseline first in odd ones) after a warm-up of each. Target: mean req/s of ours ≥ 1.5 × the
baseline's, with no socket errors, non-2xx answers, GraphQL errors or unexpected bodies.

    python bench/reads.py [--backend sqlite|postgresql|both] [--rows 50] [--threads 2]
                          [--connections 32] [--duration 10] [--warmup 2] [--rounds 2]

Prints exactly one JSON line on stdout (exit 0 when the target is met, else 1); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from baselines import baseline_server, cpu_seconds, server_errors
from harness import (
    ADMIN_TOKEN,
    database,
    emit,
    log,
    server,
    spec_for,
    write_bench_provider,
)

APP = "reads-app"
QUERY = "query($app: String!) { resources(application: $app) { id name type state } }"
BODY = json.dumps({"query": QUERY, "variables": {"app": APP}})
SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }"
TARGET_RATIO = 1.5
ACTIVE_TIMEOUT = 120.0  # seconds for every resource to become ACTIVE

LUA = """\
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  expected = tonumber(args[1])
  responses = 0
  graphql_errors = 0
  mismatched = 0
end

function response(status, headers, body)
  responses = responses + 1
  if string.find(body, '"errors"', 1, true) then
    graphql_errors = graphql_errors + 1
  elseif #body ~= expected then
    mismatched = mismatched + 1
  end
end

function done(summary, latency, requests)
  local r, e, m = 0, 0, 0
  for _, t in ipairs(threads) do
    r = r + t:get("responses")
    e = e + t:get("graphql_errors")
    m = m + t:get("mismatched")
  end
  io.write(string.format(
    "BENCH_SUMMARY requests=%%d duration_us=%%d responses=%%d graphql_errors=%%d mismatched=%%d " ..
    "connect=%%d read=%%d write=%%d status=%%d timeout=%%d p50_us=%%d p90_us=%%d p99_us=%%d max_us=%%d\\n",
    summary.requests, summary.duration, r, e, m,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""


def graphql(url: str, query: str, variables: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json={"query": query, "variables": variables}, headers=headers, timeout=60)


def data_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if response.status_code != 200 or body.get("errors") or body.get("data") is None:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
    return body["data"]


def check_once(url: str, rows: int) -> tuple[bytes, list[dict[str, Any]]]:
    """POST the exact wrk body once: the raw answer and its rows (must be `rows`, no errors)."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    response = httpx.post(url, content=BODY, headers=headers, timeout=60)
    found = data_of(response)["resources"]
    if len(found) != rows:
        raise RuntimeError(f"{url} answered {len(found)} rows, expected {rows}")
    return response.content, found


def parse_wrk(stdout: str) -> dict[str, Any]:
    match = re.search(r"^Requests/sec:\s+([\d.]+)", stdout, re.M)
    summary = re.search(r"^BENCH_SUMMARY (.*)$", stdout, re.M)
    if match is None or summary is None:
        raise RuntimeError(f"cannot parse wrk output:\n{stdout[-2000:]}")
    fields = {k: int(v) for k, v in (kv.split("=") for kv in summary.group(1).split())}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", stdout)
    errors = (
        (fields["connect"] + fields["read"] + fields["write"] + fields["timeout"] + fields["status"])
        + fields["graphql_errors"]
        + fields["mismatched"]
    )
    return {
        "requests_per_s": float(match.group(1)),
        "requests": fields["requests"],
        "duration_s": round(fields["duration_us"] / 1e6, 2),
        "latency_p50_ms": round(fields["p50_us"] / 1000, 2),
        "latency_p90_ms": round(fields["p90_us"] / 1000, 2),
        "latency_p99_ms": round(fields["p99_us"] / 1000, 2),
        "latency_max_ms": round(fields["max_us"] / 1000, 2),
        "socket_errors": {k: fields[k] for k in ("connect", "read", "write", "timeout")},
        "non_2xx": int(non_2xx.group(1)) if non_2xx else fields["status"],
        "graphql_errors": fields["graphql_errors"],
        "unexpected_bodies": fields["mismatched"],
        "errors": errors,
    }


def run_wrk(url: str, script: Path, expected_len: int, args: argparse.Namespace, seconds: float) -> dict:
    cmd = [
        args.wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        str(expected_len),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"wrk exited with {result.returncode}: {result.stderr[-2000:]}")
    return parse_wrk(result.stdout)


def wait_active(url: str, rows: int) -> float:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    t0 = time.monotonic()
    while True:
        found = data_of(graphql(url, QUERY, {"app": APP}, headers))["resources"]
        states = [r["state"] for r in found]
        if len(found) == rows and all(s == "ACTIVE" for s in states):
            return time.monotonic() - t0
        if "FAILED" in states:
            raise RuntimeError(f"a resource FAILED: {found}")
        if time.monotonic() - t0 > ACTIVE_TIMEOUT:
            raise RuntimeError(f"not all ACTIVE after {ACTIVE_TIMEOUT}s: {sorted(set(states))}")
        time.sleep(0.2)


def load(name: str, target: tuple[str, int, int], script: Path, args: argparse.Namespace) -> dict[str, Any]:
    url, length, pid = target
    cpu0 = cpu_seconds(pid)
    result = run_wrk(url, script, length, args, args.duration)
    result["server_cpu_s"] = round(cpu_seconds(pid) - cpu0, 2)
    return result


def bench_backend(
    backend: str, tmp: Path, providers: Path, args: argparse.Namespace, report: dict[str, Any]
) -> None:
    """Fills `report` as it goes, so whatever was measured (and the servers' errors) survives a failure."""
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
    with database(backend) as db_url, server(db_url, providers) as ours:
        try:
            log(f"{backend}: submitting {APP} with {args.rows} bench-db resources")
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            data_of(graphql(ours.graphql, SUBMIT, {"spec": spec_for(APP, args.rows)}, headers))
            report["active_after_s"] = round(wait_active(ours.graphql, args.rows), 2)
            ours_body, rows = check_once(ours.graphql, args.rows)
            rows_file = tmp / f"rows-{backend}.json"
            rows_file.write_text(json.dumps({APP: rows}))
            script = tmp / "resources.lua"
            script.write_text(LUA % {"body": BODY, "token": ADMIN_TOKEN})
            with baseline_server("stock_reads.py", "--rows", str(rows_file), "--log-level", "info") as base:
                try:
                    base_body, base_rows = check_once(base.graphql, args.rows)
                    if base_rows != rows:
                        raise RuntimeError("the baseline's rows differ from ours")
                    report["body_bytes"] = {"ours": len(ours_body), "baseline": len(base_body)}
                    report["bodies_identical"] = ours_body == base_body
                    targets = {
                        "ours": (ours.graphql, len(ours_body), ours.process.pid),
                        "baseline": (base.graphql, len(base_body), base.process.pid),
                    }
                    for name, (url, length, _) in targets.items():
                        log(f"{backend}: warm-up {name} ({args.warmup}s)")
                        run_wrk(url, script, length, args, args.warmup)
                    for i in range(args.rounds):
                        for name in ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours"):
                            result = load(name, targets[name], script, args)
                            runs[name].append(result)
                            log(
                                f"{backend}: round {i + 1} {name}: {result['requests_per_s']} req/s, "
                                f"p50 {result['latency_p50_ms']} ms, p99 {result['latency_p99_ms']} ms, "
                                f"errors {result['errors']}"
                            )
                finally:
                    time.sleep(1)  # requests wrk left in flight finish before the servers are stopped
                    report["baseline_server_errors"] = server_errors(base.log)
        finally:
            report["ours_server_errors"] = server_errors(ours.log)
            for name, results in runs.items():
                if results:
                    report[name] = {
                        "requests_per_s": round(sum(r["requests_per_s"] for r in results) / len(results), 1),
                        "errors": sum(r["errors"] for r in results),
                        "rounds": results,
                    }
    report["ratio"] = round(report["ours"]["requests_per_s"] / report["baseline"]["requests_per_s"], 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="postgresql")
    parser.add_argument("--rows", type=int, default=50, help="resources in reads-app (default 50)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per server (default 2)")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="the wrk binary")
    args = parser.parse_args(argv)
    if args.rows < 2 or args.rounds < 1 or args.connections < args.threads:
        parser.error("--rows ≥ 2, --rounds ≥ 1 and --connections ≥ --threads")
    args.duration, args.warmup = max(1, round(args.duration)), max(1, round(args.warmup))

    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    report: dict[str, Any] = {
        "benchmark": "reads",
        "rows": args.rows,
        "query": QUERY,
        "wrk": f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --timeout 10s -s <lua>",
        "order": f"warm-up {args.warmup}s each, then {args.rounds} rounds alternating (ours first in even "
        "rounds); both servers up, one loaded at a time",
        "servers": "uvicorn, 1 worker, http=auto (httptools), log-level info; baseline loop=auto (uvloop), ours loop=asyncio (its choice); "
        "access log to a file",
        "target": f"ours req/s >= {TARGET_RATIO} x baseline req/s, no errors",
    }
    ok = False
    try:
        with tempfile.TemporaryDirectory(prefix="innominatus-bench-reads-") as tmp_dir:
            tmp = Path(tmp_dir)
            providers = write_bench_provider(tmp)
            for backend in backends:
                report[backend] = {}
                bench_backend(backend, tmp, providers, args, report[backend])
        ok = all(
            report[b]["ratio"] >= TARGET_RATIO and report[b]["ours"]["errors"] == 0 for b in backends
        ) and all(report[b]["baseline"]["errors"] == 0 for b in backends)
    except (Exception, KeyboardInterrupt) as exc:  # harness turns SIGTERM into KeyboardInterrupt
        log(f"failed: {type(exc).__name__}: {exc}")
        report["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        ok = False
    emit(report, ok)


if __name__ == "__main__":
    main()
