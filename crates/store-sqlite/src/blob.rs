//! Content-addressed blobs on the filesystem: `dir/blobs/<channel_id>/<blake3 hex>`.
//!
//! A blob is written to a temporary file in its channel's directory, fsynced, renamed into
//! place and the directory fsynced, so a blob id that was answered is durable and a crash
//! leaves at worst a stray temporary file, never a torn blob.

use herald_store::bytes_like::Bytes;
use herald_store::{BlobStore, Result, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Blobs under a data directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

impl FsBlobStore {
    /// Blobs live in `dir/blobs`, created if needed.
    pub fn open(dir: PathBuf) -> Result<Self> {
        let root = dir.join("blobs");
        std::fs::create_dir_all(&root).map_err(|e| io("create", &root, e))?;
        Ok(FsBlobStore { root })
    }

    fn channel_dir(&self, channel_id: &str) -> Result<PathBuf> {
        herald_store::check_blob_channel(channel_id)?;
        Ok(self.root.join(channel_id))
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
        let dir = self.channel_dir(channel_id)?;
        tokio::task::spawn_blocking(move || {
            let id = blake3::hash(&bytes).to_hex().to_string();
            put_sync(&dir, &id, &bytes)?;
            Ok(id)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("blob task failed: {e}")))?
    }

    async fn get(&self, channel_id: &str, blob_id: &str) -> Result<Option<Bytes>> {
        herald_store::check_blob_id(blob_id)?;
        let path = self.channel_dir(channel_id)?.join(blob_id);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path, e)),
        }
    }

    async fn delete_channel(&self, channel_id: &str) -> Result<()> {
        let dir = self.channel_dir(channel_id)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &dir, e)),
        }
    }
}
