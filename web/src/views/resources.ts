import { h, replace } from "../dom";
import { RequestFailed, request } from "../graphql";
import type { ResourceRow, ResourceStore } from "../store";

const SUBMIT = `mutation($spec: String!) {
  submitSpec(spec: $spec) { changed application { name revision } resources { id name state } }
}`;

interface Submitted {
  submitSpec: {
    changed: boolean;
    application: { name: string; revision: number };
    resources: { id: string; name: string; state: string }[];
  };
}

/** The table of live resources, grouped by application, and the spec form below it. */
export function resourcesView(
  root: HTMLElement,
  store: ResourceStore,
  details: HTMLElement,
  open: (resource: ResourceRow) => void,
): () => void {
  const table = h("table", { class: "resources", "aria-describedby": "resources-note" });
  const empty = h("p", { class: "empty" }, "No resources yet: submit a Score spec below.");
  const render = () => {
    // Re-rendering must not take the keyboard focus away from a resource's button.
    const focused = (document.activeElement as HTMLElement | null)?.closest("tr")?.dataset.resourceId;
    const rows = store.list();
    empty.hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    const head = h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col" }, "Type"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Application"),
      ),
    );
    const groups = new Map<string, ResourceRow[]>();
    for (const row of rows) groups.set(row.application, [...(groups.get(row.application) ?? []), row]);
    const bodies = [...groups].map(([application, members]) =>
      h(
        "tbody",
        { "data-application": application },
        h("tr", { class: "group" }, h("th", { scope: "rowgroup", colspan: 4 }, `Application ${application}`)),
        ...members.map((r) =>
          h(
            "tr",
            { "data-resource-id": r.id },
            h(
              "td",
              {},
              h("button", { type: "button", class: "link", onclick: () => open(r) }, r.name),
            ),
            h("td", {}, r.type),
            h("td", {}, h("span", { class: `state state-${r.state.toLowerCase()}` }, r.state)),
            h("td", {}, r.application),
          ),
        ),
      ),
    );
    replace(table, h("caption", {}, "Resources by application, live"), head, ...bodies);
    if (focused) table.querySelector<HTMLElement>(`tr[data-resource-id="${CSS.escape(focused)}"] button`)?.focus();
  };
  render();
  const stop = store.listen(render);

  const spec = h("textarea", { id: "score-spec", name: "spec", rows: 14, spellcheck: "false", required: true });
  const outcome = h("div", { class: "outcome", id: "submit-outcome" });
  const submit = h("button", { type: "submit" }, "Submit");
  const form = h(
    "form",
    { class: "submit", "aria-labelledby": "submit-title" },
    h("h2", { id: "submit-title" }, "New or changed application"),
    h("label", { for: "score-spec" }, "Score spec"),
    spec,
    h("div", {}, submit),
    outcome,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    replace(outcome);
    try {
      const answer = await request<Submitted>(SUBMIT, { spec: spec.value });
      const { application, resources, changed } = answer.submitSpec;
      replace(
        outcome,
        h(
          "p",
          { role: "status", class: "ok" },
          changed
            ? `Submitted ${application.name}, revision ${application.revision}: ${resources.length} resource(s).`
            : `${application.name} is unchanged (revision ${application.revision}): nothing to do.`,
        ),
      );
    } catch (error) {
      replace(outcome, failure(error));
    } finally {
      submit.disabled = false;
    }
  });

  replace(
    root,
    h("h1", {}, "Resources"),
    h("p", { id: "resources-note", class: "note" }, "States change here as the engine makes them (no reload)."),
    empty,
    table,
    details,
    form,
  );
  return stop;
}

/** Each problem of a refused spec as `path: message`, in an alert right below the form. */
function failure(error: unknown): HTMLElement {
  if (error instanceof RequestFailed && error.problems.length) {
    return h(
      "div",
      { role: "alert", class: "alert" },
      h("p", {}, "The spec was refused:"),
      h("ul", { class: "problems" }, ...error.problems.map((p) => h("li", {}, `${p.path}: ${p.message}`))),
    );
  }
  return h("p", { role: "alert", class: "alert" }, `Submitting failed: ${(error as Error).message}`);
}
