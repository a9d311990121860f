//! Encrypted, erasure-coded files.
//!
//! 1. The file is split into chunks of `chunk_size` bytes (default 64 KiB;
//!    an empty file is one empty chunk). Chunk `i` is encrypted with
//!    XChaCha20-Poly1305 under a fresh random per-file key with
//!    `nonce = "hfc1" | u64 BE i | u8 last | 11 zero bytes` and
//!    `ad = T("herald/file-chunk/v1") | u64 size`. The index and last-chunk
//!    flag in the nonce mean chunks cannot be reordered, dropped or the file
//!    truncated without an authentication failure.
//! 2. The concatenated ciphertext (`size + 16 * chunks` bytes) is zero-padded
//!    to `k * shard_size` (`shard_size` = ceil(len / k) rounded up to even)
//!    and cut into `k` data shards; `reed-solomon-simd` adds `m` parity
//!    shards (default 4 + 2). Any `k` of the `k + m` shards rebuild the file.
//! 3. Each shard's BLAKE3 hash goes into the [`FileManifest`]; a shard whose
//!    hash or length is wrong is treated as missing.
//!
//! The manifest is small JSON meant to travel inside an encrypted channel
//! message (it holds the file key):
//!
//! ```json
//! { "v": 1, "name": "photo.jpg", "type": "image/jpeg", "size": 123456,
//!   "chunk_size": 65536, "k": 4, "m": 2, "shard_size": 30890,
//!   "shard_hashes": ["<blake3 hex>", "... k + m entries"],
//!   "key": "<base64url 32 bytes>" }
//! ```

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::encoding::{Transcript, b64_decode, b64_encode};
use crate::{CryptoError, Result};

const TAG_LEN: usize = 16;
/// Largest accepted chunk size (16 MiB).
pub const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;

/// How a file is chunked and sharded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileParams {
    /// `k`: data shards (any `k` shards recover the file).
    pub data_shards: usize,
    /// `m`: parity shards (up to `m` shards may be lost).
    pub parity_shards: usize,
    /// Plaintext bytes per encrypted chunk.
    pub chunk_size: usize,
}

impl Default for FileParams {
    fn default() -> Self {
        FileParams { data_shards: 4, parity_shards: 2, chunk_size: 64 * 1024 }
    }
}

/// The per-file symmetric key. Serialized as base64url.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey(Zeroizing<[u8; 32]>);

impl FileKey {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl Serialize for FileKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&b64_encode(self.0.as_ref()))
    }
}

impl<'de> Deserialize<'de> for FileKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let s = Zeroizing::new(String::deserialize(d)?);
        let v = Zeroizing::new(b64_decode("file key", &s).map_err(D::Error::custom)?);
        let arr: [u8; 32] =
            v.as_slice().try_into().map_err(|_| D::Error::custom("file key must be 32 bytes"))?;
        Ok(FileKey(Zeroizing::new(arr)))
    }
}

/// Everything needed to fetch, check and decrypt a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    /// Format version, 1.
    pub v: u8,
    /// File name.
    pub name: String,
    /// Media type.
    #[serde(rename = "type")]
    pub mime: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Data shards.
    pub k: u16,
    /// Parity shards.
    pub m: u16,
    /// Bytes per shard.
    pub shard_size: u64,
    /// BLAKE3 (hex) of each of the `k + m` shards, data shards first.
    pub shard_hashes: Vec<String>,
    /// The file key.
    pub key: FileKey,
}

impl FileManifest {
    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses JSON (does not validate; [`decrypt_file`] does).
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| CryptoError::malformed("file manifest", e.to_string()))
    }
}

/// A freshly encrypted file: its manifest and its `k + m` shards.
#[derive(Clone, Debug)]
pub struct EncodedFile {
    /// The manifest (contains the key: send it only inside sealed messages).
    pub manifest: FileManifest,
    /// Shards `0..k` (data) then `k..k+m` (parity).
    pub shards: Vec<Vec<u8>>,
}

/// Derived sizes of one file layout.
struct Layout {
    k: usize,
    m: usize,
    chunk_size: usize,
    size: usize,
    chunks: usize,
    shard_size: usize,
}

impl Layout {
    fn new(k: usize, m: usize, chunk_size: usize, size: usize) -> Result<Self> {
        let bad = |s: &str| CryptoError::FileParams(s.to_owned());
        if k == 0 || m == 0 {
            return Err(bad("k and m must be at least 1"));
        }
        if k > usize::from(u16::MAX) || m > usize::from(u16::MAX) {
            return Err(bad("k and m must fit in 16 bits"));
        }
        if !reed_solomon_simd::ReedSolomonEncoder::supports(k, m) {
            return Err(bad("shard counts not supported by reed-solomon-simd"));
        }
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(bad("chunk size must be in 1..=16 MiB"));
        }
        let chunks = size.div_ceil(chunk_size).max(1);
        let cipher_len = chunks
            .checked_mul(TAG_LEN)
            .and_then(|t| t.checked_add(size))
            .ok_or_else(|| bad("file too large"))?;
        let shard_size = cipher_len.div_ceil(k).div_ceil(2) * 2;
        Ok(Layout { k, m, chunk_size, size, chunks, shard_size })
    }

    fn ad(&self) -> Vec<u8> {
        Transcript::new("herald/file-chunk/v1").u64(u64::try_from(self.size).unwrap_or(u64::MAX)).finish()
    }
}

fn chunk_nonce(index: usize, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..4].copy_from_slice(b"hfc1");
    n[4..12].copy_from_slice(&u64::try_from(index).unwrap_or(u64::MAX).to_be_bytes());
    n[12] = u8::from(last);
    XNonce::from(n)
}

/// Encrypts `data` under a fresh key from `rng` and erasure-codes it.
pub fn encrypt_file<R: CryptoRng + RngCore>(
    rng: &mut R,
    name: &str,
    mime: &str,
    data: &[u8],
    params: &FileParams,
) -> Result<EncodedFile> {
    let l = Layout::new(params.data_shards, params.parity_shards, params.chunk_size, data.len())?;
    let chunk_size_u32 =
        u32::try_from(l.chunk_size).map_err(|_| CryptoError::FileParams("chunk size too large".into()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(key.as_mut());
    let aead = XChaCha20Poly1305::new(key.as_ref().into());
    let ad = l.ad();

    let total =
        l.k.checked_mul(l.shard_size).ok_or_else(|| CryptoError::FileParams("file too large".into()))?;
    let mut buf = vec![0u8; total];
    for i in 0..l.chunks {
        let start = i * l.chunk_size;
        let end = (start + l.chunk_size).min(l.size);
        let plain = data.get(start..end).unwrap_or(&[]);
        let out = i * (l.chunk_size + TAG_LEN);
        let (body, rest) = buf[out..].split_at_mut(plain.len());
        body.copy_from_slice(plain);
        let tag = aead
            .encrypt_in_place_detached(&chunk_nonce(i, i + 1 == l.chunks), &ad, body)
            .map_err(|_| CryptoError::FileParams("chunk too large".into()))?;
        rest[..TAG_LEN].copy_from_slice(&tag);
    }

    let parity = reed_solomon_simd::encode(l.k, l.m, buf.chunks(l.shard_size))
        .map_err(|e| CryptoError::Erasure(e.to_string()))?;
    let mut shards: Vec<Vec<u8>> = buf.chunks(l.shard_size).map(<[u8]>::to_vec).collect();
    drop(buf);
    shards.extend(parity);
    let shard_hashes = shards.iter().map(|s| blake3::hash(s).to_hex().to_string()).collect();

    let manifest = FileManifest {
        v: 1,
        name: name.to_owned(),
        mime: mime.to_owned(),
        size: u64::try_from(l.size).unwrap_or(u64::MAX),
        chunk_size: chunk_size_u32,
        k: u16::try_from(l.k).unwrap_or(u16::MAX),
        m: u16::try_from(l.m).unwrap_or(u16::MAX),
        shard_size: u64::try_from(l.shard_size).unwrap_or(u64::MAX),
        shard_hashes,
        key: FileKey(key),
    };
    Ok(EncodedFile { manifest, shards })
}

/// Rebuilds and decrypts a file from whatever shards are available:
/// `shards[i]` is shard `i` (`0..k` data, `k..k+m` parity) or `None`.
/// Shards with a wrong length or hash count as missing.
pub fn decrypt_file<S: AsRef<[u8]>>(manifest: &FileManifest, shards: &[Option<S>]) -> Result<Vec<u8>> {
    if manifest.v != 1 {
        return Err(CryptoError::FileParams(format!("unsupported manifest version {}", manifest.v)));
    }
    let size =
        usize::try_from(manifest.size).map_err(|_| CryptoError::FileParams("size too large".into()))?;
    let chunk_size = usize::try_from(manifest.chunk_size)
        .map_err(|_| CryptoError::FileParams("chunk size too large".into()))?;
    let l = Layout::new(usize::from(manifest.k), usize::from(manifest.m), chunk_size, size)?;
    if u64::try_from(l.shard_size).ok() != Some(manifest.shard_size) {
        return Err(CryptoError::FileParams("shard size inconsistent with file size".into()));
    }
    let n = l.k + l.m;
    if manifest.shard_hashes.len() != n {
        return Err(CryptoError::FileParams(format!(
            "manifest lists {} shard hashes, expected {n}",
            manifest.shard_hashes.len()
        )));
    }
    if shards.len() != n {
        return Err(CryptoError::FileParams(format!("got {} shard slots, expected {n}", shards.len())));
    }
    let hashes = manifest
        .shard_hashes
        .iter()
        .map(|h| {
            blake3::Hash::from_hex(h.as_bytes())
                .map_err(|e| CryptoError::malformed("file manifest", format!("shard hash: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;

    // Intact shards only: data shards first; parity shards are hashed only
    // when some data shard is missing, and only until `k` are intact.
    let check = |i: usize| -> Option<&[u8]> {
        let s: &[u8] = shards.get(i)?.as_ref()?.as_ref();
        (s.len() == l.shard_size && blake3::hash(s) == *hashes.get(i)?).then_some(s)
    };
    let mut intact: Vec<Option<&[u8]>> = (0..l.k).map(check).collect();
    let mut have = intact.iter().filter(|s| s.is_some()).count();
    for i in l.k..n {
        let s = if have < l.k { check(i) } else { None };
        have += usize::from(s.is_some());
        intact.push(s);
    }
    if have < l.k {
        return Err(CryptoError::NotEnoughShards { have, need: l.k });
    }

    let mut buf = vec![0u8; l.k * l.shard_size];
    let (data, parity) = intact.split_at(l.k);
    for (i, s) in data.iter().enumerate() {
        if let Some(s) = s {
            buf[i * l.shard_size..(i + 1) * l.shard_size].copy_from_slice(s);
        }
    }
    if data.iter().any(Option::is_none) {
        let originals = data.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i, s)));
        let recovery = parity.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i, s)));
        let restored = reed_solomon_simd::decode(l.k, l.m, originals, recovery)
            .map_err(|e| CryptoError::Erasure(e.to_string()))?;
        for (i, s) in restored {
            let dst = buf
                .get_mut(i * l.shard_size..(i + 1) * l.shard_size)
                .ok_or_else(|| CryptoError::Erasure("restored shard out of range".into()))?;
            if s.len() != l.shard_size {
                return Err(CryptoError::Erasure("restored shard has wrong size".into()));
            }
            dst.copy_from_slice(&s);
        }
    }

    // Decrypt chunk by chunk, compacting the plaintext to the front.
    let aead = XChaCha20Poly1305::new(manifest.key.as_bytes().into());
    let ad = l.ad();
    let mut written = 0;
    for i in 0..l.chunks {
        let plain_len = (l.size - i * l.chunk_size).min(l.chunk_size);
        let off = i * (l.chunk_size + TAG_LEN);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&buf[off + plain_len..off + plain_len + TAG_LEN]);
        aead.decrypt_in_place_detached(
            &chunk_nonce(i, i + 1 == l.chunks),
            &ad,
            &mut buf[off..off + plain_len],
            Tag::from_slice(&tag),
        )
        .map_err(|_| CryptoError::Decrypt { what: "file chunk" })?;
        buf.copy_within(off..off + plain_len, written);
        written += plain_len;
    }
    buf.truncate(written);
    Ok(buf)
}
