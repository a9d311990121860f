//! Python bindings of `herald-crypto` (PyO3), importable as `herald_crypto`.
//!
//! Thin wrappers and nothing else: every byte is produced by `herald-crypto` itself, so a
//! message sealed in Python opens in Rust (and the browser) and the other way round, by
//! construction. What this crate must never do: hold logic of its own, log or format a
//! secret, or be a dependency of the server.
//!
//! Built with maturin (`crates/crypto-py/pyproject.toml`); `[lib] test = false`, because a
//! Python extension is linked by the interpreter that imports it, not into a Rust test
//! binary: its tests are `sdk/python/tests/test_crypto.py`, against the vector that
//! `crates/crypto/tests/interop_vector.rs` checks on the Rust side.

use herald_crypto::channel::{EpochKey, SealedMessage};
use herald_crypto::identity::{IdentityKeys, PickleKey};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rand_core::{CryptoRng, OsRng, RngCore};

pyo3::create_exception!(
    herald_crypto,
    CryptoError,
    PyException,
    "A herald-crypto operation failed: a malformed input, a bad signature or a failed decryption."
);

fn err(e: herald_crypto::CryptoError) -> PyErr {
    CryptoError::new_err(e.to_string())
}

fn key32(what: &str, bytes: &[u8]) -> PyResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| CryptoError::new_err(format!("{what} must be 32 bytes, got {}", bytes.len())))
}

/// Randomness for `seal_message`: the caller's bytes first (a test that must reproduce a
/// vector names the nonce), the operating system's after them.
struct Prefixed<'a> {
    bytes: &'a [u8],
}

impl RngCore for Prefixed<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_be_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_be_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let n = dest.len().min(self.bytes.len());
        let (given, rest) = self.bytes.split_at(n);
        dest[..n].copy_from_slice(given);
        self.bytes = rest;
        OsRng.fill_bytes(&mut dest[n..]);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Prefixed<'_> {}

/// The local device: its identity keys and the secrets behind them. Persist it with
/// `pickle(key)` (encrypted under a 32-byte key the application keeps), never in clear.
#[pyclass(module = "herald_crypto._native")]
struct Device {
    inner: herald_crypto::Device,
}

#[pymethods]
impl Device {
    /// A device with fresh keys (the operating system's randomness).
    #[staticmethod]
    fn generate(device_id: &str) -> PyResult<Device> {
        Ok(Device { inner: herald_crypto::Device::new(&mut OsRng, device_id).map_err(err)? })
    }

    /// Restores a device from `pickle()` output under the same 32-byte key.
    #[staticmethod]
    fn from_pickle(pickled: &str, key: &[u8]) -> PyResult<Device> {
        let key = PickleKey::from_bytes(key32("pickle key", key)?);
        Ok(Device { inner: herald_crypto::Device::from_pickle(pickled, &key).map_err(err)? })
    }

    /// The device's state encrypted under a 32-byte key.
    fn pickle(&self, key: &[u8]) -> PyResult<String> {
        let key = PickleKey::from_bytes(key32("pickle key", key)?);
        Ok(self.inner.pickle(&mut OsRng, &key))
    }

    #[getter]
    fn device_id(&self) -> String {
        self.inner.device_id().to_owned()
    }

    /// The public identity (JSON: device_id, ed25519, curve25519, envelope), as peers pin it.
    fn identity_keys_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.identity_keys())
            .map_err(|e| CryptoError::new_err(format!("cannot encode identity keys: {e}")))
    }

    fn __repr__(&self) -> String {
        format!("Device(device_id={:?})", self.inner.device_id())
    }
}

/// A fresh 32-byte channel epoch key.
#[pyfunction]
fn generate_epoch_key(py: Python<'_>) -> Bound<'_, PyBytes> {
    let key = EpochKey::generate(&mut OsRng);
    PyBytes::new(py, key.as_bytes())
}

/// Seals `plaintext` for `channel` at `epoch` under the 32-byte epoch `key`, signed by
/// `sender`: the `hm1.` string of a channel message. `nonce` (24 bytes) is for tests that
/// reproduce a vector only: a nonce must never be used twice under one key.
#[pyfunction]
#[pyo3(signature = (sender, channel, epoch, key, plaintext, *, nonce = None))]
fn seal_message(
    sender: &Device,
    channel: &str,
    epoch: u64,
    key: &[u8],
    plaintext: &[u8],
    nonce: Option<&[u8]>,
) -> PyResult<String> {
    let key = EpochKey::from_bytes(key32("epoch key", key)?);
    if let Some(n) = nonce
        && n.len() != 24
    {
        return Err(CryptoError::new_err(format!("nonce must be 24 bytes, got {}", n.len())));
    }
    let mut rng = Prefixed { bytes: nonce.unwrap_or_default() };
    herald_crypto::channel::seal_message(&mut rng, &sender.inner, channel, epoch, &key, plaintext)
        .map_err(err)
}

/// The `(epoch, sender device id)` a sealed message claims, read without verifying.
#[pyfunction]
fn sealed_header(sealed: &str) -> PyResult<(u64, String)> {
    let m = SealedMessage::parse(sealed).map_err(err)?;
    Ok((m.epoch(), m.sender().to_owned()))
}

/// Verifies a sealed channel message against the sender's pinned identity (JSON as
/// `identity_keys_json` gives it) and decrypts it with the 32-byte epoch key.
#[pyfunction]
fn open_message<'py>(
    py: Python<'py>,
    sealed: &str,
    channel: &str,
    key: &[u8],
    sender_identity_json: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let key = EpochKey::from_bytes(key32("epoch key", key)?);
    let sender: IdentityKeys = serde_json::from_str(sender_identity_json)
        .map_err(|e| CryptoError::new_err(format!("unreadable identity keys: {e}")))?;
    let m = SealedMessage::parse(sealed).map_err(err)?;
    let plaintext = m.open(channel, &key, &sender).map_err(err)?;
    Ok(PyBytes::new(py, &plaintext))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CryptoError", m.py().get_type::<CryptoError>())?;
    m.add_class::<Device>()?;
    m.add_function(wrap_pyfunction!(generate_epoch_key, m)?)?;
    m.add_function(wrap_pyfunction!(seal_message, m)?)?;
    m.add_function(wrap_pyfunction!(sealed_header, m)?)?;
    m.add_function(wrap_pyfunction!(open_message, m)?)?;
    Ok(())
}
