"""The REST layer outside dev mode: same tokens, same team scoping, JSON errors with their status codes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.e2e.server import Server, run_server

SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text().replace("demo-app-mock", "rest-app")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("rest")) as srv:
        yield srv


def member(server: Server, team: str) -> dict[str, str]:
    created = httpx.post(
        server.graphql,
        json={"query": 'mutation { createToken(team: "%s") { token } }' % team},  # noqa: UP031 - a literal
        headers={"Authorization": f"Bearer {server.admin_token}"},
    ).json()
    return {"Authorization": f"Bearer {created['data']['createToken']['token']}"}


def test_rest_needs_a_token(server: Server) -> None:
    for path in ("/api/providers", "/api/resources", "/api/workflows"):
        response = httpx.get(server.url + path)
        assert response.status_code == 401
        assert response.json()["error"].startswith("authentication required")
    response = httpx.get(server.url + "/api/providers", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_rest_scoping_and_errors(server: Server) -> None:
    team_a, team_b = member(server, "rest-a"), member(server, "rest-b")
    yaml = {"Content-Type": "application/yaml"}
    created = httpx.post(server.url + "/api/specs", content=SPEC, headers={**team_a, **yaml})
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["revision"]) == ("rest-app", 1)
    [resource] = body["resources"]
    # claimed by the submission itself (a free engine slot): already provisioning
    assert resource["state"] == "provisioning" and resource["resource_type"] == "postgres-mock"

    taken = httpx.post(server.url + "/api/specs", content=SPEC, headers={**team_b, **yaml})
    assert taken.status_code == 403 and "belongs to another team" in taken.json()["error"]
    assert httpx.get(server.url + "/api/resources", headers=team_b).json() == []
    hidden = httpx.get(server.url + f"/api/resources/{resource['id']}", headers=team_b)
    assert hidden.status_code == 404 and hidden.json()["error"] == f"resource '{resource['id']}' not found"
    assert httpx.get(server.url + f"/api/resources/{resource['id']}", headers=team_a).status_code == 200
    assert httpx.get(server.url + "/api/workflows/nope", headers=team_a).status_code == 404

    bad = httpx.post(server.url + "/api/specs", content="- a list", headers={**team_a, **yaml})
    assert bad.status_code == 400 and bad.json()["problems"] == [
        {"path": "", "message": "must be a mapping, got list"}
    ]
    big = httpx.post(server.url + "/api/specs", content="x" * (2 * 1024 * 1024), headers={**team_a, **yaml})
    assert big.status_code == 413 and "larger than" in big.json()["error"]
