"""The holes a review found (issue 10), each tried through a real server: names that are not exactly
what they look like, and the other refusals. Every refusal names what is wrong and stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ADMIN_TOKEN, Server, run_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
YAML = {"Content-Type": "application/yaml"}
SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }"


def spec(app: str, resource: str = "db", container: str = "main") -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  {container}:\n"
        f"    image: nginx\nresources:\n  {resource}:\n    type: postgres-mock\n"
    )


def graphql(server: Server, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(
        server.graphql, json={"query": query, "variables": variables or {}}, headers=ADMIN, timeout=30
    )
    return dict(response.json())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp("hardening")
    with run_server(workdir) as srv:
        yield srv


def applications(server: Server) -> list[str]:
    return [a["name"] for a in graphql(server, "{ applications { name } }")["data"]["applications"]]


# ------------------------------------------------------------------------------- names are exact

ODD_NAMES = {
    "trailing newline": '"shop\\n"',
    "carriage return": '"shop\\r"',
    "tab": '"sh\\top"',
    "line separator": '"shop\\u2028"',
    "NUL": '"shop\\0"',
}


@pytest.mark.parametrize("name", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_an_application_name_with_a_control_character_is_refused(server: Server, name: str) -> None:
    answer = graphql(server, SUBMIT, {"spec": spec(name)})
    assert answer["data"] is None, answer
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    paths = [p["path"] for p in error["extensions"]["problems"]]
    assert "metadata.name" in paths, error
    assert "shop" not in applications(server)


def test_resource_and_container_names_are_exact_too(server: Server) -> None:
    answer = graphql(server, SUBMIT, {"spec": spec("exact-app", resource='"db\\n"', container='"main\\n"')})
    [error] = answer["errors"]
    problems = {p["path"]: p["message"] for p in error["extensions"]["problems"]}
    # The path shows the newline as an escape, never as a line break.
    assert problems["resources.db\\n"].startswith("is not a valid name: must be lowercase letters")
    assert problems["containers.main\\n"].startswith("is not a valid name")
    rest = httpx.post(
        server.url + "/api/specs",
        content=spec("exact-app", resource='"db\\n"'),
        headers={**ADMIN, **YAML},
        timeout=30,
    )
    assert rest.status_code == 400, rest.text
    assert "resources.db\\n" in [p["path"] for p in rest.json()["problems"]]
    assert "exact-app" not in applications(server)


def test_a_team_name_with_a_trailing_newline_is_refused(server: Server) -> None:
    answer = graphql(server, "mutation($t: String!) { createToken(team: $t) { token } }", {"t": "shop\n"})
    assert answer["data"] is None, answer
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "team" in answer["errors"][0]["message"]
    tokens = graphql(server, "{ tokens { team } }")["data"]["tokens"]
    assert all(t["team"] != "shop\n" for t in tokens)
