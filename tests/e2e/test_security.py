"""Authorization between teams, secrets at rest and in logs, abuse limits and injections, against a
real server (SQLite and PostgreSQL). Teams A and B get member tokens from the admin token."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from gql import GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError

from tests.conftest import PROVIDERS, fresh_pg_database, workflow_yaml
from tests.e2e.conftest import http_client, ws_client
from tests.e2e.server import ADMIN_TOKEN, Server, run_server

TEAM_A, TEAM_B = "team-a", "team-b"
MASK = "********"
# The failing provider's secrets are in its script, so the test knows them without any output.
FAIL_PASSWORD = "FailPw" + secrets.token_hex(10)
FAIL_TOKEN = "FailTok" + secrets.token_hex(10)

# --------------------------------------------------------------------------------- provider files

LEAKY = workflow_yaml(
    "provision-leaky",
    """\
    - name: make-secrets
      type: policy
      timeout: 30
      config:
        script: |
          set -euo pipefail
          password=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
          api_token=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
          private_ref=$(head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
          echo "generated password: ${password}"
          echo "api token is ${api_token}"
          echo "private ref ${private_ref}" >&2
          echo "password=${password}" >> "$INNOMINATUS_OUTPUT"
          echo "api_token=${api_token}" >> "$INNOMINATUS_OUTPUT"
          echo "private_ref=${private_ref}" >> "$INNOMINATUS_OUTPUT"
          echo "plain=visible" >> "$INNOMINATUS_OUTPUT"
          echo "relay=${password}" >> "$INNOMINATUS_OUTPUT"
    - name: use-secrets
      type: policy
      timeout: 30
      config:
        script: |
          set -euo pipefail
          echo "connecting with {{ steps['make-secrets'].outputs.password }}"
          echo "calling the API with {{ steps['make-secrets'].outputs.api_token }}" >&2
    """,
    outputs="""\
    host: localhost
    plain: "{{ steps['make-secrets'].outputs.plain }}"
    relay: "{{ steps['make-secrets'].outputs.relay }}"
    password: "{{ steps['make-secrets'].outputs.password }}"
    api_token: "{{ steps['make-secrets'].outputs.api_token }}"
    private_ref:
      value: "{{ steps['make-secrets'].outputs.private_ref }}"
      sensitive: true
    """,
)

LEAKY_FAILURE = workflow_yaml(
    "provision-leaky-failure",
    f"""\
    - name: leak-and-fail
      type: policy
      timeout: 30
      config:
        script: |
          set -euo pipefail
          echo "password={FAIL_PASSWORD}" >> "$INNOMINATUS_OUTPUT"
          echo "api_token={FAIL_TOKEN}" >> "$INNOMINATUS_OUTPUT"
          echo "starting with password {FAIL_PASSWORD}"
          echo "could not connect with {FAIL_PASSWORD} using {FAIL_TOKEN}" >&2
          exit 3
    """,
)

SECRET_PROVIDER = """\
apiVersion: v1
kind: Provider
metadata:
  name: secret-team
  version: 1.0.0
  category: test
capabilities:
  resourceTypeCapabilities:
    - type: leaky-secret
      operations:
        create:
          workflow: provision-leaky
    - type: leaky-failure
      operations:
        create:
          workflow: provision-leaky-failure
workflows:
  - name: provision-leaky
    file: ./workflows/provision-leaky.yaml
    operation: create
  - name: provision-leaky-failure
    file: ./workflows/provision-leaky-failure.yaml
    operation: create
"""


def write_providers(root: Path) -> Path:
    providers = root / "providers"
    shutil.copytree(PROVIDERS, providers)
    folder = providers / "secret-team"
    (folder / "workflows").mkdir(parents=True)
    (folder / "provider.yaml").write_text(SECRET_PROVIDER)
    (folder / "workflows" / "provision-leaky.yaml").write_text(LEAKY)
    (folder / "workflows" / "provision-leaky-failure.yaml").write_text(LEAKY_FAILURE)
    return providers


def spec(app: str, resources: dict[str, tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "apiVersion: score.dev/v1b1",
        f"metadata:\n  name: {app}",
        "containers:\n  main:\n    image: nginx:latest",
        "resources:",
    ]
    for name, (rtype, properties) in resources.items():
        lines.append(f"  {name}:\n    type: {rtype}")
        if properties:
            lines.append("    properties:")
            lines += [f"      {key}: {json.dumps(value)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def mock_db(app: str, db_name: str) -> str:
    return spec(app, {"database": ("postgres-mock", {"db_name": db_name, "size": "small"})})


# ------------------------------------------------------------------------------------------ helpers


def call(server: Server, token: str | None, query: str, variables: dict[str, Any] | None = None) -> Any:
    """A raw GraphQL POST (sync, for fixtures and polling); the whole JSON answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        server.graphql, json={"query": query, "variables": variables or {}}, headers=headers, timeout=30
    )
    return response.json()


def ok(answer: dict[str, Any]) -> dict[str, Any]:
    assert not answer.get("errors"), answer
    return dict(answer["data"])


def refused(answer: dict[str, Any], code: str) -> str:
    assert answer.get("data") is None, answer
    assert answer.get("errors"), answer
    assert answer["errors"][0]["extensions"]["code"] == code, answer
    return str(answer["errors"][0]["message"])


SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name revision } } }"
STATES = "query($app: String) { resources(application: $app) { id name state } }"


def wait_settled(server: Server, apps: list[str], timeout: float = 40) -> None:
    """Until every resource of `apps` is ACTIVE or FAILED (as the admin sees them)."""
    deadline = time.monotonic() + timeout
    pending = list(apps)
    while pending:
        rows = ok(call(server, ADMIN_TOKEN, STATES, {"app": pending[0]}))["resources"]
        if rows and all(r["state"] in ("ACTIVE", "FAILED") for r in rows):
            pending.pop(0)
            continue
        assert time.monotonic() < deadline, f"{pending[0]} did not settle: {rows}"
        time.sleep(0.1)


@dataclass
class World:
    server: Server
    pg_url: str | None
    tokens: dict[str, str]  # team → member token
    token_ids: dict[str, str]
    resources: dict[str, str] = field(default_factory=dict)  # app → id of its (only) resource
    workflows: dict[str, str] = field(default_factory=dict)  # app → id of its (only) execution

    def token(self, team: str) -> str:
        return ADMIN_TOKEN if team == "admin" else self.tokens[team]


APPS = {
    # app → (submitting team, spec)
    "sec-a-app": (TEAM_A, mock_db("sec-a-app", "a_db")),
    "sec-a-leaky": (TEAM_A, spec("sec-a-leaky", {"vault": ("leaky-secret", {})})),
    "sec-a-failing": (TEAM_A, spec("sec-a-failing", {"vault": ("leaky-failure", {})})),
    "sec-b-app": (TEAM_B, mock_db("sec-b-app", "b_db")),
    "sec-admin-app": ("admin", mock_db("sec-admin-app", "admin_db")),
}
A_APPS = {name for name, (team, _) in APPS.items() if team == TEAM_A}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp(f"security-{request.param}")
    providers = write_providers(workdir)
    pg_url = server_url = None
    if request.param == "postgres":
        pg_url = fresh_pg_database(request.getfixturevalue("pg_server"))
        server_url = pg_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    with run_server(workdir, database_url=server_url, args=["--providers-dir", str(providers)]) as srv:
        tokens, ids = {}, {}
        for team in (TEAM_A, TEAM_B):
            created = ok(
                call(
                    srv,
                    ADMIN_TOKEN,
                    'mutation($team: String!) { createToken(team: $team, role: "member") '
                    "{ token info { id team role } } }",
                    {"team": team},
                )
            )["createToken"]
            assert created["info"]["team"] == team and created["info"]["role"] == "member"
            tokens[team], ids[team] = created["token"], created["info"]["id"]
        w = World(srv, pg_url, tokens, ids)
        for team, text in APPS.values():
            ok(call(srv, w.token(team), SUBMIT, {"spec": text}))
        wait_settled(srv, list(APPS))
        for app in APPS:
            [row] = ok(call(srv, ADMIN_TOKEN, STATES, {"app": app}))["resources"]
            w.resources[app] = row["id"]
            [run] = ok(
                call(
                    srv,
                    ADMIN_TOKEN,
                    "query($app: String) { workflows(application: $app) { id } }",
                    {"app": app},
                )
            )["workflows"]
            w.workflows[app] = run["id"]
        yield w


# ------------------------------------------------------------------------------------ authorization


def test_applications_belong_to_the_submitting_team(world: World) -> None:
    for team, own in ((TEAM_A, A_APPS), (TEAM_B, {"sec-b-app"})):
        names = {
            a["name"]
            for a in ok(call(world.server, world.token(team), "{ applications { name } }"))["applications"]
        }
        assert names == own, (team, names)
    everything = {
        a["name"] for a in ok(call(world.server, ADMIN_TOKEN, "{ applications { name } }"))["applications"]
    }
    assert everything >= set(APPS)


def test_members_list_only_their_teams_resources_and_workflows(world: World) -> None:
    for team in (TEAM_A, TEAM_B):
        token = world.token(team)
        own = {app for app, (owner, _) in APPS.items() if owner == team}
        resources = ok(call(world.server, token, "{ resources { id application state outputs } }"))[
            "resources"
        ]
        workflows = ok(call(world.server, token, "{ workflows { id applicationName resource { id } } }"))[
            "workflows"
        ]
        assert {r["application"] for r in resources} == own, resources
        assert {w["applicationName"] for w in workflows} == own, workflows
        assert {r["id"] for r in resources} == {world.resources[a] for a in own}
        assert {w["id"] for w in workflows} == {world.workflows[a] for a in own}
    admin = ok(call(world.server, ADMIN_TOKEN, "{ resources { application } workflows { applicationName } }"))
    assert {r["application"] for r in admin["resources"]} >= set(APPS)
    assert {w["applicationName"] for w in admin["workflows"]} >= set(APPS)


def test_list_filters_on_another_teams_application_return_nothing(world: World) -> None:
    token = world.token(TEAM_A)
    for query in (
        '{ resources(application: "sec-b-app") { id } }',
        '{ workflows(application: "sec-b-app") { id } }',
        '{ resources(application: "sec-admin-app") { id } }',
    ):
        data = ok(call(world.server, token, query))
        assert next(iter(data.values())) == [], (query, data)
    typed = ok(call(world.server, token, '{ resources(type: "postgres-mock") { application } }'))["resources"]
    assert [r["application"] for r in typed] == ["sec-a-app"]


def test_another_teams_ids_look_exactly_like_unknown_ones(world: World) -> None:
    token = world.token(TEAM_A)
    b_resource, b_workflow = world.resources["sec-b-app"], world.workflows["sec-b-app"]
    unknown = "00000000-0000-0000-0000-000000000000"
    for query, other, missing in (
        ("query($id: ID!) { resource(id: $id) { id } }", b_resource, unknown),
        ("query($id: ID!) { workflow(id: $id) { id } }", b_workflow, unknown),
        ("query($id: String!) { application(name: $id) { name } }", "sec-b-app", "no-such-app"),
        ("query($id: String!) { application(name: $id) { name } }", "sec-admin-app", "no-such-app-2"),
    ):
        theirs = refused(call(world.server, token, query, {"id": other}), "NOT_FOUND")
        nobodys = refused(call(world.server, token, query, {"id": missing}), "NOT_FOUND")
        assert theirs.replace(other, "<id>") == nobodys.replace(missing, "<id>")
        # The owner and the admin do see it.
        for who in (TEAM_B if other != "sec-admin-app" else "admin", "admin"):
            ok(call(world.server, world.token(who), query, {"id": other}))


def test_mutations_on_another_teams_resources_are_not_found_and_change_nothing(world: World) -> None:
    token = world.token(TEAM_A)
    b_resource = world.resources["sec-b-app"]
    detail = (
        "query($id: ID!) { resource(id: $id) { state properties updatedAt transitions { toState } } "
        'workflows(application: "sec-b-app") { id } application(name: "sec-b-app") { revision } }'
    )
    before = ok(call(world.server, ADMIN_TOKEN, detail, {"id": b_resource}))
    unknown = "00000000-0000-0000-0000-000000000000"
    for target in (b_resource, unknown):
        refused(
            call(
                world.server,
                token,
                'mutation($id: ID!) { updateResource(id: $id, properties: {size: "large"}) { id } }',
                {"id": target},
            ),
            "NOT_FOUND",
        )
        refused(
            call(world.server, token, "mutation($id: ID!) { retryResource(id: $id) { id } }", {"id": target}),
            "NOT_FOUND",
        )
    for name in ("sec-b-app", "sec-admin-app", "no-such-app"):
        refused(
            call(
                world.server,
                token,
                "mutation($n: String!) { deleteApplication(name: $n) { name } }",
                {"n": name},
            ),
            "NOT_FOUND",
        )
    time.sleep(0.3)  # anything wrongly started would show by now
    after = ok(call(world.server, ADMIN_TOKEN, detail, {"id": b_resource}))
    assert after == before
    assert after["resource"]["state"] == "ACTIVE"
    assert ok(call(world.server, ADMIN_TOKEN, '{ application(name: "sec-admin-app") { name } }'))


def test_submitting_another_teams_application_is_forbidden(world: World) -> None:
    detail = (
        "query($app: String!) { application(name: $app) { revision spec } "
        "resources(application: $app) { id state properties } workflows(application: $app) { id } }"
    )
    for team, app in ((TEAM_A, "sec-b-app"), (TEAM_A, "sec-admin-app"), (TEAM_B, "sec-a-app")):
        before = ok(call(world.server, ADMIN_TOKEN, detail, {"app": app}))
        hostile = spec(
            app,
            {
                "database": ("postgres-mock", {"db_name": "stolen", "size": "large"}),
                "extra": ("postgres-mock", {"db_name": "extra"}),
            },
        )
        refused(call(world.server, world.token(team), SUBMIT, {"spec": hostile}), "FORBIDDEN")
        # Even an identical spec is refused: the name is taken.
        refused(call(world.server, world.token(team), SUBMIT, {"spec": APPS[app][1]}), "FORBIDDEN")
        time.sleep(0.2)
        assert ok(call(world.server, ADMIN_TOKEN, detail, {"app": app})) == before


def test_token_management_is_admin_only(world: World) -> None:
    token = world.token(TEAM_A)
    for query, variables in (
        ('mutation { createToken(team: "team-a", role: "admin") { token } }', {}),
        ('mutation { createToken(team: "team-a") { token } }', {}),
        ("{ tokens { id team } }", {}),
        ("mutation($id: ID!) { revokeToken(id: $id) { id } }", {"id": world.token_ids[TEAM_B]}),
        ("mutation($id: ID!) { revokeToken(id: $id) { id } }", {"id": world.token_ids[TEAM_A]}),
    ):
        refused(call(world.server, token, query, variables), "FORBIDDEN")
    # Nothing was revoked or created.
    rows = ok(call(world.server, ADMIN_TOKEN, "{ tokens { id team role revokedAt } }"))["tokens"]
    assert all(r["revokedAt"] is None for r in rows if r["id"] in world.token_ids.values())
    assert sorted((r["team"], r["role"]) for r in rows if r["team"] == TEAM_A) == [(TEAM_A, "member")]
    ok(call(world.server, token, "{ applications { name } }"))


def test_tokens_never_show_a_token_or_its_hash(world: World) -> None:
    answer = call(
        world.server, ADMIN_TOKEN, "{ tokens { id team role description createdAt expiresAt revokedAt } }"
    )
    text = json.dumps(ok(answer))
    for token in (*world.tokens.values(), ADMIN_TOKEN):
        assert token not in text
        assert hashlib.sha256(token.encode()).hexdigest() not in text
    fields = ok(call(world.server, ADMIN_TOKEN, '{ __type(name: "ApiToken") { fields { name } } }'))["__type"]
    names = {f["name"].lower() for f in fields["fields"]}
    assert not {n for n in names if "token" in n or "hash" in n}, names


def test_providers_are_visible_to_every_team(world: World) -> None:
    for team in (TEAM_A, TEAM_B, "admin"):
        names = {
            p["name"]
            for p in ok(call(world.server, world.token(team), "{ providers { name } }"))["providers"]
        }
        assert {"database-team", "secret-team"} <= names
        ok(call(world.server, world.token(team), '{ provider(name: "database-team") { name capabilities } }'))
    refused(call(world.server, None, "{ providers { name } }"), "UNAUTHENTICATED")


async def _first_error(world: World, team: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    async with ws_client(world.server, token=world.token(team)) as ws:
        subscription = ws.subscribe(GraphQLRequest(gql(query), variable_values=variables))
        async with contextlib.aclosing(subscription):
            with pytest.raises(TransportQueryError) as err:
                async for item in subscription:
                    pytest.fail(f"an event of another team's resource: {item}")
    return dict(err.value.errors[0])


async def test_subscribing_to_another_teams_resource_or_workflow_is_not_found(world: World) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    state_query = (
        "subscription($id: ID) { resourceStateChanged(resourceId: $id, afterSequence: 0) { sequence } }"
    )
    step_query = "subscription($id: ID) { workflowStepChanged(workflowId: $id) { workflowId } }"
    for query, target in (
        (state_query, world.resources["sec-b-app"]),
        (state_query, world.resources["sec-admin-app"]),
        (state_query, unknown),
        (step_query, world.workflows["sec-b-app"]),
        (step_query, unknown),
    ):
        error = await _first_error(world, TEAM_A, query, {"id": target})
        assert error["extensions"]["code"] == "NOT_FOUND", error


async def _collect(
    world: World, token: str, query: str, variables: dict[str, Any], quiet: float = 1.0
) -> list[dict[str, Any]]:
    """Events until none came for `quiet` seconds."""
    items: list[dict[str, Any]] = []
    async with ws_client(world.server, token=token) as ws:
        subscription = ws.subscribe(GraphQLRequest(gql(query), variable_values=variables))
        async with contextlib.aclosing(subscription):
            iterator = aiter(subscription)
            while True:
                try:
                    item = await asyncio.wait_for(anext(iterator), quiet)
                except TimeoutError:
                    return items
                items.append(next(iter(item.values())))


REPLAY = "subscription { resourceStateChanged(afterSequence: 0) { sequence resourceId application toState } }"


async def test_replay_holds_only_the_callers_events(world: World) -> None:
    a_events, b_events, admin_events = await asyncio.gather(
        *(_collect(world, world.token(who), REPLAY, {}) for who in (TEAM_A, TEAM_B, "admin"))
    )
    others = {world.resources["sec-b-app"], world.resources["sec-admin-app"]}
    assert a_events, "team A's own events are replayed"
    assert {e["application"] for e in a_events} >= A_APPS
    assert not [
        e for e in a_events if e["resourceId"] in others or e["application"] in ("sec-b-app", "sec-admin-app")
    ]

    assert "sec-b-app" in {e["application"] for e in b_events}, b_events
    assert not [e for e in b_events if not e["application"].startswith("sec-b-")], b_events

    assert {e["application"] for e in admin_events} >= set(APPS)


async def test_live_events_are_scoped_to_the_team(world: World) -> None:
    states = "subscription { resourceStateChanged { resourceId application toState } }"
    steps = "subscription { workflowStepChanged { workflowId application logLine } }"
    seen: dict[str, list[dict[str, Any]]] = {"states": [], "steps": []}
    ready = [asyncio.Event(), asyncio.Event()]

    async def watch(kind: str, query: str, flag: asyncio.Event) -> None:
        async with ws_client(world.server, token=world.token(TEAM_A)) as ws:
            subscription = ws.subscribe(GraphQLRequest(gql(query)))
            flag.set()
            async with contextlib.aclosing(subscription):
                async for item in subscription:
                    seen[kind].append(next(iter(item.values())))

    tasks = [
        asyncio.create_task(watch(k, q, f))
        for (k, q), f in zip((("states", states), ("steps", steps)), ready, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in ready)), 10)
        await asyncio.sleep(0.4)
        suffix = secrets.token_hex(3)
        a_app, b_app = f"sec-a-live-{suffix}", f"sec-b-live-{suffix}"
        async with http_client(world.server, token=world.token(TEAM_B)) as session:
            await session.execute(
                GraphQLRequest(gql(SUBMIT), variable_values={"spec": mock_db(b_app, "b_live")})
            )
        async with http_client(world.server, token=world.token(TEAM_A)) as session:
            await session.execute(
                GraphQLRequest(gql(SUBMIT), variable_values={"spec": mock_db(a_app, "a_live")})
            )
        await asyncio.to_thread(wait_settled, world.server, [a_app, b_app])
        await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    assert a_app in {e["application"] for e in seen["states"]}, seen["states"]
    assert a_app in {e["application"] for e in seen["steps"]}, seen["steps"]
    for kind in ("states", "steps"):
        leaked = [e for e in seen[kind] if not e["application"].startswith("sec-a-")]
        assert not leaked, (kind, leaked)


# ------------------------------------------------------------------------------------------- secrets

RESOURCE_DETAIL = (
    "query($app: String) { resources(application: $app) { id state outputs errorMessage "
    "transitions { reason } } workflows(application: $app) { id status errorMessage "
    "steps { name status logs outputs errorMessage } } }"
)


def _leaky_secrets(world: World, token: str) -> dict[str, str]:
    data = ok(call(world.server, token, RESOURCE_DETAIL, {"app": "sec-a-leaky"}))
    assert len(data["resources"]) == 1, f"the owner (or admin) does not see sec-a-leaky's resource: {data}"
    [resource] = data["resources"]
    assert resource["state"] == "ACTIVE", resource
    outputs = resource["outputs"]
    return {key: outputs[key] for key in ("password", "api_token", "private_ref")} | {
        "plain": outputs["plain"],
        "relay": outputs["relay"],
    }


def test_owner_and_admin_read_secret_outputs_in_plaintext(world: World) -> None:
    owner = _leaky_secrets(world, world.token(TEAM_A))
    assert _leaky_secrets(world, ADMIN_TOKEN) == owner
    assert owner["plain"] == "visible"
    # Not secret by its name, but the password's value: sealed at rest, opened for the owner.
    assert owner["relay"] == owner["password"]
    for key in ("password", "api_token", "private_ref"):
        value = owner[key]
        assert len(value) == 24 and value.isalnum() and not value.startswith("sealed"), (key, value)
    # The step's own outputs too.
    data = ok(call(world.server, world.token(TEAM_A), RESOURCE_DETAIL, {"app": "sec-a-leaky"}))
    [run] = data["workflows"]
    make = next(s for s in run["steps"] if s["name"] == "make-secrets")
    assert {k: make["outputs"][k] for k in ("password", "api_token", "private_ref")} == {
        k: owner[k] for k in ("password", "api_token", "private_ref")
    }


def test_step_logs_mask_secret_outputs(world: World) -> None:
    # Read as admin: masking does not depend on who reads (the owner's view is checked above).
    values = _leaky_secrets(world, ADMIN_TOKEN)
    data = ok(call(world.server, ADMIN_TOKEN, RESOURCE_DETAIL, {"app": "sec-a-leaky"}))
    [run] = data["workflows"]
    assert run["status"] == "SUCCEEDED"
    make, use = run["steps"]
    assert f"generated password: {MASK}" in make["logs"], make["logs"]
    assert f"api token is {MASK}" in make["logs"]
    assert f"private ref {MASK}" in make["logs"]  # declared sensitive by the workflow
    assert f"connecting with {MASK}" in use["logs"], use["logs"]  # a later step printing it
    assert f"calling the API with {MASK}" in use["logs"]
    text = json.dumps(data)
    for key in ("password", "api_token", "private_ref"):
        # The resource's outputs and the step's (the password twice in each: as itself and as relay).
        assert text.count(values[key]) == (4 if key == "password" else 2), key
        for step in run["steps"]:
            assert values[key] not in step["logs"]
            assert values[key] not in (step["errorMessage"] or "")


def test_failed_step_masks_the_secret_it_printed(world: World) -> None:
    data = ok(call(world.server, ADMIN_TOKEN, RESOURCE_DETAIL, {"app": "sec-a-failing"}))
    [resource] = data["resources"]
    [run] = data["workflows"]
    assert resource["state"] == "FAILED" and run["status"] == "FAILED"
    [step] = run["steps"]
    assert step["status"] == "FAILED"
    assert f"starting with password {MASK}" in step["logs"], step["logs"]
    assert f"could not connect with {MASK} using {MASK}" in step["logs"], step["logs"]
    assert "exit code 3" in (step["errorMessage"] or ""), step
    assert MASK in step["errorMessage"], step["errorMessage"]
    # Everything but outputs (which the owner and admins may read decrypted) is free of the secrets.
    texts = [step["logs"], step["errorMessage"], run["errorMessage"], resource["errorMessage"]]
    texts += [t["reason"] or "" for t in resource["transitions"]]
    leaked = [t for t in texts if FAIL_PASSWORD in (t or "") or FAIL_TOKEN in (t or "")]
    assert not leaked, leaked


def _at_rest(world: World) -> bytes:
    """Everything the database holds: its files (SQLite) or a dump (PostgreSQL)."""
    if world.pg_url is not None:
        done = subprocess.run(
            ["pg_dump", "--no-owner", world.pg_url],
            capture_output=True,
            timeout=60,
            check=True,
        )
        return done.stdout
    files = [p for p in world.server.workdir.iterdir() if p.name.endswith((".db", ".db-wal", ".db-shm"))]
    assert any(p.name.endswith(".db") for p in files), list(world.server.workdir.iterdir())
    return b"".join(p.read_bytes() for p in files)


def test_no_plaintext_secret_at_rest_or_in_the_server_log(world: World) -> None:
    values = _leaky_secrets(world, ADMIN_TOKEN)
    stored = _at_rest(world)
    assert b"sealed:v1:" in stored  # the dump/files are what we think they are
    assert b"sec-a-leaky" in stored
    log = world.server.output()
    found = []
    for name, secret in (
        ("password", values["password"]),
        ("api_token", values["api_token"]),
        ("private_ref", values["private_ref"]),
        ("failing step's password", FAIL_PASSWORD),
        ("failing step's api_token", FAIL_TOKEN),
        *(("API token", token) for token in world.tokens.values()),
    ):
        if secret.encode() in stored:
            found.append(f"{name} is stored in plaintext")
        if secret in log:
            found.append(f"{name} is in the server log")
    assert not found, found


# --------------------------------------------------------------------------------------- abuse limits


def test_body_over_one_mebibyte_is_refused_with_413(world: World) -> None:
    big = "x" * (2 * 1024 * 1024)
    for headers in ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, {}):
        response = httpx.post(
            world.server.graphql,
            json={"query": SUBMIT, "variables": {"spec": big}},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 413, response.text
    assert httpx.get(f"{world.server.url}/health").status_code == 200


def test_a_client_gone_mid_body_leaves_no_traceback(world: World) -> None:
    """A client that sends half a body and hangs up (a load generator stopping, a closed tab) is nobody
    to answer: the server goes on, and its log shows no traceback for it."""
    host, port = world.server.url.removeprefix("http://").split(":")
    before = world.server.output().count("Traceback")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
                b'{"query": "{ resou'
            )
            time.sleep(0.2)  # the server is reading the body when the client goes
    time.sleep(0.5)
    assert httpx.get(f"{world.server.url}/health").status_code == 200
    assert world.server.output().count("Traceback") == before, world.server.output()[-3000:]


def _limit_error(answer: dict[str, Any], *words: str) -> None:
    assert answer.get("data") is None, answer
    assert answer.get("errors"), answer
    message = " ".join(e["message"] for e in answer["errors"]).lower()
    assert any(w in message for w in words), answer
    assert "internal server error" not in message


def _nested(levels: int) -> str:
    return "{ resources { " + "dependsOn { " * (levels - 1) + "id" + " }" * levels + " }"


def test_depth_bomb_is_refused(world: World) -> None:
    ok(call(world.server, ADMIN_TOKEN, _nested(3)))  # deeper nested lists cost too much (test_hardening)
    _limit_error(call(world.server, ADMIN_TOKEN, _nested(12)), "depth")
    _limit_error(call(world.server, ADMIN_TOKEN, _nested(200)), "depth", "nested too deeply")


def test_fragments_do_not_bypass_the_depth_limit(world: World) -> None:
    count = 14
    fragments = [f"fragment F{i} on Resource {{ id dependsOn {{ ...F{i + 1} }} }}" for i in range(count)] + [
        f"fragment F{count} on Resource {{ id }}"
    ]
    query = "{ resources { ...F0 } }\n" + "\n".join(fragments)
    _limit_error(call(world.server, ADMIN_TOKEN, query), "depth")


def test_fragment_cycle_is_refused(world: World) -> None:
    query = (
        "{ resources { ...A } }\n"
        "fragment A on Resource { id dependsOn { ...B } }\n"
        "fragment B on Resource { name requiredBy { ...A } }"
    )
    _limit_error(call(world.server, ADMIN_TOKEN, query), "cannot spread", "cycle", "depth")
    self_cycle = "{ resources { ...C } }\nfragment C on Resource { id ...C }"
    _limit_error(call(world.server, ADMIN_TOKEN, self_cycle), "cannot spread", "cycle", "depth")
    assert httpx.get(f"{world.server.url}/health").status_code == 200
    ok(call(world.server, ADMIN_TOKEN, "{ providers { name } }"))


def test_alias_bomb_is_refused(world: World) -> None:
    def aliases(n: int) -> str:
        return "{ " + " ".join(f"a{i}: providers {{ name }}" for i in range(n)) + " }"

    assert len(ok(call(world.server, ADMIN_TOKEN, aliases(30)))) == 30
    _limit_error(call(world.server, ADMIN_TOKEN, aliases(31)), "alias")
    _limit_error(call(world.server, ADMIN_TOKEN, aliases(5000)), "alias", "token")


def test_token_bomb_is_refused(world: World) -> None:
    query = "{ providers { " + "name " * 2100 + "} }"
    _limit_error(call(world.server, ADMIN_TOKEN, query), "token")


def test_introspection_is_on_by_default(world: World) -> None:
    data = ok(call(world.server, ADMIN_TOKEN, "{ __schema { queryType { name } } }"))
    assert data["__schema"]["queryType"]["name"] == "Query"


async def test_at_most_100_subscriptions_per_connection(world: World) -> None:
    query = 'subscription { resourceStateChanged(application: "nothing-ever") { sequence } }'
    async with websockets.connect(world.server.websocket, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {ADMIN_TOKEN}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
        for i in range(1, 102):
            await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {"query": query}}))
        replies = []
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            replies.append(reply)
            if reply.get("id") == "101":
                break
        assert reply["type"] == "error", replies
        assert "limit" in json.dumps(reply["payload"]).lower(), reply
        # The first hundred are live and silent: nothing refused them.
        assert [r for r in replies if r.get("id") != "101"] == [], replies
        # Ending one frees a slot.
        await ws.send(json.dumps({"id": "1", "type": "complete"}))
        await asyncio.sleep(0.3)
        await ws.send(json.dumps({"id": "102", "type": "subscribe", "payload": {"query": query}}))
        with contextlib.suppress(TimeoutError):
            reply = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            assert reply.get("id") != "102" or reply["type"] != "error", reply


# A server of its own: mutations limited to 3 a minute per token, introspection off.
@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"INNOMINATUS_RATE_LIMIT": "3/60", "INNOMINATUS_INTROSPECTION": "false"}
    with run_server(tmp_path_factory.mktemp("strict"), env=env) as srv:
        yield srv


def test_introspection_can_be_switched_off(strict_server: Server) -> None:
    for query in (
        "{ __schema { queryType { name } } }",
        '{ __type(name: "Query") { name } }',
        "{ providers { name } __schema { types { name } } }",
    ):
        answer = call(strict_server, ADMIN_TOKEN, query)
        assert answer.get("data") is None and answer.get("errors"), answer
        assert "introspection" in answer["errors"][0]["message"].lower(), answer
    ok(call(strict_server, ADMIN_TOKEN, "{ providers { name } }"))


def test_mutations_are_rate_limited_per_token(strict_server: Server) -> None:
    create = "mutation($t: String!) { createToken(team: $t) { token } }"
    member = ok(call(strict_server, ADMIN_TOKEN, create, {"t": "limited"}))["createToken"]["token"]
    ok(call(strict_server, ADMIN_TOKEN, create, {"t": "limited"}))
    ok(call(strict_server, ADMIN_TOKEN, create, {"t": "limited"}))
    message = refused(call(strict_server, ADMIN_TOKEN, create, {"t": "limited"}), "RATE_LIMITED")
    assert message
    refused(call(strict_server, ADMIN_TOKEN, create, {"t": "limited"}), "RATE_LIMITED")
    # Queries are not limited.
    for _ in range(10):
        ok(call(strict_server, ADMIN_TOKEN, "{ tokens { id } }"))
    # Each token has its own budget; a refused mutation still counts as one.
    delete = 'mutation { deleteApplication(name: "nope") { name } }'
    for _ in range(3):
        refused(call(strict_server, member, delete), "NOT_FOUND")
    refused(call(strict_server, member, delete), "RATE_LIMITED")
    ok(call(strict_server, member, "{ applications { name } }"))
    # Rate-limited tokens created nothing.
    rows = ok(call(strict_server, ADMIN_TOKEN, "{ tokens { team } }"))["tokens"]
    assert sum(r["team"] == "limited" for r in rows) == 3


# ----------------------------------------------------------------------------------------- injections


def _settle_and_read(world: World, app: str) -> dict[str, Any]:
    wait_settled(world.server, [app])
    return ok(call(world.server, ADMIN_TOKEN, RESOURCE_DETAIL, {"app": app}))


def test_spec_properties_are_never_evaluated_as_templates(world: World) -> None:
    app = "sec-template-" + secrets.token_hex(3)
    payloads = {
        "klass": "{{ ''.__class__ }}",
        "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "concat": "{{ 'abc' ~ 'xyz' * 3 }}",
        "block": "{% for x in range(3) %}loop{% endfor %}",
    }
    resources = {name: ("postgres-mock", {"db_name": text}) for name, text in payloads.items()}
    ok(call(world.server, world.token(TEAM_A), SUBMIT, {"spec": spec(app, resources)}))
    data = _settle_and_read(world, app)
    assert len(data["resources"]) == len(payloads)
    for resource in data["resources"]:
        assert resource["state"] == "FAILED", resource
        assert "db_name" in (resource["errorMessage"] or ""), resource
    props = ok(
        call(
            world.server,
            ADMIN_TOKEN,
            "query($app: String) { resources(application: $app) { name properties } }",
            {"app": app},
        )
    )["resources"]
    assert {r["name"]: r["properties"]["db_name"] for r in props} == payloads
    text = json.dumps(data) + world.server.output()
    for evaluated in ("<class 'str'>", "<class", "abcxyzxyzxyz", "looplooploop"):
        assert evaluated not in text, evaluated


def test_shell_injection_in_spec_properties_never_runs(world: World, tmp_path: Path) -> None:
    markers = {
        name: tmp_path / f"pwned-{name}" for name in ("dollar", "backtick", "semicolon", "size", "pipe")
    }
    resources = {
        "dollar": ("postgres-mock", {"db_name": f"$(touch {markers['dollar']})"}),
        "backtick": ("postgres-mock", {"db_name": f"`touch {markers['backtick']}`"}),
        "semicolon": ("postgres-mock", {"db_name": f"x; touch {markers['semicolon']}; rm -rf /tmp/nothing"}),
        "size": ("postgres-mock", {"db_name": "fine", "size": f"small; touch {markers['size']}"}),
        "pipe": ("postgres-mock", {"db_name": f"x | touch {markers['pipe']}"}),
    }
    app = "sec-shell-" + secrets.token_hex(3)
    ok(call(world.server, world.token(TEAM_A), SUBMIT, {"spec": spec(app, resources)}))
    data = _settle_and_read(world, app)
    by_id = {r["id"]: r for r in data["resources"]}
    names = ok(
        call(
            world.server,
            ADMIN_TOKEN,
            "query($app: String) { resources(application: $app) { id name } }",
            {"app": app},
        )
    )["resources"]
    for row in names:
        resource = by_id[row["id"]]
        assert resource["state"] == "FAILED", resource
        param = "size" if row["name"] == "size" else "db_name"
        assert param in (resource["errorMessage"] or ""), resource
    time.sleep(0.5)
    assert not [m for m in markers.values() if m.exists()]
