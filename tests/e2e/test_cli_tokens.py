"""`innominatus token create|list|revoke` against a real server."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, run_cli, run_server

ME = "{ providers { name } }"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("tokens")) as srv:
        yield srv


def cli(
    *args: str, token: str | None = None, server: Server | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, server_url=server.url if server else None, token=token, timeout=60)


def works(server: Server, token: str) -> bool:
    response = httpx.post(server.graphql, json={"query": ME}, headers={"Authorization": f"Bearer {token}"})
    return response.json().get("data") is not None


def test_create_list_revoke(server: Server) -> None:
    created = cli(
        "token", "create", "--team", "payments", "--role", "member", token=server.admin_token, server=server
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("inn_") and len(token) > 30
    assert "for team payments" in created.stderr
    assert works(server, token)

    # Options before or after the subcommand, and --output json: never the token or its hash.
    listed = cli("--output", "json", "token", "list", "--server", server.url, token=server.admin_token)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    mine = [r for r in rows if r["team"] == "payments"]
    assert len(mine) == 1
    assert set(mine[0]) == {"id", "team", "role", "createdAt", "expiresAt", "revokedAt"}
    assert mine[0]["expiresAt"] is None and mine[0]["revokedAt"] is None
    assert token not in listed.stdout

    revoked = cli("token", "revoke", mine[0]["id"], token=server.admin_token, server=server)
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(1.1)  # any cache lives at most 1 s
    assert not works(server, token)
    again = json.loads(
        cli("token", "list", "--output", "json", token=server.admin_token, server=server).stdout
    )
    assert [r["revokedAt"] for r in again if r["id"] == mine[0]["id"]] != [None]


def test_expiring_token(server: Server) -> None:
    created = cli(
        "token", "create", "--team", "ops", "--expires", "2s", token=server.admin_token, server=server
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert works(server, token)
    time.sleep(2.5)
    assert not works(server, token)


def test_member_cannot_manage_tokens(server: Server) -> None:
    member = cli("token", "create", "--team", "web", token=server.admin_token, server=server).stdout.split()[
        -1
    ]
    result = cli("token", "list", token=member, server=server)
    assert result.returncode == 1
    assert "only an admin token may manage tokens" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["token", "create", "--team", "x", "--expires", "soon"], 2, "expires: must look like 30s"),
        (["token", "create", "--team", "Bad Team"], 2, "team: must be lowercase letters"),
        (["token", "create"], 2, "the following arguments are required: --team"),
        (["token", "create", "--team", "x", "--role", "root"], 2, "invalid choice: 'root'"),
    ],
)
def test_bad_input(server: Server, args: list[str], code: int, message: str) -> None:
    result = cli(*args, token=server.admin_token, server=server)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_refused_or_unreachable(server: Server, tmp_path: Path) -> None:
    no_token = cli("token", "list", server=server)
    assert no_token.returncode == 1
    assert f"{server.url} refused the token" in no_token.stderr
    wrong = cli("token", "list", token="inn_wrong", server=server)
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr
    down = cli("token", "list", "--server", "http://127.0.0.1:9", token="x")
    assert down.returncode == 1
    assert "cannot reach the innominatus server at http://127.0.0.1:9" in down.stderr
    assert "Traceback" not in down.stderr + no_token.stderr + wrong.stderr


def test_first_start_without_any_token_prints_one(tmp_path: Path) -> None:
    with run_server(tmp_path, env={"INNOMINATUS_ADMIN_TOKEN": ""}) as srv:
        time.sleep(0.3)
        lines = [ln for ln in srv.output().splitlines() if "created admin token" in ln]
        assert len(lines) == 1
        token = lines[0].rsplit(" ", 1)[-1]
        assert works(srv, token)
    with run_server(tmp_path, env={"INNOMINATUS_ADMIN_TOKEN": ""}) as srv:  # same database
        assert "created admin token" not in srv.output()
        assert works(srv, token)
