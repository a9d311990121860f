import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

// The SDK is bundled from its sources, so the app always ships the SDK of the same commit.
export default defineConfig({
  base: "/",
  resolve: {
    alias: { "@herald-chat/client": fileURLToPath(new URL("../sdk/ts/src/index.ts", import.meta.url)) },
  },
  // Stable file names: `herald serve` embeds exactly these files (crates/server/src/web.rs).
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    rollupOptions: {
      output: { entryFileNames: "assets/app.js", chunkFileNames: "assets/[name].js", assetFileNames: "assets/app[extname]" },
    },
  },
  server: { proxy: { "/v1": { target: "http://127.0.0.1:7700", ws: true }, "/dev": "http://127.0.0.1:7700" } },
});
