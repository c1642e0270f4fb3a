"""Settings: flags win over INNOMINATUS_* environment variables, which win over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///innominatus.db"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


DEFAULT_CONFIG = "admin-config.yaml"


# Each setting's environment variable, the Settings field it sets, and how its text converts.
ENVIRONMENT: dict[str, tuple[str, Any]] = {
    "INNOMINATUS_HOST": ("host", str),
    "INNOMINATUS_PORT": ("port", int),
    "INNOMINATUS_PROVIDERS_DIR": ("providers_dir", Path),
    "INNOMINATUS_CONFIG": ("config_file", Path),
    "INNOMINATUS_DATABASE_URL": ("database_url", str),
    "INNOMINATUS_CONCURRENCY": ("concurrency", int),
    "INNOMINATUS_SWEEP_INTERVAL": ("sweep_interval", float),
    "INNOMINATUS_LEASE_SECONDS": ("lease_seconds", float),
    "INNOMINATUS_ADMIN_TOKEN": ("admin_token", str),
    "INNOMINATUS_SECRET_KEY": ("secret_key", str),
    "INNOMINATUS_SECRET_KEY_FILE": ("secret_key_file", Path),
    "INNOMINATUS_RATE_LIMIT": ("rate_limit", str),
    "INNOMINATUS_INTROSPECTION": ("introspection", _boolean),
    "INNOMINATUS_WORKERS": ("workers", int),
}
MAX_WORKERS = 64


# Runs at once per replica by default. Runs mostly wait (a step's process, a cluster); the limit bounds a
# replica's step processes. With 16, a burst of submissions outran the slots, and most new resources waited
# for claim passes (a transaction each, taking the one or two slots freed meanwhile) instead of starting in
# their own submission's transaction: figure 2 on PostgreSQL 69-75/s with 16, 86-97/s with 64.
CONCURRENCY = 64


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8081
    providers_dir: Path = Path("providers")
    config_file: Path | None = None  # None: ./admin-config.yaml when it exists
    database_url: str = DEFAULT_DATABASE_URL
    concurrency: int = CONCURRENCY
    sweep_interval: float = 30.0
    lease_seconds: float = 15.0
    dev: bool = False
    admin_token: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    secret_key_file: Path | None = None  # None: beside the SQLite file, else ./.innominatus/secret.key
    rate_limit: str = "600/60"
    introspection: bool = True
    workers: int = 1  # server processes on one port (PostgreSQL only): each one a replica

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        settings = cls()
        values: dict[str, Any] = {}
        for var, (name, convert) in ENVIRONMENT.items():
            raw = env.get(var)
            if raw:
                try:
                    values[name] = convert(raw)
                except ValueError:
                    raise ValueError(f"{var}: invalid value {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(settings, **values)
        if not 1 <= settings.port <= 65535:
            raise ValueError(f"port: must be between 1 and 65535, got {settings.port}")
        if settings.dev and settings.host not in LOOPBACK:
            raise ValueError(
                f"--dev serves on loopback only (127.0.0.1, ::1, localhost), not {settings.host!r}"
            )
        if settings.concurrency < 1:
            raise ValueError(f"INNOMINATUS_CONCURRENCY: must be at least 1, got {settings.concurrency}")
        if not 1 <= settings.workers <= MAX_WORKERS:
            raise ValueError(f"workers: must be between 1 and {MAX_WORKERS}, got {settings.workers}")
        if settings.workers > 1:
            if make_url(settings.database_url).get_backend_name() == "sqlite":
                raise ValueError(
                    f"workers: {settings.workers} processes need PostgreSQL (INNOMINATUS_DATABASE_URL); "
                    "the embedded SQLite database serves one process"
                )
            if settings.dev:
                raise ValueError("--dev runs one worker: leave out --workers")
        return settings

    def as_environment(self) -> dict[str, str]:
        """These settings as the environment variables that give them (for worker processes)."""
        env: dict[str, str] = {}
        for var, (name, convert) in ENVIRONMENT.items():
            value = getattr(self, name)
            if value is not None:
                env[var] = ("true" if value else "false") if convert is _boolean else str(value)
        return env

    def resolved_secret_key_file(self) -> Path:
        if self.secret_key_file is not None:
            return self.secret_key_file
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return Path(url.database).parent / "innominatus-secret.key"
        return Path(".innominatus") / "secret.key"

    def resolved_config_file(self) -> Path | None:
        if self.config_file is not None:
            return self.config_file
        default = Path(DEFAULT_CONFIG)
        return default if default.is_file() else None
