import { describe, expect, it } from "vitest";
import { layout } from "./layout";

describe("layout", () => {
  it("puts each kind in its own column, left to right", () => {
    const placed = layout([
      { id: "w", kind: "workflow", label: "provision" },
      { id: "a", kind: "application", label: "shop" },
      { id: "r1", kind: "resource", label: "db (postgres)" },
      { id: "r2", kind: "resource", label: "cache (redis)" },
      { id: "p", kind: "provider", label: "database-team" },
    ]);
    const x = Object.fromEntries(placed.nodes.map((n) => [n.id, n.x]));
    expect(x.a).toBeLessThan(x.r1);
    expect(x.r1).toBe(x.r2);
    expect(x.r1).toBeLessThan(x.p);
    expect(x.p).toBeLessThan(x.w);
    const [r1, r2] = placed.nodes.filter((n) => n.kind === "resource");
    expect(r2.y).toBeGreaterThan(r1.y);
    expect(placed.width).toBeGreaterThan(x.w);
  });
});
