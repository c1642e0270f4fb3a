import { describe, expect, it } from "vitest";
import { SequenceTracker, backoff } from "./sequence";

describe("SequenceTracker", () => {
  it("starts from the whole history and resumes after the highest sequence applied", () => {
    const tracker = new SequenceTracker();
    expect(tracker.resumeAfter).toBe(0);
    expect(tracker.accept(1)).toBe(true);
    expect(tracker.accept(5)).toBe(true);
    expect(tracker.resumeAfter).toBe(5);
  });

  it("drops events it already applied (a replay overlapping the live stream)", () => {
    const tracker = new SequenceTracker();
    for (const seq of [1, 2, 3]) tracker.accept(seq);
    expect(tracker.accept(2)).toBe(false);
    expect(tracker.accept(3)).toBe(false);
    expect(tracker.accept(4)).toBe(true);
    expect(tracker.seen).toBe(4);
  });
});

describe("backoff", () => {
  it("grows and stays bounded", () => {
    expect(backoff(0)).toBe(300);
    expect(backoff(1)).toBe(600);
    expect(backoff(10)).toBe(5000);
  });
});
