"""scripts/demo-postgres-provisioning.sh against a real server, twice in a row."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import REPO
from tests.e2e.server import run_server


def run_demo(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo-postgres-provisioning.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return done, time.monotonic() - started


def test_demo_runs_twice_against_a_dev_server(tmp_path: Path) -> None:
    with run_server(tmp_path, args=["--dev"]) as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
        env["INNOMINATUS_SERVER"] = srv.url
        for _ in range(2):
            done, _elapsed = run_demo(env)
            assert done.returncode == 0, done.stderr + done.stdout
            out = done.stdout
            assert "database-team 1.0.0: postgres, postgresql, postgres-mock" in out
            assert "database: - -> requested" in out
            assert "database: requested -> provisioning" in out
            assert "database: provisioning -> active" in out
            assert "connection_string: postgresql://demo_db_app:" in out
            assert "generate-credentials (policy): succeeded" in out


def test_demo_fails_clearly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    env["INNOMINATUS_SERVER"] = "http://127.0.0.1:9"
    done, _ = run_demo(env)
    assert done.returncode == 1
    assert "demo failed: cannot reach http://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    with run_server(tmp_path) as srv:  # not in dev mode: the default token `test` is refused
        env["INNOMINATUS_SERVER"] = srv.url
        done, _ = run_demo(env)
        assert done.returncode == 1
        assert "authentication required" in done.stderr
