"""Identity: who a request acts for. Bearer tokens over HTTP and in the websocket connection_init,
one answer for every kind of bad token, revocation and expiry (also of live subscriptions), dev mode
and the bootstrap admin token, against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from gql import GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError

from tests.e2e.conftest import http_client, ws_client
from tests.e2e.server import ADMIN_TOKEN, Server, free_port, run_server

UNAUTHENTICATED = "UNAUTHENTICATED"

CREATE_TOKEN = gql(
    "mutation($team: String!, $role: String!, $expires: String, $description: String) {"
    " createToken(team: $team, role: $role, expiresIn: $expires, description: $description) {"
    " token info { id team role expiresAt revokedAt } } }"
)
REVOKE_TOKEN = gql("mutation($id: ID!) { revokeToken(id: $id) { id revokedAt } }")
TOKENS = gql("{ tokens { id team role description revokedAt } }")
SUBSCRIBE = gql("subscription($app: String) { resourceStateChanged(application: $app) { sequence toState } }")


# ------------------------------------------------------------------------------------------- helpers


async def post(server: Server, query: str, *, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A raw GraphQL POST: the whole answer, so `data: null` and the exact message can be checked."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(server.graphql, json={"query": query}, headers=headers or {})
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusal(answer: dict[str, Any]) -> str:
    """The message of an UNAUTHENTICATED answer, after checking that it gives nothing away."""
    assert answer.get("data") is None, answer
    [error] = answer["errors"]
    assert error["extensions"]["code"] == UNAUTHENTICATED, answer
    return str(error["message"])


async def create_token(
    server: Server, team: str, role: str = "member", expires: str | None = None
) -> tuple[str, str]:
    """(token, id) of a new token, made with the admin token."""
    variables = {"team": team, "role": role, "expires": expires, "description": "e2e auth"}
    async with http_client(server) as session:
        created = (await session.execute(GraphQLRequest(CREATE_TOKEN, variable_values=variables)))[
            "createToken"
        ]
    assert created["info"]["team"] == team and created["info"]["role"] == role
    return created["token"], created["info"]["id"]


async def revoke(server: Server, token_id: str) -> None:
    async with http_client(server) as session:
        revoked = await session.execute(GraphQLRequest(REVOKE_TOKEN, variable_values={"id": token_id}))
    assert revoked["revokeToken"]["revokedAt"] is not None


async def ws_close_code(server: Server, payload: dict[str, Any] | None) -> int | None:
    """Speak graphql-transport-ws: connection_init with `payload`; the close code the server answers."""
    async with websockets.connect(server.websocket, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await ws.send(json.dumps(message))
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        except websockets.exceptions.ConnectionClosed:
            return ws.close_code
        assert reply["type"] == "connection_ack", reply
        return None


# -------------------------------------------------------------------------------- HTTP: bad tokens

WHOAMI = "{ providers { name } }"


def test_health_and_ready_need_no_token(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/ready").status_code == 200


async def test_valid_admin_token_is_accepted(server: Server) -> None:
    answer = await post(server, WHOAMI, headers=bearer(ADMIN_TOKEN))
    assert "errors" not in answer, answer
    assert answer["data"]["providers"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer inn_not-a-real-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": "Bearer test"},  # the dev token means nothing without --dev
        {"X-Api-Key": ADMIN_TOKEN},
    ],
    ids=["none", "empty", "bearer-only", "unknown", "basic", "no-scheme", "dev", "other"],
)
async def test_every_operation_needs_a_valid_token(server: Server, headers: dict[str, str]) -> None:
    messages = set()
    for query in (
        WHOAMI,
        '{ resource(id: "nope") { id } }',  # an unknown id is not even looked up
        "{ tokens { id } }",
        "{ noSuchField }",  # no validation message either
        "{",  # nor a syntax error
        'mutation { createToken(team: "x") { token } }',
        'mutation { deleteApplication(name: "x") { name } }',
        "subscription { resourceStateChanged { sequence } }",
        "{ __schema { queryType { name } } }",
    ):
        messages.add(refusal(await post(server, query, headers=headers)))
    assert len(messages) == 1, messages


async def test_get_requests_need_a_token_too(server: Server) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(
            server.graphql, params={"query": WHOAMI}, headers={"accept": "application/json"}
        )
    refusal(response.json())


async def test_expired_and_revoked_tokens_get_the_same_answer_as_no_token(server: Server) -> None:
    expiring, _ = await create_token(server, "team-expiry", expires="2s")
    revoked, revoked_id = await create_token(server, "team-revoked")
    # Both work first (and are now in the server's cache).
    for token in (expiring, revoked):
        answer = await post(server, WHOAMI, headers=bearer(token))
        assert "errors" not in answer, answer

    await revoke(server, revoked_id)
    await asyncio.sleep(1.1)  # the cache holds for at most 1 s
    revoked_message = refusal(await post(server, WHOAMI, headers=bearer(revoked)))

    await asyncio.sleep(max(0.0, 2.2 - 1.1))
    expired_message = refusal(await post(server, WHOAMI, headers=bearer(expiring)))

    missing_message = refusal(await post(server, WHOAMI))
    unknown_message = refusal(await post(server, WHOAMI, headers=bearer("inn_unknown")))
    assert revoked_message == expired_message == missing_message == unknown_message
    # Nothing in the message tells the causes apart.
    for word in ("expired", "revoked", "unknown", "invalid"):
        assert word not in missing_message.lower()


async def test_revocation_holds_within_the_cache_time(server: Server) -> None:
    token, token_id = await create_token(server, "team-quick")
    assert "errors" not in await post(server, WHOAMI, headers=bearer(token))
    await revoke(server, token_id)
    revoked_at = time.monotonic()
    while True:  # at most 1 s (the cache), then refused for good
        answer = await post(server, WHOAMI, headers=bearer(token))
        if "errors" in answer:
            break
        assert time.monotonic() - revoked_at < 1.5, "a revoked token kept working for more than 1 s"
        await asyncio.sleep(0.1)
    refusal(answer)
    for _ in range(3):
        refusal(await post(server, WHOAMI, headers=bearer(token)))


async def test_revoked_token_stays_listed_as_revoked(server: Server) -> None:
    _, token_id = await create_token(server, "team-listed")
    await revoke(server, token_id)
    async with http_client(server) as session:
        tokens = (await session.execute(TOKENS))["tokens"]
    [row] = [t for t in tokens if t["id"] == token_id]
    assert row["revokedAt"] is not None and row["team"] == "team-listed"


async def test_a_bad_expiry_is_refused(server: Server) -> None:
    async with http_client(server) as session:
        for expires in ("soon", "0s", "-5m", "10y"):
            with pytest.raises(TransportQueryError) as err:
                await session.execute(
                    GraphQLRequest(
                        CREATE_TOKEN, variable_values={"team": "t", "role": "member", "expires": expires}
                    )
                )
            assert err.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


# ------------------------------------------------------------------------------------- websockets


async def test_websocket_without_a_valid_token_is_closed_with_4403(server: Server) -> None:
    expired, _ = await create_token(server, "team-ws-expired", expires="1s")
    revoked, revoked_id = await create_token(server, "team-ws-revoked")
    await revoke(server, revoked_id)
    await asyncio.sleep(1.1)
    for payload in (
        None,
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer inn_nope"},
        {"Authorization": ADMIN_TOKEN},  # no scheme
        {"Authorization": "Bearer test"},  # the dev token, on a server not in dev mode
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {revoked}"},
    ):
        assert await ws_close_code(server, payload) == 4403, payload
    # A valid token in the payload is acknowledged.
    assert await ws_close_code(server, {"Authorization": f"Bearer {ADMIN_TOKEN}"}) is None


async def test_websocket_token_only_counts_in_connection_init(server: Server) -> None:
    """A header on the upgrade request does not authenticate the socket; connection_init does."""
    async with websockets.connect(
        server.websocket,
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers=bearer(ADMIN_TOKEN),
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4403


async def test_gql_websocket_client_without_token_cannot_subscribe(server: Server) -> None:
    with pytest.raises(Exception) as err:
        async with ws_client(server, token=None) as ws:
            subscription = ws.subscribe(GraphQLRequest(SUBSCRIBE, variable_values={"app": "x"}))
            async with contextlib.aclosing(subscription):
                async for _ in subscription:
                    pass
    codes, cause = [], err.value  # gql wraps the websockets close; its code is further down the chain
    while cause is not None:
        rcvd = getattr(cause, "rcvd", None)
        codes.append(getattr(rcvd, "code", None) or getattr(cause, "code", None))
        cause = cause.__cause__ or cause.__context__
    assert 4403 in codes, (repr(err.value), codes)


async def _run_subscription(server: Server, token: str, started: asyncio.Event) -> tuple[str, float]:
    """Subscribe with `token` until the server ends it; how it ended and when (monotonic)."""
    try:
        async with ws_client(server, token=token) as ws:
            subscription = ws.subscribe(GraphQLRequest(SUBSCRIBE, variable_values={"app": "never-submitted"}))
            started.set()
            async with contextlib.aclosing(subscription):
                try:
                    async for item in subscription:
                        return f"unexpected event {item}", time.monotonic()
                except TransportQueryError as exc:
                    code = exc.errors[0].get("extensions", {}).get("code") if exc.errors else exc
                    return f"error {code}", time.monotonic()
                return "completed", time.monotonic()
    except Exception as exc:  # the socket itself closed: gql wraps the websockets close code
        cause: BaseException | None = exc
        while cause is not None:
            code = getattr(getattr(cause, "rcvd", None), "code", None)
            if code is not None:
                return f"closed {code}", time.monotonic()
            cause = cause.__cause__ or cause.__context__
        raise
    return "closed", time.monotonic()


ENDED = ("error UNAUTHENTICATED", "completed", "closed 4403")  # the socket closes with its token


async def test_live_subscriptions_end_when_their_token_is_revoked_or_expires(server: Server) -> None:
    revoked, revoked_id = await create_token(server, "team-live-revoked")
    expiring, _ = await create_token(server, "team-live-expiring", expires="2s")
    kept, _ = await create_token(server, "team-live-kept")
    started = [asyncio.Event() for _ in range(3)]
    tasks = [
        asyncio.create_task(_run_subscription(server, token, event))
        for token, event in zip((revoked, expiring, kept), started, strict=True)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 10)
        await asyncio.sleep(0.5)  # the subscribe messages are on the wire and the streams are live
        assert not any(t.done() for t in tasks), [t.result() for t in tasks if t.done()]

        await revoke(server, revoked_id)
        revoked_at = time.monotonic()
        how, ended = await asyncio.wait_for(tasks[0], 10)
        assert how in ENDED, how
        assert ended - revoked_at < 5.0, (
            f"the revoked token's subscription lived {ended - revoked_at:.1f}s on"
        )

        how, ended = await asyncio.wait_for(tasks[1], 15)
        assert how in ENDED, how

        # A valid token's subscription goes on.
        await asyncio.sleep(0.5)
        assert not tasks[2].done(), tasks[2].result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


# ------------------------------------------------------------------------------------------ dev mode


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("dev"), args=["--dev"]) as srv:
        yield srv


async def test_dev_mode_without_a_token_acts_as_admin(dev_server: Server) -> None:
    answer = await post(dev_server, "{ tokens { id team role } }")
    assert "errors" not in answer, answer
    answer = await post(
        dev_server, 'mutation { createToken(team: "devteam", role: "member") { token info { team } } }'
    )
    assert "errors" not in answer, answer
    member = answer["data"]["createToken"]["token"]
    # A real member token is still that member, not admin.
    answer = await post(dev_server, "{ tokens { id } }", headers=bearer(member))
    assert answer["data"] is None and answer["errors"][0]["extensions"]["code"] == "FORBIDDEN", answer


async def test_dev_mode_token_test_is_admin(dev_server: Server) -> None:
    answer = await post(dev_server, "{ tokens { id team role } }", headers=bearer("test"))
    assert "errors" not in answer, answer
    assert await ws_close_code(dev_server, {"Authorization": "Bearer test"}) is None
    assert await ws_close_code(dev_server, {}) is None  # no token: the dev admin


def test_dev_mode_warns_once_at_start(dev_server: Server) -> None:
    warnings = [
        line for line in dev_server.output().splitlines() if "warn" in line.lower() and "dev" in line.lower()
    ]
    assert len(warnings) == 1, dev_server.output()
    [line] = warnings
    assert "'test'" in line or '"test"' in line or " test " in line, line
    assert "admin" in line.lower(), line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_dev_mode_refuses_a_non_loopback_host(tmp_path: Path, how: str) -> None:
    cmd = [sys.executable, "-m", "innominatus.cli", "serve", "--dev", "--port", str(free_port())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNOMINATUS_")}
    if how == "flag":
        cmd += ["--host", "0.0.0.0"]
    else:
        env["INNOMINATUS_HOST"] = "0.0.0.0"
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0, done
    said = (done.stdout + done.stderr).lower()
    assert "loopback" in said and "0.0.0.0" in said, said
    assert "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------------ bootstrap

CREATED = "created admin token"


def _created_token(output: str) -> str:
    lines = [line for line in output.splitlines() if CREATED in line]
    assert len(lines) == 1, output
    return lines[0].rsplit(" ", 1)[-1].strip()


def _admin_tokens(srv: Server, token: str) -> list[dict[str, Any]]:
    answer = httpx.post(srv.graphql, json={"query": "{ tokens { id team role } }"}, headers=bearer(token))
    data = answer.json()
    assert "errors" not in data, data
    return list(data["data"]["tokens"])


def test_admin_token_from_the_environment(server: Server) -> None:
    assert CREATED not in server.output()
    tokens = _admin_tokens(server, ADMIN_TOKEN)
    assert {"team": "admin", "role": "admin"} in [{"team": t["team"], "role": t["role"]} for t in tokens]


def test_first_start_without_any_token_creates_one_and_prints_it_once(tmp_path: Path) -> None:
    no_token = {"INNOMINATUS_ADMIN_TOKEN": ""}  # empty counts as unset
    with run_server(tmp_path, env=no_token) as first:
        assert first.admin_token is None
        token = _created_token(first.output())
        assert token not in {"", ADMIN_TOKEN}
        tokens = _admin_tokens(first, token)
        assert [(t["team"], t["role"]) for t in tokens] == [("admin", "admin")]
        first_output = first.output()
    assert first_output.count(token) == 1  # printed once, and never logged again

    with run_server(tmp_path, env=no_token) as second:  # same working directory: same SQLite file
        assert CREATED not in second.output()
        assert token not in second.output()
        assert len(_admin_tokens(second, token)) == 1  # the first token still works; no second one


async def _answer(ws: Any, operation: str) -> dict[str, Any]:
    """The `next` or `error` message of `operation` (a bare `complete` would be no answer at all)."""
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if reply.get("id") != operation:
            continue  # the `complete` of an earlier operation
        assert reply["type"] in ("next", "error"), f"no answer, only {reply}"
        return dict(reply)


async def _socket_until_refused(server: Server, token: str, limit: float) -> tuple[float, str]:
    """Open a socket with `token`, run queries on it until the server refuses; (seconds, how)."""
    async with websockets.connect(server.websocket, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": bearer(token)}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
        started = time.monotonic()
        index = 0
        while time.monotonic() - started < limit:
            index += 1
            kind = ("query", "subscription", "mutation")[index % 3]
            query = {
                "query": WHOAMI,
                "subscription": "subscription { resourceStateChanged { sequence } }",
                "mutation": 'mutation { deleteApplication(name: "nope") { name } }',
            }[kind]
            try:
                await ws.send(
                    json.dumps({"id": str(index), "type": "subscribe", "payload": {"query": query}})
                )
                if kind == "subscription":
                    await asyncio.sleep(0.3)
                    await ws.send(json.dumps({"id": str(index), "type": "complete"}))
                    continue
                reply = await _answer(ws, str(index))
            except websockets.exceptions.ConnectionClosed:
                return time.monotonic() - started, f"closed {ws.close_code}"
            if reply["type"] == "error" or reply["payload"].get("errors"):
                errors = reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]
                codes = {e.get("extensions", {}).get("code") for e in errors}
                if "UNAUTHENTICATED" in codes:
                    return time.monotonic() - started, "UNAUTHENTICATED"
                assert codes <= {"NOT_FOUND", "RATE_LIMITED"}, reply  # the mutation's own answer
            await asyncio.sleep(0.2)
    raise AssertionError(f"still served {limit}s after the token went")


async def test_a_token_revoked_while_its_socket_is_open_is_refused_there_within_5s(server: Server) -> None:
    token, token_id = await create_token(server, "team-ws-open")
    opened = asyncio.create_task(_socket_until_refused(server, token, limit=15))
    await asyncio.sleep(1.5)  # it works meanwhile
    assert not opened.done()
    await revoke(server, token_id)
    revoked_at = time.monotonic()
    _, how = await opened
    assert time.monotonic() - revoked_at < 5
    assert how in ("closed 4403", "closed 4401", "UNAUTHENTICATED"), how


async def test_a_token_that_expires_while_its_socket_is_open_is_refused_there(server: Server) -> None:
    token, _ = await create_token(server, "team-ws-expiring", expires="3s")
    took, how = await _socket_until_refused(server, token, limit=10)
    assert 1.5 < took < 3 + 5, took
    assert how in ("closed 4403", "closed 4401", "UNAUTHENTICATED"), how
