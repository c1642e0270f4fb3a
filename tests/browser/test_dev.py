"""`serve --dev` in a real Chromium: no sign-in, the page and GraphiQL work without a token, every view
has its title and one <h1>, and the server's other routes are where they were."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Platform, shot, start_platform

Pages = Callable[[Platform], Page]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from start_platform(tmp_path_factory, "dev", "--dev")


def test_no_sign_in_in_dev_mode(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    page.goto(platform.url + "/")
    expect(page).to_have_title(re.compile("innominatus"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Resources")
    expect(page.locator("h1")).to_have_count(1)
    expect(page.get_by_label("Token", exact=True)).to_have_count(0)
    expect(page.get_by_text("Dev mode: no sign-in")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible()
    page.get_by_role("link", name="Graph", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Graph")
    expect(page.locator("h1")).to_have_count(1)
    shot(page, platform, "graph-empty")


def test_graphiql_offline_without_a_token(platform: Platform, pages: Pages) -> None:
    page = pages(platform)
    sent: list[str | None] = []
    page.on(
        "request",
        lambda r: sent.append(r.headers.get("authorization")) if r.method == "POST" else None,
    )
    page.goto(platform.url + "/graphql")
    expect(page).to_have_title(re.compile("innominatus"))
    expect(page.locator("h1")).to_have_count(1)
    expect(page.locator(".graphiql-query-editor .CodeMirror")).to_contain_text("{ providers { name } }")
    page.get_by_role("button", name="Execute query (Ctrl-Enter)").click()
    expect(page.locator(".result-window")).to_contain_text('"name": "database-team"')
    assert sent and all(h is None for h in sent), sent
    shot(page, platform, "graphiql-dev")


def test_pages_name_only_their_own_server_and_other_routes_stay(platform: Platform) -> None:
    for path, accept in (("/", "*/*"), ("/graphql", "text/html")):
        answer = httpx.get(platform.url + path, headers={"Accept": accept})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        # Scripts and styles by path on this server: no scheme, no host.
        assert not re.search(r'(src|href)="(https?:)?//', answer.text), answer.text
        assert "unpkg" not in answer.text and "jsdelivr" not in answer.text
    asset = re.search(r'src="(/assets/[^"]+\.js)"', httpx.get(platform.url + "/").text)
    assert asset is not None
    assert httpx.get(platform.url + asset.group(1)).status_code == 200
    assert httpx.get(platform.url + "/health").json() == {"status": "healthy"}
    assert httpx.get(platform.url + "/ready").status_code == 200
    assert httpx.get(platform.url + "/metrics").status_code == 200
    answer = httpx.post(platform.url + "/graphql", json={"query": "{ providers { name } }"})
    assert answer.json()["data"]["providers"]
