"""Herald's end-to-end encryption for Python: the Rust ``herald-crypto`` itself, bound with
PyO3 (``crates/crypto-py``), so Python, Rust and the browser produce the same bytes.

So far: devices (generate, pickle encrypted under a 32-byte key, restore), channel epoch
keys, and sealing / opening channel messages (the ``hm1.`` format of
``crates/crypto/README.md``).
"""

from ._native import (
    CryptoError,
    Device,
    generate_epoch_key,
    open_message,
    seal_message,
    sealed_header,
)

__all__ = [
    "CryptoError",
    "Device",
    "generate_epoch_key",
    "open_message",
    "seal_message",
    "sealed_header",
]
