import "./style.css";
import { h, replace } from "./dom";
import { RequestFailed, request } from "./graphql";
import { Live, type LiveStatus } from "./live";
import { storeToken, storedToken } from "./session";
import {
  LAST_SEQUENCE,
  PAGE_SIZE,
  RESOURCE_EVENTS,
  RESOURCE_PAGE,
  type ResourceRow,
  ResourceStore,
  type StateEvent,
} from "./store";
import { showDetails } from "./views/details";
import { graphView } from "./views/graph";
import { resourcesView } from "./views/resources";
import { REFUSED, signIn } from "./views/signin";

const root = document.getElementById("app") as HTMLElement;

const STATUS_TEXT: Record<LiveStatus, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Connection lost: reconnecting…",
  refused: "The server refused the token.",
};

async function boot(): Promise<void> {
  const token = storedToken();
  try {
    // Without a token this answers only in dev mode (requests without a token act as the admin).
    await request("{ providers { name } }", {}, token);
    start(token);
  } catch (error) {
    const refused = error instanceof RequestFailed && error.code === "UNAUTHENTICATED";
    storeToken(null);
    signIn(root, signedIn, refused ? (token ? REFUSED : null) : `The server did not answer: ${(error as Error).message}`);
  }
}

function signedIn(token: string): void {
  storeToken(token);
  start(token);
}

function start(token: string | null): void {
  const store = new ResourceStore();
  const status = h("p", { class: "live-status", role: "status", "data-status": "connecting" }, STATUS_TEXT.connecting);
  const live = new Live({
    token,
    onStatus: (now) => {
      status.textContent = STATUS_TEXT[now];
      status.dataset.status = now;
      if (now === "refused") signOut(REFUSED);
    },
  });
  const follow = () =>
    live.subscribe<{ resourceStateChanged: StateEvent }>({
      query: RESOURCE_EVENTS,
      variables: () => ({ after: store.tracker.resumeAfter }),
      onData: (data) => store.apply(data.resourceStateChanged),
    });
  loadResources(store, token).then(follow, (error: unknown) => {
    if (error instanceof RequestFailed && error.code === "UNAUTHENTICATED") signOut(REFUSED);
    else follow(); // the stream alone still builds the table (it replays from the start)
  });
  // For the browser tests: a real drop of the socket, as a network failure would cause.
  (window as unknown as { innominatus: object }).innominatus = {
    dropConnection: () => live.drop(),
    lastSequence: () => store.tracker.seen,
  };

  const signOut = (message: string | null) => {
    live.dispose();
    storeToken(null);
    window.removeEventListener("hashchange", route);
    signIn(root, signedIn, message);
  };

  const nav = h("nav", { "aria-label": "Views" });
  const view = h("main", { id: "view", tabindex: -1 });
  const details = h("div", { class: "details-panel" });
  replace(
    root,
    h(
      "header",
      { class: "bar" },
      h("a", { class: "brand", href: "#/resources" }, h("span", { "aria-hidden": "true" }, "◆ "), "innominatus"),
      nav,
      status,
      h("span", { class: "identity" }, token ? "Signed in with a token" : "Dev mode: no sign-in"),
      token ? h("button", { type: "button", onclick: () => signOut(null) }, "Sign out") : null,
    ),
    view,
  );

  let stopView: (() => void) | null = null;
  let stopDetails: (() => void) | null = null;
  let graphApp: string | null = null;

  function route(): void {
    stopView?.();
    stopView = null;
    const current = location.hash.startsWith("#/graph") ? "graph" : "resources";
    replace(
      nav,
      h("a", { href: "#/resources", "aria-current": current === "resources" ? "page" : false }, "Resources"),
      h("a", { href: "#/graph", "aria-current": current === "graph" ? "page" : false }, "Graph"),
      h("a", { href: "/graphql" }, "API playground"),
    );
    if (current === "graph") {
      stopDetails?.();
      stopDetails = null;
      replace(details);
      const draw = (app: string | null) => {
        graphApp = app;
        graphView(view, graphApp, draw);
        view.querySelector<HTMLElement>("#graph-application")?.focus();
      };
      graphView(view, graphApp, draw);
    } else {
      stopView = resourcesView(view, store, details, (row) => {
        stopDetails?.();
        stopDetails = showDetails(details, live, store, row, () =>
          view.querySelector<HTMLElement>(`tr[data-resource-id="${CSS.escape(row.id)}"] button`)?.focus(),
        );
        details.scrollIntoView({ block: "nearest" });
      });
    }
  }
  window.addEventListener("hashchange", route);
  route();
}

/** The stream's position, then every resource as it stands now (in pages). */
async function loadResources(store: ResourceStore, token: string | null): Promise<void> {
  const { lastSequence } = await request<{ lastSequence: number }>(LAST_SEQUENCE, {}, token);
  const rows: ResourceRow[] = [];
  let after: string | null = null;
  for (;;) {
    const page: { resources: ResourceRow[] } = await request(RESOURCE_PAGE, { after }, token);
    rows.push(...page.resources);
    if (page.resources.length < PAGE_SIZE) break;
    after = page.resources[page.resources.length - 1].id;
  }
  store.seed(rows, lastSequence);
}

void boot();
