"""Herald's end-to-end encryption for Python: the Rust ``herald-crypto`` itself, bound with
PyO3 (``crates/crypto-py``), so Python, Rust and the browser produce the same bytes.

Thin wrappers only: devices (generate, sign, publish a signed key bundle, pickle encrypted
under a 32-byte key), Olm sessions for direct messages, pinned identities, channel epoch
keys and keyrings, sealed channel messages (``hm1.``), HPKE key envelopes, signed roster
commits and the roster-chain verifier, encrypted erasure-coded files, and the ``HST1``
state container (:class:`StateSealer`). The serde types of ``herald-crypto`` cross the
boundary as their JSON (the formats of ``crates/crypto/README.md``).
"""

from ._native import (
    CryptoError,
    DecryptError,
    Device,
    EpochKeyring,
    MismatchError,
    OlmSession,
    PinnedDevices,
    RosterChain,
    StateSealer,
    commit_hash,
    decrypt_file,
    encrypt_file,
    generate_epoch_key,
    genesis_commit,
    open_envelope,
    open_message,
    seal_epoch_key,
    seal_message,
    sealed_header,
    sign_commit,
    verify_bundle,
    verify_commit,
    verify_envelope,
)

__all__ = [
    "CryptoError",
    "DecryptError",
    "Device",
    "EpochKeyring",
    "MismatchError",
    "OlmSession",
    "PinnedDevices",
    "RosterChain",
    "StateSealer",
    "commit_hash",
    "decrypt_file",
    "encrypt_file",
    "generate_epoch_key",
    "genesis_commit",
    "open_envelope",
    "open_message",
    "seal_epoch_key",
    "seal_message",
    "sealed_header",
    "sign_commit",
    "verify_bundle",
    "verify_commit",
    "verify_envelope",
]
