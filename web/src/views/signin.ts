import { h, replace } from "../dom";
import { RequestFailed, request } from "../graphql";

export const REFUSED = "The token was refused: it is unknown, revoked or expired. Check it and try again.";

/** The sign-in view: a token field; calls `signedIn` with a token the server accepted. */
export function signIn(root: HTMLElement, signedIn: (token: string) => void, message: string | null): void {
  const alert = h("p", { role: "alert", class: "alert", id: "signin-alert" }, message ?? "");
  alert.hidden = !message;
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "token-help",
  });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("label", { for: "token" }, "Token"),
    input,
    h("p", { id: "token-help", class: "help" }, "An API token from your platform team. It is kept for this tab only."),
    button,
    alert,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    try {
      await request("{ providers { name } }", {}, token);
      signedIn(token);
    } catch (error) {
      alert.textContent =
        error instanceof RequestFailed && error.code === "UNAUTHENTICATED"
          ? REFUSED
          : `Signing in failed: ${(error as Error).message}`;
      alert.hidden = false;
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace(
    root,
    h(
      "main",
      { class: "signin-page" },
      h("h1", { id: "signin-title" }, "Sign in to innominatus"),
      form,
    ),
  );
  input.focus();
}
