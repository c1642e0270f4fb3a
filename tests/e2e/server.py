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
    port = port or free_port()
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
    server = Server(
        url=f"http://127.0.0.1:{port}",
        process=process,
        log=log,
        workdir=workdir,
        admin_token=full_env.get("INNOMINATUS_ADMIN_TOKEN") or None,
    )
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout}s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
