import "graphiql/graphiql.css";
import "./graphiql-page.css";
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import { createClient } from "graphql-ws";
import { createElement } from "react";
import { createRoot } from "react-dom/client";
import { authorization, storedToken } from "./session";

// The token signed in on the page (this tab), for HTTP requests and the websocket's connection_init;
// in dev mode there is none and none is needed.
const token = storedToken();
const headers = authorization(token);
const ws = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;

const fetcher = createGraphiQLFetcher({
  url: "/graphql",
  headers,
  wsClient: createClient({ url: ws, lazy: true, connectionParams: () => headers }),
});

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
