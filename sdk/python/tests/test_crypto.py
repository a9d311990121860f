"""The PyO3 bindings of herald-crypto (``crates/crypto-py``) against the vector that
``crates/crypto/tests/interop_vector.rs`` checks on the Rust side: Python opens what Rust
sealed and seals the very same bytes from the same inputs."""

from __future__ import annotations

import json
from typing import Any

import herald_crypto
import pytest

from conftest import REPO

VECTOR: dict[str, Any] = json.loads(
    (REPO / "crates/crypto/tests/vectors/channel-message-v1.json").read_text()
)
PICKLE_KEY = bytes.fromhex(VECTOR["pickle_key"])
EPOCH_KEY = bytes.fromhex(VECTOR["epoch_key"])
IDENTITY = json.dumps(VECTOR["identity_keys"])


def rust_device() -> herald_crypto.Device:
    return herald_crypto.Device.from_pickle(VECTOR["device_pickle"], PICKLE_KEY)


def test_python_opens_what_rust_sealed() -> None:
    sealed = VECTOR["sealed"]
    assert herald_crypto.sealed_header(sealed) == (VECTOR["epoch"], VECTOR["device_id"])
    plaintext = herald_crypto.open_message(sealed, VECTOR["channel"], EPOCH_KEY, IDENTITY)
    assert plaintext.decode() == VECTOR["plaintext"]


def test_python_seals_the_same_bytes_as_rust() -> None:
    device = rust_device()
    assert device.device_id == VECTOR["device_id"]
    assert json.loads(device.identity_keys_json()) == VECTOR["identity_keys"]
    sealed = herald_crypto.seal_message(
        device,
        VECTOR["channel"],
        VECTOR["epoch"],
        EPOCH_KEY,
        VECTOR["plaintext"].encode(),
        nonce=bytes.fromhex(VECTOR["nonce"]),
    )
    assert sealed == VECTOR["sealed"]


def test_tampering_and_wrong_keys_are_refused() -> None:
    sealed = VECTOR["sealed"]
    channel = VECTOR["channel"]
    with pytest.raises(herald_crypto.CryptoError):
        herald_crypto.open_message(sealed, channel, bytes(32), IDENTITY)
    with pytest.raises(herald_crypto.CryptoError):
        herald_crypto.open_message(
            sealed, "0190f5c2-7a1b-7cc3-9a4e-2b7d8c1e0f12", EPOCH_KEY, IDENTITY
        )
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    with pytest.raises(herald_crypto.CryptoError):
        herald_crypto.open_message(flipped, channel, EPOCH_KEY, IDENTITY)
    other = herald_crypto.Device.generate("ada-laptop")
    with pytest.raises(herald_crypto.CryptoError):
        herald_crypto.open_message(sealed, channel, EPOCH_KEY, other.identity_keys_json())
    with pytest.raises(herald_crypto.CryptoError, match="32 bytes"):
        herald_crypto.open_message(sealed, channel, b"short", IDENTITY)
    with pytest.raises(herald_crypto.CryptoError):
        herald_crypto.Device.from_pickle(VECTOR["device_pickle"], bytes(32))


def test_a_fresh_device_round_trips_through_its_pickle() -> None:
    device = herald_crypto.Device.generate("py-device")
    key = bytes(range(32))
    restored = herald_crypto.Device.from_pickle(device.pickle(key), key)
    assert restored.identity_keys_json() == device.identity_keys_json()
    epoch_key = herald_crypto.generate_epoch_key()
    assert len(epoch_key) == 32
    channel = VECTOR["channel"]
    sealed = herald_crypto.seal_message(restored, channel, 0, epoch_key, b"\x00binary\xff")
    again = herald_crypto.seal_message(restored, channel, 0, epoch_key, b"\x00binary\xff")
    assert sealed != again, "a fresh nonce each time"
    opened = herald_crypto.open_message(sealed, channel, epoch_key, device.identity_keys_json())
    assert opened == b"\x00binary\xff"
