/** The end-to-end encryption layer's public surface (docs/protocol.md §O). */
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
export { FileStateStore, IndexedDbStateStore, MemoryStateStore, webCryptoStateKey, type StateStore } from "./store.js";
