/**
 * `@herald-chat/client/e2ee`: the end-to-end encryption device (docs/protocol.md §O).
 *
 * ```ts
 * const client = await Herald.connect({ url, token, e2ee: e2ee({ store, secret: { passphrase } }) });
 * ```
 */
import type { Connection } from "../client.js";
import { loadCrypto } from "../crypto.js";
import { E2ee, type E2eeOptions } from "./e2ee.js";

/** The `e2ee` option of `Herald.connect`: opens (or creates) and registers this device. */
export function e2ee(options: E2eeOptions): { open(conn: Connection, token: string): Promise<E2ee> } {
  return {
    open: async (conn, token) => {
      await loadCrypto();
      return E2ee.open(conn, token, options);
    },
  };
}
export {
  E2ee,
  E2eeError,
  IdentityChangedError,
  UnknownDeviceError,
  FingerprintMismatchError,
  fingerprint,
  DEFAULT_ONE_TIME_KEYS,
  type E2eeOptions,
  type DeviceInfo,
  type DirectMessage,
  type DirectMessageFailure,
} from "./e2ee.js";
export { EncryptedSpace, ChannelKeys, FILE_TYPE, KEEPER_PREFIX, type DecryptedMessage, type FileManifest, type UnopenableReason } from "./channel.js";
export { StateFile, type StateSecret, type IdentityKeys, type RosterMember, type SignedCommit, type Persisted } from "./state.js";
export { IndexedDbStateStore, MemoryStateStore, webCryptoStateKey, type StateStore } from "./store.js";
export { FileStateStore } from "./node-store.js";
