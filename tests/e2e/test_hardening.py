"""The holes a review found (issue 10), each tried through a real server: names that are not exactly
what they look like, and the other refusals. Every refusal names what is wrong and stores nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml

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


# ------------------------------------------------------------------- the same limits on every surface


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("limited"), env={"INNOMINATUS_RATE_LIMIT": "3/60"}) as srv:
        yield srv


def test_rest_submissions_count_against_the_mutation_limit(limited: Server) -> None:
    create = "mutation($t: String!) { createToken(team: $t) { token } }"
    member = {
        "Authorization": f"Bearer {graphql(limited, create, {'t': 'rest-limited'})['data']['createToken']['token']}"
    }
    statuses = [
        httpx.post(
            limited.url + "/api/specs", content=spec(f"limited-{i}"), headers={**member, **YAML}, timeout=30
        )
        for i in range(3)
    ]
    assert [s.status_code for s in statuses] == [201, 201, 201]
    over = httpx.post(
        limited.url + "/api/specs", content=spec("limited-3"), headers={**member, **YAML}, timeout=30
    )
    assert over.status_code == 429, over.text
    assert over.json() == {
        "error": "too many mutations for this token; slow down and try again shortly",
        "problems": [],
    }
    # GraphQL and REST share the budget.
    answer = httpx.post(
        limited.graphql,
        json={"query": SUBMIT, "variables": {"spec": spec("limited-4")}},
        headers=member,
        timeout=30,
    ).json()
    assert answer["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    names = [a["name"] for a in graphql(limited, "{ applications { name } }")["data"]["applications"]]
    assert "limited-3" not in names and "limited-4" not in names


# ----------------------------------------------------------------------------- lists are paginated


def test_lists_are_paginated_over_graphql_and_rest(server: Server) -> None:
    extra = "".join(f"  r{i}:\n    type: postgres-mock\n" for i in range(4))
    ok = graphql(server, SUBMIT, {"spec": spec("paged-app") + extra})
    assert ok.get("errors") is None, ok
    query = 'query($f: Int, $a: ID) { resources(application: "paged-app", first: $f, after: $a) { id name } }'
    first = graphql(server, query, {"f": 2})["data"]["resources"]
    rest_of = graphql(server, query, {"f": 10, "a": first[-1]["id"]})["data"]["resources"]
    assert len(first) == 2 and len(rest_of) == 3
    assert {r["name"] for r in first + rest_of} == {"db", "r0", "r1", "r2", "r3"}
    too_many = graphql(server, query, {"f": 1001})
    assert too_many["errors"][0]["extensions"] == {
        "code": "BAD_USER_INPUT",
        "problems": [{"path": "first", "message": "must be between 1 and 1000, got 1001"}],
    }
    rest = httpx.get(server.url + "/api/resources?application=paged-app&first=2", headers=ADMIN, timeout=30)
    assert [r["id"] for r in rest.json()] == [r["id"] for r in first]
    after = httpx.get(
        server.url + f"/api/resources?application=paged-app&after={first[-1]['id']}",
        headers=ADMIN,
        timeout=30,
    )
    assert [r["resource_name"] for r in after.json()] == [r["name"] for r in rest_of]
    for bad in ("first=abc", "first=0", "after=nope"):
        refused = httpx.get(server.url + f"/api/resources?{bad}", headers=ADMIN, timeout=30)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["problems"][0]["path"] in ("first", "after")
    # The seed's calls, without any of it, still list everything (up to 100).
    assert len(httpx.get(server.url + "/api/resources", headers=ADMIN, timeout=30).json()) >= 5


# ------------------------------------------------------------- dev mode and the browser attacks it invites


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("dev-hardening"), args=["--dev"]) as srv:
        yield srv


def test_dev_mode_answers_only_requests_addressed_to_loopback(dev: Server) -> None:
    port = dev.url.rsplit(":", 1)[1]
    for host in (
        "127.0.0.1",
        f"127.0.0.1:{port}",
        "localhost",
        f"LOCALHOST:{port}",
        f"[::1]:{port}",
        "[::1]",
    ):
        assert httpx.get(dev.url + "/health", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.", "0.0.0.0"):
        refused = httpx.get(dev.url + "/api/resources", headers={"Host": host})
        assert refused.status_code == 403, host
        assert "addressed to 127.0.0.1, localhost or [::1]" in refused.json()["error"]
    # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 cannot submit.
    rebound = httpx.post(
        dev.url + "/api/specs", content=spec("rebound"), headers={"Host": f"evil.example:{port}", **YAML}
    )
    assert rebound.status_code == 403
    assert "rebound" not in applications_of(dev)


def test_dev_mode_refuses_a_cross_site_simple_post(dev: Server) -> None:
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        refused = httpx.post(
            dev.url + "/api/specs", content=spec("simple-post"), headers={"Content-Type": content_type}
        )
        assert refused.status_code == 415, (content_type, refused.text)
        assert "Content-Type must be one of" in refused.json()["error"]
    assert "simple-post" not in applications_of(dev)
    for content_type in ("application/yaml", "application/json; charset=utf-8"):
        body = spec("simple-post") if "yaml" in content_type else _as_json(spec("simple-post"))
        accepted = httpx.post(dev.url + "/api/specs", content=body, headers={"Content-Type": content_type})
        assert accepted.status_code == 201, accepted.text


async def test_dev_mode_refuses_websockets_opened_by_pages_elsewhere(dev: Server) -> None:
    url = dev.websocket
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
            origin=websockets.Origin("http://evil.example"),
        ):
            pass
    async with websockets.connect(
        url,
        subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
        origin=websockets.Origin(dev.url),
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"


def applications_of(server: Server) -> list[str]:
    response = httpx.post(server.graphql, json={"query": "{ applications { name } }"}, timeout=30)
    return [a["name"] for a in response.json()["data"]["applications"]]


def _as_json(yaml_text: str) -> str:
    return json.dumps(yaml.safe_load(yaml_text))


async def test_a_websocket_message_over_one_mebibyte_closes_the_socket_and_stores_nothing(
    server: Server,
) -> None:
    big = spec("ws-big") + "    properties:\n      pad: " + "x" * (1024 * 1024 + 10) + "\n"
    async with websockets.connect(
        server.websocket, subprotocols=[websockets.Subprotocol("graphql-transport-ws")], max_size=None
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {ADMIN_TOKEN}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        message = {"id": "1", "type": "subscribe", "payload": {"query": SUBMIT, "variables": {"spec": big}}}
        await ws.send(json.dumps(message))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert "ws-big" not in applications(server)
    assert httpx.get(server.url + "/health").status_code == 200


# --------------------------------------------------------------------------------- YAML alias bombs


def _rss_kib(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_an_alias_bomb_is_refused_cheaply(server: Server) -> None:
    # Under 1 MiB as text; 500 MB once its 10,000 aliases of a 50,000-character string are expanded.
    bomb = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: bomb\n  big: &a " + "x" * 50_000 + "\n"
        "  list: [" + ", ".join(["*a"] * 10_000) + "]\ncontainers:\n  main:\n    image: nginx\n"
    )
    assert len(bomb.encode()) < 1024 * 1024
    before = _rss_kib(server)
    started = time.monotonic()
    answer = graphql(server, SUBMIT, {"spec": bomb})
    rest = httpx.post(server.url + "/api/specs", content=bomb, headers={**ADMIN, **YAML}, timeout=30)
    elapsed = time.monotonic() - started
    assert answer["data"] is None
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "once its aliases are expanded" in error["extensions"]["problems"][0]["message"]
    assert rest.status_code == 400 and "once its aliases are expanded" in rest.json()["error"]
    assert elapsed < 2.0, f"took {elapsed:.2f}s"  # two requests, each well under a second
    assert _rss_kib(server) - before < 16 * 1024, "the server's memory grew by more than 16 MiB"
    assert "bomb" not in applications(server)


# ------------------------------------------------------------------------------ query cost is bounded


def _hub_spec(app: str, users: int) -> str:
    text = spec(app, resource="hub")
    for i in range(users):
        text += f"  u{i}:\n    type: postgres-mock\n    properties:\n      host: ${{resources.hub.host}}\n"
    return text


async def test_nested_lists_that_multiply_are_refused_before_running(server: Server) -> None:
    assert graphql(server, SUBMIT, {"spec": _hub_spec("hub-app", 20)}).get("errors") is None
    nine = (
        '{ resources(application: "hub-app") { requiredBy { dependsOn { requiredBy { dependsOn { '
        "requiredBy { dependsOn { requiredBy { dependsOn { name } } } } } } } } } }"
    )

    async def health_while(query: str) -> tuple[dict[str, Any], float]:
        async with httpx.AsyncClient(timeout=30) as client:
            answer = client.post(server.graphql, json={"query": query}, headers=ADMIN)
            worst = 0.0
            pending = asyncio.ensure_future(answer)
            while not pending.done():
                started = time.monotonic()
                assert (await client.get(server.url + "/health")).status_code == 200
                worst = max(worst, time.monotonic() - started)
                await asyncio.sleep(0.02)
            return (await pending).json(), worst

    answer, worst = await health_while(nine)
    assert answer["data"] is None
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_EXPENSIVE"
    assert "select fewer nested lists or pass a smaller `first`" in error["message"]
    assert worst < 1.0, f"/health took {worst:.2f}s meanwhile"
    # What the estimate lets through answers in full, and quickly.
    two = '{ resources(application: "hub-app") { name requiredBy { name dependsOn { name } } } }'
    started = time.monotonic()
    rows = graphql(server, two)["data"]["resources"]
    assert time.monotonic() - started < 2
    hub = next(r for r in rows if r["name"] == "hub")
    assert len(hub["requiredBy"]) == 20 and all(
        u["dependsOn"] == [{"name": "hub"}] for u in hub["requiredBy"]
    )


@pytest.mark.parametrize(
    "accept", ["application/json", 'multipart/mixed;subscriptionSpec="1.0", application/json']
)
def test_a_subscription_over_http_is_refused_clearly(server: Server, accept: str) -> None:
    response = httpx.post(
        server.graphql,
        json={"query": "subscription { resourceStateChanged { sequence } }"},
        headers={**ADMIN, "Accept": accept},
        timeout=10,
    )
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "websocket at /graphql" in error["message"] and "graphql-transport-ws" in error["message"]
