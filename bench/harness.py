"""Shared helpers for the end-to-end benchmarks: databases, a real `innominatus serve`, GraphQL clients.

Every benchmark script in this folder starts real server processes through `server()` on a fresh database
from `database()`, talks to them over GraphQL/HTTP and graphql-transport-ws websockets, prints exactly
one JSON line through `emit()` and exits non-zero when its target is missed. Progress goes to stderr.

Env: INNOMINATUS_BENCH_POSTGRES_URL (admin URL, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import httpx
from cryptography.fernet import Fernet
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "INNOMINATUS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
RATE_LIMIT = "1000000/60"  # benchmarks must never be rate limited
READY_TIMEOUT = 60.0  # seconds for a server to answer GET /ready (migrations included)
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before the server is killed
WS_OPEN_TIMEOUT = 30.0  # seconds for the websocket handshake plus connection_ack

__all__ = [
    "ADMIN_TOKEN",
    "PG_ADMIN_URL",
    "REPO",
    "BenchServer",
    "LeanHttp",
    "StateCollector",
    "Subscription",
    "bash_true_rate",
    "database",
    "emit",
    "graphql_post",
    "log",
    "percentile",
    "server",
    "spec_for",
    "subscribe",
    "write_bench_provider",
]


def _sigterm_raises(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# `timeout` and CI runners stop a benchmark with SIGTERM: turn it into an exception so every `finally`
# (servers, databases) still runs instead of leaving them behind.
if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _sigterm_raises)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def emit(report: dict[str, Any], ok: bool) -> NoReturn:
    """Exactly one JSON line on stdout; exit 0 when the target is met, else 1."""
    print(json.dumps({**report, "target_met": ok}), flush=True)
    sys.exit(0 if ok else 1)


# --------------------------------------------------------------------------------------- providers

PROVIDER_YAML = """\
apiVersion: v1
kind: Provider
metadata:
  name: bench-team
  version: 1.0.0
  category: test
capabilities:
  resourceTypeCapabilities:
    - type: bench-db
      operations:
        create:
          workflow: provision-bench
    - type: bench-fail
      operations:
        create:
          workflow: provision-bench-fail
workflows:
  - name: provision-bench
    file: ./workflows/provision-bench.yaml
    operation: create
  - name: provision-bench-fail
    file: ./workflows/provision-bench-fail.yaml
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

FAIL_WORKFLOW_YAML = """\
apiVersion: innominatus.io/v1alpha1
kind: Workflow
metadata:
  name: provision-bench-fail
steps:
  - name: fail
    type: policy
    config:
      script: 'exit 1'
"""


def write_bench_provider(root: Path) -> Path:
    """A providers dir: `bench-team` claims `bench-db` (one `true` step) and `bench-fail` (`exit 1`)."""
    providers = root / "providers"
    folder = providers / "bench-team"
    (folder / "workflows").mkdir(parents=True, exist_ok=True)
    (folder / "provider.yaml").write_text(PROVIDER_YAML)
    (folder / "workflows" / "provision-bench.yaml").write_text(WORKFLOW_YAML)
    (folder / "workflows" / "provision-bench-fail.yaml").write_text(FAIL_WORKFLOW_YAML)
    return providers


def spec_for(app: str, resources: int = 1, type: str = "bench-db") -> str:
    """A Score spec with `resources` resources of `type`: `database` alone, else `r0`..`r{n-1}`."""
    names = ["database"] if resources == 1 else [f"r{i}" for i in range(resources)]
    lines = [
        "apiVersion: score.dev/v1b1",
        "metadata:",
        f"  name: {app}",
        "containers:",
        "  main:",
        "    image: nginx",
        "resources:",
    ]
    for name in names:
        lines += [f"  {name}:", f"    type: {type}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- databases


def _run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion on a private loop, whether or not the caller is inside one."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg_admin(sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh, empty database URL for `backend` ("sqlite" or "postgresql"), removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="innominatus-bench-db-") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}")
    name = f"innominatus_bench_{uuid.uuid4().hex[:10]}"
    try:
        _run_async(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise RuntimeError(f"cannot create database {name} on {PG_ADMIN_URL}: {exc!r}") from exc
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        try:
            if not _run_async(_pg_admin("SELECT count(*) FROM pg_database WHERE datname = $1", name)):
                log(f"database {name} was already gone: something else dropped it during the run")
            _run_async(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:
            log(f"could not drop database {name}: {exc!r}")


# ------------------------------------------------------------------------------------------ server


@dataclass
class BenchServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def graphql(self) -> str:
        return f"{self.url}/graphql"

    @property
    def websocket(self) -> str:
        return self.graphql.replace("http://", "ws://", 1)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b")


def _report_log_problems(path: Path, show: int = 12) -> None:
    """Echo to stderr the distinct ERROR/WARNING log lines and exception lines (with counts) that the
    server logged: its log lives in a temp dir that is removed with it."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    counts: dict[str, int] = {}
    for line in lines:
        text = line.strip()
        if text.startswith(("ERROR", "WARNING", "CRITICAL")) or _EXCEPTION_LINE.match(text):
            text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
            counts[text[:300]] = counts.get(text[:300], 0) + 1
    if not counts:
        return
    log(f"server log: {sum(counts.values())} ERROR/WARNING/exception line(s), {len(counts)} distinct:")
    for text, count in list(counts.items())[:show]:
        print(f"[bench]   {count:5d} × {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def ready_process(
    cmd: list[str],
    *,
    url: str,
    cwd: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    new_session: bool = False,
    ready_timeout: float = READY_TIMEOUT,
    name: str = "server",
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd` (output to `log_path`), wait until `url`/ready answers 200; at the end SIGTERM, and
    SIGKILL after STOP_TIMEOUT seconds."""
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session
        )
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} before it was ready:\n{_tail(log_path)}"
                )
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {ready_timeout}s:\n{_tail(log_path)}")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f"{name} at {url} ignored SIGTERM for {STOP_TIMEOUT}s; killing it")
                process.kill()
                process.wait()


@contextlib.contextmanager
def server(
    database_url: str, providers_dir: Path, *, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[BenchServer]:
    """A real `innominatus serve` on a free loopback port (`workers` processes, PostgreSQL only); stopped
    with SIGTERM (killed after 10 s)."""
    with tempfile.TemporaryDirectory(prefix="innominatus-bench-srv-") as tmp:
        workdir = Path(tmp)
        port = _free_port()
        log_path = workdir / "server.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
        full_env.update(
            INNOMINATUS_DATABASE_URL=database_url,
            INNOMINATUS_ADMIN_TOKEN=ADMIN_TOKEN,
            INNOMINATUS_SECRET_KEY=Fernet.generate_key().decode(),
            INNOMINATUS_RATE_LIMIT=RATE_LIMIT,
        )
        full_env.update(env or {})
        cmd = [
            sys.executable,
            "-m",
            "innominatus.cli",
            "serve",
            "--port",
            str(port),
            "--providers-dir",
            str(providers_dir),
            *(["--workers", str(workers)] if workers > 1 else []),
        ]
        url = f"http://127.0.0.1:{port}"
        try:
            with ready_process(cmd, url=url, cwd=workdir, log_path=log_path, env=full_env) as process:
                yield BenchServer(url=url, process=process, log=log_path)
        finally:
            _report_log_problems(log_path)


# ----------------------------------------------------------------------------------------- clients


async def graphql_post(
    client: httpx.AsyncClient, url: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST one GraphQL operation; its `data`, or a RuntimeError carrying the `errors`."""
    response = await client.post(url, json={"query": query, "variables": variables or {}})
    try:
        body = response.json()
    except ValueError:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}") from None
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors (HTTP {response.status_code}): {json.dumps(body['errors'])}")
    if response.status_code != 200 or body.get("data") is None:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
    return body["data"]


class LeanHttp:
    """One keep-alive HTTP/1.1 connection that POSTs GraphQL operations, with as little client work as
    possible: the load generator shares the machine's two cores with the server it measures (httpx
    spends about 6 ms of CPU per request here, this about a tenth of that)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parsed = httpx.URL(url)
        self._host, self._port, self._path = parsed.host, parsed.port or 80, parsed.raw_path.decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = (
            f"POST {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n{extra}"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Like `graphql_post`: the operation's `data`, or a RuntimeError with what went wrong."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        self._writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("LeanHttp reads Content-Length bodies only")
        payload = await self._reader.readexactly(length)
        if close:
            await self.close()
        try:
            answer = json.loads(payload)
        except ValueError:
            raise RuntimeError(f"HTTP {status}: {payload[:500]!r}") from None
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors (HTTP {status}): {json.dumps(answer['errors'])}")
        if status != 200 or answer.get("data") is None:
            raise RuntimeError(f"HTTP {status}: {payload[:500]!r}")
        return answer["data"]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None


class Subscription:
    """One graphql-transport-ws operation (id "1") on its own websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def next(self) -> dict[str, Any]:
        """The `payload` of the next "next" message; raises on "error", "complete" or a closed socket."""
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed as exc:
                raise RuntimeError(f"subscription socket closed: {exc}") from exc
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "next":
                return message.get("payload") or {}
            if kind == "ping":
                await self._ws.send(json.dumps({"type": "pong"}))
            elif kind == "error":
                raise RuntimeError(f"subscription error: {json.dumps(message.get('payload'))}")
            elif kind == "complete":
                raise RuntimeError("subscription completed by the server")
            # "pong" and anything else: ignored

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.send(json.dumps({"type": "complete", "id": "1"}))
        with contextlib.suppress(Exception):
            await self._ws.close()


async def subscribe(ws_url: str, query: str, variables: dict[str, Any] | None, token: str) -> Subscription:
    """Connect (graphql-transport-ws), authenticate in connection_init and start one subscription."""
    ws = await connect(
        ws_url,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        compression=None,
        open_timeout=WS_OPEN_TIMEOUT,
        ping_interval=None,  # protocol-level pings: the benchmarks bound every wait themselves
        max_size=None,
        max_queue=None,
    )
    try:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        async with asyncio.timeout(WS_OPEN_TIMEOUT):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "connection_ack":
                    break
                if message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                    continue
                raise RuntimeError(f"expected connection_ack, got {message}")
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables or {}},
                }
            )
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await ws.close()
        raise
    return Subscription(ws)


def _resume_after(errors: list[dict[str, Any]]) -> int | None:
    """The position to subscribe again after, when the server ended a subscription that fell behind."""
    for error in errors:
        extensions = error.get("extensions") or {}
        if extensions.get("code") == "SUBSCRIBER_TOO_SLOW" and isinstance(
            extensions.get("afterSequence"), int
        ):
            return int(extensions["afterSequence"])
    return None


# --------------------------------------------------------------------------------------- baselines


async def _bash_true() -> None:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "true",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await proc.communicate()


async def bash_true_rate(concurrency: int = 8, total: int = 2000) -> float:
    """Spawns per second of `bash -c true` through asyncio subprocesses, `concurrency` at a time."""
    for _ in range(20):  # warm-up: child watcher, page cache
        await _bash_true()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _bash_true()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t0)


# ------------------------------------------------------------------ state events on one subscription

STATE_QUERY = "subscription($after: Int) { resourceStateChanged(afterSequence: $after) { sequence resourceId toState } }"


class StateCollector:
    """Reads one `resourceStateChanged` subscription in the background and records, per resource id, the
    `time.perf_counter()` at which its ACTIVE (or FAILED) event arrived; `wait` awaits one of them.

    As a client should: when the server ends the subscription because it fell behind (SUBSCRIBER_TOO_SLOW:
    the benchmark shares the machine's two cores with the server it loads), it subscribes again with the
    `afterSequence` the error names and loses nothing; `resubscribed` counts those.

    Not part of the agreed minimal API (latency, throughput and history share it); ACTIVE events seen
    more than once for the same resource are counted in `duplicates`.
    """

    def __init__(self, subscription: Subscription, reopen: Callable[[int], Awaitable[Subscription]]) -> None:
        self.subscription = subscription
        self._reopen = reopen
        self.active_at: dict[str, float] = {}
        self.failed_at: dict[str, float] = {}
        self.duplicates = 0
        self.events = 0
        self.resubscribed = 0
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, srv: BenchServer, token: str = ADMIN_TOKEN) -> StateCollector:
        async def reopen(after: int) -> Subscription:
            return await subscribe(srv.websocket, STATE_QUERY, {"after": after}, token)

        collector = cls(await subscribe(srv.websocket, STATE_QUERY, None, token), reopen)
        collector._task = asyncio.create_task(collector._read(), name="bench-state-collector")
        return collector

    async def _read(self) -> None:
        try:
            while True:
                payload = await self.subscription.next()
                if payload.get("errors"):
                    after = _resume_after(payload["errors"])
                    if after is None:
                        raise RuntimeError(f"subscription payload errors: {json.dumps(payload['errors'])}")
                    await self.subscription.close()
                    self.subscription = await self._reopen(after)
                    self.resubscribed += 1
                    continue
                event = payload["data"]["resourceStateChanged"]
                now = time.perf_counter()
                self.events += 1
                rid, state = event["resourceId"], event["toState"]
                if state == "ACTIVE":
                    if rid in self.active_at:
                        self.duplicates += 1
                    else:
                        self.active_at[rid] = now
                elif state == "FAILED":
                    self.failed_at.setdefault(rid, now)
                else:
                    continue
                self._changed.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = exc
            self._changed.set()

    def done(self, rid: str) -> bool:
        return rid in self.active_at or rid in self.failed_at

    async def wait(self, rid: str, within: float) -> float:
        """The arrival time of `rid`'s ACTIVE event; RuntimeError on FAILED, TimeoutError after `within` s."""
        async with asyncio.timeout(within):
            while True:
                if rid in self.active_at:
                    return self.active_at[rid]
                if rid in self.failed_at:
                    raise RuntimeError(f"resource {rid} FAILED")
                if self.error is not None:
                    raise RuntimeError(f"subscription broke: {self.error!r}") from self.error
                self._changed.clear()
                await self._changed.wait()

    async def wait_all(self, rids: list[str], deadline: float) -> None:
        """Until every id in `rids` is ACTIVE or FAILED, the subscription breaks, or perf_counter() ≥ deadline."""
        pending = [rid for rid in rids if not self.done(rid)]
        while pending and self.error is None:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            pending = [rid for rid in pending if not self.done(rid)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.subscription.close()
