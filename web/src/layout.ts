// Places graph nodes in columns by kind (application → resource → provider → workflow), for an SVG.

export interface GraphNode {
  id: string;
  kind: string;
  label: string;
}

export interface GraphEdge {
  source: string;
  target: string;
  label: string;
}

export interface Placed extends GraphNode {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface Layout {
  nodes: Placed[];
  width: number;
  height: number;
  /** Room right of the resource column for dependency arcs; other edges cross it straight. */
  lane: number;
}

export const KINDS = ["application", "resource", "provider", "workflow"];
const CHAR = 7.4; // px per character of the 13px label font, roughly
const NODE_HEIGHT = 34;
export const ROW_GAP = 22;
const COLUMN_GAP = 120;
const MARGIN = 24;

export function layout(nodes: GraphNode[], dependencies = 0): Layout {
  const lane = dependencies ? 36 + 22 * Math.min(dependencies, 6) : 0;
  const columns = KINDS.map((kind) => nodes.filter((n) => n.kind === kind));
  const others = nodes.filter((n) => !KINDS.includes(n.kind));
  if (others.length) columns.push(others);
  const widths = columns.map((column) => Math.max(80, ...column.map((n) => n.label.length * CHAR + 24)));
  const placed: Placed[] = [];
  let x = MARGIN;
  let height = 0;
  columns.forEach((column, i) => {
    column.forEach((node, row) => {
      const y = MARGIN + 20 + row * (NODE_HEIGHT + ROW_GAP);
      placed.push({ ...node, x, y, width: widths[i], height: NODE_HEIGHT });
      height = Math.max(height, y + NODE_HEIGHT);
    });
    if (column.length) x += widths[i] + COLUMN_GAP + (KINDS[i] === "resource" ? lane : 0);
  });
  return { nodes: placed, width: Math.max(x - COLUMN_GAP + MARGIN, 200), height: height + MARGIN, lane };
}
