// tsc compiles the SDK but does not copy the generated WebAssembly glue: copy it into dist.
import { cpSync, existsSync, mkdirSync } from "node:fs";
const from = new URL("../src/wasm/", import.meta.url);
const to = new URL("../dist/src/wasm/", import.meta.url);
if (existsSync(from)) {
  mkdirSync(to, { recursive: true });
  for (const f of ["herald_crypto_wasm.js", "herald_crypto_wasm_bg.wasm"]) cpSync(new URL(f, from), new URL(f, to));
}
