//! [`KeyStore`] on PostgreSQL (PROTOCOL.md §7), shared by every node of a cluster.
//!
//! Each write is one transaction on a pooled connection, within `op_timeout`:
//!
//! - a claim deletes the oldest free one-time key with `FOR UPDATE SKIP LOCKED`, so concurrent
//!   claimers on any node take distinct keys (the key's row is gone, its id stays in
//!   `one_time_key_ids` so a re-upload of it is ignored);
//! - a `dm.send` locks the addressed devices' rows (`FOR UPDATE`, in id order, so two sends
//!   never deadlock), which serializes it with other sends to them and with a revocation, and
//!   makes the inbox cap exact; its `client_id` row is inserted first, so a concurrent repeat
//!   waits for it and then answers the first ids;
//! - erasures (ack, expiry, revocation) delete the rows and wake the store's debounced vacuum
//!   (which also covers `dm_inbox`, `one_time_keys` and `envelopes`); the crate doc lists what
//!   PostgreSQL retains until then.

use crate::rows::{to_i64, to_u64};
use crate::{PgStore, db, pool_error};
use async_trait::async_trait;
use herald_store::keys::{
    Claimed, Commit, DeviceOwner, DeviceRecord, DeviceUpload, Dm, DmSend, DmSent, EnvelopeRow, KeyStore,
    Registered,
};
use herald_store::{Result, StoreError};
use serde_json::Value;
use tokio_postgres::Row;

fn json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

const DEVICE_COLS: &str = "d.user_id, d.device_id, d.keeper, d.identity, d.identity_signature, d.fallback_key, \
     (SELECT COUNT(*) FROM one_time_keys k WHERE k.app = d.app AND k.device_id = d.device_id)";

fn device_record(r: &Row) -> Result<DeviceRecord> {
    Ok(DeviceRecord {
        user: r.try_get(0).map_err(db)?,
        device_id: r.try_get(1).map_err(db)?,
        keeper: r.try_get(2).map_err(db)?,
        identity: json(r.try_get(3).map_err(db)?),
        identity_signature: json(r.try_get(4).map_err(db)?),
        fallback_key: r.try_get::<_, Option<String>>(5).map_err(db)?.map(json),
        one_time_keys: to_u64(r.try_get(6).map_err(db)?),
    })
}

fn dm_row(r: &Row) -> Result<Dm> {
    Ok(Dm {
        id: r.try_get(0).map_err(db)?,
        to_user: r.try_get(1).map_err(db)?,
        to_device: r.try_get(2).map_err(db)?,
        from: r.try_get(3).map_err(db)?,
        from_device: r.try_get(4).map_err(db)?,
        body: r.try_get(5).map_err(db)?,
        ts_ms: r.try_get(6).map_err(db)?,
    })
}

impl PgStore {
    /// Runs `f` in one transaction on a pooled connection, within `op_timeout`; with `erase`,
    /// wakes the vacuum after the commit.
    pub(crate) async fn key_tx<T, F>(&self, erase: bool, f: F) -> Result<T>
    where
        F: for<'t> FnOnce(&'t tokio_postgres::Transaction<'t>) -> futures::future::BoxFuture<'t, Result<T>>,
    {
        let t = self.config.op_timeout;
        let work = async {
            let mut obj = self.pool.get().await.map_err(pool_error)?;
            let tx = obj.transaction().await.map_err(db)?;
            let out = f(&tx).await?;
            tx.commit().await.map_err(db)?;
            Ok(out)
        };
        let out = tokio::time::timeout(t, work)
            .await
            .map_err(|_| StoreError::Backend(format!("postgres: no answer within {t:?}")))??;
        if erase {
            self.vacuum_notify.notify_one();
        }
        Ok(out)
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn register_device(&self, d: DeviceUpload) -> Result<Registered> {
        self.key_tx(false, move |tx| {
            Box::pin(async move {
                let identity = d.identity.to_string();
                let signature = d.identity_signature.to_string();
                let fallback = d.fallback_key.as_ref().map(Value::to_string);
                let created = tx
                    .query_opt(
                        "INSERT INTO devices (app, device_id, user_id, keeper, identity, identity_signature, \
                         fallback_key) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1",
                        &[&d.app, &d.device_id, &d.user, &d.keeper, &identity, &signature, &fallback],
                    )
                    .await
                    .map_err(db)?
                    .is_some();
                if !created {
                    let r = tx
                        .query_one(
                            "SELECT user_id, revoked, identity FROM devices WHERE app = $1 AND device_id = $2 \
                             FOR UPDATE",
                            &[&d.app, &d.device_id],
                        )
                        .await
                        .map_err(db)?;
                    let (user, revoked, stored): (String, bool, String) =
                        (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?, r.try_get(2).map_err(db)?);
                    if revoked {
                        return Err(StoreError::Forbidden(
                            "this device id was revoked and cannot be registered again",
                        ));
                    }
                    if user != d.user {
                        return Err(StoreError::Forbidden("this device id is registered by another user"));
                    }
                    if json(stored) != d.identity {
                        return Err(StoreError::Forbidden("this device id is registered with another identity"));
                    }
                    tx.execute(
                        "UPDATE devices SET keeper = keeper OR $3, identity_signature = $4, \
                         fallback_key = COALESCE($5, fallback_key) WHERE app = $1 AND device_id = $2",
                        &[&d.app, &d.device_id, &d.keeper, &signature, &fallback],
                    )
                    .await
                    .map_err(db)?;
                }
                for k in &d.one_time_keys {
                    let fresh = tx
                        .query_opt(
                            "INSERT INTO one_time_key_ids (app, device_id, key_id) VALUES ($1, $2, $3) \
                             ON CONFLICT DO NOTHING RETURNING 1",
                            &[&d.app, &d.device_id, &k.key_id],
                        )
                        .await
                        .map_err(db)?
                        .is_some();
                    if fresh {
                        tx.execute(
                            "INSERT INTO one_time_keys (app, device_id, key_id, key) VALUES ($1, $2, $3, $4)",
                            &[&d.app, &d.device_id, &k.key_id, &k.key.to_string()],
                        )
                        .await
                        .map_err(db)?;
                    }
                }
                let left: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM one_time_keys WHERE app = $1 AND device_id = $2",
                        &[&d.app, &d.device_id],
                    )
                    .await
                    .map_err(db)?
                    .try_get(0)
                    .map_err(db)?;
                Ok(Registered { created, one_time_keys: to_u64(left) })
            })
        })
        .await
    }

    async fn device_owner(&self, app: &str, device_id: &str) -> Result<Option<DeviceOwner>> {
        self.read(|c| async move {
            let r = c
                .query_opt(
                    "SELECT user_id, revoked, keeper FROM devices WHERE app = $1 AND device_id = $2",
                    &[&app, &device_id],
                )
                .await
                .map_err(db)?;
            match r {
                None => Ok(None),
                Some(r) => Ok(Some(DeviceOwner {
                    user: r.try_get(0).map_err(db)?,
                    revoked: r.try_get(1).map_err(db)?,
                    keeper: r.try_get(2).map_err(db)?,
                })),
            }
        })
        .await
    }

    async fn devices_of(&self, app: &str, user: &str) -> Result<Vec<DeviceRecord>> {
        self.read(|c| async move {
            let sql = format!(
                "SELECT {DEVICE_COLS} FROM devices d WHERE d.app = $1 AND d.user_id = $2 AND NOT d.revoked \
                 ORDER BY d.device_id"
            );
            let rows = c.query(&sql, &[&app, &user]).await.map_err(db)?;
            rows.iter().map(device_record).collect()
        })
        .await
    }

    async fn keepers(&self, app: &str) -> Result<Vec<DeviceRecord>> {
        self.read(|c| async move {
            let sql = format!(
                "SELECT {DEVICE_COLS} FROM devices d WHERE d.app = $1 AND d.keeper AND NOT d.revoked \
                 ORDER BY d.user_id, d.device_id"
            );
            let rows = c.query(&sql, &[&app]).await.map_err(db)?;
            rows.iter().map(device_record).collect()
        })
        .await
    }

    async fn claim(&self, app: &str, user: &str, device_id: &str) -> Result<Option<Claimed>> {
        let (app, user, id) = (app.to_owned(), user.to_owned(), device_id.to_owned());
        self.key_tx(false, move |tx| {
            Box::pin(async move {
                let dev = tx
                    .query_opt(
                        "SELECT identity, identity_signature, fallback_key FROM devices \
                         WHERE app = $1 AND device_id = $2 AND user_id = $3 AND NOT revoked",
                        &[&app, &id, &user],
                    )
                    .await
                    .map_err(db)?;
                let Some(dev) = dev else { return Ok(None) };
                let identity: String = dev.try_get(0).map_err(db)?;
                let signature: String = dev.try_get(1).map_err(db)?;
                let fallback: Option<String> = dev.try_get(2).map_err(db)?;
                let one = tx
                    .query_opt(
                        "DELETE FROM one_time_keys WHERE n = (SELECT n FROM one_time_keys \
                         WHERE app = $1 AND device_id = $2 ORDER BY n LIMIT 1 FOR UPDATE SKIP LOCKED) \
                         RETURNING key",
                        &[&app, &id],
                    )
                    .await
                    .map_err(db)?;
                let (key, is_fallback) = match one {
                    Some(r) => (r.try_get::<_, String>(0).map_err(db)?, false),
                    None => match fallback {
                        Some(f) => (f, true),
                        None => return Ok(None),
                    },
                };
                Ok(Some(Claimed {
                    user,
                    device_id: id,
                    identity: json(identity),
                    identity_signature: json(signature),
                    key: json(key),
                    fallback: is_fallback,
                }))
            })
        })
        .await
    }

    async fn revoke_device(&self, app: &str, user: &str, device_id: &str) -> Result<()> {
        let (app, user, id) = (app.to_owned(), user.to_owned(), device_id.to_owned());
        self.key_tx(true, move |tx| {
            Box::pin(async move {
                let r = tx
                    .query_opt(
                        "SELECT user_id, revoked FROM devices WHERE app = $1 AND device_id = $2 FOR UPDATE",
                        &[&app, &id],
                    )
                    .await
                    .map_err(db)?;
                match r {
                    None => return Err(StoreError::NotFound("device")),
                    Some(r) => {
                        let owner: String = r.try_get(0).map_err(db)?;
                        let revoked: bool = r.try_get(1).map_err(db)?;
                        if revoked {
                            return Err(StoreError::NotFound("device"));
                        }
                        if owner != user {
                            return Err(StoreError::Forbidden("this device belongs to another user"));
                        }
                    }
                }
                for sql in [
                    "UPDATE devices SET revoked = true, fallback_key = NULL WHERE app = $1 AND device_id = $2",
                    "DELETE FROM one_time_keys WHERE app = $1 AND device_id = $2",
                    "DELETE FROM dm_inbox WHERE app = $1 AND device_id = $2",
                    "DELETE FROM envelopes WHERE device_id = $2 AND channel_id IN \
                     (SELECT id FROM channels WHERE app = $1)",
                ] {
                    tx.execute(sql, &[&app, &id]).await.map_err(db)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn dm_send(&self, s: DmSend) -> Result<DmSent> {
        self.key_tx(false, move |tx| {
            Box::pin(async move {
                let ids: Vec<String> = s.copies.iter().map(|c| c.id.clone()).collect();
                if let Some(cid) = &s.client_id {
                    let list = serde_json::to_string(&ids).map_err(|e| StoreError::Backend(e.to_string()))?;
                    let fresh = tx
                        .query_opt(
                            "INSERT INTO dm_client_ids (app, from_device, client_id, ids) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT DO NOTHING RETURNING 1",
                            &[&s.app, &s.from_device, cid, &list],
                        )
                        .await
                        .map_err(db)?
                        .is_some();
                    if !fresh {
                        let r = tx
                            .query_one(
                                "SELECT ids FROM dm_client_ids WHERE app = $1 AND from_device = $2 AND client_id = $3",
                                &[&s.app, &s.from_device, cid],
                            )
                            .await
                            .map_err(db)?;
                        let first: String = r.try_get(0).map_err(db)?;
                        let ids = serde_json::from_str(&first).map_err(|e| StoreError::Backend(e.to_string()))?;
                        return Ok(DmSent { ids, duplicate: true });
                    }
                }
                let mut devices: Vec<&str> = s.copies.iter().map(|c| c.to_device.as_str()).collect();
                devices.sort_unstable();
                devices.dedup();
                let locked = tx
                    .query(
                        "SELECT device_id, user_id, revoked FROM devices WHERE app = $1 AND device_id = ANY($2) \
                         ORDER BY device_id FOR UPDATE",
                        &[&s.app, &devices],
                    )
                    .await
                    .map_err(db)?;
                let mut owners = std::collections::HashMap::new();
                for r in &locked {
                    let id: String = r.try_get(0).map_err(db)?;
                    let user: String = r.try_get(1).map_err(db)?;
                    let revoked: bool = r.try_get(2).map_err(db)?;
                    if !revoked {
                        owners.insert(id, user);
                    }
                }
                for c in &s.copies {
                    if owners.get(&c.to_device) != Some(&c.to_user) {
                        return Err(StoreError::NotFound("device"));
                    }
                }
                for device in &devices {
                    let adding = s.copies.iter().filter(|c| c.to_device == *device).count() as u64;
                    let held: i64 = tx
                        .query_one(
                            "SELECT COUNT(*) FROM dm_inbox WHERE app = $1 AND device_id = $2",
                            &[&s.app, device],
                        )
                        .await
                        .map_err(db)?
                        .try_get(0)
                        .map_err(db)?;
                    if to_u64(held) + adding > s.inbox_max {
                        return Err(StoreError::InboxFull);
                    }
                }
                for c in &s.copies {
                    tx.execute(
                        "INSERT INTO dm_inbox (app, device_id, id, to_user, from_user, from_device, body, ts_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[&s.app, &c.to_device, &c.id, &c.to_user, &c.from, &c.from_device, &c.body, &c.ts_ms],
                    )
                    .await
                    .map_err(db)?;
                }
                Ok(DmSent { ids, duplicate: false })
            })
        })
        .await
    }

    async fn dm_inbox(&self, app: &str, device_id: &str) -> Result<Vec<Dm>> {
        self.read(|c| async move {
            let rows = c
                .query(
                    "SELECT id, to_user, device_id, from_user, from_device, body, ts_ms FROM dm_inbox \
                     WHERE app = $1 AND device_id = $2 ORDER BY n",
                    &[&app, &device_id],
                )
                .await
                .map_err(db)?;
            rows.iter().map(dm_row).collect()
        })
        .await
    }

    async fn dm_ack(&self, app: &str, device_id: &str, ids: &[String]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (app, id, ids) = (app.to_owned(), device_id.to_owned(), ids.to_vec());
        self.key_tx(true, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "DELETE FROM dm_inbox WHERE app = $1 AND device_id = $2 AND id = ANY($3)",
                    &[&app, &id, &ids],
                )
                .await
                .map_err(db)
            })
        })
        .await
    }

    async fn dm_expire(&self, before_ms: i64) -> Result<u64> {
        self.key_tx(true, move |tx| {
            Box::pin(async move {
                tx.execute("DELETE FROM dm_inbox WHERE ts_ms < $1", &[&before_ms]).await.map_err(db)
            })
        })
        .await
    }

    async fn commits(&self, channel_id: &str, after: Option<u64>) -> Result<Vec<Commit>> {
        let after = after.map(to_i64);
        self.read(|c| async move {
            let rows = c
                .query(
                    "SELECT epoch, prev_commit_hash, commit_hash, body FROM commits \
                     WHERE channel_id = $1 AND ($2::bigint IS NULL OR epoch > $2) ORDER BY epoch",
                    &[&channel_id, &after],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(Commit {
                        epoch: to_u64(r.try_get(0).map_err(db)?),
                        prev_commit_hash: r.try_get(1).map_err(db)?,
                        commit_hash: r.try_get(2).map_err(db)?,
                        commit: json(r.try_get(3).map_err(db)?),
                    })
                })
                .collect()
        })
        .await
    }

    async fn put_envelopes(&self, channel_id: &str, envelopes: Vec<EnvelopeRow>) -> Result<()> {
        let ch = channel_id.to_owned();
        self.key_tx(false, move |tx| {
            Box::pin(async move {
                for e in &envelopes {
                    let epoch = to_i64(e.epoch);
                    let known = tx
                        .query_opt(
                            "SELECT 1 FROM commits WHERE channel_id = $1 AND epoch = $2",
                            &[&ch, &epoch],
                        )
                        .await
                        .map_err(db)?
                        .is_some();
                    if !known {
                        return Err(StoreError::NotFound("epoch"));
                    }
                    tx.execute(
                        "INSERT INTO envelopes (channel_id, device_id, epoch, body) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (channel_id, device_id, epoch) DO UPDATE SET body = excluded.body",
                        &[&ch, &e.device_id, &epoch, &e.envelope.to_string()],
                    )
                    .await
                    .map_err(db)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn envelopes_for(&self, channel_id: &str, device_id: &str) -> Result<Vec<EnvelopeRow>> {
        self.read(|c| async move {
            let rows = c
                .query(
                    "SELECT device_id, epoch, body FROM envelopes WHERE channel_id = $1 AND device_id = $2 \
                     ORDER BY epoch",
                    &[&channel_id, &device_id],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(EnvelopeRow {
                        device_id: r.try_get(0).map_err(db)?,
                        epoch: to_u64(r.try_get(1).map_err(db)?),
                        envelope: json(r.try_get(2).map_err(db)?),
                    })
                })
                .collect()
        })
        .await
    }
}
