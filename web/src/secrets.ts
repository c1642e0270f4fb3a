// Which outputs the page masks: the server's rule for secret names (sealing.py). Outputs a workflow
// declares sensitive under other names are already sealed by the server and arrive as they are.
const SECRET_KEY = /^(password|connection_string|.*_password|.*_secret|.*_token|.*_key)$/i;
const SECRET_WORD = /(password|passwd|secret|token|connection_string)/i;

export function isSecretOutput(key: string): boolean {
  return SECRET_KEY.test(key) || SECRET_WORD.test(key);
}

export const MASK = "********";
