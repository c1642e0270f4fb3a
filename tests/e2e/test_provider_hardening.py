"""Through a real server: spec values cannot split a script's arguments, `shell_quote` where the shell
ignores quotes keeps a provider from loading (and a reload keeps the old catalog), and a step's stored
logs stay bounded however much it prints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import workflow_yaml
from tests.e2e.server import ADMIN_TOKEN, Server, run_server

SUBMIT = "mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }"
STATE = "query($app: String) { resources(application: $app) { state errorMessage workflowExecution { id } } }"
STEPS = "query($id: ID!) { workflow(id: $id) { steps { name attempts logs } } }"
RELOAD = "mutation { reloadProviders { ok error providers { name } } }"

ECHO = workflow_yaml(
    "provision-echo",
    "- name: say\n  type: policy\n  config:\n    script: echo {{ parameters.words }}\n",
    parameters="- name: words\n  type: string\n  required: true\n",
)
NOISY = workflow_yaml(
    "provision-noisy",
    "- name: noisy\n  type: policy\n  retries: 2\n  retryDelay: 0.01\n  config:\n    script: |\n"
    "      yes 0123456789012345678901234567890123456789 | head -n 22000\n      exit 1\n",
)
MANIFEST = """\
apiVersion: v1
kind: Provider
metadata: {name: hardening, version: 1.0.0}
capabilities:
  resourceTypeCapabilities:
    - type: echo
      operations: {create: {workflow: provision-echo}}
    - type: noisy
      operations: {create: {workflow: provision-noisy}}
workflows:
  - {name: provision-echo, file: ./workflows/provision-echo.yaml, operation: create}
  - {name: provision-noisy, file: ./workflows/provision-noisy.yaml, operation: create}
"""


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("providers")
    folder = root / "hardening"
    (folder / "workflows").mkdir(parents=True)
    (folder / "provider.yaml").write_text(MANIFEST)
    (folder / "workflows" / "provision-echo.yaml").write_text(ECHO)
    (folder / "workflows" / "provision-noisy.yaml").write_text(NOISY)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, providers: Path) -> Iterator[Server]:
    with run_server(
        tmp_path_factory.mktemp("hardening-srv"), args=["--providers-dir", str(providers)]
    ) as srv:
        yield srv


def call(server: Server, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(
        server.graphql,
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    ).json()
    assert not answer.get("errors"), answer
    return dict(answer["data"])


def spec(app: str, rtype: str, words: str | None = None) -> str:
    props = f"    properties:\n      words: {json.dumps(words)}\n" if words is not None else ""
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: a\n"
        f"resources:\n  res:\n    type: {rtype}\n{props}"
    )


def settled(server: Server, app: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        [row] = call(server, STATE, {"app": app})["resources"]
        if row["state"] in ("ACTIVE", "FAILED"):
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.1)


def test_a_value_with_whitespace_never_splits_a_scripts_arguments(server: Server) -> None:
    call(server, SUBMIT, {"spec": spec("words-ok", "echo", "one")})
    assert settled(server, "words-ok")["state"] == "ACTIVE"
    call(server, SUBMIT, {"spec": spec("words-split", "echo", "one two\u2028three")})
    row = settled(server, "words-split")
    assert row["state"] == "FAILED"
    assert "parameter 'words' holds shell metacharacters (' ', '\\u2028')" in row["errorMessage"]


def test_shell_quote_inside_double_quotes_keeps_a_provider_from_loading(
    server: Server, providers: Path
) -> None:
    path = providers / "hardening" / "workflows" / "provision-echo.yaml"
    good = path.read_text()
    try:
        path.write_text(
            good.replace("echo {{ parameters.words }}", 'echo "{{ parameters.words | shell_quote }}"')
        )
        reloaded = call(server, RELOAD)["reloadProviders"]
        assert reloaded["ok"] is False
        assert (
            str(path) in reloaded["error"]
            and "line 1: shell_quote output inside double quotes" in reloaded["error"]
        )
        assert [p["name"] for p in reloaded["providers"]] == ["hardening"]  # the old catalog stays
    finally:
        path.write_text(good)
    assert call(server, RELOAD)["reloadProviders"]["ok"] is True


def test_a_steps_stored_logs_stay_bounded(server: Server) -> None:
    call(server, SUBMIT, {"spec": spec("noisy-app", "noisy")})
    row = settled(server, "noisy-app")
    assert row["state"] == "FAILED"
    [step] = call(server, STEPS, {"id": row["workflowExecution"]["id"]})["workflow"]["steps"]
    assert step["attempts"] == 3
    assert len(step["logs"]) <= 2 * 1024 * 1024
    assert "[... earlier attempts' logs cut here: a step keeps 2 MiB ...]" in step["logs"]
    assert step["logs"].endswith("--- attempt 3 failed: exit code 1 ---\n")
