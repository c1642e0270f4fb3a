from __future__ import annotations

from pathlib import Path

import pytest

from innominatus.config import Settings


def test_defaults_are_the_embedded_ones() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.providers_dir) == ("127.0.0.1", 8081, Path("providers"))
    assert s.database_url == "sqlite+aiosqlite:///innominatus.db"


def test_environment_variables_are_read() -> None:
    s = Settings.from_env(
        {
            "INNOMINATUS_HOST": "0.0.0.0",
            "INNOMINATUS_PORT": "9000",
            "INNOMINATUS_PROVIDERS_DIR": "/srv/providers",
            "INNOMINATUS_CONFIG": "/etc/innominatus.yaml",
            "INNOMINATUS_DATABASE_URL": "postgresql+asyncpg://u@h/db",
        }
    )
    assert (s.host, s.port, s.providers_dir) == ("0.0.0.0", 9000, Path("/srv/providers"))
    assert s.config_file == Path("/etc/innominatus.yaml")
    assert s.database_url == "postgresql+asyncpg://u@h/db"


def test_flags_win_over_variables() -> None:
    s = Settings.from_env({"INNOMINATUS_PORT": "9000", "INNOMINATUS_HOST": "0.0.0.0"}, port=7000, host=None)
    assert (s.port, s.host) == (7000, "0.0.0.0")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INNOMINATUS_PORT": "eighty"}, "INNOMINATUS_PORT: invalid value 'eighty'"),
        ({"INNOMINATUS_PORT": "70000"}, "port: must be between 1 and 65535"),
        ({"INNOMINATUS_CONCURRENCY": "0"}, "INNOMINATUS_CONCURRENCY: must be at least 1"),
        ({"INNOMINATUS_WORKERS": "two"}, "INNOMINATUS_WORKERS: invalid value 'two'"),
        ({"INNOMINATUS_WORKERS": "0"}, "workers: must be between 1 and 64, got 0"),
        ({"INNOMINATUS_WORKERS": "65"}, "workers: must be between 1 and 64, got 65"),
        ({"INNOMINATUS_WORKERS": "2"}, "workers: 2 processes need PostgreSQL"),
        (
            {"INNOMINATUS_WORKERS": "2", "INNOMINATUS_DATABASE_URL": "sqlite:///tmp/x.db"},
            "the embedded SQLite database serves one process",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_config_file_defaults_to_admin_config_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).resolved_config_file() is None
    (tmp_path / "admin-config.yaml").write_text("providers: []\n")
    assert Settings.from_env({}).resolved_config_file() == Path("admin-config.yaml")


def test_dev_mode_runs_one_worker() -> None:
    with pytest.raises(ValueError, match="--dev runs one worker"):
        Settings.from_env({"INNOMINATUS_DATABASE_URL": "postgresql://u@h/db"}, workers=2, dev=True)


def test_settings_travel_to_worker_processes_as_variables() -> None:
    """`serve --workers N` starts fresh interpreters: what they read back is what the parent resolved."""
    settings = Settings.from_env(
        {
            "INNOMINATUS_DATABASE_URL": "postgresql+asyncpg://u@h/db",
            "INNOMINATUS_SECRET_KEY": "k" * 43 + "=",
            "INNOMINATUS_INTROSPECTION": "off",
            "INNOMINATUS_LEASE_SECONDS": "4.5",
        },
        host="0.0.0.0",
        port=9100,
        providers_dir=Path("/srv/providers"),
        config_file=Path("/etc/admin.yaml"),
        workers=3,
    )
    assert Settings.from_env(settings.as_environment()) == settings
