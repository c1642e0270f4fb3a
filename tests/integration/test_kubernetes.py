"""The `kubernetes` step type and the `class: kubernetes` postgres workflows, against the stand-in API
server of tests/k8s/standin.py (a local HTTP server speaking the few REST calls used — not a cluster)."""

from __future__ import annotations

import asyncio
import base64
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from innominatus import operations, specs
from innominatus.admin_config import AdminConfig, KubernetesSettings, load_admin_config
from innominatus.db import models
from innominatus.providers import Catalog, load_catalog
from innominatus.score import SpecError
from innominatus.store import Store
from innominatus.workflows.definition import DefinitionError, Step
from innominatus.workflows.kubernetes import KubernetesStep
from innominatus.workflows.policy import StepResult
from innominatus.workflows.templates import compile_template
from tests.conftest import PROVIDERS
from tests.integration.helpers import executions_of, resources, running_engine, steps_of
from tests.integration.test_operations import wait_states
from tests.k8s.standin import SECRET_SUFFIX, StandIn

OUTPUTS = {"host", "port", "username", "password", "database_name", "connection_string"}
PASSWORD = "s3cret/p@ss:word%+x"  # characters a URL must percent-encode


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(operator_delay=0.3, delete_delay=0.3) as server:
        yield server


@pytest.fixture
def platform_config(tmp_path: Path, standin: StandIn) -> Path:
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    config = tmp_path / "admin-config.yaml"
    config.write_text(f"kubernetes:\n  kubeconfig: {kubeconfig}\n")
    return config


@pytest.fixture
def catalog(platform_config: Path) -> Catalog:
    return load_catalog(PROVIDERS, platform_config)


@pytest.fixture
def fast_catalog(tmp_path: Path, platform_config: Path) -> Catalog:
    """The shipped provider with short pauses between retries."""
    copy = tmp_path / "providers" / "database-team"
    shutil.copytree(PROVIDERS / "database-team", copy)
    for path in (copy / "workflows").glob("*.yaml"):
        path.write_text(path.read_text().replace("retryDelay: 2", "retryDelay: 0.05"))
    return load_catalog(copy.parent, platform_config)


@pytest.fixture
def platform(platform_config: Path) -> AdminConfig:
    return load_admin_config(platform_config)


def app_name() -> str:
    return f"k8s-{uuid.uuid4().hex[:8]}"


def spec(app: str, props: str = "", klass: str = "kubernetes") -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: a\n"
        f"resources:\n  db:\n    type: postgres\n    class: {klass}\n"
        + (f"    properties:\n{props}" if props else "")
    )


def sizes(cr: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return cr["spec"]["volume"]["size"], cr["spec"]["resources"]


# --- the workflows, run by the real engine ----------------------------------------------------------


async def test_provision_update_delete(store: Store, catalog: Catalog, standin: StandIn) -> None:
    app = app_name()
    cluster = f"{app}-db"
    standin.passwords["db_app"] = PASSWORD
    props = '      size: medium\n      replicas: 3\n      version: "16"\n'
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec(app, props))
        db = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
        out = db.outputs
        assert set(out) == OUTPUTS and all(isinstance(v, str) for v in out.values())
        host = f"{cluster}.{app}.svc.cluster.local"
        assert out["host"] == host and out["port"] == "5432"
        assert out["username"] == "db_app" and out["password"] == PASSWORD
        assert out["database_name"] == "db"
        assert out["connection_string"] == f"postgresql://db_app:{quote(PASSWORD, safe='')}@{host}:5432/db"

        assert standin.names("namespaces") == [app]
        cr = standin.get("postgresqls", cluster, app)
        assert cr is not None
        assert cr["metadata"]["managedFields"][0]["manager"] == "innominatus"
        s = cr["spec"]
        assert s["teamId"] == app and cluster.startswith(s["teamId"])
        assert s["numberOfInstances"] == 3
        assert s["postgresql"] == {"version": "16"}
        assert s["users"] == {"db_owner": ["superuser", "createdb"], "db_app": ["login"]}
        assert s["databases"] == {"db": "db_owner"}
        assert sizes(cr) == (
            "20Gi",
            {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2000m", "memory": "2Gi"}},
        )
        applies = [r for r in standin.requests if r.method == "PATCH"]
        assert {r.content_type for r in applies} == {"application/apply-patch+yaml"}
        assert all(r.query == {"fieldManager": ["innominatus"], "force": ["true"]} for r in applies)

        async with store.transaction() as session:
            row = await session.get(models.Resource, db.id)
            application = await session.get(models.Application, row.application_id)
            await operations.update_properties(session, catalog, application, row, {"size": "large"})
        updated = (await wait_states(store, app, {"db": "ACTIVE"}))["db"]
        assert updated.outputs == out  # same credentials, same address
        cr = standin.get("postgresqls", cluster, app)
        assert cr is not None
        assert cr["metadata"]["generation"] == 2
        assert cr["spec"]["numberOfInstances"] == 3 and cr["spec"]["postgresql"] == {"version": "16"}
        assert sizes(cr) == (
            "100Gi",
            {"requests": {"cpu": "2000m", "memory": "4Gi"}, "limits": {"cpu": "4000m", "memory": "8Gi"}},
        )

        runs = await executions_of(store, db.id)
        assert [r.workflow_name for r in runs] == ["provision-postgres", "update-postgres"]
        for run in runs:
            steps = await steps_of(store, run.id)
            assert [s.name for s in steps] == [
                "check-parameters",
                "apply-cluster",
                "wait-running",
                "read-credentials",
            ]
            logs = "".join(s.logs or "" for s in steps)
            assert "keys password, username" in logs
            assert f"applied postgresql {app}/{cluster}" in logs
            assert PASSWORD not in logs and quote(PASSWORD, safe="") not in logs

        async with store.transaction() as session:
            application = await operations.lock_application(session, app)
            await operations.delete_application(session, catalog, application)
        await wait_states(store, app, {"db": "DELETED"})
    assert standin.get("postgresqls", cluster, app) is None
    assert not [n for n in standin.names("secrets") if n.startswith(f"{app}/")]
    [delete_run] = (await executions_of(store, db.id))[2:]
    assert delete_run.workflow_name == "delete-postgres"
    [step] = await steps_of(store, delete_run.id)
    assert f"postgresql {app}/{cluster} is gone" in step.logs


async def test_forbidden_apply_fails_naming_status_kind_and_name(
    store: Store, fast_catalog: Catalog, standin: StandIn
) -> None:
    catalog = fast_catalog
    app = app_name()
    standin.forbidden_namespaces.add(app)
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec(app))
        db = (await wait_states(store, app, {"db": "FAILED"}))["db"]
    assert db.error_message.startswith(
        f"step 'apply-cluster' failed: apply postgresql {app}/{app}-db: 403 Forbidden: "
    )
    assert "cannot patch resource" in db.error_message
    assert "Traceback" not in db.error_message
    [run] = await executions_of(store, db.id)
    steps = await steps_of(store, run.id)
    assert steps[1].attempts == 3  # retries: 2
    assert standin.names("namespaces") == [app]  # the namespace itself was allowed
    assert standin.names("postgresqls") == []


async def test_unknown_size_fails_before_anything_is_applied(
    store: Store, catalog: Catalog, standin: StandIn
) -> None:
    app = app_name()
    async with running_engine(store, catalog):
        await specs.submit(store, catalog, spec(app, "      size: huge\n"))
        db = (await wait_states(store, app, {"db": "FAILED"}))["db"]
    assert "step 'check-parameters' failed" in db.error_message
    assert "size: must be small, medium or large, got 'huge'" in db.error_message
    assert not [r for r in standin.requests if r.method == "PATCH"]


async def test_unknown_class_lists_direct_and_kubernetes(store: Store, catalog: Catalog) -> None:
    with pytest.raises(SpecError) as err:
        await specs.submit(store, catalog, spec(app_name(), klass="gold"))
    [problem] = err.value.problems
    assert problem.path == "resources.db.class"
    assert "unknown class 'gold'" in problem.message
    assert "classes offered: direct, kubernetes" in problem.message


async def test_resources_listing_after_submit(store: Store, catalog: Catalog) -> None:
    result = await specs.submit(store, catalog, spec(app_name()))
    [row] = await resources(store, result.application.name)
    assert row.resource_class == "kubernetes"


# --- the step type, run directly -----------------------------------------------------------------------


def make_step(config: dict[str, Any], platform: AdminConfig | None = None, timeout: float = 30) -> Step:
    fields = KubernetesStep().template_fields(config, "step.config", platform or AdminConfig())
    templates = {
        key: compile_template(config[key], where=f"step.config.{key}", shell=shell) for key, shell in fields
    }
    return Step(name="k", type="kubernetes", config=config, timeout=timeout, templates=templates)


CONTEXT = {"parameters": {"app_name": "shop", "resource_name": "db"}, "app": {"name": "shop"}, "resource": {}}


async def run(config: dict[str, Any], platform: AdminConfig, lines: list[str] | None = None) -> StepResult:
    def on_line(stream: str, line: str) -> None:
        if lines is not None:
            lines.append(line)

    return await KubernetesStep().run(make_step(config, platform), CONTEXT, on_line, platform)


NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: '{{ parameters.app_name }}'\n"
CLUSTER = (
    "apiVersion: acid.zalan.do/v1\nkind: postgresql\nmetadata:\n  name: shop-db\n"
    "spec:\n  teamId: shop\n  users: {db_app: [login]}\n"
)
PG = {"apiVersion": "acid.zalan.do/v1", "kind": "postgresql", "name": "shop-db", "namespace": "shop"}


async def test_apply_multi_document_cluster_scoped_and_custom(
    standin: StandIn, platform: AdminConfig
) -> None:
    lines: list[str] = []
    result = await run(
        {"operation": "apply", "manifest": f"{NAMESPACE}---\n{CLUSTER}", "namespace": "shop"}, platform, lines
    )
    assert result.succeeded, result.error
    assert result.outputs == {"objects": ["Namespace/shop", "postgresql/shop/shop-db"]}
    assert lines == [
        "applied Namespace shop (generation 1)",
        "applied postgresql shop/shop-db (generation 1)",
    ]
    assert standin.get("postgresqls", "shop-db", "shop")["spec"]["teamId"] == "shop"  # type: ignore[index]


async def test_apply_into_a_missing_namespace_names_the_object(
    standin: StandIn, platform: AdminConfig
) -> None:
    result = await run({"operation": "apply", "manifest": CLUSTER, "namespace": "shop"}, platform)
    assert not result.succeeded
    assert result.error == 'apply postgresql shop/shop-db: 404 Not Found: namespaces "shop" not found'


async def test_conflict_and_server_errors_name_status_kind_and_name(
    standin: StandIn, platform: AdminConfig
) -> None:
    standin.fail(409, method="PATCH", plural="namespaces", message="Apply failed with 1 conflict")
    result = await run({"operation": "apply", "manifest": NAMESPACE}, platform)
    assert result.error == "apply Namespace shop: 409 Conflict: Apply failed with 1 conflict"
    standin.rules.clear()
    standin.fail(500, method="GET", plural="postgresqls")
    result = await run({"operation": "get", **PG}, platform)
    assert result.error is not None
    assert result.error.startswith("get postgresql shop/shop-db: 500 Internal Server Error: ")


async def test_unknown_kind_says_so(standin: StandIn, platform: AdminConfig) -> None:
    result = await run(
        {"operation": "get", "apiVersion": "example.com/v1", "kind": "Widget", "name": "w"}, platform
    )
    assert result.error == (
        "get Widget w: the API server has no kind Widget in example.com/v1 "
        "(is its CustomResourceDefinition installed?)"
    )


async def test_get_fields_missing_ok_and_wait(standin: StandIn, platform: AdminConfig) -> None:
    missing = await run(
        {"operation": "get", **PG, "missingOk": True, "fields": {"s": "spec.teamId"}}, platform
    )
    assert missing.succeeded and missing.outputs == {"exists": False, "s": None}
    not_ok = await run({"operation": "get", **PG}, platform)
    assert (
        not_ok.error
        == 'get postgresql shop/shop-db: 404 Not Found: postgresqls.acid.zalan.do "shop-db" not found'
    )

    assert (
        await run(
            {"operation": "apply", "manifest": f"{NAMESPACE}---\n{CLUSTER}", "namespace": "shop"}, platform
        )
    ).succeeded
    lines: list[str] = []
    waited = await run(
        {
            "operation": "wait",
            **PG,
            "field": "status.PostgresClusterStatus",
            "equals": "Running",
            "timeout": 5,
        },
        platform,
        lines,
    )
    assert waited.succeeded, waited.error
    assert waited.outputs == {"value": "Running"}
    assert "postgresql shop/shop-db status.PostgresClusterStatus: not set" in lines
    got = await run(
        {
            "operation": "get",
            **PG,
            "fields": {"team": "spec.teamId", "state": "status.PostgresClusterStatus"},
        },
        platform,
    )
    assert got.outputs == {"exists": True, "team": "shop", "state": "Running"}
    whole = await run({"operation": "get", "apiVersion": "v1", "kind": "Namespace", "name": "shop"}, platform)
    assert whole.outputs["object"]["status"] == {"phase": "Active"}
    assert "managedFields" not in whole.outputs["object"]["metadata"]


async def test_wait_times_out_naming_the_field_and_its_value(standin: StandIn, platform: AdminConfig) -> None:
    standin.operator_delay = 60
    assert (
        await run(
            {"operation": "apply", "manifest": f"{NAMESPACE}---\n{CLUSTER}", "namespace": "shop"}, platform
        )
    ).succeeded
    result = await run(
        {
            "operation": "wait",
            **PG,
            "field": "status.PostgresClusterStatus",
            "equals": "Running",
            "timeout": "0.6s",
            "interval": "0.1s",
        },
        platform,
    )
    assert result.error == (
        "wait postgresql shop/shop-db: timed out after 0.6s waiting for "
        "status.PostgresClusterStatus = Running: status.PostgresClusterStatus is not set"
    )


async def test_read_secret_logs_key_names_only(standin: StandIn, platform: AdminConfig) -> None:
    name = f"db-app.shop-db.{SECRET_SUFFIX}"
    data = {"username": "db_app", "password": PASSWORD, "note": "x"}
    standin.put("Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    standin.put(
        "Secret",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "shop"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )
    lines: list[str] = []
    every = await run({"operation": "read-secret", "name": name, "namespace": "shop"}, platform, lines)
    assert every.outputs == data
    mapped = await run(
        {
            "operation": "read-secret",
            "name": name,
            "namespace": "shop",
            "keys": {"user": "username", "pw": "password"},
        },
        platform,
        lines,
    )
    assert mapped.outputs == {"user": "db_app", "pw": PASSWORD}
    assert lines == [
        f"read Secret shop/{name}: keys note, password, username",
        f"read Secret shop/{name}: keys password, username",
    ]
    assert PASSWORD not in mapped.logs + every.logs
    missing = await run(
        {"operation": "read-secret", "name": name, "namespace": "shop", "keys": {"t": "token"}}, platform
    )
    assert (
        missing.error
        == f"read-secret Secret shop/{name}: key 'token' not found (keys: note, password, username)"
    )
    assert PASSWORD not in (missing.error or "")


async def test_delete_waits_until_gone_and_tolerates_missing(standin: StandIn, platform: AdminConfig) -> None:
    assert (
        await run(
            {"operation": "apply", "manifest": f"{NAMESPACE}---\n{CLUSTER}", "namespace": "shop"}, platform
        )
    ).succeeded
    lines: list[str] = []
    result = await run(
        {"operation": "delete", **PG, "wait": True, "timeout": 5, "interval": 0.1}, platform, lines
    )
    assert result.succeeded, result.error
    assert result.outputs == {"deleted": ["postgresql/shop/shop-db"]}
    assert lines[0] == "deleting postgresql shop/shop-db" and lines[-1] == "postgresql shop/shop-db is gone"
    assert standin.get("postgresqls", "shop-db", "shop") is None
    again = await run({"operation": "delete", **PG, "wait": True}, platform, lines)
    assert again.succeeded and lines[-1] == "postgresql shop/shop-db is already gone"


async def test_the_event_loop_keeps_running_during_calls(standin: StandIn, platform: AdminConfig) -> None:
    standin.operator_delay = 0.8
    assert (
        await run(
            {"operation": "apply", "manifest": f"{NAMESPACE}---\n{CLUSTER}", "namespace": "shop"}, platform
        )
    ).succeeded
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        result = await run(
            {"operation": "wait", **PG, "field": "status.PostgresClusterStatus", "equals": "Running"},
            platform,
        )
    finally:
        task.cancel()
    assert result.succeeded
    assert ticks > 20


async def test_default_kubeconfig_loading_uses_the_environment(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = standin.write_kubeconfig(tmp_path / "env-kubeconfig.yaml")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    result = await run({"operation": "apply", "manifest": NAMESPACE}, AdminConfig())
    assert result.succeeded, result.error
    assert standin.names("namespaces") == ["shop"]


async def test_unreachable_server_and_bad_kubeconfig(tmp_path: Path) -> None:
    dead = tmp_path / "dead.yaml"
    dead.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    result = await run(
        {"operation": "apply", "manifest": NAMESPACE}, AdminConfig(kubernetes=KubernetesSettings(dead))
    )
    assert result.error is not None
    assert result.error.startswith("apply: cannot reach the Kubernetes API at http://127.0.0.1:1: ")
    assert "Traceback" not in result.error
    missing = AdminConfig(kubernetes=KubernetesSettings(tmp_path / "nope.yaml"))
    result = await run({"operation": "apply", "manifest": NAMESPACE}, missing)
    assert result.error is not None
    assert result.error.startswith(
        f"cannot load Kubernetes settings from kubeconfig {tmp_path / 'nope.yaml'}"
    )
    other = AdminConfig(kubernetes=KubernetesSettings(dead, context="elsewhere"))
    result = await run({"operation": "apply", "manifest": NAMESPACE}, other)
    assert result.error is not None and "elsewhere" in result.error


# --- load-time checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "step.config.operation: is required"),
        (
            {"operation": "patch"},
            "step.config.operation: must be one of apply, delete, get, wait, read-secret, got 'patch'",
        ),
        ({"operation": "apply"}, "step.config.manifest: is required"),
        (
            {"operation": "apply", "manifest": "kind: Namespace\n"},
            "step.config.manifest: manifest document 1: apiVersion is required",
        ),
        ({"operation": "apply", "manifest": "a: [\n"}, "step.config.manifest: manifest is not valid YAML"),
        (
            {"operation": "apply", "manifest": NAMESPACE, "wait": True},
            "step.config.wait: not a field of operation 'apply'",
        ),
        ({"operation": "wait", **PG, "equals": "Running"}, "step.config.field: is required"),
        (
            {"operation": "wait", **PG, "field": "status..x", "equals": "R"},
            "step.config.field: must be a dotted field path",
        ),
        ({"operation": "wait", **PG, "field": "status.x"}, "step.config.equals: is required"),
        (
            {"operation": "wait", **PG, "field": "status.x", "equals": "R", "timeout": "soon"},
            "step.config.timeout: must be seconds or a duration",
        ),
        ({"operation": "get", **PG, "kind": "Secret"}, "step.config.kind: use operation 'read-secret'"),
        ({"operation": "get", **PG, "fields": ["a"]}, "step.config.fields: must be a mapping"),
        ({"operation": "delete", "apiVersion": "v1", "kind": "Namespace"}, "step.config.name: is required"),
        ({"operation": "delete", **PG, "wait": "yes"}, "step.config.wait: must be true or false"),
        (
            {"operation": "delete", **PG, "manifest": NAMESPACE},
            "give either manifest or apiVersion/kind/name",
        ),
        ({"operation": "read-secret", "name": "s"}, "step.config.namespace: is required"),
        (
            {"operation": "read-secret", "name": "s", "namespace": "n", "keys": {"a": 1}},
            "step.config.keys.a: must be a non-empty string",
        ),
    ],
)
def test_config_is_checked_at_load(config: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError) as err:
        make_step(config)
    assert message in str(err.value)


def test_template_fields_are_the_string_fields() -> None:
    config = {
        "operation": "wait",
        **PG,
        "field": "status.x",
        "equals": "{{ parameters.app_name }}",
        "timeout": 30,
    }
    fields = KubernetesStep().template_fields(config, "w", AdminConfig())
    assert fields == [
        ("namespace", False),
        ("apiVersion", False),
        ("kind", False),
        ("name", False),
        ("equals", False),
    ]


def test_shipped_kubernetes_workflows_load() -> None:
    catalog = load_catalog(PROVIDERS, None)
    for operation, name in (
        ("create", "provision-postgres"),
        ("update", "update-postgres"),
        ("delete", "delete-postgres"),
    ):
        resolution = catalog.resolve("postgres", operation, "kubernetes")
        assert resolution.workflow.name == name
        assert "kubernetes" in resolution.workflow.tags
    assert catalog.resolve("postgres", "create").workflow.name == "provision-postgres-direct"
