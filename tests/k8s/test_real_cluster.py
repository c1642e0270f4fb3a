"""The `class: kubernetes` postgres workflows against a REAL cluster running the Zalando postgres-operator.

Skipped unless KUBECONFIG is set (its current context is used, or INNOMINATUS_TEST_K8S_CONTEXT). It
creates a namespace `k8s-<random>` and a small cluster in it, resizes it, deletes the cluster, and then
the namespace. Run: `KUBECONFIG=~/.kube/config python -m pytest tests/k8s -m k8s`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from innominatus import operations, specs
from innominatus.db import database, models
from innominatus.events import EventHub
from innominatus.providers import Catalog, load_catalog
from innominatus.store import Store
from tests.conftest import PROVIDERS
from tests.integration.helpers import running_engine
from tests.integration.test_operations import wait_states

pytestmark = [
    pytest.mark.k8s,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a real Kubernetes cluster with the Zalando postgres-operator: set KUBECONFIG",
    ),
]

CONTEXT = os.environ.get("INNOMINATUS_TEST_K8S_CONTEXT")
READY = 12 * 60  # the workflow waits up to 10 minutes for Running


@pytest.fixture
def cluster() -> Iterator[Any]:
    from kubernetes import client, config
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    configuration = client.Configuration()
    config.load_kube_config(
        config_file=os.environ["KUBECONFIG"], context=CONTEXT, client_configuration=configuration
    )
    api = client.ApiClient(configuration=configuration)
    dynamic = DynamicClient(api)
    try:
        dynamic.resources.get(api_version="acid.zalan.do/v1", kind="postgresql")
    except ResourceNotFoundError:
        api.close()
        pytest.skip(
            "the cluster has no acid.zalan.do/v1 postgresql kind: install the Zalando postgres-operator"
        )
    try:
        yield dynamic
    finally:
        api.close()


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    config = tmp_path / "admin-config.yaml"
    kubeconfig = os.environ["KUBECONFIG"].split(os.pathsep)[0]
    config.write_text(
        f"kubernetes:\n  kubeconfig: {kubeconfig}\n" + (f"  context: {CONTEXT}\n" if CONTEXT else "")
    )
    return load_catalog(PROVIDERS, config)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    engine = database.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'innominatus.db'}")
    await database.upgrade(engine)
    s = Store(engine, EventHub())
    try:
        yield s
    finally:
        await s.close()


def spec(app: str, size: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: a\n"
        f"resources:\n  db:\n    type: postgres\n    class: kubernetes\n"
        f"    properties:\n      size: {size}\n      replicas: 1\n"
    )


async def test_provision_resize_delete_on_a_real_cluster(
    store: Store, catalog: Catalog, cluster: Any
) -> None:
    app = f"k8s-{uuid.uuid4().hex[:8]}"
    postgresqls = cluster.resources.get(api_version="acid.zalan.do/v1", kind="postgresql")
    namespaces = cluster.resources.get(api_version="v1", kind="Namespace")
    try:
        async with running_engine(store, catalog):
            await specs.submit(store, catalog, spec(app, "small"))
            db = (await wait_states(store, app, {"db": "ACTIVE"}, timeout=READY))["db"]
            out = db.outputs
            assert out["host"] == f"{app}-db.{app}.svc.cluster.local"
            assert out["username"] == "db_app" and out["password"]
            assert out["connection_string"].startswith("postgresql://db_app:")
            cr = postgresqls.get(name=f"{app}-db", namespace=app).to_dict()
            assert cr["spec"]["teamId"] == app and cr["spec"]["volume"]["size"] == "5Gi"
            assert cr["status"]["PostgresClusterStatus"] == "Running"

            async with store.transaction() as session:
                row = await session.get(models.Resource, db.id)
                application = await session.get(models.Application, row.application_id)
                await operations.update_properties(session, catalog, application, row, {"size": "medium"})
            updated = (await wait_states(store, app, {"db": "ACTIVE"}, timeout=READY))["db"]
            assert updated.outputs["password"] == out["password"]
            cr = postgresqls.get(name=f"{app}-db", namespace=app).to_dict()
            assert cr["spec"]["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}

            async with store.transaction() as session:
                application = await operations.lock_application(session, app)
                await operations.delete_application(session, catalog, application)
            await wait_states(store, app, {"db": "DELETED"}, timeout=READY)
        assert not postgresqls.get(namespace=app).to_dict()["items"]
    finally:
        try:
            namespaces.delete(name=app)
        except Exception as exc:  # already gone, or never made
            print(f"cleanup of namespace {app}: {exc}")
