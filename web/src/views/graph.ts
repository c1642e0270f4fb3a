import { h, replace, s } from "../dom";
import { request } from "../graphql";
import { type GraphEdge, type GraphNode, KINDS, ROW_GAP, layout } from "../layout";

const GRAPH = `query($app: String) {
  graph(application: $app) { nodes { id kind label } edges { source target label } mermaid dot }
}`;
const APPLICATIONS = "{ applications(first: 1000) { name } }";

interface GraphAnswer {
  graph: { nodes: GraphNode[]; edges: GraphEdge[]; mermaid: string; dot: string };
}

/** The graph of one application (or all visible ones) as an SVG, with Mermaid and DOT text to copy. */
export function graphView(root: HTMLElement, selected: string | null, choose: (app: string | null) => void): void {
  const select = h("select", { id: "graph-application" }, h("option", { value: "" }, "All applications"));
  select.addEventListener("change", () => choose(select.value || null));
  const figure = h("div", { class: "graph", "aria-live": "polite" }, h("p", { role: "status" }, "Loading the graph…"));
  const texts = h("div", { class: "graph-texts" });
  replace(
    root,
    h("h1", {}, "Graph"),
    h(
      "p",
      { class: "note" },
      "Application → resources → provider → workflow, and which resources depend on which.",
    ),
    h("div", { class: "field" }, h("label", { for: "graph-application" }, "Application"), select),
    figure,
    texts,
  );

  void request<{ applications: { name: string }[] }>(APPLICATIONS).then(({ applications }) => {
    for (const app of applications) select.append(h("option", { value: app.name }, app.name));
    select.value = selected ?? "";
  });

  request<GraphAnswer>(GRAPH, { app: selected })
    .then(({ graph }) => {
      replace(figure, svg(graph.nodes, graph.edges, selected));
      replace(texts, copyable("Mermaid", graph.mermaid), copyable("DOT", graph.dot));
    })
    .catch((error: Error) => replace(figure, h("p", { role: "alert", class: "alert" }, `The graph did not load: ${error.message}`)));
}

function svg(nodes: GraphNode[], edges: GraphEdge[], selected: string | null): Element {
  if (!nodes.length) return h("p", {}, "Nothing to draw yet: no application is visible.");
  const dependencies = edges.filter((e) => e.label === "depends on");
  const placed = layout(nodes, dependencies.length);
  const at = new Map(placed.nodes.map((n) => [n.id, n]));
  const title = selected ? `Graph of application ${selected}` : "Graph of all visible applications";
  const description = `${nodes.length} nodes and ${edges.length} edges: ${KINDS.join(" → ")}.`;
  const gap = ROW_GAP;
  const drawn = edges.flatMap((edge, i) => {
    const from = at.get(edge.source);
    const to = at.get(edge.target);
    if (!from || !to) return [];
    const x1 = from.x + from.width;
    const y1 = from.y + from.height / 2;
    const y2 = to.y + to.height / 2;
    let path: string;
    let lx: number;
    let ly: number;
    let anchor = "middle";
    if (from.x === to.x) {
      // A dependency between resources: an arc in the lane right of the column, its label in the gap
      // above the lower node (where no other edge runs).
      const bulge = 24 + 22 * (dependencies.indexOf(edge) % 6);
      path = `M ${x1} ${y1} C ${x1 + bulge} ${y1}, ${x1 + bulge} ${y2}, ${x1 + 2} ${y2}`;
      lx = x1 + 6;
      ly = Math.max(from.y, to.y) - gap / 2 + 4;
      anchor = "start";
    } else {
      // Straight across the lane (if this edge leaves the resource column), then a curve.
      const start = from.kind === "resource" ? x1 + placed.lane : x1;
      const x2 = to.x;
      const mid = (start + x2) / 2;
      path = `M ${x1} ${y1} L ${start} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2 - 2} ${y2}`;
      lx = mid;
      ly = (y1 + y2) / 2 - 6;
    }
    return [
      s(
        "g",
        { class: `edge edge-${edge.label.replace(/\s+/g, "-")}`, "data-edge": String(i) },
        s("title", {}, `${from.label} ${edge.label} ${to.label}`),
        s("path", { d: path, "marker-end": "url(#arrow)" }),
        s("text", { x: lx, y: ly, "text-anchor": anchor }, edge.label),
      ),
    ];
  });
  const boxes = placed.nodes.map((n) =>
    s(
      "g",
      { class: `node node-${n.kind}`, "data-node": n.id },
      s("title", {}, `${n.kind} ${n.label}`),
      s("rect", { x: n.x, y: n.y, width: n.width, height: n.height, rx: 6 }),
      s("text", { x: n.x + n.width / 2, y: n.y + n.height / 2 + 4, "text-anchor": "middle" }, n.label),
    ),
  );
  const columns = KINDS.map((kind) => {
    const first = placed.nodes.find((n) => n.kind === kind);
    return first ? s("text", { class: "column", x: first.x, y: 20 }, `${kind}s`) : null;
  });
  return s(
    "svg",
    {
      role: "img",
      "aria-labelledby": "graph-title graph-desc",
      viewBox: `0 0 ${placed.width} ${placed.height}`,
      width: placed.width,
      height: placed.height,
    },
    s("title", { id: "graph-title" }, title),
    s("desc", { id: "graph-desc" }, description),
    s(
      "defs",
      {},
      s(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z" }),
      ),
    ),
    ...columns,
    ...drawn,
    ...boxes,
  );
}

function copyable(name: string, text: string): HTMLElement {
  const id = `graph-${name.toLowerCase()}`;
  const area = h("textarea", { id, readonly: true, rows: 8, spellcheck: "false" });
  area.value = text;
  const done = h("span", { role: "status", class: "copied" });
  const button = h("button", { type: "button" }, `Copy ${name}`);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      area.select(); // no clipboard permission: leave it selected for Ctrl+C
      document.execCommand?.("copy");
    }
    done.textContent = `${name} copied.`;
  });
  return h("div", { class: "copyable" }, h("label", { for: id }, name), area, h("div", {}, button, " ", done));
}
