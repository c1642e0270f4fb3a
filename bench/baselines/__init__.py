"""Stock Strawberry servers the benchmarks compare innominatus with (run as subprocesses)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import BenchServer, _free_port, ready_process

HERE = Path(__file__).resolve().parent
READY_TIMEOUT = 30.0


@contextlib.contextmanager
def baseline_server(script: str, *args: str) -> Iterator[BenchServer]:
    """`python bench/baselines/<script> --port P ARGS` on a free loopback port, output to a log file (like
    `harness.server`, so uvicorn's access log costs both the same); SIGTERM at the end, SIGKILL after 10 s."""
    with tempfile.TemporaryDirectory(prefix="innominatus-bench-baseline-") as tmp:
        port = _free_port()
        log_path = Path(tmp) / "baseline.log"
        cmd = [sys.executable, str(HERE / script), "--port", str(port), *args]
        url = f"http://127.0.0.1:{port}"
        with ready_process(
            cmd,
            url=url,
            cwd=Path(tmp),
            log_path=log_path,
            new_session=True,
            ready_timeout=READY_TIMEOUT,
            name=script,
        ) as process:
            yield BenchServer(url=url, process=process, log=log_path)


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
