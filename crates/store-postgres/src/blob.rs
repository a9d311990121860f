//! Content-addressed blobs in the `blobs` table: `bytea` keyed by (channel id, BLAKE3 hex).
//!
//! In PostgreSQL rather than on a filesystem so that every node of a cluster sees every blob
//! without a shared mount, and blobs are committed, replicated and backed up with the messages
//! that refer to them. A put is one `INSERT … ON CONFLICT DO NOTHING` (the same id is the same
//! bytes), durable when it returns.

use crate::{PgConfig, db, pool_error};
use deadpool_postgres::Pool;
use herald_store::bytes_like::Bytes;
use herald_store::{BlobStore, Result, StoreError, check_blob_channel, check_blob_id};
use std::time::Duration;

/// Blobs in PostgreSQL, on a pool (usually a [`crate::PgStore`]'s: [`crate::PgStore::blob_store`]).
#[derive(Clone)]
pub struct PgBlobStore {
    pool: Pool,
    op_timeout: Duration,
}

impl std::fmt::Debug for PgBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBlobStore").finish_non_exhaustive()
    }
}

impl PgBlobStore {
    /// A blob store with its own pool; the schema must exist (open a [`crate::PgStore`] first).
    pub fn open(config: &PgConfig) -> Result<PgBlobStore> {
        Ok(PgBlobStore::with_pool(crate::pool(config)?, config.op_timeout))
    }

    pub(crate) fn with_pool(pool: Pool, op_timeout: Duration) -> PgBlobStore {
        PgBlobStore { pool, op_timeout }
    }

    async fn timed<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let t = self.op_timeout;
        tokio::time::timeout(t, f)
            .await
            .map_err(|_| StoreError::Backend(format!("postgres: no answer within {t:?}")))?
    }
}

#[async_trait::async_trait]
impl BlobStore for PgBlobStore {
    async fn put(&self, channel_id: &str, bytes: Bytes) -> Result<String> {
        check_blob_channel(channel_id)?;
        let id = blake3::hash(&bytes).to_hex().to_string();
        self.timed(async {
            let c = self.pool.get().await.map_err(pool_error)?;
            let s = c
                .prepare_cached(
                    "INSERT INTO blobs (channel_id, id, bytes) VALUES ($1, $2, $3) \
                     ON CONFLICT (channel_id, id) DO NOTHING",
                )
                .await
                .map_err(db)?;
            c.execute(&s, &[&channel_id, &id, &bytes]).await.map_err(db)?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    async fn get(&self, channel_id: &str, blob_id: &str) -> Result<Option<Bytes>> {
        check_blob_id(blob_id)?;
        check_blob_channel(channel_id)?;
        self.timed(async {
            let c = self.pool.get().await.map_err(pool_error)?;
            let s = c
                .prepare_cached("SELECT bytes FROM blobs WHERE channel_id = $1 AND id = $2")
                .await
                .map_err(db)?;
            match c.query_opt(&s, &[&channel_id, &blob_id]).await.map_err(db)? {
                None => Ok(None),
                Some(r) => Ok(Some(r.try_get(0).map_err(db)?)),
            }
        })
        .await
    }

    async fn delete_channel(&self, channel_id: &str) -> Result<()> {
        check_blob_channel(channel_id)?;
        self.timed(async {
            let c = self.pool.get().await.map_err(pool_error)?;
            let s = c.prepare_cached("DELETE FROM blobs WHERE channel_id = $1").await.map_err(db)?;
            c.execute(&s, &[&channel_id]).await.map_err(db)?;
            Ok(())
        })
        .await
    }
}
