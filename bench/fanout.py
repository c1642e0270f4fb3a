"""Figure 3: subscription fan-out spread, ours against stock Strawberry in the same run.

N websocket subscribers (default 1,000, each on its own connection, all in this process) subscribe to

    subscription { resourceStateChanged(application: "fanout-app") { sequence toState resource { name state } } }

First a stock Strawberry server (bench/baselines/stock_fanout.py: in-memory queues, no database, no auth,
no extensions) broadcasts E (default 10) ACTIVE events to them, in two rounds on the same connections:
`paced` (event k+1 is published once every subscriber got event k: the bare cost of one fan-out) and
`burst` (all E published at once), after one unmeasured warm-up event. Then, with the baseline stopped, a real `innominatus serve` on a fresh
database gets the same subscribers and ONE spec for `fanout-app` with E `bench-db` resources; each goes
REQUESTED → PROVISIONING → ACTIVE (3E events per subscriber) and the E ACTIVE events are measured.

For each event, spread = arrival − first arrival of that event among all subscribers (perf_counter when
the client's `next()` returns). Target: ours p99 spread ≤ 1.5 × the baseline's (the `--baseline-mode`
round, default paced) and every subscriber gets every ACTIVE event (waiting at most --timeout s), and
all 3E messages, none of them carrying GraphQL errors.

    python bench/fanout.py [--subscribers 1000] [--events 10] [--backend sqlite|postgresql|both]
                           [--connect-concurrency 50] [--timeout 120] [--baseline-mode paced|burst]

Prints exactly one JSON line on stdout (exit 0 when the target is met, else 1); progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import resource
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
from baselines import baseline_server, cpu_seconds, server_errors
from harness import (
    ADMIN_TOKEN,
    Subscription,
    database,
    emit,
    graphql_post,
    log,
    percentile,
    server,
    spec_for,
    subscribe,
    write_bench_provider,
)

APP = "fanout-app"
QUERY = (
    'subscription { resourceStateChanged(application: "fanout-app") '
    "{ sequence toState resource { name state } } }"
)
SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }"
PUBLISH = (
    "mutation($app: String!, $count: Int!, $first: Int!) "
    "{ publish(application: $app, count: $count, firstSequence: $first) }"
)
COUNT = "query($app: String!) { subscribers(application: $app) }"
TARGET_RATIO = 1.5
CONNECT_TIMEOUT = 180.0  # seconds for all subscribers to connect and be acked
PACED_EVENT_TIMEOUT = 30.0  # seconds for one paced baseline event to reach every subscriber


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# ------------------------------------------------------------------------------------------ client


class Recorder:
    """Arrivals of ACTIVE events, per subscriber; wakes waiters when every live subscriber has k of them."""

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.dead: dict[int, str] = {}  # subscriber -> why its stream ended
        self.reset()

    def reset(self) -> None:
        self.arrivals: list[tuple[int, int, float]] = []  # (sequence, subscriber, perf_counter)
        self.counts = [0] * self.subscribers
        self.reached: dict[int, int] = {}  # k -> subscribers with at least k ACTIVE events
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.messages = 0
        self.error_payloads = 0
        self.first_error: str | None = None

    def on_payload(self, idx: int, at: float, payload: dict[str, Any]) -> None:
        self.messages += 1
        data = payload.get("data")
        if payload.get("errors") or not data:
            self.error_payloads += 1
            if self.first_error is None:
                self.first_error = str(payload.get("errors"))[:500]
            return
        event = data["resourceStateChanged"]
        if event["toState"] != "ACTIVE":
            return
        self.arrivals.append((event["sequence"], idx, at))
        count = self.counts[idx] = self.counts[idx] + 1
        self.reached[count] = self.reached.get(count, 0) + 1
        self._check(count)

    def on_dead(self, idx: int, why: str) -> None:
        self.dead[idx] = why
        for k in list(self.waiters):
            self._check(k)

    def _check(self, k: int) -> None:
        waiter = self.waiters.get(k)
        if waiter is not None and not waiter.done():
            dead_below = sum(1 for i in self.dead if self.counts[i] < k)
            if self.reached.get(k, 0) + dead_below >= self.subscribers:
                waiter.set_result(None)

    async def wait_level(self, k: int, seconds: float) -> bool:
        """Until every subscriber that is still alive has k ACTIVE events; False on timeout."""
        waiter = self.waiters.setdefault(k, asyncio.get_running_loop().create_future())
        self._check(k)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), seconds)
        except TimeoutError:
            return False
        return True


async def reader(idx: int, sub: Subscription, rec: Recorder) -> None:
    try:
        while True:
            payload = await sub.next()
            rec.on_payload(idx, time.perf_counter(), payload)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        rec.on_dead(idx, f"{type(exc).__name__}: {exc}"[:300])


class Clients:
    """N subscribers, each on its own websocket, each with a reader task feeding one Recorder."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.subs: list[Subscription | None] = [None] * n
        self.tasks: list[asyncio.Task[None]] = []
        self.connect_errors: list[str] = []
        self.rec = Recorder(n)

    async def open(self, ws_url: str, token: str, concurrency: int) -> float:
        sem = asyncio.Semaphore(concurrency)

        async def one(idx: int) -> None:
            async with sem:
                try:
                    sub = await subscribe(ws_url, QUERY, None, token)
                except Exception as exc:
                    self.connect_errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    self.rec.on_dead(idx, "never connected")
                    return
            self.subs[idx] = sub
            self.tasks.append(asyncio.create_task(reader(idx, sub, self.rec)))

        t0 = time.perf_counter()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.gather(*(one(i) for i in range(self.n)))
        return time.perf_counter() - t0

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await asyncio.gather(*self.tasks, return_exceptions=True)
                await asyncio.gather(*(s.close() for s in self.subs if s is not None), return_exceptions=True)


def summarize(
    rec: Recorder, n: int, events: int, window: float, client_cpu: float, server_cpu: float
) -> dict:
    first: dict[int, float] = {}
    seen: set[tuple[int, int]] = set()
    unique: list[tuple[int, float]] = []
    duplicates = 0
    for sequence, idx, at in rec.arrivals:
        if (sequence, idx) in seen:
            duplicates += 1
            continue
        seen.add((sequence, idx))
        unique.append((sequence, at))
        if at < first.get(sequence, math.inf):
            first[sequence] = at
    spreads = [at - first[sequence] for sequence, at in unique]
    per_event_max: dict[int, float] = {}
    for sequence, at in unique:
        per_event_max[sequence] = max(per_event_max.get(sequence, 0.0), at - first[sequence])
    expected = n * events
    out: dict[str, Any] = {
        "expected": expected,
        "received": len(unique),
        "missing": expected - len(unique),
        "distinct_events": len(first),
        "duplicates": duplicates,
        "subscribers_complete": sum(1 for c in rec.counts if c >= events),
        "subscribers_dead": len(rec.dead),
        "messages": rec.messages,
        "error_payloads": rec.error_payloads,
        "window_s": round(window, 3),
        "client_cpu_s": round(client_cpu, 3),
        "client_cpu_fraction": round(client_cpu / window, 2) if window > 0 else None,
        "server_cpu_s": round(server_cpu, 3),
    }
    if spreads:
        out.update(
            spread_p50_ms=ms(percentile(spreads, 50)),
            spread_p99_ms=ms(percentile(spreads, 99)),
            spread_max_ms=ms(max(spreads)),
            per_event_max_spread_ms=[ms(per_event_max[s]) for s in sorted(per_event_max)],
        )
    if rec.first_error:
        out["first_error_payload"] = rec.first_error
    if rec.dead:
        out["first_dead_reason"] = next(iter(rec.dead.values()))
    return out


def settle_note(clients: Clients) -> dict[str, Any]:
    return {
        "connected": sum(1 for s in clients.subs if s is not None),
        "connect_errors": len(clients.connect_errors),
        **({"first_connect_error": clients.connect_errors[0]} if clients.connect_errors else {}),
    }


# -------------------------------------------------------------------------------------- the phases


async def measure_baseline(
    url: str, ws_url: str, pid: int, args: argparse.Namespace, report: dict[str, Any]
) -> None:
    clients = Clients(args.subscribers)
    try:
        log(f"baseline: connecting {args.subscribers} subscribers")
        report["connect_s"] = round(await clients.open(ws_url, "none", args.connect_concurrency), 2)
        report.update(settle_note(clients))
        async with httpx.AsyncClient(timeout=60) as http:
            deadline = time.monotonic() + 60
            while True:  # every subscription is registered in the publisher
                data = await graphql_post(http, url, COUNT, {"app": APP})
                if data["subscribers"] >= report["connected"] or time.monotonic() > deadline:
                    report["registered"] = data["subscribers"]
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.settle)
            n, events = args.subscribers, args.events

            # warm-up: one event (sequence 1000) through every subscriber, not measured
            clients.rec.reset()
            await graphql_post(http, url, PUBLISH, {"app": APP, "count": 1, "first": 1000})
            if not await clients.rec.wait_level(1, PACED_EVENT_TIMEOUT):
                log("baseline: the warm-up event did not reach everyone")
            await asyncio.sleep(args.settle)

            # paced: one event at a time, the next once every subscriber got the previous one
            log(f"baseline: paced, {events} events, each after the previous reached everyone")
            clients.rec.reset()
            cpu0, scpu0, t0 = time.process_time(), cpu_seconds(pid), time.perf_counter()
            for k in range(1, events + 1):
                await graphql_post(http, url, PUBLISH, {"app": APP, "count": 1, "first": k})
                if not await clients.rec.wait_level(k, PACED_EVENT_TIMEOUT):
                    log(f"baseline: paced event {k} did not reach everyone in {PACED_EVENT_TIMEOUT}s")
            window = time.perf_counter() - t0
            report["paced"] = summarize(
                clients.rec, n, events, window, time.process_time() - cpu0, cpu_seconds(pid) - scpu0
            )
            log(f"baseline paced: {short(report['paced'])}")
            await asyncio.sleep(args.settle)

            # burst: all events published at once
            log(f"baseline: burst, {events} events at once")
            clients.rec.reset()
            cpu0, scpu0, t0 = time.process_time(), cpu_seconds(pid), time.perf_counter()
            await graphql_post(http, url, PUBLISH, {"app": APP, "count": events, "first": events + 1})
            if not await clients.rec.wait_level(events, args.timeout):
                log(f"baseline: burst not complete after {args.timeout}s")
            window = time.perf_counter() - t0
            report["burst"] = summarize(
                clients.rec, n, events, window, time.process_time() - cpu0, cpu_seconds(pid) - scpu0
            )
            log(f"baseline burst: {short(report['burst'])}")
    finally:
        await clients.close()


async def measure_ours(
    url: str, ws_url: str, pid: int, args: argparse.Namespace, report: dict[str, Any]
) -> None:
    clients = Clients(args.subscribers)
    try:
        log(f"ours: connecting {args.subscribers} subscribers")
        report["connect_s"] = round(await clients.open(ws_url, ADMIN_TOKEN, args.connect_concurrency), 2)
        report.update(settle_note(clients))
        # No subscriber count is exposed: give the subscription tasks time to register with the hub.
        await asyncio.sleep(args.settle)
        async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            log(f"ours: submitting {APP} with {args.events} bench-db resources")
            clients.rec.reset()
            cpu0, scpu0, t0 = time.process_time(), cpu_seconds(pid), time.perf_counter()
            await graphql_post(http, url, SUBMIT, {"spec": spec_for(APP, args.events)})
            report["submit_ms"] = ms(time.perf_counter() - t0)
            complete = await clients.rec.wait_level(args.events, args.timeout)
            window = time.perf_counter() - t0
            if not complete:
                log(f"ours: not every subscriber got {args.events} ACTIVE events after {args.timeout}s")
            report["complete_before_timeout"] = complete
            report.update(
                summarize(
                    clients.rec,
                    args.subscribers,
                    args.events,
                    window,
                    time.process_time() - cpu0,
                    cpu_seconds(pid) - scpu0,
                )
            )
            report["messages_expected"] = 3 * args.events * args.subscribers
            states = await graphql_post(
                http, url, "query($a: String!) { resources(application: $a) { state } }", {"a": APP}
            )
            report["resource_states"] = sorted({r["state"] for r in states["resources"]})
            log(f"ours: {short(report)}")
    finally:
        await clients.close()


def short(r: dict[str, Any]) -> str:
    keys = ("received", "missing", "spread_p50_ms", "spread_p99_ms", "spread_max_ms", "window_s")
    return ", ".join(f"{k}={r.get(k)}" for k in keys)


def run(coro: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)


def raise_nofile(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="websocket subscribers (default 1000)")
    parser.add_argument("--events", type=int, default=10, help="ACTIVE events = resources (default 10)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="postgresql")
    parser.add_argument("--connect-concurrency", type=int, default=50, help="connections opened at once")
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds to wait for every event (default 120)"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds between subscribing and publishing (default 2)"
    )
    parser.add_argument(
        "--baseline-mode",
        choices=("paced", "burst"),
        default="paced",
        help="the baseline round the target compares with (both are measured; default paced)",
    )
    parser.add_argument(
        "--client-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of the subscribers in this process (default uvloop)",
    )
    args = parser.parse_args(argv)
    if args.subscribers < 1 or args.events < 2:
        parser.error("--subscribers must be ≥ 1 and --events ≥ 2 (spec_for names one resource 'database')")

    nofile = raise_nofile(args.subscribers * 2 + 256)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    report: dict[str, Any] = {
        "benchmark": "fanout",
        "subscribers": args.subscribers,
        "events": args.events,
        "query": QUERY,
        "order": "baseline first (one unmeasured warm-up event, then the paced round, then the burst "
        "round, on the same connections), then ours per backend; only one server runs at a time",
        "baseline_mode": args.baseline_mode,
        "client": f"one process, {args.client_loop} loop, websockets asyncio client, one connection per "
        f"subscriber, connect concurrency {args.connect_concurrency}, RLIMIT_NOFILE {nofile[0]}",
        "servers": "uvicorn, 1 worker, http=auto (httptools), ws=websockets-sansio; baseline loop=auto (uvloop), ours loop=asyncio (its choice); "
        "log-level info (access log to a file)",
        "target": f"ours spread_p99 <= {TARGET_RATIO} x baseline {args.baseline_mode} spread_p99; every "
        "subscriber gets every ACTIVE event, and all 3 x events messages, none carrying errors",
    }
    ok = False
    try:
        with baseline_server("stock_fanout.py", "--log-level", "info") as base:
            report["baseline"] = {}
            try:
                run(
                    measure_baseline(
                        base.graphql, base.websocket, base.process.pid, args, report["baseline"]
                    ),
                    args.client_loop,
                )
            finally:
                report["baseline"]["server_errors"] = server_errors(base.log)
        with tempfile.TemporaryDirectory(prefix="innominatus-bench-fanout-") as tmp:
            providers = write_bench_provider(Path(tmp))
            for backend in backends:
                log(f"ours: {backend}")
                with database(backend) as url, server(url, providers) as srv:
                    report[backend] = {}
                    try:
                        run(
                            measure_ours(srv.graphql, srv.websocket, srv.process.pid, args, report[backend]),
                            args.client_loop,
                        )
                    finally:
                        report[backend]["server_errors"] = server_errors(srv.log)
        base_round = report["baseline"][args.baseline_mode]
        base_p99 = base_round.get("spread_p99_ms")
        ok = bool(base_p99) and base_round["missing"] == 0
        for backend in backends:
            ours = report[backend]
            p99 = ours.get("spread_p99_ms")
            if p99 is None or not base_p99:
                ours["ratio_p99"] = None
                ok = False
                continue
            ours["ratio_p99"] = round(p99 / base_p99, 2)
            other = report["baseline"]["burst" if args.baseline_mode == "paced" else "paced"]
            if other.get("spread_p99_ms"):
                ours["ratio_p99_vs_other_baseline_mode"] = round(p99 / other["spread_p99_ms"], 2)
            ok = (
                ok
                and ours["ratio_p99"] <= TARGET_RATIO
                and ours["missing"] == 0
                and ours["error_payloads"] == 0
                and ours["messages"] == ours["messages_expected"]
            )
    except (Exception, KeyboardInterrupt) as exc:  # harness turns SIGTERM into KeyboardInterrupt
        log(f"failed: {type(exc).__name__}: {exc}")
        report["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        ok = False
    emit(report, ok)


if __name__ == "__main__":
    main()
