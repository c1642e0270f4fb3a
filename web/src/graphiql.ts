import "graphiql/graphiql.css";
import "./graphiql-page.css";
import { type Fetcher, createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import { getOperationAST, parse } from "graphql";
import { createClient } from "graphql-ws";
import { createElement } from "react";
import { createRoot } from "react-dom/client";
import { authorization, storedToken } from "./session";

// The token signed in on the page (this tab), for HTTP requests and the websocket's connection_init;
// in dev mode there is none and none is needed.
const token = storedToken();
const headers = authorization(token);
const ws = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;

const wsClient = createClient({ url: ws, lazy: true, connectionParams: () => headers });
const http = createGraphiQLFetcher({ url: "/graphql", headers, enableIncrementalDelivery: false });

function isSubscription(query: string, operationName?: string | null): boolean {
  try {
    return getOperationAST(parse(query), operationName ?? undefined)?.operation === "subscription";
  } catch {
    return false; // GraphiQL shows the syntax error from the server's answer
  }
}

// Subscriptions over the websocket (graphql-transport-ws), whether or not the operation has a name
// (GraphiQL's own fetcher sends an unnamed one over HTTP); everything else over HTTP.
const fetcher: Fetcher = (params, options) =>
  isSubscription(params.query, params.operationName)
    ? (wsClient.iterate({
        query: params.query,
        variables: params.variables ?? undefined,
        operationName: params.operationName ?? undefined,
      }) as ReturnType<Fetcher>) // errors arrive formatted (JSON), which is all GraphiQL reads
    : http(params, options);

const identity = document.getElementById("graphiql-identity");
if (identity) {
  identity.textContent = token
    ? "Requests carry the token you signed in with."
    : "No token: this works in dev mode; otherwise sign in on the platform page first.";
}

createRoot(document.getElementById("graphiql") as HTMLElement).render(
  createElement(GraphiQL, {
    fetcher,
    defaultQuery: "{ providers { name } }\n",
    shouldPersistHeaders: false,
  }),
);
