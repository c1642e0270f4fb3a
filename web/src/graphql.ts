import { authorization, storedToken } from "./session";

export interface Problem {
  path: string;
  message: string;
}

export interface GraphQLErrorShape {
  message: string;
  extensions?: { code?: string; problems?: Problem[] };
}

/** A GraphQL answer with errors: the first error's code and the spec problems, if any. */
export class RequestFailed extends Error {
  constructor(readonly errors: GraphQLErrorShape[]) {
    super(errors.map((e) => e.message).join("; ") || "the request failed");
  }

  get code(): string | undefined {
    return this.errors[0]?.extensions?.code;
  }

  get problems(): Problem[] {
    return this.errors.flatMap((e) => e.extensions?.problems ?? []);
  }
}

export async function request<T>(
  query: string,
  variables: Record<string, unknown> = {},
  token: string | null = storedToken(),
): Promise<T> {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json", ...authorization(token) },
    body: JSON.stringify({ query, variables }),
  });
  let answer: { data?: T | null; errors?: GraphQLErrorShape[] };
  try {
    answer = await response.json();
  } catch {
    throw new RequestFailed([{ message: `the server answered ${response.status}` }]);
  }
  if (answer.errors?.length) throw new RequestFailed(answer.errors);
  if (answer.data == null) throw new RequestFailed([{ message: `the server answered ${response.status}` }]);
  return answer.data;
}
