"""A real `innominatus serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
SECRET_KEY = Fernet.generate_key().decode()  # servers of one test session share it


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    workdir: Path
    admin_token: str | None = ADMIN_TOKEN

    @property
    def graphql(self) -> str:
        return f"{self.url}/graphql"

    @property
    def websocket(self) -> str:
        return self.graphql.replace("http://", "ws://", 1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    workdir: Path,
    *,
    database_url: str | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Server:
    """Start `innominatus serve` without waiting for it (see `wait_ready`, `stop_server`)."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    full_env["INNOMINATUS_ADMIN_TOKEN"] = ADMIN_TOKEN
    full_env["INNOMINATUS_SECRET_KEY"] = SECRET_KEY  # servers that share a database share the key
    full_env.update(env or {})
    if database_url is not None:
        full_env["INNOMINATUS_DATABASE_URL"] = database_url
    cmd = [sys.executable, "-m", "innominatus.cli", "serve", "--port", str(port), *(args or [])]
    if "--providers-dir" not in (args or []):
        cmd += ["--providers-dir", str(REPO / "providers")]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    return Server(
        url=f"http://127.0.0.1:{port}",
        process=process,
        log=log,
        workdir=workdir,
        admin_token=full_env.get("INNOMINATUS_ADMIN_TOKEN") or None,
    )


def wait_ready(server: Server, ready_timeout: float = 30) -> None:
    deadline = time.monotonic() + ready_timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready after {ready_timeout}s:\n{server.output()}")
        time.sleep(0.1)


def stop_server(server: Server) -> None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # a test may have paused it
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def run_server(
    workdir: Path,
    *,
    database_url: str | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30,
    port: int | None = None,
) -> Iterator[Server]:
    server = start_server(workdir, database_url=database_url, args=args, env=env, port=port)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop_server(server)


def run_cli(
    *args: str,
    server_url: str | None = None,
    token: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`innominatus ARGS` as a user runs it: a fresh process, only the INNOMINATUS_* variables given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    if server_url is not None:
        env["INNOMINATUS_SERVER"] = server_url
    if token is not None:
        env["INNOMINATUS_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "innominatus.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )
