import { type Client, createClient } from "graphql-ws";
import type { GraphQLErrorShape } from "./graphql";
import { backoff } from "./sequence";
import { authorization } from "./session";

export type LiveStatus = "connecting" | "live" | "reconnecting" | "refused";

export interface LiveOptions {
  token: string | null;
  onStatus: (status: LiveStatus) => void;
}

export interface Stream<T> {
  /** Variables for each (re)subscription: a resumed stream passes where it left off. */
  variables: () => Record<string, unknown>;
  query: string;
  onData: (data: T) => void;
  /** Called before each resubscription after a drop (not the first time). */
  onResume?: () => void;
}

/**
 * One graphql-transport-ws connection for the page's subscriptions. graphql-ws would resubscribe by
 * itself with the first variables; we resubscribe ourselves so that each stream resumes after the
 * last event it saw (afterSequence).
 */
export class Live {
  private readonly client: Client;
  private readonly streams = new Set<Running>();
  private attempt = 0;
  private closed = false;

  constructor(private readonly options: LiveOptions) {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
    this.client = createClient({
      url,
      lazy: true,
      retryAttempts: 0,
      connectionParams: () => authorization(options.token),
      on: {
        connected: () => {
          this.attempt = 0;
          options.onStatus("live");
        },
        closed: (event) => {
          if (this.closed) return;
          const code = (event as CloseEvent | undefined)?.code;
          // 4403: the server refused the token (or it was revoked): no point in retrying.
          if (code === 4403) {
            this.closed = true;
            options.onStatus("refused");
            return;
          }
          options.onStatus("reconnecting");
        },
      },
    });
    options.onStatus("connecting");
  }

  subscribe<T>(stream: Stream<T>): () => void {
    const running: Running = { stream: stream as Stream<unknown>, stop: null, timer: null, resumed: false };
    this.streams.add(running);
    this.start(running);
    return () => {
      this.streams.delete(running);
      if (running.timer !== null) clearTimeout(running.timer);
      running.stop?.();
    };
  }

  /** The test hook and the sign-out: close the socket as a network drop would. */
  drop(): void {
    this.client.terminate();
  }

  dispose(): void {
    this.closed = true;
    for (const running of this.streams) running.stop?.();
    this.streams.clear();
    void this.client.dispose();
  }

  private start(running: Running): void {
    if (running.resumed) running.stream.onResume?.();
    running.resumed = true;
    running.stop = this.client.subscribe<unknown>(
      { query: running.stream.query, variables: running.stream.variables() },
      {
        next: (result) => {
          if (result.errors?.length) {
            console.warn("subscription error", (result.errors as GraphQLErrorShape[])[0]?.message);
            return;
          }
          if (result.data) running.stream.onData(result.data);
        },
        error: () => this.again(running),
        complete: () => this.again(running),
      },
    );
  }

  private again(running: Running): void {
    running.stop = null;
    if (this.closed || !this.streams.has(running) || running.timer !== null) return;
    const wait = backoff(this.attempt++);
    running.timer = setTimeout(() => {
      running.timer = null;
      if (!this.closed && this.streams.has(running)) this.start(running);
    }, wait);
  }
}

interface Running {
  stream: Stream<unknown>;
  stop: (() => void) | null;
  timer: ReturnType<typeof setTimeout> | null;
  resumed: boolean;
}
