"""The embedded database serves one process: a second `innominatus serve` on the same SQLite file exits
at start saying so (and what to use for replicas), and the first keeps working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.server import ADMIN_TOKEN, free_port, run_server


def test_a_second_server_on_the_same_sqlite_file_is_turned_away(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    (first_dir := tmp_path / "first").mkdir()
    with run_server(first_dir, database_url=url) as first:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
        env |= {"INNOMINATUS_DATABASE_URL": url, "INNOMINATUS_ADMIN_TOKEN": ADMIN_TOKEN}
        second = subprocess.run(
            [sys.executable, "-m", "innominatus.cli", "serve", "--port", str(free_port())],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1, second
        message = second.stderr
        assert "serves one process only" in message, message
        assert "INNOMINATUS_DATABASE_URL=postgresql" in message, message
        assert str(tmp_path / "shared.db") in message
        # The first goes on serving.
        assert httpx.get(first.url + "/health").status_code == 200
        answer = httpx.post(
            first.graphql,
            json={"query": "{ providers { name } }"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ).json()
        assert answer["data"]["providers"]
    # Once the first is gone, the file may be served again.
    (again_dir := tmp_path / "again").mkdir()
    with run_server(again_dir, database_url=url) as again:
        assert httpx.get(again.url + "/health").status_code == 200
