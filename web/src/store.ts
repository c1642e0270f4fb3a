import { SequenceTracker } from "./sequence";

export interface ResourceRow {
  id: string;
  application: string;
  name: string;
  type: string;
  state: string;
  updatedAt: string;
}

export interface StateEvent {
  sequence: number;
  resourceId: string;
  toState: string;
  resource: ResourceRow;
}

export const RESOURCE_EVENTS = `subscription($after: Int) {
  resourceStateChanged(afterSequence: $after) {
    sequence resourceId toState
    resource { id application name type state updatedAt }
  }
}`;

export const LAST_SEQUENCE = "{ lastSequence }";
export const PAGE_SIZE = 1000;
export const RESOURCE_PAGE = `query($after: ID) {
  resources(first: ${PAGE_SIZE}, after: $after) { id application name type state updatedAt }
}`;

/**
 * Every visible resource: the list as it stands (read after the stream's position `lastSequence`),
 * then the resourceStateChanged stream after that position; later subscriptions resume after the
 * highest sequence applied. The page's load costs what exists now, not the length of the history. A
 * change made between reading the position and reading the list arrives again from the stream, in
 * order, so the table ends in the latest state.
 */
export class ResourceStore {
  readonly tracker = new SequenceTracker();
  private readonly rows = new Map<string, ResourceRow>();
  private readonly listeners = new Set<(changed: ResourceRow) => void>();
  private pending = new Map<string, ResourceRow>();
  private scheduled = false;

  /** The list read after position `sequence`: shown at once, the stream continues after it. */
  seed(rows: ResourceRow[], sequence: number): void {
    this.tracker.startAt(sequence);
    for (const row of rows) {
      this.rows.set(row.id, row);
      this.pending.set(row.id, row);
    }
    this.flushSoon();
  }

  apply(event: StateEvent): void {
    if (!this.tracker.accept(event.sequence)) return;
    const row = { ...event.resource, state: event.toState };
    this.rows.set(row.id, row);
    this.pending.set(row.id, row);
    this.flushSoon();
  }

  get(id: string): ResourceRow | undefined {
    return this.rows.get(id);
  }

  /** Current rows, DELETED ones left out, by application then name. */
  list(): ResourceRow[] {
    return [...this.rows.values()]
      .filter((r) => r.state !== "DELETED")
      .sort((a, b) => a.application.localeCompare(b.application) || a.name.localeCompare(b.name));
  }

  applications(): string[] {
    return [...new Set(this.list().map((r) => r.application))].sort();
  }

  listen(listener: (changed: ResourceRow) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // A replay brings many events at once: render once per frame, not once per event.
  private flushSoon(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const flush = () => {
      this.scheduled = false;
      const changed = [...this.pending.values()];
      this.pending = new Map();
      for (const row of changed) for (const listener of this.listeners) listener(row);
    };
    if (typeof document !== "undefined" && document.visibilityState === "visible") {
      requestAnimationFrame(flush);
    } else {
      setTimeout(flush, 0);
    }
  }
}
