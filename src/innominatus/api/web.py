"""The web page at `/` and GraphiQL at `/graphql` (for a browser), both built from `web/` into
`innominatus/web_assets` and served from this process only: nothing is loaded from elsewhere, which the
Content-Security-Policy states to the browser as well."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent.parent / "web_assets"

# Same origin only ('self' covers this server's websocket too). Inline styles: GraphiQL sets some.
# data: fonts and images: GraphiQL's stylesheet embeds its fonts.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _html(name: str) -> Response:
    path = ASSETS / name
    if not path.is_file():
        # A checkout whose page was never built (the wheel always carries it).
        return PlainTextResponse(
            f"the web page is not built: run `npm ci && npm run build` in web/ ({name} missing)",
            status_code=503,
        )
    return FileResponse(path, media_type="text/html; charset=utf-8", headers=HEADERS)


async def page(_: Request) -> Response:
    return _html("index.html")


def graphiql() -> Response:
    """GraphiQL's page, for `GraphQLApp.render_graphql_ide`."""
    return _html("graphiql.html")


class _Assets(StaticFiles):
    # Names carry a content hash: a new build gets new names, so browsers may keep these forever.
    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


routes: list[BaseRoute] = [
    Route("/", page, methods=["GET", "HEAD"]),
    Mount("/assets", _Assets(directory=ASSETS / "assets", check_dir=False), name="assets"),
]
