import { h, replace } from "../dom";
import { request } from "../graphql";
import type { Live } from "../live";
import { MASK, isSecretOutput } from "../secrets";
import type { ResourceRow, ResourceStore } from "../store";

const DETAILS = `query($id: ID!, $app: String!) {
  resource(id: $id) { id application name type state provider errorMessage outputs secretOutputs }
  workflows(application: $app, first: 200) {
    id workflowName operation status startedAt finishedAt errorMessage resource { id }
    steps { name type status attempts logs errorMessage }
  }
}`;

const STEP_EVENTS = `subscription($app: String!) {
  workflowStepChanged(application: $app) { workflowId step { name status attempts } logLine }
}`;

interface Step {
  name: string;
  type: string;
  status: string;
  attempts: number;
  logs: string;
  errorMessage: string | null;
}

interface Run {
  id: string;
  workflowName: string;
  operation: string;
  status: string;
  startedAt: string;
  finishedAt: string | null;
  errorMessage: string | null;
  resource: { id: string };
  steps: Step[];
}

interface Details {
  resource: ResourceRow & {
    provider: string | null;
    errorMessage: string | null;
    outputs: Record<string, unknown>;
    secretOutputs: string[];
  };
  workflows: Run[];
}

interface StepEvent {
  workflowStepChanged: { workflowId: string; step: { name: string; status: string; attempts: number }; logLine: string | null };
}

/**
 * A resource's outputs and workflow runs. Step status and log lines arrive live (workflowStepChanged);
 * a new run or a state change of the resource reloads the whole panel.
 */
export function showDetails(
  panel: HTMLElement,
  live: Live,
  store: ResourceStore,
  row: ResourceRow,
  back: () => void = () => {},
): () => void {
  let disposed = false;
  let loading: Promise<void> | null = null;
  let again = false;
  let known = new Set<string>();
  const others = new Set<string>(); // runs of the application's other resources: no lookup again
  let lastState = row.state;
  let first = true;

  const load = async (): Promise<void> => {
    if (loading) {
      again = true;
      return loading;
    }
    loading = (async () => {
      do {
        again = false;
        try {
          const data = await request<Details>(DETAILS, { id: row.id, app: row.application });
          if (disposed) return;
          const runs = data.workflows.filter((w) => w.resource.id === row.id);
          known = new Set(runs.map((r) => r.id));
          render(panel, data.resource, runs, close);
          if (first) {
            // Keyboard and screen reader users land on what they opened (once, not on live updates).
            first = false;
            panel.querySelector<HTMLElement>("#details-title")?.focus();
          }
        } catch (error) {
          if (!disposed) replace(panel, h("p", { role: "alert", class: "alert" }, `Loading ${row.name} failed: ${(error as Error).message}`));
        }
      } while (again && !disposed);
    })();
    try {
      await loading;
    } finally {
      loading = null;
    }
  };

  const unsubscribe = live.subscribe<StepEvent>({
    query: STEP_EVENTS,
    variables: () => ({ app: row.application }),
    onResume: () => void load(), // live only: what happened during a drop comes from a reload
    onData: ({ workflowStepChanged: e }) => {
      if (!known.has(e.workflowId)) {
        // Another resource's run, or a new run of this one: only the latter needs a reload.
        if (!others.has(e.workflowId) && panel.isConnected) void maybeNewRun(e.workflowId);
        return;
      }
      const item = panel.querySelector<HTMLElement>(
        `li[data-workflow-id="${CSS.escape(e.workflowId)}"][data-step="${CSS.escape(e.step.name)}"]`,
      );
      if (!item) return void load();
      const status = item.querySelector(".step-status");
      if (status) {
        status.textContent = e.step.status;
        status.className = `step-status state state-${e.step.status.toLowerCase()}`;
      }
      if (e.logLine !== null) {
        const logs = item.querySelector("pre");
        if (logs) logs.textContent += e.logLine.endsWith("\n") ? e.logLine : `${e.logLine}\n`;
      }
    },
  });

  const maybeNewRun = async (workflowId: string) => {
    const found = await request<{ workflow: { resource: { id: string } } }>(
      "query($id: ID!) { workflow(id: $id) { resource { id } } }",
      { id: workflowId },
    ).catch(() => null);
    if (found && found.workflow.resource.id !== row.id) others.add(workflowId);
    else if (found && !known.has(workflowId)) await load();
  };

  const stopListening = store.listen((changed) => {
    if (changed.id === row.id && changed.state !== lastState) {
      lastState = changed.state;
      void load();
    }
  });

  const close = () => {
    dispose();
    replace(panel);
    back(); // focus returns to the resource's name
  };
  const dispose = () => {
    disposed = true;
    unsubscribe();
    stopListening();
  };

  replace(panel, h("p", { role: "status" }, `Loading ${row.name}…`));
  void load();
  return dispose;
}

function render(panel: HTMLElement, resource: Details["resource"], runs: Run[], close: () => void): void {
  const focusedShow = panel.querySelector<HTMLElement>("button.show:focus")?.dataset.output;
  replace(
    panel,
    h(
      "section",
      { class: "details", "aria-labelledby": "details-title" },
      h(
        "div",
        { class: "details-head" },
        h("h2", { id: "details-title", tabindex: -1 }, `${resource.name} in ${resource.application}`),
        h("button", { type: "button", onclick: close }, "Close details"),
      ),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Type"),
        h("dd", {}, resource.type),
        h("dt", {}, "State"),
        h("dd", {}, h("span", { class: `state state-${resource.state.toLowerCase()}` }, resource.state)),
        h("dt", {}, "Provider"),
        h("dd", {}, resource.provider ?? "none yet"),
        resource.errorMessage ? h("dt", {}, "Error") : null,
        resource.errorMessage ? h("dd", { class: "error" }, resource.errorMessage) : null,
      ),
      h("h3", {}, "Outputs"),
      outputs(resource.outputs, new Set(resource.secretOutputs)),
      h("h3", {}, "Workflow runs"),
      runs.length ? h("div", { class: "runs" }, ...runs.map(runView)) : h("p", {}, "No workflow has run yet."),
    ),
  );
  if (focusedShow) panel.querySelector<HTMLElement>(`button.show[data-output="${CSS.escape(focusedShow)}"]`)?.focus();
}

function outputs(values: Record<string, unknown>, secret: Set<string>): HTMLElement {
  const keys = Object.keys(values).sort();
  if (!keys.length) return h("p", {}, "No outputs yet.");
  return h(
    "table",
    { class: "outputs" },
    h("caption", { class: "visually-hidden" }, "Outputs"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Output"), h("th", { scope: "col" }, "Value"))),
    h("tbody", {}, ...keys.map((key) => outputRow(key, values[key], secret.has(key) || isSecretOutput(key)))),
  );
}

function text(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function outputRow(key: string, value: unknown, secret: boolean): HTMLElement {
  const id = `output-${key.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  if (!secret) {
    return h("tr", {}, h("th", { scope: "row", id }, key), h("td", {}, h("code", {}, text(value))));
  }
  // The value stays in this closure, out of the page, until Show is pressed.
  const shown = h("code", { class: "secret" }, MASK);
  let visible = false;
  const button = h("button", { type: "button", class: "show", "data-output": key, "aria-describedby": id, "aria-pressed": "false" }, "Show");
  button.addEventListener("click", () => {
    visible = !visible;
    shown.textContent = visible ? text(value) : MASK;
    button.textContent = visible ? "Hide" : "Show";
    button.setAttribute("aria-pressed", String(visible));
  });
  return h("tr", { "data-secret": "true" }, h("th", { scope: "row", id }, key), h("td", {}, shown, " ", button));
}

function runView(run: Run): HTMLElement {
  return h(
    "article",
    { class: "run", "data-workflow-id": run.id, "aria-label": `Run ${run.workflowName} (${run.operation})` },
    h(
      "h4",
      {},
      `${run.workflowName} · ${run.operation} · `,
      h("span", { class: `run-status state state-${run.status.toLowerCase()}` }, run.status),
    ),
    h("p", { class: "when" }, `Started ${new Date(run.startedAt).toLocaleString()}`, run.finishedAt ? `, finished ${new Date(run.finishedAt).toLocaleString()}` : ""),
    run.errorMessage ? h("p", { class: "error" }, run.errorMessage) : null,
    h(
      "ol",
      { class: "steps", "aria-label": `Steps of ${run.workflowName}` },
      ...run.steps.map((step) =>
        h(
          "li",
          { class: "step", "data-workflow-id": run.id, "data-step": step.name },
          h(
            "div",
            { class: "step-head" },
            h("span", { class: "step-name" }, step.name),
            h("span", { class: "step-type" }, step.type),
            h("span", { class: `step-status state state-${step.status.toLowerCase()}` }, step.status),
          ),
          step.errorMessage ? h("p", { class: "error" }, step.errorMessage) : null,
          h("pre", { class: "logs", tabindex: 0, "aria-label": `Logs of step ${step.name}` }, step.logs),
        ),
      ),
    ),
  );
}
