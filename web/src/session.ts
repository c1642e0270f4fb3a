// The token lives for the tab only (sessionStorage); GraphiQL's page reads it from the same place.

const KEY = "innominatus.token";

export function storedToken(): string | null {
  return sessionStorage.getItem(KEY);
}

export function storeToken(token: string | null): void {
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

/** The Authorization header (HTTP) and connection_init payload (websocket) for a token. */
export function authorization(token: string | null): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}
