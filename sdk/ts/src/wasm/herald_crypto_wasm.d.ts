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
 * The result of [`WasmDevice::create_inbound_session`].
 */
export class InboundSession {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    /**
     * The new session (once: a second call fails).
     */
    takeSession(): WasmOlmSession;
    /**
     * The decrypted first message.
     */
    readonly plaintext: Uint8Array;
}

/**
 * The result of [`WasmStateSealer::open`].
 */
export class OpenedState {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    takeSealer(): WasmStateSealer;
    readonly plaintext: Uint8Array;
}

/**
 * A device: its identity keys and its one-time keys (PROTOCOL.md §7).
 */
export class WasmDevice {
    free(): void;
    [Symbol.dispose](): void;
    /**
     * An inbound Olm session from `peer`'s pre-key message (JSON `OlmMessage`), with the
     * plaintext. Consumes the one-time key (pickle the device afterwards).
     */
    createInboundSession(peer: string, message: string): InboundSession;
    /**
     * An outbound Olm session with `peer` (JSON `IdentityKeys`, pinned by the caller) from
     * a key claimed for it (JSON `SignedKey`); the key's signature by `peer` is checked.
     */
    createOutboundSession(peer: string, claimed: string): WasmOlmSession;
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
     * Opens an envelope (JSON `KeyEnvelope`) sealed to this device by `sender` (JSON
     * `IdentityKeys`, pinned), checking its signature: the 32-byte epoch key.
     */
    openEnvelope(envelope: string, sender: string): Uint8Array;
    /**
     * The device's secret state, encrypted under a 32-byte key.
     */
    pickle(key: Uint8Array | number[]): string;
    /**
     * A signed key bundle with `one_time_keys` new one-time keys (JSON), for `PUT /v1/keys/devices/{id}`.
     */
    publishBundle(one_time_keys: number): string;
    /**
     * Seals the 32-byte epoch `key` of `channel` to `recipient` (JSON `IdentityKeys`): the
     * JSON `KeyEnvelope`.
     */
    sealEpochKey(channel: string, epoch: bigint, key: Uint8Array | number[], recipient: string): string;
    /**
     * Signs an unsigned commit (JSON `EpochCommit`): the JSON `SignedCommit`.
     */
    signCommit(commit: string): string;
    /**
     * An Ed25519 signature by this device over `message`.
     */
    sign(message: Uint8Array | number[]): Uint8Array;
}

/**
 * A channel's epoch keys (herald-crypto's `EpochKeyring`).
 */
export class WasmKeyring {
    free(): void;
    [Symbol.dispose](): void;
    /**
     * The epochs held, ascending.
     */
    epochs(): BigUint64Array;
    /**
     * The key of `epoch` (an error when it is not held).
     */
    get(epoch: bigint): Uint8Array;
    has(epoch: bigint): boolean;
    /**
     * Adds the 32-byte key of `epoch` (the same key again is accepted, another is refused).
     */
    insert(epoch: bigint, key: Uint8Array | number[]): void;
    constructor(channel: string);
    /**
     * Opens an envelope (JSON `KeyEnvelope`) sealed to `recipient` by `sender` (JSON
     * `IdentityKeys`) and adds its key.
     */
    openEnvelopeInto(envelope: string, recipient: WasmDevice, sender: string): void;
    /**
     * Opens a sealed message with the key of its epoch, checking the signature of the sender
     * (JSON `IdentityKeys`, pinned by the caller).
     */
    open(sealed: string, sender_identity: string): Uint8Array;
    /**
     * Seals `plaintext` with the key of `epoch`, signed by `sender`: the `hm1.` string.
     */
    seal(sender: WasmDevice, epoch: bigint, plaintext: Uint8Array | number[]): string;
}

/**
 * An Olm session with one peer device (herald-crypto's `OlmSession`).
 */
export class WasmOlmSession {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    /**
     * Decrypts a JSON `OlmMessage`.
     */
    decrypt(message: string): Uint8Array;
    /**
     * Encrypts `plaintext`: the JSON `OlmMessage` (a DM body).
     */
    encrypt(plaintext: Uint8Array | number[]): string;
    static fromPickle(pickled: string, key: Uint8Array | number[]): WasmOlmSession;
    hasReceivedMessage(): boolean;
    /**
     * Whether a pre-key message (JSON `OlmMessage`) belongs to this session.
     */
    matches(message: string): boolean;
    peerDevice(): string;
    /**
     * The session's state, encrypted under a 32-byte key (`hses1.`).
     */
    pickle(key: Uint8Array | number[]): string;
    sessionId(): string;
}

/**
 * Pinned device identities (herald-crypto's `PinnedDevices`): a device re-pinned to other
 * keys, or a key claimed by two devices, is refused.
 */
export class WasmPins {
    free(): void;
    [Symbol.dispose](): void;
    /**
     * The pinned identity of `device_id` (JSON), or an error when it is not pinned.
     */
    get(device_id: string): string;
    constructor();
    /**
     * Verifies a bundle (JSON `KeyBundle`; its one-time keys may be empty) and pins its
     * identity: the pinned `IdentityKeys` (JSON).
     */
    pin(bundle: string): string;
    readonly size: number;
}

/**
 * A verified roster chain (herald-crypto's `RosterChain`).
 */
export class WasmRosterChain {
    free(): void;
    [Symbol.dispose](): void;
    /**
     * Verifies `commit` (JSON `SignedCommit`) extends the chain and makes it the head; on
     * error the chain is unchanged.
     */
    apply(commit: string): void;
    /**
     * Whether `commit` would be accepted, without applying it.
     */
    checkNext(commit: string): void;
    clone(): WasmRosterChain;
    headHash(): string;
    /**
     * The head commit (JSON `SignedCommit`).
     */
    head(): string;
    isMemberDevice(epoch: bigint, device: string): boolean;
    /**
     * The members of `epoch` (JSON `[Member]`), or `undefined` when it was not verified.
     */
    membersAt(epoch: bigint): string | undefined;
    /**
     * The members of the head epoch (JSON `[Member]`).
     */
    members(): string;
    /**
     * A chain from its genesis (JSON `SignedCommit`), trusting `admins` (JSON `[IdentityKeys]`)
     * as the only signers.
     */
    constructor(admins: string, genesis: string);
    /**
     * The unsigned commit of the next epoch (JSON `EpochCommit`) with `members` (JSON
     * `[Member]`) and `reason` (JSON `CommitReason`, e.g. `{"kind":"remove","users":["bob"]}`).
     */
    nextCommit(members: string, reason: string): string;
    readonly channel: string;
    readonly epoch: bigint;
}

/**
 * The sealed `HST1` container of a device's state (herald-crypto's `StateSealer`).
 */
export class WasmStateSealer {
    private constructor();
    free(): void;
    [Symbol.dispose](): void;
    /**
     * A sealer for a new container, from a passphrase (Argon2id) or a 32-byte key.
     */
    static create(passphrase?: string | null, key?: Uint8Array | number[] | null): WasmStateSealer;
    /**
     * The derived 32-byte key (the pickles inside the state are made under it).
     */
    key(): Uint8Array;
    /**
     * Opens a container: the sealer (to seal new versions) and the plaintext, as
     * [`OpenedState`]. Errors name the cause: not a container, the other kind of secret,
     * or a wrong secret / altered bytes.
     */
    static open(raw: Uint8Array | number[], passphrase?: string | null, key?: Uint8Array | number[] | null): OpenedState;
    /**
     * A new container of `plaintext` (fresh nonce, same salt and key).
     */
    seal(plaintext: Uint8Array | number[]): Uint8Array;
    /**
     * "passphrase" or "key file".
     */
    readonly kdf: string;
}

/**
 * The hash of a signed commit (JSON `SignedCommit`): 64 lowercase hex digits.
 */
export function commitHash(commit: string): string;

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
 * The genesis commit of `channel` with `members` (JSON `[Member]`), unsigned (JSON `EpochCommit`).
 */
export function genesisCommit(channel: string, members: string): string;

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

/**
 * Verifies every signature of a key bundle (JSON `KeyBundle`) and rejects weak keys.
 */
export function verifyBundle(bundle: string): void;

/**
 * Verifies a signed commit's signature by `signer` (JSON `IdentityKeys`).
 */
export function verifyCommit(commit: string, signer: string): void;

/**
 * Verifies a key envelope's signature (JSON `KeyEnvelope`) against its sender's pinned
 * identity (JSON `IdentityKeys`).
 */
export function verifyEnvelope(envelope: string, sender: string): void;

export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

export interface InitOutput {
    readonly memory: WebAssembly.Memory;
    readonly __wbg_encryptedfile_free: (a: number, b: number) => void;
    readonly __wbg_inboundsession_free: (a: number, b: number) => void;
    readonly __wbg_openedstate_free: (a: number, b: number) => void;
    readonly __wbg_wasmdevice_free: (a: number, b: number) => void;
    readonly __wbg_wasmkeyring_free: (a: number, b: number) => void;
    readonly __wbg_wasmolmsession_free: (a: number, b: number) => void;
    readonly __wbg_wasmpins_free: (a: number, b: number) => void;
    readonly __wbg_wasmrosterchain_free: (a: number, b: number) => void;
    readonly __wbg_wasmstatesealer_free: (a: number, b: number) => void;
    readonly commitHash: (a: number, b: number) => [number, number, number, number];
    readonly decryptFile: (a: number, b: number, c: number, d: number) => [number, number, number, number];
    readonly encryptFile: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number) => [number, number, number];
    readonly encryptedfile_manifest: (a: number) => [number, number];
    readonly encryptedfile_shard: (a: number, b: number) => [number, number, number, number];
    readonly encryptedfile_shardCount: (a: number) => number;
    readonly generateEpochKey: () => [number, number];
    readonly genesisCommit: (a: number, b: number, c: number, d: number) => [number, number, number, number];
    readonly inboundsession_plaintext: (a: number) => [number, number];
    readonly inboundsession_takeSession: (a: number) => [number, number, number];
    readonly openMessage: (a: number, b: number, c: number, d: number, e: number, f: number, g: number, h: number) => [number, number, number, number];
    readonly openedstate_plaintext: (a: number) => [number, number];
    readonly openedstate_takeSealer: (a: number) => [number, number, number];
    readonly sealMessage: (a: number, b: number, c: number, d: bigint, e: number, f: number, g: number, h: number) => [number, number, number, number];
    readonly sealedInfo: (a: number, b: number) => [number, number, number, number];
    readonly verifyBundle: (a: number, b: number) => [number, number];
    readonly verifyCommit: (a: number, b: number, c: number, d: number) => [number, number];
    readonly verifyEnvelope: (a: number, b: number, c: number, d: number) => [number, number];
    readonly wasmdevice_createInboundSession: (a: number, b: number, c: number, d: number, e: number) => [number, number, number];
    readonly wasmdevice_createOutboundSession: (a: number, b: number, c: number, d: number, e: number) => [number, number, number];
    readonly wasmdevice_deviceId: (a: number) => [number, number];
    readonly wasmdevice_fromPickle: (a: number, b: number, c: number, d: number) => [number, number, number];
    readonly wasmdevice_identityKeys: (a: number) => [number, number, number, number];
    readonly wasmdevice_new: (a: number, b: number) => [number, number, number];
    readonly wasmdevice_openEnvelope: (a: number, b: number, c: number, d: number, e: number) => [number, number, number, number];
    readonly wasmdevice_pickle: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmdevice_publishBundle: (a: number, b: number) => [number, number, number, number];
    readonly wasmdevice_sealEpochKey: (a: number, b: number, c: number, d: bigint, e: number, f: number, g: number, h: number) => [number, number, number, number];
    readonly wasmdevice_sign: (a: number, b: number, c: number) => [number, number];
    readonly wasmdevice_signCommit: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmkeyring_epochs: (a: number) => [number, number];
    readonly wasmkeyring_get: (a: number, b: bigint) => [number, number, number, number];
    readonly wasmkeyring_has: (a: number, b: bigint) => number;
    readonly wasmkeyring_insert: (a: number, b: bigint, c: number, d: number) => [number, number];
    readonly wasmkeyring_new: (a: number, b: number) => [number, number, number];
    readonly wasmkeyring_open: (a: number, b: number, c: number, d: number, e: number) => [number, number, number, number];
    readonly wasmkeyring_openEnvelopeInto: (a: number, b: number, c: number, d: number, e: number, f: number) => [number, number];
    readonly wasmkeyring_seal: (a: number, b: number, c: bigint, d: number, e: number) => [number, number, number, number];
    readonly wasmolmsession_decrypt: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmolmsession_encrypt: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmolmsession_fromPickle: (a: number, b: number, c: number, d: number) => [number, number, number];
    readonly wasmolmsession_hasReceivedMessage: (a: number) => number;
    readonly wasmolmsession_matches: (a: number, b: number, c: number) => [number, number, number];
    readonly wasmolmsession_peerDevice: (a: number) => [number, number];
    readonly wasmolmsession_pickle: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmolmsession_sessionId: (a: number) => [number, number];
    readonly wasmpins_get: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmpins_new: () => number;
    readonly wasmpins_pin: (a: number, b: number, c: number) => [number, number, number, number];
    readonly wasmpins_size: (a: number) => number;
    readonly wasmrosterchain_apply: (a: number, b: number, c: number) => [number, number];
    readonly wasmrosterchain_channel: (a: number) => [number, number];
    readonly wasmrosterchain_checkNext: (a: number, b: number, c: number) => [number, number];
    readonly wasmrosterchain_clone: (a: number) => number;
    readonly wasmrosterchain_epoch: (a: number) => bigint;
    readonly wasmrosterchain_head: (a: number) => [number, number, number, number];
    readonly wasmrosterchain_headHash: (a: number) => [number, number];
    readonly wasmrosterchain_isMemberDevice: (a: number, b: bigint, c: number, d: number) => number;
    readonly wasmrosterchain_members: (a: number) => [number, number, number, number];
    readonly wasmrosterchain_membersAt: (a: number, b: bigint) => [number, number, number, number];
    readonly wasmrosterchain_new: (a: number, b: number, c: number, d: number) => [number, number, number];
    readonly wasmrosterchain_nextCommit: (a: number, b: number, c: number, d: number, e: number) => [number, number, number, number];
    readonly wasmstatesealer_create: (a: number, b: number, c: number, d: number) => [number, number, number];
    readonly wasmstatesealer_kdf: (a: number) => [number, number];
    readonly wasmstatesealer_key: (a: number) => [number, number];
    readonly wasmstatesealer_open: (a: number, b: number, c: number, d: number, e: number, f: number) => [number, number, number];
    readonly wasmstatesealer_seal: (a: number, b: number, c: number) => [number, number, number, number];
    readonly __wbindgen_exn_store: (a: number) => void;
    readonly __externref_table_alloc: () => number;
    readonly __wbindgen_externrefs: WebAssembly.Table;
    readonly __wbindgen_malloc: (a: number, b: number) => number;
    readonly __wbindgen_realloc: (a: number, b: number, c: number, d: number) => number;
    readonly __wbindgen_free: (a: number, b: number, c: number) => void;
    readonly __externref_table_dealloc: (a: number) => void;
    readonly __externref_drop_slice: (a: number, b: number) => void;
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
