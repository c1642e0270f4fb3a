"""The platform team's settings (`admin-config.yaml`): extra provider sources, the PostgreSQL servers
steps may provision on, and how to reach Kubernetes. Nothing here ever comes from a spec."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from innominatus import git_sources
from innominatus.workflows.definition import DefinitionError, _Fields, read_yaml_file

DEFAULT_POSTGRES_TARGET = "local"
DEFAULT_POSTGRES_ENV = "INNOMINATUS_POSTGRES_ADMIN_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class PostgresTarget:
    name: str
    admin_url_env: str  # the environment variable holding the admin DSN
    default_admin_url: str | None = None  # used when that variable is unset

    def admin_url(self) -> str:
        url = os.environ.get(self.admin_url_env) or self.default_admin_url
        if not url:
            raise LookupError(f"postgres target '{self.name}': {self.admin_url_env} is not set")
        return url


@dataclass(frozen=True)
class KubernetesSettings:
    kubeconfig: Path | None = None
    in_cluster: bool = False
    context: str | None = None


@dataclass(frozen=True)
class AdminConfig:
    path: Path | None = None
    provider_dirs: tuple[Path, ...] = ()
    postgres_targets: dict[str, PostgresTarget] = field(default_factory=dict)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    @classmethod
    def default(cls) -> AdminConfig:
        """No config file: the `local` PostgreSQL target only."""
        local = PostgresTarget(DEFAULT_POSTGRES_TARGET, DEFAULT_POSTGRES_ENV, DEFAULT_POSTGRES_URL)
        return cls(postgres_targets={local.name: local})


def load_admin_config(path: Path | None) -> AdminConfig:
    if path is None:
        return AdminConfig.default()
    display = str(path)
    doc = read_yaml_file(path, display, "config file not found")
    if doc is None:
        return AdminConfig(path=path, postgres_targets=AdminConfig.default().postgres_targets)
    if not isinstance(doc, dict):
        raise DefinitionError(f"{display}: must be a mapping")
    # Upstream files carry many more sections (gitea, argocd, policies...): they are not ours to read.
    entries = doc.get("providers") or []
    if not isinstance(entries, list):
        raise DefinitionError(f"{display}.providers: must be a list")
    targets = _postgres(doc.get("postgres"), f"{display}.postgres")
    return AdminConfig(
        path=path,
        provider_dirs=tuple(_provider_dirs(path, display, entries)),
        postgres_targets=targets if targets is not None else AdminConfig.default().postgres_targets,
        kubernetes=_kubernetes(doc.get("kubernetes"), f"{display}.kubernetes", path),
    )


def _provider_dirs(config_file: Path, display: str, entries: list[Any]) -> list[Path]:
    dirs: list[Path] = []
    for i, entry in enumerate(entries):
        where = f"{display}.providers[{i}]"
        f = _Fields(entry, where, {"name", "type", "path", "enabled", "category", "repository", "ref"})
        if f.get("enabled", bool, default=True) is False:
            continue
        ptype = f.get("type", str, default="filesystem")
        if ptype == "git":
            repository = f.get("repository", str, required=True)
            checkout, _commit = git_sources.checkout(repository, f.get("ref", str, default="main"), where)
            path = checkout / f.get("path", str, default=".")
            if not path.resolve().is_relative_to(checkout.resolve()):
                raise DefinitionError(f"{where}.path: points outside the repository")
        elif ptype == "filesystem":
            path = Path(f.get("path", str, required=True))
            if not path.is_absolute():
                path = config_file.parent / path
        else:
            raise DefinitionError(
                f"{where}.type: provider source type {ptype!r} is not supported (use filesystem or git)"
            )
        if not (path / "provider.yaml").is_file():
            raise DefinitionError(f"{where}.path: {path / 'provider.yaml'} not found")
        dirs.append(path)
    return dirs


def _postgres(raw: Any, where: str) -> dict[str, PostgresTarget] | None:
    if raw is None:
        return None
    section = _Fields(raw, where, {"targets"})
    targets: dict[str, PostgresTarget] = {}
    for name, spec in (section.get("targets", dict, required=True) or {}).items():
        at = f"{where}.targets.{name}"
        f = _Fields(spec, at, {"adminUrlEnv", "defaultAdminUrl", "description"})
        targets[str(name)] = PostgresTarget(
            name=str(name),
            admin_url_env=f.get("adminUrlEnv", str, required=True),
            default_admin_url=f.get("defaultAdminUrl", str),
        )
    return targets


def _kubernetes(raw: Any, where: str, config_file: Path) -> KubernetesSettings:
    if raw is None:
        return KubernetesSettings()
    f = _Fields(raw, where, {"kubeconfig", "inCluster", "context"})
    kubeconfig = f.get("kubeconfig", str)
    path = Path(kubeconfig).expanduser() if kubeconfig else None
    if path is not None and not path.is_absolute():
        path = config_file.parent / path
    return KubernetesSettings(
        kubeconfig=path, in_cluster=f.get("inCluster", bool, default=False), context=f.get("context", str)
    )
