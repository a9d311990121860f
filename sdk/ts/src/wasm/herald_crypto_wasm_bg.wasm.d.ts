/* tslint:disable */
/* eslint-disable */
export const memory: WebAssembly.Memory;
export const __wbg_encryptedfile_free: (a: number, b: number) => void;
export const __wbg_wasmdevice_free: (a: number, b: number) => void;
export const decryptFile: (a: number, b: number, c: number, d: number) => [number, number, number, number];
export const encryptFile: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number) => [number, number, number];
export const encryptedfile_manifest: (a: number) => [number, number];
export const encryptedfile_shard: (a: number, b: number) => [number, number, number, number];
export const encryptedfile_shardCount: (a: number) => number;
export const generateEpochKey: () => [number, number];
export const openMessage: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number) => [number, number, number, number];
export const sealMessage: (a: number, b: number, c: number, d: bigint, e: number, f: number, g: number, h: number) => [number, number, number, number];
export const sealedInfo: (a: number, b: number) => [number, number, number, number];
export const wasmdevice_deviceId: (a: number) => [number, number];
export const wasmdevice_fromPickle: (a: number, b: number, c: number, d: number) => [number, number, number];
export const wasmdevice_identityKeys: (a: number) => [number, number, number, number];
export const wasmdevice_new: (a: number, b: number) => [number, number, number];
export const wasmdevice_pickle: (a: number, b: number, c: number) => [number, number, number, number];
export const wasmdevice_publishBundle: (a: number, b: number) => [number, number, number, number];
export const __wbindgen_exn_store: (a: number) => void;
export const __externref_table_alloc: () => number;
export const __wbindgen_externrefs: WebAssembly.Table;
export const __wbindgen_malloc: (a: number, b: number) => number;
export const __wbindgen_realloc: (a: number, b: number, c: number, d: number) => number;
export const __wbindgen_free: (a: number, b: number, c: number) => void;
export const __externref_drop_slice: (a: number, b: number) => void;
export const __externref_table_dealloc: (a: number) => void;
export const __wbindgen_start: () => void;
