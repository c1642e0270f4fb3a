import { describe, expect, it } from "vitest";
import { type ResourceRow, ResourceStore } from "./store";

const row = (id: string, app: string, name: string): ResourceRow => ({
  id,
  application: app,
  name,
  type: "postgres",
  state: "REQUESTED",
  updatedAt: "2026-11-28T00:00:00Z",
});

describe("ResourceStore", () => {
  it("keeps each resource's latest state, skips replayed duplicates and hides DELETED", async () => {
    const store = new ResourceStore();
    const changed: string[] = [];
    store.listen((r) => changed.push(`${r.name}:${r.state}`));
    store.apply({ sequence: 1, resourceId: "a", toState: "REQUESTED", resource: row("a", "shop", "db") });
    store.apply({ sequence: 2, resourceId: "b", toState: "REQUESTED", resource: row("b", "blog", "db") });
    store.apply({ sequence: 3, resourceId: "a", toState: "ACTIVE", resource: row("a", "shop", "db") });
    store.apply({ sequence: 2, resourceId: "b", toState: "ACTIVE", resource: row("b", "blog", "db") }); // replayed
    store.apply({ sequence: 4, resourceId: "c", toState: "DELETED", resource: row("c", "shop", "old") });
    expect(store.list().map((r) => `${r.application}/${r.name}:${r.state}`)).toEqual([
      "blog/db:REQUESTED",
      "shop/db:ACTIVE",
    ]);
    expect(store.applications()).toEqual(["blog", "shop"]);
    expect(store.tracker.resumeAfter).toBe(4);
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(changed.sort()).toEqual(["db:ACTIVE", "db:REQUESTED", "old:DELETED"]);
  });

  it("starts from the list read after a position and follows the stream after it", async () => {
    const store = new ResourceStore();
    // Read after position 10: `a` already ACTIVE by a change at 12 the stream will bring again.
    store.seed([{ ...row("a", "shop", "db"), state: "ACTIVE" }, row("b", "shop", "cache")], 10);
    expect(store.tracker.resumeAfter).toBe(10);
    store.apply({ sequence: 9, resourceId: "b", toState: "FAILED", resource: row("b", "shop", "cache") }); // old
    store.apply({ sequence: 11, resourceId: "a", toState: "PROVISIONING", resource: row("a", "shop", "db") });
    store.apply({ sequence: 12, resourceId: "a", toState: "ACTIVE", resource: row("a", "shop", "db") });
    expect(store.list().map((r) => `${r.name}:${r.state}`)).toEqual(["cache:REQUESTED", "db:ACTIVE"]);
    expect(store.tracker.resumeAfter).toBe(12);
  });
});
