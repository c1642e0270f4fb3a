"""Planning a submission is a pure diff: stored rows in, a plan (or every refusal at once) out."""

from __future__ import annotations

from typing import Any

import pytest

from innominatus.db.models import Resource
from innominatus.plan import Action, plan
from innominatus.providers import Catalog
from innominatus.score import SpecError, parse_spec


def spec(resources: dict[str, dict[str, Any]]) -> Any:
    lines = [
        "apiVersion: score.dev/v1b1",
        "metadata:",
        "  name: shop",
        "containers:",
        "  main:",
        "    image: a",
    ]
    lines.append("resources:")
    for name, fields in resources.items():
        lines.append(f"  {name}:")
        lines.append(f"    type: {fields.get('type', 'postgres-mock')}")
        if "properties" in fields:
            lines.append("    properties:")
            lines += [f"      {k}: {v}" for k, v in fields["properties"].items()]
    return parse_spec("\n".join(lines) + "\n")


def stored(
    name: str, state: str, properties: dict[str, Any] | None = None, type: str = "postgres-mock"
) -> Resource:
    return Resource(
        name=name, type=type, state=state, properties=properties or {}, resource_class=None, depends_on=[]
    )


def test_a_new_application_creates_everything_in_spec_order(catalog: Catalog) -> None:
    wanted = spec({"db": {}, "cache": {"properties": {"host": "${resources.db.host}"}}})
    planned = plan(catalog, wanted, None, {})
    assert [(c.action, c.name, c.depends_on) for c in planned.changes] == [
        (Action.CREATE, "db", ()),
        (Action.CREATE, "cache", ("db",)),
    ]
    assert planned.new_revision


def test_each_stored_resource_gets_the_change_its_state_allows(catalog: Catalog) -> None:
    wanted = spec(
        {
            "same": {"properties": {"size": "small"}},
            "active": {"properties": {"size": "large"}},
            "failed": {"properties": {"size": "large"}},
            "waiting": {"properties": {"size": "large"}},
            "new": {},
        }
    )
    live = {
        "same": stored("same", "ACTIVE", {"size": "small"}),
        "active": stored("active", "ACTIVE", {"size": "small"}),
        "failed": stored("failed", "FAILED", {"size": "small"}),
        "waiting": stored("waiting", "REQUESTED", {"size": "small"}),
        "gone": stored("gone", "ACTIVE"),
    }
    before = {name: (r.state, dict(r.properties)) for name, r in live.items()}
    planned = plan(catalog, wanted, wanted.document, live)
    assert [(c.action, c.name) for c in planned.changes] == [
        (Action.KEEP, "same"),
        (Action.UPDATE, "active"),
        (Action.REQUEUE, "failed"),
        (Action.RETAKE, "waiting"),
        (Action.CREATE, "new"),
        (Action.DELETE, "gone"),
    ]
    assert not planned.new_revision  # the same document as stored
    assert {name: (r.state, dict(r.properties)) for name, r in live.items()} == before  # nothing written


def test_every_reason_to_refuse_comes_at_once(catalog: Catalog) -> None:
    wanted = spec({"busy": {"properties": {"size": "large"}}, "typed": {"type": "postgres"}})
    live = {"busy": stored("busy", "PROVISIONING", {"size": "small"}), "typed": stored("typed", "ACTIVE")}
    with pytest.raises(SpecError) as refused:
        plan(catalog, wanted, None, live)
    paths = sorted(p.path for p in refused.value.problems)
    assert paths == ["resources.busy", "resources.typed.type"]
