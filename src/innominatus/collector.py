"""The server process's garbage-collector settings.

A request allocates thousands of short-lived containers (GraphQL documents, ORM states, events), and
CPython's default young-generation threshold (700 allocations) ran a collection several times per
request, each promoting survivors that later full collections walk again together with every object
built at start (schemas, mappers, the catalog). Measured here (figure 2 of bench/README.md, SQLite):
0.8 s of collections in a 10 s run at the defaults. So: what exists when the server starts is frozen
out of collection, and the young generation is collected after 50,000 allocations, not 700.
Reference counting still frees nearly everything at once; the collector only finds cycles, and a larger
young generation holds them a little longer (bounded by the threshold)."""

from __future__ import annotations

import gc

YOUNG = 50_000  # allocations between young collections (CPython default: 700)
MIDDLE = 20  # young collections per middle one (default: 10)
OLD = 100  # middle collections per full one (default: 10)


def settle_for_serving() -> None:
    """Once the app is built, before serving: freeze what exists, then raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
