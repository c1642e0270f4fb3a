"""Providers from a git repository (a local bare one), and reloading them on a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import Server, run_cli, run_server

PROVIDER = """apiVersion: v1
kind: Provider
metadata: {{name: git-team, version: "{version}", category: test}}
capabilities:
  resourceTypes: [{types}]
workflows:
  - name: provision-thing
    file: ./workflows/provision.yaml
"""
WORKFLOW = """apiVersion: innominatus.io/v1alpha1
kind: Workflow
metadata: {{name: provision-thing}}
steps:
  - name: make
    type: policy
    config:
      script: sleep {sleep}; echo made {{{{ parameters.resource_name }}}}
outputs:
  made: "yes"
"""


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def publish(work: Path, *, version: str, types: str, sleep: str = "0", tag: str | None = None) -> None:
    (work / "workflows").mkdir(exist_ok=True)
    (work / "provider.yaml").write_text(PROVIDER.format(version=version, types=types))
    (work / "workflows" / "provision.yaml").write_text(WORKFLOW.format(sleep=sleep))
    git("add", "-A", cwd=work)
    git("commit", "-qm", f"v{version}", cwd=work)
    if tag:
        git("tag", tag, cwd=work)
    git("push", "-q", "origin", "HEAD:main", "--tags", cwd=work)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    bare = tmp_path / "providers.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    return bare, work


def config(tmp_path: Path, bare: Path, ref: str) -> Path:
    path = tmp_path / "admin-config.yaml"
    path.write_text(
        f"providers:\n  - name: git-team\n    type: git\n    repository: {bare}\n    ref: {ref}\n"
    )
    return path


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, server_url=server.url, token=server.admin_token or "")


def start(tmp_path: Path, cfg: Path, name: str = "w") -> object:
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    empty = tmp_path / "no-providers"
    empty.mkdir(exist_ok=True)
    return run_server(
        workdir,
        args=["--providers-dir", str(empty), "--config", str(cfg)],
        env={"INNOMINATUS_PROVIDER_CACHE": str(tmp_path / "cache")},
    )


def spec(app: str, rtype: str) -> str:
    return (
        f"apiVersion: score.dev/v1b1\nmetadata:\n  name: {app}\ncontainers:\n  main:\n    image: a\n"
        f"resources:\n  res:\n    type: {rtype}\n"
    )


def test_git_source_pinned_to_a_tag(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    publish(work, version="1.0.0", types="thing", tag="v1")
    publish(work, version="2.0.0", types="thing, other")  # main moves on; the tag does not
    with start(tmp_path, config(tmp_path, bare, "v1")) as srv:  # type: ignore[attr-defined]
        providers = json.loads(cli(srv, "providers", "--output", "json").stdout)
        assert [(p["name"], p["version"], p["capabilities"]) for p in providers] == [
            ("git-team", "1.0.0", ["thing"])
        ]
        (tmp_path / "s.yaml").write_text(spec("git-app", "thing"))
        done = cli(srv, "submit", str(tmp_path / "s.yaml"), "--watch", "--output", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0]["state"] == "ACTIVE"


def test_missing_ref_stops_the_server(tmp_path: Path, repo: tuple[Path, Path]) -> None:
    bare, work = repo
    publish(work, version="1.0.0", types="thing")
    with pytest.raises(RuntimeError) as err, start(tmp_path, config(tmp_path, bare, "v9")):
        pass
    assert f"ref: 'v9' is not a tag, branch or commit of {bare}" in str(err.value)


def test_reload_picks_up_changes_and_keeps_the_catalog_when_broken(
    tmp_path: Path, repo: tuple[Path, Path]
) -> None:
    bare, work = repo
    publish(work, version="1.0.0", types="thing", sleep="2")
    cfg = config(tmp_path, bare, "main")
    with start(tmp_path, cfg) as srv:  # type: ignore[attr-defined]
        (tmp_path / "s.yaml").write_text(spec("slow-app", "thing"))
        assert cli(srv, "submit", str(tmp_path / "s.yaml")).returncode == 0
        publish(work, version="2.0.0", types="thing, other")
        reloaded = cli(srv, "providers", "reload", "--output", "json")
        assert reloaded.returncode == 0, reloaded.stderr
        assert json.loads(reloaded.stdout)[0]["capabilities"] == ["thing", "other"]
        # The run that started before the reload finishes as it began.
        watched = cli(srv, "submit", str(tmp_path / "s.yaml"), "--watch", "--output", "json")
        assert watched.returncode == 0, watched.stderr
        assert json.loads(watched.stdout)[0]["state"] == "ACTIVE"

        cfg.write_text(cfg.read_text().replace("ref: main", "ref: gone"))
        refused = cli(srv, "providers", "reload")
        assert refused.returncode == 1
        assert (
            "reload refused, the previous providers stay loaded" in refused.stderr
            and "'gone'" in refused.stderr
        )
        still = json.loads(cli(srv, "providers", "--output", "json").stdout)
        assert still[0]["version"] == "2.0.0"
        member = cli(srv, "token", "create", "--team", "t").stdout.split()[-1]
        env_token = {**os.environ, "INNOMINATUS_SERVER": srv.url, "INNOMINATUS_TOKEN": member}
        forbidden = subprocess.run(
            [sys.executable, "-m", "innominatus.cli", "providers", "reload"],
            capture_output=True,
            text=True,
            env=env_token,
            timeout=60,
        )
        assert forbidden.returncode == 1 and "only an admin token may reload providers" in forbidden.stderr
