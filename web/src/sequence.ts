// Bookkeeping for a live stream that must survive reconnects: remember the highest sequence applied,
// resume after it, and drop anything at or below it (a replay overlapping what was already seen).

export class SequenceTracker {
  private highest: number | null;

  constructor(start: number | null = null) {
    this.highest = start;
  }

  /** The afterSequence to subscribe with: 0 (all history) until something was seen. */
  get resumeAfter(): number {
    return this.highest ?? 0;
  }

  get seen(): number | null {
    return this.highest;
  }

  /** Start after `sequence` (what a list read after it already shows), unless something was seen. */
  startAt(sequence: number): void {
    if (this.highest === null) this.highest = sequence;
  }

  /** True when the event is new and should be applied; false for a duplicate. */
  accept(sequence: number): boolean {
    if (this.highest !== null && sequence <= this.highest) return false;
    this.highest = sequence;
    return true;
  }
}

/** Waits between reconnect attempts: quick at first, then at most `max` ms. */
export function backoff(attempt: number, base = 300, max = 5000): number {
  return Math.min(max, base * 2 ** Math.max(0, attempt));
}
