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


def _ident(d: herald_crypto.Device) -> str:
    return d.identity_keys_json()


def test_olm_sessions_from_a_claimed_key_and_a_pre_key_message() -> None:
    ada, grace = herald_crypto.Device.generate("ada-1"), herald_crypto.Device.generate("grace-1")
    bundle = json.loads(grace.publish_bundle(3))
    herald_crypto.verify_bundle(json.dumps(bundle))
    assert len(bundle["one_time_keys"]) == 3
    claimed = json.dumps(bundle["one_time_keys"][0])
    out = ada.create_outbound_session(_ident(grace), claimed)
    first = out.encrypt(b"hello")
    assert json.loads(first)["pre_key"] is True
    inbound, plain = grace.create_inbound_session(_ident(ada), first)
    assert plain == b"hello"
    assert inbound.session_id == out.session_id
    assert inbound.matches(first)
    # The one-time key is used up: the same pre-key message does not make a second session.
    with pytest.raises(herald_crypto.CryptoError):
        grace.create_inbound_session(_ident(ada), first)
    assert out.decrypt(inbound.encrypt(b"back")) == b"back"
    # Pickled sessions keep going.
    key = b"\x07" * 32
    again = herald_crypto.OlmSession.from_pickle(out.pickle(key), key)
    assert inbound.decrypt(again.encrypt(b"after restore")) == b"after restore"
    # A claimed key signed by someone else is refused.
    other = json.loads(herald_crypto.Device.generate("grace-1").publish_bundle(1))
    with pytest.raises(herald_crypto.CryptoError):
        ada.create_outbound_session(_ident(grace), json.dumps(other["one_time_keys"][0]))


def test_pins_refuse_a_device_id_with_other_keys() -> None:
    pins = herald_crypto.PinnedDevices()
    a = json.loads(herald_crypto.Device.generate("dev").publish_bundle(0))
    b = json.loads(herald_crypto.Device.generate("dev").publish_bundle(0))
    pins.pin(json.dumps(a))
    pins.pin(json.dumps(a))
    assert len(pins) == 1
    with pytest.raises(herald_crypto.CryptoError, match="already pinned"):
        pins.pin(json.dumps(b))


def test_envelopes_rosters_and_keyrings() -> None:
    admin, member = herald_crypto.Device.generate("a1"), herald_crypto.Device.generate("m1")
    members = [{"user": "a", "devices": ["a1"]}, {"user": "m", "devices": ["m1"]}]
    genesis = herald_crypto.sign_commit(
        herald_crypto.genesis_commit("c", json.dumps(members)), admin
    )
    chain = herald_crypto.RosterChain(json.dumps([json.loads(_ident(admin))]), genesis)
    assert chain.epoch == 0
    assert chain.is_member_device(0, "m1")
    remove = json.dumps({"kind": "remove", "users": ["m"]})
    nxt = chain.next_commit(json.dumps(members[:1]), remove)
    # Only an admin's commit extends the chain; a refused one leaves it unchanged.
    with pytest.raises(herald_crypto.CryptoError, match="not a pinned channel admin"):
        chain.apply(herald_crypto.sign_commit(nxt, member))
    signed = herald_crypto.sign_commit(nxt, admin)
    herald_crypto.verify_commit(signed, _ident(admin))
    chain.apply(signed)
    assert chain.epoch == 1
    assert chain.head_hash() == herald_crypto.commit_hash(signed)
    assert not chain.is_member_device(1, "m1")
    key = herald_crypto.generate_epoch_key()
    env = herald_crypto.seal_epoch_key(admin, "c", 1, key, _ident(member))
    herald_crypto.verify_envelope(env, _ident(admin))
    assert herald_crypto.open_envelope(env, member, _ident(admin)) == key
    forged = json.loads(env)
    forged["epoch"] = 2
    with pytest.raises(herald_crypto.CryptoError):
        herald_crypto.open_envelope(json.dumps(forged), member, _ident(admin))
    ring = herald_crypto.EpochKeyring("c")
    ring.insert(1, key)
    with pytest.raises(herald_crypto.CryptoError):
        ring.insert(1, herald_crypto.generate_epoch_key())
    sealed = ring.seal(admin, 1, b"text")
    assert ring.open(sealed, _ident(admin)) == b"text"
    with pytest.raises(herald_crypto.CryptoError):
        ring.open(sealed, _ident(member))


def test_files_rebuild_from_any_k_shards() -> None:
    data = bytes(i % 251 for i in range(200_000))
    manifest, shards = herald_crypto.encrypt_file("n.bin", "application/octet-stream", data)
    assert len(shards) == 6
    some: list[bytes | None] = list(shards)
    some[1] = None
    some[4] = None
    assert herald_crypto.decrypt_file(manifest, some) == data
    some[0] = None
    with pytest.raises(herald_crypto.CryptoError, match="not enough intact shards"):
        herald_crypto.decrypt_file(manifest, some)


def test_the_state_container() -> None:
    sealer = herald_crypto.StateSealer.create(passphrase="pw")
    assert sealer.kdf == "passphrase"
    raw = sealer.seal(b'{"user":"ada"}')
    assert raw[:4] == b"HST1"
    again, plain = herald_crypto.StateSealer.open(raw, passphrase="pw")
    assert plain == b'{"user":"ada"}'
    assert again.key() == sealer.key()
    with pytest.raises(herald_crypto.DecryptError):
        herald_crypto.StateSealer.open(raw, passphrase="wrong")
    with pytest.raises(herald_crypto.MismatchError):
        herald_crypto.StateSealer.open(raw, key=b"\x01" * 32)
    with pytest.raises(herald_crypto.CryptoError, match="exactly one"):
        herald_crypto.StateSealer.create()
