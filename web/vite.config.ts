import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

const sdk = (path: string) => fileURLToPath(new URL(`../sdk/ts/src/${path}`, import.meta.url));

// The SDK is bundled from its sources, so the app always ships the SDK of the same commit.
export default defineConfig({
  base: "/",
  resolve: {
    alias: [
      { find: /^@herald-chat\/client\/e2ee$/, replacement: sdk("e2ee/index.ts") },
      { find: /^@herald-chat\/client$/, replacement: sdk("index.ts") },
    ],
  },
  // Stable file names: `herald serve` embeds exactly these files (crates/server/src/web.rs):
  // the app (app.js, app.css), and, fetched only when encryption is first used, the E2EE
  // code (e2ee.js) and herald-crypto compiled to WebAssembly (herald_crypto.wasm).
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    // Inlined as a data: URL the wasm would sit in e2ee.js as base64; kept a file of its own.
    assetsInlineLimit: 0,
    rollupOptions: {
      // The SDK's Node-only paths (its file store, reading the wasm from disk) import `node:*`
      // dynamically and never run in a browser: left as they are rather than stubbed in a chunk.
      external: [/^node:/],
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: (info) => (info.moduleIds.some((id) => id.includes("/sdk/ts/src/e2ee/")) ? "assets/e2ee.js" : "assets/[name].js"),
        assetFileNames: (info) => (info.names.some((n) => n.endsWith(".wasm")) ? "assets/herald_crypto.wasm" : "assets/app[extname]"),
      },
    },
  },
  server: { proxy: { "/v1": { target: "http://127.0.0.1:7700", ws: true }, "/dev": "http://127.0.0.1:7700" } },
});
