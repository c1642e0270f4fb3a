"""The CLI's application commands against a real server: exit codes, stdout/stderr, live watching."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, PROVIDERS, ProviderFactory, workflow_yaml
from tests.e2e.server import Server, run_cli, run_server

SPEC = (FIXTURES / "postgres-mock-app.yaml").read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("cli")) as srv:
        yield srv


def cli(
    *args: str, server: Server | None = None, token: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if server is None:
        return run_cli(*args, cwd=cwd)
    chosen = token if token is not None else (server.admin_token or "")
    return run_cli(*args, server_url=server.url, token=chosen, cwd=cwd)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_submit_watch_until_active_then_nothing_to_do(server: Server, tmp_path: Path) -> None:
    spec = write(tmp_path, "app.yaml", SPEC.replace("demo-app-mock", "cli-app"))
    done = cli("submit", spec, "--watch", "--output", "json", server=server)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert (row["name"], row["state"]) == ("database", "ACTIVE")
    assert "submitted cli-app revision 1" in done.stderr
    again = cli("--output", "json", "submit", spec, "--watch", server=server)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr

    status = cli("status", "cli-app", "--output", "json", server=server)
    assert json.loads(status.stdout)["resources"][0]["state"] == "ACTIVE"
    listed = json.loads(cli("resources", "--output", "json", server=server).stdout)
    assert any(r["application"] == "cli-app" for r in listed)
    providers = json.loads(cli("providers", "--output", "json", server=server).stdout)
    assert providers[0]["capabilities"] == ["postgres", "postgresql", "postgres-mock"]
    runs = json.loads(cli("workflows", "cli-app", "--output", "json", server=server).stdout)
    assert [r["workflowName"] for r in runs] == ["provision-postgres-mock"]
    logs = cli("workflow", runs[0]["id"], "--logs", server=server)
    assert logs.returncode == 0 and "Creating mock PostgreSQL database demo_db" in logs.stdout
    table = cli("status", server=server)
    assert "cli-app" in table.stdout and "database=ACTIVE" in table.stdout

    deleted = cli("delete", "cli-app", "--watch", "--output", "json", server=server)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)[0]["state"] == "DELETED"


def test_failed_resource_exits_1_with_step_error_and_log_tail(
    tmp_path: Path, make_provider: ProviderFactory
) -> None:
    wf = workflow_yaml(
        "provision-test",
        "- name: ok\n  type: policy\n  config:\n    script: echo fine\n"
        "- name: migrate\n  type: policy\n  config:\n    script: |\n"
        '      for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "applying migration $i"; done\n'
        "      echo 'relation users already exists' >&2\n      exit 4\n",
    )
    providers = make_provider({"provision-test": wf})
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: cli-broken\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    workdir = tmp_path / "w"
    workdir.mkdir()
    with run_server(workdir, args=["--providers-dir", str(providers)]) as srv:
        done = cli("submit", write(tmp_path, "b.yaml", spec), "--watch", server=srv)
        assert done.returncode == 1, done.stderr
        assert "db FAILED: step 'migrate' failed: exit code 4: relation users already exists" in done.stderr
        assert "failed step: migrate" in done.stderr
        assert "| applying migration 12" in done.stderr and "| applying migration 2\n" not in done.stderr
        resource_id = json.loads(cli("status", "cli-broken", "--output", "json", server=srv).stdout)[
            "resources"
        ][0]["id"]
        retried = cli("retry", resource_id, server=srv)
        assert retried.returncode == 0, retried.stderr
        assert "retrying db: now PROVISIONING" in retried.stderr


def test_validate_matches_the_server_word_for_word(server: Server, tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "bad.yaml",
        SPEC.replace("type: postgres-mock", "type: mongodb").replace("name: demo-app-mock", "name: Bad_Name"),
    )
    offline = cli("validate", bad, "--providers-dir", str(PROVIDERS))
    online = cli("submit", bad, server=server)
    assert offline.returncode == online.returncode == 2
    problems = [ln for ln in offline.stderr.splitlines() if ln.startswith("  ")]
    assert problems and problems == [ln for ln in online.stderr.splitlines() if ln.startswith("  ")]
    assert any("resources.database.type" in p for p in problems)
    # Without providers only the spec itself is checked.
    empty = tmp_path / "empty"
    empty.mkdir()
    unknown_type_only = write(tmp_path, "t.yaml", SPEC.replace("type: postgres-mock", "type: mongodb"))
    no_providers = cli("validate", unknown_type_only, cwd=empty)
    assert no_providers.returncode == 0, no_providers.stderr
    assert "resource types not checked" in no_providers.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["submit", "/no/such.yaml"], 2, "/no/such.yaml: no such file"),
        (["validate", "/no/such.yaml"], 2, "/no/such.yaml: no such file"),
        (["frobnicate"], 2, "invalid choice"),
        (["workflow"], 2, "the following arguments are required: id"),
        (["retry", "no-such-id"], 1, "resource 'no-such-id' not found"),
    ],
)
def test_bad_input_exit_codes(server: Server, args: list[str], code: int, message: str) -> None:
    done = cli(*args, server=server)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_and_refused(server: Server) -> None:
    down = cli("resources", "--server", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach the innominatus server at http://127.0.0.1:9" in down.stderr
    refused = cli("resources", server=server, token="inn_nope")
    assert refused.returncode == 1 and "refused the token" in refused.stderr
    watch_refused = cli("delete", "anything", "--watch", server=server, token="inn_nope")
    assert watch_refused.returncode == 1 and "refused the token" in watch_refused.stderr
    assert "Traceback" not in down.stderr + refused.stderr + watch_refused.stderr


def test_watch_timeout_exits_1(tmp_path: Path, make_provider: ProviderFactory) -> None:
    wf = workflow_yaml("provision-test", "- name: slow\n  type: policy\n  config:\n    script: sleep 30\n")
    providers = make_provider({"provision-test": wf})
    spec = (
        "apiVersion: score.dev/v1b1\nmetadata:\n  name: cli-slow\ncontainers:\n  main:\n    image: a\n"
        "resources:\n  db:\n    type: test-db\n"
    )
    workdir = tmp_path / "w"
    workdir.mkdir()
    with run_server(workdir, args=["--providers-dir", str(providers)]) as srv:
        done = cli("submit", write(tmp_path, "s.yaml", spec), "--watch", "--timeout", "1", server=srv)
        assert done.returncode == 1
        assert "timed out after 1s waiting for cli-slow" in done.stderr
        assert "Traceback" not in done.stderr
