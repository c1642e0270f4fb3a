import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

// The built page ships inside the Python package; a test rebuilds it into a temporary directory
// (INNOMINATUS_WEB_OUT) and compares. `npm run dev` serves it with hot reload against a running
// `innominatus serve` (INNOMINATUS_SERVER, default http://127.0.0.1:8081).
const server = process.env.INNOMINATUS_SERVER ?? "http://127.0.0.1:8081";

export default defineConfig({
  base: "/",
  build: {
    outDir: process.env.INNOMINATUS_WEB_OUT ?? here("../src/innominatus/web_assets"),
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 4096,
    rollupOptions: {
      input: { index: here("index.html"), graphiql: here("graphiql.html") },
      onwarn(warning, warn) {
        // GraphiQL's dependencies mark React Server Components ("use client"): meaningless in a bundle.
        if (warning.code === "MODULE_LEVEL_DIRECTIVE") return;
        warn(warning);
      },
    },
  },
  server: {
    proxy: {
      "/graphql": {
        target: server,
        ws: true,
        changeOrigin: true,
        // The server accepts websockets only from its own origin (Strawberry's cross-site check).
        configure: (proxy) => proxy.on("proxyReqWs", (request) => request.setHeader("origin", server)),
      },
    },
  },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
