import { describe, expect, it } from "vitest";
import { isSecretOutput } from "./secrets";

describe("isSecretOutput", () => {
  it("masks the server's secret names", () => {
    for (const key of ["password", "connection_string", "admin_password", "api_token", "ssh_key", "client_secret"]) {
      expect(isSecretOutput(key)).toBe(true);
    }
  });
  it("shows plain outputs", () => {
    for (const key of ["host", "port", "username", "database_name"]) expect(isSecretOutput(key)).toBe(false);
  });
});
