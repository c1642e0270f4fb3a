"""Real headless Chromium (Debian's package, driven by Playwright) against a real `innominatus serve`.

Every page a test opens records its requests; a test fails when one left the server's origin."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PROVIDERS, workflow_yaml
from tests.e2e.server import ADMIN_TOKEN, Server, run_server

CHROMIUM = os.environ.get("INNOMINATUS_CHROMIUM", "/usr/bin/chromium")
# In CI (and wherever PostgreSQL is required) a missing browser is a failure, not a skip.
REQUIRED = os.environ.get("CI") == "1" or os.environ.get("INNOMINATUS_REQUIRE_POSTGRES") == "1"
ARTIFACTS = Path(__file__).parent / "artifacts"
# Chromium's own background traffic (updates, sync, safe browsing) would leave the machine: off.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]


# Module scope, not session: Playwright's sync API keeps an event loop running on this thread while it
# is open, which would break every asyncio test that runs after the browser tests.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = None
    if sync_playwright is None:
        missing = "playwright is not installed (pip install -e '.[test]')"
    elif not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if missing:
        if REQUIRED:
            pytest.fail(f"browser tests are required here: {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# ----------------------------------------------------------------------------------------- providers
# The catalog's mock database, and a workflow that waits until the test opens its gate: a run that is
# still going while the page watches its steps, whatever the machine's speed.

GATE_MANIFEST = """\
apiVersion: v1
kind: Provider
metadata: {name: browser-gate, version: 1.0.0, description: waits for the browser test}
capabilities:
  resourceTypeCapabilities:
    - type: gated
      operations: {create: {workflow: provision-gated}}
workflows:
  - {name: provision-gated, file: ./workflows/provision-gated.yaml, operation: create}
"""


def gate_workflow(gates: Path) -> str:
    return workflow_yaml(
        "provision-gated",
        f"""\
        - name: prepare
          type: policy
          config:
            script: echo "preparing {{{{ parameters.gate }}}}"
        - name: wait-for-gate
          type: policy
          timeout: 60
          config:
            script: |
              echo "waiting for gate {{{{ parameters.gate }}}}"
              n=0
              while [ ! -e {gates}/{{{{ parameters.gate }}}} ]; do
                sleep 0.05; n=$((n + 1))
                if [ $((n % 10)) -eq 0 ]; then echo "still waiting for gate {{{{ parameters.gate }}}}"; fi
              done
              echo "gate open"
        - name: finish
          type: policy
          config:
            script: |
              echo "api_token=tok-{{{{ parameters.gate }}}}-s3cr3t" >> "$INNOMINATUS_OUTPUT"
              echo finished
        """,
        parameters="- name: gate\n  type: string\n  required: true\n",
        outputs=(
            "region: test-1\n"
            'motd: "<img src=x alt=injected> & <b>bold</b>"\n'  # text, never markup
            "api_token: \"{{ steps['finish'].outputs.api_token }}\"\n"
            'licence: {value: "lic-{{ parameters.gate }}-hidden", sensitive: true}\n'
        ),
    )


@dataclass
class Platform:
    server: Server
    gates: Path
    artifacts: Path

    @property
    def url(self) -> str:
        return self.server.url

    def open_gate(self, name: str) -> None:
        (self.gates / name).touch()

    def call(self, query: str, variables: dict[str, Any] | None = None, token: str = ADMIN_TOKEN) -> Any:
        answer = httpx.post(
            self.server.graphql,
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()
        assert not answer.get("errors"), answer
        return answer["data"]

    def create_token(self, team: str) -> str:
        created = self.call(
            'mutation($team: String!) { createToken(team: $team, description: "browser test") { token } }',
            {"team": team},
        )
        return str(created["createToken"]["token"])


def _providers(root: Path) -> tuple[Path, Path]:
    providers = root / "providers"
    gates = root / "gates"
    gates.mkdir(parents=True)
    shutil.copytree(PROVIDERS / "database-team", providers / "database-team")
    gate = providers / "browser-gate"
    (gate / "workflows").mkdir(parents=True)
    (gate / "provider.yaml").write_text(GATE_MANIFEST)
    (gate / "workflows" / "provision-gated.yaml").write_text(gate_workflow(gates))
    return providers, gates


def start_platform(factory: pytest.TempPathFactory, name: str, *args: str) -> Iterator[Platform]:
    root = factory.mktemp(name)
    providers, gates = _providers(root)
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    with run_server(root, args=["--providers-dir", str(providers), *args]) as server:
        yield Platform(server=server, gates=gates, artifacts=artifacts)


# ------------------------------------------------------------------------------------------- pages


@dataclass
class Requests:
    """Every request the pages of a test made (HTTP and websocket), to check none left the server."""

    origin: str
    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught script errors

    def foreign(self) -> list[str]:
        ws_origin = re.sub(r"^http", "ws", self.origin)
        return [
            u
            for u in self.urls
            if not (u.startswith((f"{self.origin}/", f"{ws_origin}/")) or u in (self.origin, ws_origin))
            and not u.startswith(("data:", "blob:", "about:"))
        ]


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[[Platform], Page]]:
    """Opens pages on a platform, each in its own context (its own tab storage); checks at the end that
    every request any of them made went to the server."""
    contexts: list[BrowserContext] = []
    seen: list[Requests] = []

    def open_page(platform: Platform) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
        contexts.append(context)
        log = Requests(origin=platform.url)
        seen.append(log)
        context.on("request", lambda r: log.urls.append(r.url))
        context.on("weberror", lambda e: log.errors.append(str(e.error)))
        page = context.new_page()
        page.on("websocket", lambda ws: log.urls.append(ws.url))
        return page

    yield open_page
    for context in contexts:
        context.close()
    for log in seen:
        assert log.urls, "no request recorded"
        assert not log.foreign(), f"requests left the server: {log.foreign()}"
        assert not log.errors, f"the page threw: {log.errors}"


def shot(page: Page, platform: Platform, name: str) -> None:
    page.screenshot(path=str(platform.artifacts / f"{name}.png"), full_page=True)


def spec(app: str, resources: dict[str, tuple[str, dict[str, str]]]) -> str:
    lines = ["apiVersion: score.dev/v1b1", "metadata:", f"  name: {app}", "containers:", "  main:"]
    lines += ["    image: nginx", "resources:"]
    for name, (rtype, props) in resources.items():
        lines += [f"  {name}:", f"    type: {rtype}"]
        if props:
            lines.append("    properties:")
            lines += [f"      {k}: {v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"
