"""`deploy/`: the container image definition and the Kubernetes manifests name the real settings, probes
and ports, and the providers ConfigMaps, mounted the way the kubelet mounts them, load as `providers/`."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from innominatus.config import ENVIRONMENT, Settings
from innominatus.db.database import normalize_url
from innominatus.providers import load_catalog
from tests.conftest import PROVIDERS, REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
READ_ELSEWHERE = {"INNOMINATUS_LOG_FORMAT"}  # read by the CLI's logging set-up, not by Settings


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]


def _one(kind: str) -> dict[str, Any]:
    found = [
        d for f in sorted(KUBERNETES.glob("*.yaml")) for d in _documents(f.name) if d.get("kind") == kind
    ]
    assert len(found) == 1, f"{kind}: {len(found)} manifests"
    return found[0]


def _container() -> dict[str, Any]:
    [container] = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_every_manifest_is_listed_in_the_kustomization_and_parses() -> None:
    listed = _documents("kustomization.yaml")[0]["resources"]
    assert sorted(listed) == sorted(
        p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    for name in listed:
        for document in _documents(name):
            assert {"apiVersion", "kind", "metadata"} <= document.keys(), name


def test_the_deployment_runs_three_replicas_with_probes_on_the_real_endpoints() -> None:
    deployment = _one("Deployment")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = _container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["port"] in ports
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["INNOMINATUS_PORT"]) == ports["http"]
    service = _one("Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports.keys()


def test_every_setting_the_manifests_name_is_a_real_one_and_valid() -> None:
    container = _container()
    names = {e["name"] for e in container["env"]}
    unknown = names - ENVIRONMENT.keys() - READ_ELSEWHERE
    assert not unknown, f"not settings of innominatus: {unknown}"
    secret = _one("Secret")
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert set(refs.values()) == {secret["metadata"]["name"]}
    assert set(refs) <= secret["stringData"].keys()
    assert {"INNOMINATUS_DATABASE_URL", "INNOMINATUS_SECRET_KEY"} <= set(refs)
    assert normalize_url(secret["stringData"]["INNOMINATUS_DATABASE_URL"]).startswith("postgresql+asyncpg://")
    values = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = Settings.from_env({**values, **secret["stringData"]})  # refuses what it cannot use
    assert (settings.host, settings.port) == ("0.0.0.0", 8081)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert set(re.findall(r"\bINNOMINATUS_[A-Z_]+", dockerfile)) <= ENVIRONMENT.keys() | READ_ELSEWHERE
    assert 'ENTRYPOINT ["innominatus"]' in dockerfile and container["args"] == ["serve"]
    assert f"EXPOSE {values['INNOMINATUS_PORT']}" in dockerfile


def _configmap_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "providers_configmap", KUBERNETES / "providers_configmap.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_providers_configmaps_are_generated_from_providers() -> None:
    rendered = _configmap_generator().render(PROVIDERS)
    assert (KUBERNETES / "providers-configmap.yaml").read_text() == rendered, (
        "regenerate: python deploy/kubernetes/providers_configmap.py > deploy/kubernetes/providers-configmap.yaml"
    )


def _mount_like_kubelet(configmap: dict[str, Any], target: Path) -> None:
    """A ConfigMap volume as the kubelet writes it: files in a timestamped folder, `..data` pointing at
    it, and each key a symlink through `..data`."""
    stamp = target / "..2026_11_28_00_00_00.000000000"
    stamp.mkdir(parents=True)
    for key, text in configmap["data"].items():
        (stamp / key).write_text(text)
        (target / key).symlink_to(Path("..data") / key)
    (target / "..data").symlink_to(stamp.name)


def test_the_providers_mounted_from_configmaps_load_as_the_repositorys(tmp_path: Path) -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    maps = {d["metadata"]["name"]: d for d in _documents("providers-configmap.yaml")}
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"]}
    env = {e["name"]: e.get("value") for e in _container()["env"]}
    root = Path(env["INNOMINATUS_PROVIDERS_DIR"])
    mounts = sorted(_container()["volumeMounts"], key=lambda m: len(m["mountPath"]))  # outer first
    assert {volumes[m["name"]] for m in mounts} == maps.keys()
    for mount in mounts:
        assert mount["readOnly"] is True
        inside = Path(mount["mountPath"]).relative_to(root)
        _mount_like_kubelet(maps[volumes[mount["name"]]], tmp_path / inside)
    mounted = load_catalog(tmp_path, None)
    shipped = load_catalog(PROVIDERS, None)
    assert sorted(mounted.providers) == sorted(shipped.providers)
    for name, provider in shipped.providers.items():
        assert sorted(mounted.providers[name].workflows) == sorted(provider.workflows)


@pytest.mark.parametrize("path", ["/ready", "/health"])
def test_the_probed_endpoints_exist(path: str) -> None:
    from innominatus.app import create_app

    app = create_app(Settings(providers_dir=PROVIDERS))
    assert any(getattr(route, "path", None) == path for route in app.routes)
