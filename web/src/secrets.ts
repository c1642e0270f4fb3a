// Which outputs the page masks: those the server says it sealed (Resource.secretOutputs, which
// includes outputs a workflow declares sensitive), and any under a secret-looking name (sealing.py's
// rule, a little wider), should one ever arrive unsealed.
const SECRET_KEY = /^(password|connection_string|.*_password|.*_secret|.*_token|.*_key)$/i;
const SECRET_WORD = /(password|passwd|secret|token|connection_string)/i;

export function isSecretOutput(key: string): boolean {
  return SECRET_KEY.test(key) || SECRET_WORD.test(key);
}

export const MASK = "********";
