from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")} | env
    return subprocess.run(
        [sys.executable, "-m", "innominatus.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    result = run(["db", "upgrade"], tmp_path, INNOMINATUS_DATABASE_URL=f"sqlite+aiosqlite:///{db}")
    assert result.returncode == 0, result.stderr
    assert "database upgraded" in result.stdout
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"applications", "resources", "events", "workflow_executions", "workflow_steps"} <= tables
    again = run(["db", "upgrade"], tmp_path, INNOMINATUS_DATABASE_URL=f"sqlite+aiosqlite:///{db}")
    assert again.returncode == 0, again.stderr


def test_db_upgrade_defaults_to_sqlite_in_working_directory(tmp_path: Path) -> None:
    result = run(["db", "upgrade"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "innominatus.db").is_file()


def test_unsupported_database_url_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["db", "upgrade"], tmp_path, INNOMINATUS_DATABASE_URL="mysql://root@localhost/x")
    assert result.returncode == 2
    assert "INNOMINATUS_DATABASE_URL: unsupported driver 'mysql'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_port_variable_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["serve"], tmp_path, INNOMINATUS_PORT="eighty")
    assert result.returncode == 2
    assert "INNOMINATUS_PORT: invalid value 'eighty'" in result.stderr


def test_missing_providers_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["serve", "--providers-dir", str(tmp_path / "nope")], tmp_path)
    assert result.returncode == 2
    assert "providers directory not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_log_level_variable_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["serve"], tmp_path, INNOMINATUS_LOG_LEVEL="verbose")
    assert result.returncode == 2
    assert "INNOMINATUS_LOG_LEVEL: must be one of debug, info, warning, error" in result.stderr
    assert not (tmp_path / "innominatus.db").exists()


def test_bad_workers_value_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["serve", "--workers", "0"], tmp_path)
    assert result.returncode == 2
    assert "workers: must be between 1 and 64, got 0" in result.stderr
    assert "Traceback" not in result.stderr
