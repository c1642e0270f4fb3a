"""The graph as Mermaid and DOT: user-chosen names stay inside their quotes whatever they hold."""

from __future__ import annotations

from innominatus.service.graph import Graph, dot, mermaid

NASTY = 'db"] --> x[evil #quot; <b>|pipe|\n`tick` \\back'


def nasty_graph() -> Graph:
    g = Graph()
    app = g.node("application:a", "application", NASTY)
    res = g.node("resource:a/r", "resource", "r (postgres)")
    g.edge(app, res, "has")
    g.edge(app, res, "has")  # twice: kept once
    return g


def test_nodes_and_edges_are_kept_once() -> None:
    g = nasty_graph()
    g.node("application:a", "application", "again")
    assert [n.label for n in g.nodes] == [NASTY, "r (postgres)"]
    assert len(g.edges) == 1


def test_mermaid_quotes_and_escapes_labels() -> None:
    text = mermaid(nasty_graph())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert lines[1] == (
        '  n0["db#quot;] --#gt; x[evil #35;quot; #lt;b#gt;#124;pipe#124; #96;tick#96; \\back"]'
    )
    assert lines[2] == '  n1["r (postgres)"]'
    assert lines[3] == '  n0 -->|"has"| n1'
    assert len(lines) == 4


def test_dot_quotes_and_escapes_labels() -> None:
    text = dot(nasty_graph())
    assert text.startswith("digraph innominatus {\n  rankdir=LR;\n")
    assert '  n0 [label="db\\"] --> x[evil #quot; <b>|pipe|\\n`tick` \\\\back", shape=box3d];' in text
    assert '  n0 -> n1 [label="has"];' in text
    assert text.endswith("}\n")
