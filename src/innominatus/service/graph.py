"""What an application is made of, as a graph: application → resources → provider → workflow, plus the
resources' dependencies; as nodes and edges, and as Mermaid and DOT text. Everything is read through
`service/reads.py`, so a member's graph holds only its team's applications."""

from __future__ import annotations

from dataclasses import dataclass, field

from innominatus.auth import Principal
from innominatus.service import reads
from innominatus.service.context import Services

MAX_APPLICATIONS = 1000
MAX_RESOURCES = 1000


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # application, resource, provider, workflow
    label: str


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, id: str, kind: str, label: str) -> str:
        if all(n.id != id for n in self.nodes):
            self.nodes.append(Node(id, kind, label))
        return id

    def edge(self, source: str, target: str, label: str) -> None:
        wanted = Edge(source, target, label)
        if wanted not in self.edges:
            self.edges.append(wanted)


async def graph(services: Services, caller: Principal, application: str | None = None) -> Graph:
    """The named application's graph (NOT_FOUND like `application` when it is not visible), or that of
    every visible application."""
    if application is not None:
        apps = [await reads.application(services, caller, application)]
    else:
        apps = await reads.applications(services, caller, first=MAX_APPLICATIONS)
    result = Graph()
    for app in apps:
        app_id = result.node(f"application:{app.name}", "application", app.name)
        rows = await reads.resources(services, caller, application=app.name, first=MAX_RESOURCES)
        runs = {w.id: w for w in await reads.workflows(services, caller, application=app.name, first=1000)}
        live = [r for r in rows if r.state != "DELETED"]
        ids = {r.name: f"resource:{app.name}/{r.name}" for r in live}
        for r in live:
            resource_id = result.node(ids[r.name], "resource", f"{r.name} ({r.type})")
            result.edge(app_id, resource_id, "has")
            for needed in r.depends_on or []:
                if needed in ids:
                    result.edge(resource_id, ids[needed], "depends on")
            if r.provider:
                provider_id = result.node(f"provider:{r.provider}", "provider", r.provider)
                result.edge(resource_id, provider_id, "provided by")
                run = runs.get(r.workflow_execution_id or "")
                if run is not None:
                    workflow_id = result.node(
                        f"workflow:{r.provider}/{run.workflow_name}", "workflow", run.workflow_name
                    )
                    result.edge(provider_id, workflow_id, "runs")
    return result


# --------------------------------------------------------------------------------------------- as text
# Names come from users: every label is quoted and escaped, ids are generated (n0, n1, ...).


def _mermaid_label(text: str) -> str:
    escaped = "".join(_MERMAID_ESCAPES.get(c, c) for c in text)
    return f'"{escaped}"'


_MERMAID_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "|": "#124;",
    "`": "#96;",
    "\n": " ",
    "\r": " ",
}


def mermaid(g: Graph) -> str:
    short = {n.id: f"n{i}" for i, n in enumerate(g.nodes)}
    lines = ["flowchart LR"]
    lines += [f"  {short[n.id]}[{_mermaid_label(n.label)}]" for n in g.nodes]
    lines += [f"  {short[e.source]} -->|{_mermaid_label(e.label)}| {short[e.target]}" for e in g.edges]
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")
    return f'"{escaped}"'


_DOT_SHAPES = {"application": "box3d", "resource": "box", "provider": "component", "workflow": "note"}


def dot(g: Graph) -> str:
    short = {n.id: f"n{i}" for i, n in enumerate(g.nodes)}
    lines = ["digraph innominatus {", "  rankdir=LR;"]
    lines += [
        f"  {short[n.id]} [label={_dot_string(n.label)}, shape={_DOT_SHAPES.get(n.kind, 'box')}];"
        for n in g.nodes
    ]
    lines += [f"  {short[e.source]} -> {short[e.target]} [label={_dot_string(e.label)}];" for e in g.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"
