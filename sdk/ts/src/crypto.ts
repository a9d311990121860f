/**
 * `@herald-chat/client/crypto`: Herald's end-to-end encryption primitives from the Rust
 * implementation itself (`crates/crypto-wasm`, herald-crypto compiled to WebAssembly), so a
 * browser and a Rust client are byte-compatible by construction. Load it once with
 * {@link loadCrypto}; it is a separate entry point so apps that do not encrypt never fetch
 * the WebAssembly.
 */
import init, {
  initSync,
  WasmDevice,
  EncryptedFile,
  decryptFile as wasmDecryptFile,
  encryptFile as wasmEncryptFile,
  generateEpochKey as wasmGenerateEpochKey,
  openMessage as wasmOpenMessage,
  sealMessage as wasmSealMessage,
  sealedInfo as wasmSealedInfo,
} from "./wasm/herald_crypto_wasm.js";

export { WasmDevice as Device, EncryptedFile };

let loaded: Promise<void> | undefined;

/**
 * Loads the WebAssembly module: in Node from the file beside this one, in browsers (and
 * bundlers such as Vite) by URL, or from `source` when given (bytes or a URL).
 */
export function loadCrypto(source?: BufferSource | URL | string): Promise<void> {
  if (loaded) return loaded;
  const isNode = typeof process !== "undefined" && typeof process.versions?.node === "string";
  loaded = (async () => {
    if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
      initSync({ module: source });
    } else if (source !== undefined) {
      await init({ module_or_path: source });
    } else if (isNode) {
      const { readFile } = await import("node:fs/promises");
      initSync({ module: await readFile(new URL("./wasm/herald_crypto_wasm_bg.wasm", import.meta.url)) });
    } else {
      await init();
    }
  })();
  loaded.catch(() => (loaded = undefined));
  return loaded;
}

/** A fresh 32-byte channel epoch key. */
export function generateEpochKey(): Uint8Array {
  return wasmGenerateEpochKey();
}

/** Seals `plaintext` (bytes or text) for `channel` at `epoch`: the `hm1.` string to send as content. */
export function sealMessage(sender: WasmDevice, channel: string, epoch: number, key: Uint8Array, plaintext: Uint8Array | string): string {
  const bytes = typeof plaintext === "string" ? new TextEncoder().encode(plaintext) : plaintext;
  return wasmSealMessage(sender, channel, BigInt(epoch), key, bytes);
}

/** The epoch and sender device a sealed message names (to pick the key and the identity). */
export function sealedInfo(sealed: string): { epoch: number; sender: string } {
  return JSON.parse(wasmSealedInfo(sealed)) as { epoch: number; sender: string };
}

/** Opens a sealed message, checking the sender's signature against its pinned identity (JSON). */
export function openMessage(sealed: string, channel: string, key: Uint8Array, senderIdentity: string | object): Uint8Array {
  const identity = typeof senderIdentity === "string" ? senderIdentity : JSON.stringify(senderIdentity);
  return wasmOpenMessage(sealed, channel, key, identity);
}

/** Encrypts a file under a fresh key into `dataShards + parityShards` shards (any `dataShards` recover it). */
export function encryptFile(
  name: string,
  mime: string,
  data: Uint8Array,
  dataShards = 4,
  parityShards = 2,
): { manifest: string; shards: Uint8Array[] } {
  const f = wasmEncryptFile(name, mime, data, dataShards, parityShards);
  try {
    const shards: Uint8Array[] = [];
    for (let i = 0; i < f.shardCount; i++) shards.push(f.shard(i));
    return { manifest: f.manifest, shards };
  } finally {
    f.free();
  }
}

/** Decrypts a file from its manifest and shards (`null` for a missing shard). */
export function decryptFile(manifest: string, shards: Array<Uint8Array | null | undefined>): Uint8Array {
  return wasmDecryptFile(manifest, shards as unknown[]);
}
