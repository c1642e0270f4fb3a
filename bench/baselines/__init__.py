"""Stock Strawberry servers the benchmarks compare innominatus with (run as subprocesses)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass
class BaselineServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def graphql(self) -> str:
        return f"{self.url}/graphql"

    @property
    def websocket(self) -> str:
        return self.graphql.replace("http://", "ws://", 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def baseline_server(script: str, *args: str) -> Iterator[BaselineServer]:
    """`python bench/baselines/<script> --port P ARGS` on a free loopback port, output to a log file (like
    `harness.server`, so uvicorn's access log costs both the same); SIGTERM at the end, SIGKILL after 10 s."""
    with tempfile.TemporaryDirectory(prefix="innominatus-bench-baseline-") as tmp:
        port = _free_port()
        log_path = Path(tmp) / "baseline.log"
        cmd = [sys.executable, str(HERE / script), "--port", str(port), *args]
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                cmd, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        srv = BaselineServer(url=f"http://127.0.0.1:{port}", process=process, log=log_path)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{script} exited with {process.returncode}:\n{_tail(log_path)}")
                try:
                    if httpx.get(f"{srv.url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{script} not ready after {READY_TIMEOUT}s:\n{_tail(log_path)}")
                time.sleep(0.05)
            yield srv
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), or NaN when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_errors(log_path: Path, limit: int = 3) -> dict[str, Any]:
    """How many tracebacks and ERROR/CRITICAL lines a server logged, and the first few distinct messages
    (a traceback's last line, an ERROR line itself)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return {"tracebacks": 0, "error_lines": 0, "first": []}
    tracebacks = error_lines = 0
    first: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        message = None
        if line.startswith("Traceback"):
            tracebacks += 1
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                j += 1
            message = lines[j] if j < len(lines) else lines[-1]
            i = j
        elif line.startswith(("ERROR", "CRITICAL")):
            error_lines += 1
            if not lines[i + 1 : i + 2] or not lines[i + 1].startswith("Traceback"):
                message = line  # else the traceback's last line says more
        if message is not None and len(first) < limit and message[:300] not in first:
            first.append(message[:300])
        i += 1
    return {"tracebacks": tracebacks, "error_lines": error_lines, "first": first}
