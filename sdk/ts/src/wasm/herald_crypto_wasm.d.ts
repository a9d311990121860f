/* tslint:disable */
/* eslint-disable */

/**
 * An encrypted, erasure-coded file: its manifest (JSON; it holds the key, so it travels only
 * inside sealed messages) and its shards (channel blobs).
 */
export class EncryptedFile {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    /**
     * Shard `index` (data shards first, then parity).
     */
    shard(index: number): Uint8Array;
    readonly manifest: string;
    readonly shardCount: number;
}

/**
 * A device: its identity keys and its one-time keys (PROTOCOL.md §7).
 */
export class WasmDevice {
    free(): void;
    [Symbol.dispose](): void;
    deviceId(): string;
    static fromPickle(pickled: string, key: Uint8Array | number[]): WasmDevice;
    /**
     * The public identity (JSON, as `herald-crypto` serializes `IdentityKeys`).
     */
    identityKeys(): string;
    /**
     * A new device with fresh keys.
     */
    constructor(device_id: string);
    /**
     * The device's secret state, encrypted under a 32-byte key.
     */
    pickle(key: Uint8Array | number[]): string;
    /**
     * A signed key bundle with `one_time_keys` new one-time keys (JSON), for `PUT /v1/keys/devices/{id}`.
     */
    publishBundle(one_time_keys: number): string;
}

/**
 * Decrypts a file from its manifest and shards; a missing shard is `null`/`undefined`.
 */
export function decryptFile(manifest: string, shards: any[]): Uint8Array;

/**
 * Encrypts `data` under a fresh key into `data_shards + parity_shards` shards (any
 * `data_shards` of them recover it).
 */
export function encryptFile(name: string, mime: string, data: Uint8Array | number[], data_shards: number, parity_shards: number): EncryptedFile;

/**
 * A fresh 32-byte channel epoch key.
 */
export function generateEpochKey(): Uint8Array;

/**
 * Opens a sealed message of `channel` with the epoch `key`, checking the signature of the
 * sender whose identity (JSON `IdentityKeys`) the caller pinned.
 */
export function openMessage(sealed: string, channel: string, key: Uint8Array | number[], sender_identity: string): Uint8Array;

/**
 * Seals `plaintext` for `channel` at `epoch` under `key`, signed by `sender`: the `hm1.` string.
 */
export function sealMessage(sender: WasmDevice, channel: string, epoch: bigint, key: Uint8Array | number[], plaintext: Uint8Array | number[]): string;

/**
 * The epoch and sender device of a sealed message, before opening it: `{"epoch", "sender"}`.
 */
export function sealedInfo(sealed: string): string;

export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

export interface InitOutput {
    readonly memory: WebAssembly.Memory;
    readonly __wbg_encryptedfile_free: (a: number, b: number) => void;
    readonly __wbg_wasmdevice_free: (a: number, b: number) => void;
    readonly decryptFile: (a: number, b: number, c: number, d: number) => [number, number, number, number];
    readonly encryptFile: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number) => [number, number, number];
    readonly encryptedfile_manifest: (a: number) => [number, number];
    readonly encryptedfile_shard: (a: number, b: number) => [number, number, number, number];
    readonly encryptedfile_shardCount: (a: number) => number;
    readonly generateEpochKey: () => [number, number];
    readonly openMessage: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number) => [number, number, number, number];
    readonly sealMessage: (a: number, b: number, c: number, d: bigint, e: number, f: number, g: number, h: number) => [number, number, number, number];
    readonly sealedInfo: (a: number, b: number) => [number, number, number, number];
    readonly wasmdevice_deviceId: (a: number) => [number, number];
    readonly wasmdevice_fromPickle: (a: number, b: number, c: number, d: number) => [number, number, number];
    readonly wasmdevice_identityKeys: (a: number) => [number, number, number, number];
    readonly wasmdevice_new: (a: number, b: number) => [number, number, number];
    readonly wasmdevice_pickle: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmdevice_publishBundle: (a: number, b: number) => [number, number, number, number];
    readonly __wbindgen_exn_store: (a: number) => void;
    readonly __externref_table_alloc: () => number;
    readonly __wbindgen_externrefs: WebAssembly.Table;
    readonly __wbindgen_malloc: (a: number, b: number) => number;
    readonly __wbindgen_realloc: (a: number, b: number, c: number, d: number) => number;
    readonly __wbindgen_free: (a: number, b: number, c: number) => void;
    readonly __externref_drop_slice: (a: number, b: number) => void;
    readonly __externref_table_dealloc: (a: number) => void;
    readonly __wbindgen_start: () => void;
}

export type SyncInitInput = BufferSource | WebAssembly.Module;

/**
 * Instantiates the given `module`, which can either be bytes or
 * a precompiled `WebAssembly.Module`.
 *
 * @param {{ module: SyncInitInput }} module - Passing `SyncInitInput` directly is deprecated.
 *
 * @returns {InitOutput}
 */
export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput;

/**
 * If `module_or_path` is {RequestInfo} or {URL}, makes a request and
 * for everything else, calls `WebAssembly.instantiate` directly.
 *
 * @param {{ module_or_path: InitInput | Promise<InitInput> }} module_or_path - Passing `InitInput` directly is deprecated.
 *
 * @returns {Promise<InitOutput>}
 */
export default function __wbg_init (module_or_path?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>): Promise<InitOutput>;
