"""The web page in a real Chromium against a real server without --dev: sign-in, live resources in two
tabs, refused specs, details with live steps and hidden secrets, reconnect without loss, the graph,
GraphiQL with the signed-in token, team scoping and accessible basics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.browser.conftest import Platform, shot, spec, start_platform
from tests.e2e.server import ADMIN_TOKEN

Pages = Callable[[Platform], Page]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory, "signed-in")


def sign_in(page: Page, platform: Platform, token: str = ADMIN_TOKEN) -> None:
    page.goto(platform.url + "/")
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Resources")
    expect(page.locator("h1")).to_have_count(1)
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()


def row(page: Page, app: str, name: str) -> Any:
    return page.locator(f'tbody[data-application="{app}"] tr[data-resource-id]').filter(
        has=page.get_by_role("button", name=name, exact=True)
    )


def submit(page: Page, text: str) -> None:
    page.get_by_label("Score spec", exact=True).fill(text)
    page.get_by_role("button", name="Submit", exact=True).click()


def state_of(platform: Platform, app: str, name: str, token: str = ADMIN_TOKEN) -> str | None:
    found = platform.call(
        "query($app: String) { resources(application: $app) { name state } }", {"app": app}, token
    )["resources"]
    return next((r["state"] for r in found if r["name"] == name), None)


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def one_h1(page: Page) -> None:
    expect(page.locator("h1")).to_have_count(1)


# ------------------------------------------------------------------------------------------- sign-in


def test_wrong_token_is_refused_and_shows_no_data(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    page.goto(platform.url + "/")
    expect(page).to_have_title(re.compile("innominatus"))
    one_h1(page)
    page.get_by_label("Token", exact=True).fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("token was refused")
    expect(page.get_by_role("table")).to_have_count(0)
    expect(page.get_by_role("link", name="Resources")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('innominatus.token')") is None
    shot(page, platform, "sign-in-refused")


def test_token_kept_for_the_tab_and_sent_on_http_and_websocket(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    headers: list[str | None] = []
    page.on(
        "request",
        lambda r: headers.append(r.headers.get("authorization")) if r.url.endswith("/graphql") else None,
    )
    inits: list[dict[str, Any]] = []

    def watch(ws: Any) -> None:
        def sent(payload: str | bytes) -> None:
            message = json.loads(payload)
            if message.get("type") == "connection_init":
                inits.append(message)

        ws.on("framesent", sent)

    page.on("websocket", watch)
    sign_in(page, platform)
    assert page.evaluate("sessionStorage.getItem('innominatus.token')") == ADMIN_TOKEN
    assert headers and all(h == f"Bearer {ADMIN_TOKEN}" for h in headers[1:]), headers
    wait_until(lambda: bool(inits))
    assert inits[0]["payload"] == {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    # A reload keeps the tab signed in.
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Resources")


# ------------------------------------------------------------------------------------ live resources


def test_resources_move_live_in_two_tabs_without_polling(platform: Platform, pages: Pages) -> None:
    first, second = pages(platform), pages(platform)
    sign_in(first, platform)
    sign_in(second, platform)
    # The second tab records each state its row shows, and every request it makes from now on.
    second.evaluate(
        """() => {
          window.seenStates = [];
          new MutationObserver(() => {
            for (const cell of document.querySelectorAll('tbody[data-application="live-app"] .state'))
              if (window.seenStates.at(-1) !== cell.textContent) window.seenStates.push(cell.textContent);
          }).observe(document.body, {subtree: true, childList: true, characterData: true});
          window.loadedOnce = true;
        }"""
    )
    posts: list[str] = []
    second.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

    submit(first, spec("live-app", {"gate": ("gated", {"gate": "live"})}))
    expect(first.get_by_role("status").filter(has_text="Submitted live-app")).to_be_visible()
    for page in (first, second):
        expect(row(page, "live-app", "gate")).to_contain_text("PROVISIONING")
        expect(page.locator('tbody[data-application="live-app"] th')).to_have_text("Application live-app")
    shot(first, platform, "resources-provisioning")
    platform.open_gate("live")
    for page in (first, second):
        expect(row(page, "live-app", "gate")).to_contain_text("ACTIVE")
        expect(row(page, "live-app", "gate")).to_contain_text("gated")
    assert second.evaluate("window.loadedOnce") is True  # no reload happened
    seen = second.evaluate("window.seenStates")
    assert seen[-2:] == ["PROVISIONING", "ACTIVE"], seen
    assert posts == [], f"the second tab polled: {posts}"
    shot(first, platform, "resources")


def test_the_page_lists_what_exists_and_streams_from_the_current_position(
    platform: Platform, pages: Pages
) -> None:
    """The first load costs what exists now, not the history: the list, then the stream after it."""
    platform.open_gate("before-load")
    platform.call(
        "mutation($spec: String!) { submitSpec(spec: $spec) { application { name } } }",
        {"spec": spec("before-load", {"quick": ("gated", {"gate": "before-load"})})},
    )
    wait_until(lambda: state_of(platform, "before-load", "quick") == "ACTIVE")
    position = platform.call("{ lastSequence }")["lastSequence"]
    assert position > 0
    page = pages(platform)
    subscribed: list[dict[str, Any]] = []

    def watch(ws: Any) -> None:
        def sent(payload: str | bytes) -> None:
            message = json.loads(payload)
            if message.get("type") == "subscribe" and "resourceStateChanged" in message["payload"]["query"]:
                subscribed.append(message["payload"].get("variables") or {})

        ws.on("framesent", sent)

    page.on("websocket", watch)
    sign_in(page, platform)
    expect(row(page, "before-load", "quick")).to_contain_text("ACTIVE")
    wait_until(lambda: bool(subscribed))
    assert subscribed[0]["after"] >= position, subscribed  # no replay of the whole history


def test_refused_spec_shows_each_problem_below_the_form(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    sign_in(page, platform)
    submit(page, "apiVersion: score.dev/v1b1\nmetadata:\n  name: bad-app\nresources:\n  database: {}\n")
    alert = page.locator("form.submit").get_by_role("alert")
    expect(alert).to_contain_text("resources.database.type: is required")
    items = alert.get_by_role("listitem")
    expect(items).to_have_count(2)
    expect(items).to_have_text(["containers: is required", "resources.database.type: is required"])
    shot(page, platform, "refused-spec")


def test_details_show_steps_live_logs_and_hide_secrets(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    sign_in(page, platform)
    submit(page, spec("detail-app", {"slow": ("gated", {"gate": "detail"})}))
    name = page.get_by_role("button", name="slow", exact=True)
    name.click()
    details = page.locator("section.details")
    expect(details.get_by_role("heading", level=2)).to_have_text("slow in detail-app")
    waiting = details.locator('li.step[data-step="wait-for-gate"]')
    expect(waiting.locator(".step-name")).to_have_text("wait-for-gate")
    expect(waiting.locator(".step-status")).to_have_text("RUNNING")
    # Log lines arrive live too (a line printed before the page looked is in the stored logs at the end).
    expect(waiting.locator("pre")).to_contain_text("still waiting for gate detail")
    expect(details.locator('li.step[data-step="prepare"] .step-status')).to_have_text("SUCCEEDED")
    shot(page, platform, "details-running")

    platform.open_gate("detail")
    # Step status changes arrive on workflowStepChanged while the run goes on.
    expect(waiting.locator(".step-status")).to_have_text("SUCCEEDED")
    expect(details.locator('li.step[data-step="finish"] .step-status')).to_have_text("SUCCEEDED")
    expect(details.get_by_text("gate open")).to_be_visible()

    found = platform.call(
        "query($app: String) { resources(application: $app) { outputs secretOutputs } }",
        {"app": "detail-app"},
    )["resources"][0]
    # Secret by name, and declared sensitive by the workflow under a plain name.
    assert found["secretOutputs"] == ["api_token", "licence"]
    secret, licence = found["outputs"]["api_token"], found["outputs"]["licence"]
    assert licence == "lic-detail-hidden"
    outputs = details.locator("table.outputs")
    expect(outputs).to_contain_text("test-1")
    expect(outputs).to_contain_text("<img src=x alt=injected> & <b>bold</b>")
    expect(outputs.locator("img, b")).to_have_count(0)
    token_row = outputs.locator("tr", has=page.get_by_role("rowheader", name="api_token"))
    licence_row = outputs.locator("tr", has=page.get_by_role("rowheader", name="licence"))
    expect(token_row).to_contain_text("********")
    expect(licence_row).to_contain_text("********")
    for hidden in (secret, licence):
        assert hidden not in page.locator("body").inner_text()
        assert hidden not in page.content()
    shot(page, platform, "details-secret-hidden")
    token_row.get_by_role("button", name="Show").click()
    expect(token_row).to_contain_text(secret)
    assert licence not in page.content()  # one Show reveals one value
    licence_row.get_by_role("button", name="Show").click()
    expect(licence_row).to_contain_text(licence)
    shot(page, platform, "details")


def test_reconnects_and_catches_up_with_after_sequence(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    subscribes: list[dict[str, Any]] = []
    blocked = {"now": False}

    def handle(ws: WebSocketRoute) -> None:
        # The socket goes through the test, so the test can cut it as a network failure would.
        if blocked["now"]:
            ws.close(code=1011, reason="network down")
            return
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            parsed = json.loads(message)
            if parsed.get("type") == "subscribe":
                subscribes.append(parsed["payload"])
            server.send(message)

        ws.on_message(from_page)
        routes.append((ws, server))

    page.route_web_socket(re.compile(r"/graphql$"), handle)
    sign_in(page, platform)
    submit(page, spec("drop-app", {"first": ("postgres-mock", {"db_name": "first_db"})}))
    expect(row(page, "drop-app", "first")).to_contain_text("ACTIVE")
    seen = page.evaluate("window.innominatus.lastSequence()")
    assert seen and seen > 0

    # The network goes down; meanwhile another client submits and the resource becomes ACTIVE.
    blocked["now"] = True
    for ws, server in routes:
        server.close()
        ws.close(code=1001, reason="gone")
    expect(page.get_by_role("status").filter(has_text="reconnecting")).to_be_visible()
    platform.call(
        "mutation($spec: String!) { submitSpec(spec: $spec) { changed } }",
        {
            "spec": spec(
                "drop-app",
                {
                    "first": ("postgres-mock", {"db_name": "first_db"}),
                    "second": ("postgres-mock", {"db_name": "second_db"}),
                },
            )
        },
    )
    wait_until(lambda: state_of(platform, "drop-app", "second") == "ACTIVE")
    expect(row(page, "drop-app", "second")).to_have_count(0)
    shot(page, platform, "reconnecting")

    # Back up: the page resumes after the last sequence it saw and gets every change it missed.
    before = len(subscribes)
    blocked["now"] = False
    expect(row(page, "drop-app", "second")).to_contain_text("ACTIVE", timeout=20_000)
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    resumed = [s for s in subscribes[before:] if "resourceStateChanged" in s["query"]]
    assert resumed and resumed[0]["variables"]["after"] >= seen, resumed


# ----------------------------------------------------------------------------------------------- graph


def test_graph_of_an_application_with_mermaid_and_dot(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    sign_in(page, platform)
    submit(
        page,
        spec(
            "graph-app",
            {
                "db": ("postgres-mock", {"db_name": "graph_db"}),
                "cache": ("postgres-mock", {"db_name": "${resources.db.database_name}"}),
            },
        ),
    )
    expect(row(page, "graph-app", "cache")).to_contain_text("ACTIVE")
    page.get_by_role("link", name="Graph", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Graph")
    one_h1(page)
    page.get_by_label("Application", exact=True).select_option("graph-app")
    svg = page.locator(".graph svg")
    expect(svg.locator("> title")).to_have_text("Graph of application graph-app")
    nodes = svg.locator("g.node text")
    expect(nodes).to_have_count(5)
    assert sorted(nodes.all_text_contents()) == [
        "cache (postgres-mock)",
        "database-team",
        "db (postgres-mock)",
        "graph-app",
        "provision-postgres-mock",
    ]
    edges = svg.locator("g.edge > title")
    expect(edges).to_contain_text(["cache (postgres-mock) depends on db (postgres-mock)"])
    expect(svg.locator("g.edge text")).to_contain_text(["has", "provided by", "runs"])
    mermaid = page.get_by_label("Mermaid", exact=True)
    expect(mermaid).to_have_value(re.compile(r'^flowchart LR\n  n0\["graph-app"\]'))
    expect(page.get_by_label("DOT", exact=True)).to_have_value(re.compile(r'-> n\d+ \[label="depends on"\]'))
    expect(page.get_by_role("button", name="Copy Mermaid")).to_be_visible()
    expect(page.get_by_role("button", name="Copy DOT")).to_be_visible()
    shot(page, platform, "graph")


# ------------------------------------------------------------------------------------------- GraphiQL


def test_graphiql_runs_with_the_signed_in_token(platform: Platform, pages: Pages) -> None:
    platform.call(
        "mutation($spec: String!) { submitSpec(spec: $spec) { changed } }",
        {"spec": spec("graphiql-app", {"db": ("postgres-mock", {"db_name": "graphiql_db"})})},
    )
    wait_until(lambda: state_of(platform, "graphiql-app", "db") == "ACTIVE")
    page = pages(platform)
    sign_in(page, platform)
    sent: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            sent.append(r.headers.get("authorization"))
            if r.url.endswith("/graphql") and r.method == "POST"
            else None
        ),
    )
    page.get_by_role("link", name="API playground").click()
    expect(page).to_have_title(re.compile("innominatus"))
    one_h1(page)
    expect(page.locator(".graphiql-container")).to_be_visible()
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    expect(editor).to_contain_text("{ providers { name } }")
    page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    result = page.locator(".result-window")
    expect(result).to_contain_text('"name": "database-team"')
    expect(result).to_contain_text('"name": "browser-gate"')
    assert sent and all(h == f"Bearer {ADMIN_TOKEN}" for h in sent), sent

    # Subscriptions go over the websocket with the same token in connection_init.
    inits: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent",
            lambda f: inits.append(json.loads(f)) if '"connection_init"' in str(f) else None,
        ),
    )
    page.evaluate(
        """document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(
             'subscription { resourceStateChanged(afterSequence: 0) { sequence toState } }')"""
    )
    page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    expect(result).to_contain_text('"toState": "ACTIVE"')
    assert inits and inits[0]["payload"] == {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    shot(page, platform, "graphiql")


# ----------------------------------------------------------------------------------------- team scope


def test_a_member_sees_only_its_teams_applications(platform: Platform, pages: Pages) -> None:
    platform.call(
        "mutation($spec: String!) { submitSpec(spec: $spec) { changed } }",
        {"spec": spec("admin-only-app", {"db": ("postgres-mock", {"db_name": "admin_db"})})},
    )
    wait_until(lambda: state_of(platform, "admin-only-app", "db") == "ACTIVE")
    token = platform.create_token("blue")
    page = pages(platform)
    sign_in(page, platform, token)
    submit(page, spec("blue-app", {"db": ("postgres-mock", {"db_name": "blue_db"})}))
    expect(row(page, "blue-app", "db")).to_contain_text("ACTIVE")
    expect(page.locator('tbody[data-application="admin-only-app"]')).to_have_count(0)
    assert "admin-only-app" not in page.locator("body").inner_text()
    page.get_by_role("link", name="Graph", exact=True).click()
    expect(page.locator(".graph svg > title")).to_have_text("Graph of all visible applications")
    expect(page.locator(".graph svg g.node-application text")).to_have_text(["blue-app"])
    expect(page.get_by_label("Application", exact=True).locator("option")).to_have_text(
        ["All applications", "blue-app"]
    )
    shot(page, platform, "member-graph")


# ------------------------------------------------------------------------------------- accessibility

UNNAMED = """() => {
  const named = (el) => {
    if (el.getAttribute('aria-label')?.trim()) return true;
    if (el.getAttribute('aria-labelledby')) return true;
    if (el.labels && el.labels.length) return true;
    return (el.textContent || '').trim().length > 0;
  };
  const bad = [];
  for (const el of document.querySelectorAll('button, a[href], input, select, textarea'))
    if (!named(el)) bad.push(el.outerHTML.slice(0, 120));
  for (const svg of document.querySelectorAll('svg'))
    if (svg.getAttribute('aria-hidden') !== 'true' && !svg.querySelector(':scope > title'))
      bad.push('svg without title: ' + svg.outerHTML.slice(0, 80));
  for (const img of document.querySelectorAll('img'))
    if (!img.hasAttribute('alt')) bad.push('img without alt: ' + img.outerHTML.slice(0, 80));
  return bad;
}"""


def test_controls_are_named_and_the_keyboard_works(platform: Platform, pages: Pages) -> None:
    platform.open_gate("keys")
    platform.call(
        "mutation($spec: String!) { submitSpec(spec: $spec) { changed } }",
        {"spec": spec("keys-app", {"gate": ("gated", {"gate": "keys"})})},
    )
    wait_until(lambda: state_of(platform, "keys-app", "gate") == "ACTIVE")
    page = pages(platform)
    page.goto(platform.url + "/")
    expect(page.get_by_label("Token", exact=True)).to_be_focused()
    assert page.evaluate(UNNAMED) == []
    # Keyboard only: the token field has the focus, Enter signs in.
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Resources")
    expect(row(page, "keys-app", "gate")).to_contain_text("ACTIVE")
    assert page.evaluate(UNNAMED) == []
    row(page, "keys-app", "gate").get_by_role("button", name="gate", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("section.details h2")).to_have_text("gate in keys-app")
    expect(page.locator("section.details h2")).to_be_focused()  # focus follows what was opened
    show = page.locator("section.details").get_by_role("button", name="Show").first
    show.focus()
    page.keyboard.press("Space")
    expect(page.locator("section.details").get_by_role("button", name="Hide")).to_be_visible()
    assert page.evaluate(UNNAMED) == []
    page.get_by_role("button", name="Close details").focus()
    page.keyboard.press("Enter")
    expect(page.locator("section.details")).to_have_count(0)
    expect(row(page, "keys-app", "gate").get_by_role("button", name="gate", exact=True)).to_be_focused()
    page.get_by_role("link", name="Graph", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator(".graph svg > title")).to_have_count(1)
    assert page.evaluate(UNNAMED) == []
    page.goto(platform.url + "/graphql")
    expect(page.locator(".graphiql-container")).to_be_visible()
    one_h1(page)


def test_a_revoked_token_returns_to_sign_in_and_sign_out_forgets_it(platform: Platform, pages: Pages) -> None:
    created = platform.call(
        'mutation { createToken(team: "green", description: "revoked in the browser") { token info { id } } }'
    )["createToken"]
    page = pages(platform)
    sign_in(page, platform, created["token"])
    platform.call("mutation($id: ID!) { revokeToken(id: $id) { id } }", {"id": created["info"]["id"]})
    # The server closes the socket (4403) when the token is revoked: the page asks for a token again.
    expect(page.get_by_role("alert")).to_contain_text("token was refused", timeout=15_000)
    expect(page.get_by_label("Token", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('innominatus.token')") is None

    sign_in(page, platform)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Token", exact=True)).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('innominatus.token')") is None
