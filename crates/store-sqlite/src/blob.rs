//! Content-addressed blobs on the filesystem: `<root>/<channel_id>/<blake3 hex>`, under one
//! root (`dir/blobs` by default) or several (`--blob-dir`, e.g. one per disk).
//!
//! With several roots, shard `i` of an erasure-coded file (`put_shard`) goes to root
//! `i mod n`, in the order the roots were given, so the k+m shards of one file land on
//! distinct disks when n ≥ k+m, and losing one disk loses at most one shard of each file
//! (`⌈(k+m)/n⌉` when n is smaller). A blob that is not a shard goes to the first root. A read
//! looks in every root; a root that is missing or unreadable (an unmounted disk) makes its
//! blobs `not_found`, never an error or a crash.
//!
//! A blob is written to a temporary file in its channel's directory, fsynced, renamed into
//! place and the directory fsynced, so a blob id that was answered is durable and a crash
//! leaves at worst a stray temporary file, never a torn blob.

use herald_store::bytes_like::Bytes;
use herald_store::{BlobStore, Result, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Blobs under one or several directories.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    roots: Vec<PathBuf>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

impl FsBlobStore {
    /// Blobs live in `dir/blobs`, created if needed.
    pub fn open(dir: PathBuf) -> Result<Self> {
        let root = dir.join("blobs");
        std::fs::create_dir_all(&root).map_err(|e| io("create", &root, e))?;
        Ok(FsBlobStore { roots: vec![root] })
    }

    /// Blobs spread over `roots` (each used as it is, created if needed). A root that cannot
    /// be created now is kept (a disk mounted later serves again) with a warning; an empty list
    /// is refused.
    pub fn open_dirs(roots: Vec<PathBuf>) -> Result<Self> {
        if roots.is_empty() {
            return Err(StoreError::Invalid("at least one blob directory is needed".into()));
        }
        for root in &roots {
            if let Err(e) = std::fs::create_dir_all(root) {
                tracing::warn!(dir = %root.display(), error = %e, "blob directory unavailable; its blobs read as not found");
            }
        }
        Ok(FsBlobStore { roots })
    }

    /// The roots, in placement order.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The root shard `shard` is placed in: `shard mod n`.
    pub fn shard_root(&self, shard: u32) -> &Path {
        &self.roots[shard as usize % self.roots.len()]
    }

    fn channel_dir(&self, root: &Path, channel_id: &str) -> Result<PathBuf> {
        herald_store::check_blob_channel(channel_id)?;
        Ok(root.join(channel_id))
    }

    async fn put_in(&self, root: &Path, channel_id: &str, bytes: Bytes) -> Result<String> {
        let dir = self.channel_dir(root, channel_id)?;
        tokio::task::spawn_blocking(move || {
            let id = blake3::hash(&bytes).to_hex().to_string();
            put_sync(&dir, &id, &bytes)?;
            Ok(id)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("blob task failed: {e}")))?
    }
}

fn put_sync(dir: &Path, id: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let path = dir.join(id);
    if path.exists() {
        // Content-addressed: the same id is the same bytes.
        return Ok(());
    }
    let tmp = dir.join(format!(".{id}.{:016x}.tmp", rand::random::<u64>()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("write blob in", dir, e)
    })
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, channel_id: &str, bytes: Bytes) -> Result<String> {
        self.put_in(&self.roots[0], channel_id, bytes).await
    }

    async fn put_shard(&self, channel_id: &str, bytes: Bytes, shard: u32) -> Result<String> {
        self.put_in(self.shard_root(shard), channel_id, bytes).await
    }

    async fn get(&self, channel_id: &str, blob_id: &str) -> Result<Option<Bytes>> {
        herald_store::check_blob_id(blob_id)?;
        herald_store::check_blob_channel(channel_id)?;
        // Content-addressed: any copy is the blob. A root that cannot be read (a disk gone)
        // is skipped: its blobs are simply not found.
        for root in &self.roots {
            let path = self.channel_dir(root, channel_id)?.join(blob_id);
            match tokio::fs::read(&path).await {
                Ok(b) => return Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "blob unreadable; trying the other directories")
                }
            }
        }
        Ok(None)
    }

    async fn delete_channel(&self, channel_id: &str) -> Result<()> {
        for root in &self.roots {
            let dir = self.channel_dir(root, channel_id)?;
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &dir, e)),
            }
        }
        Ok(())
    }
}
