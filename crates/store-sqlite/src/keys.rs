//! [`KeyStore`] on SQLite (PROTOCOL.md §7): devices, one-time keys, DM inboxes, envelopes.
//!
//! Writes run on their own connection (`KeyConn`), one `BEGIN IMMEDIATE` transaction per
//! operation, serialized with the channel writer by SQLite's write lock (these tables are
//! never touched by the writer's cached heads, except `commits` and `envelopes` inserted by a
//! `Rotate`, which this connection only adds envelopes beside). `BEGIN IMMEDIATE` takes the
//! write lock before the first read, so a claim's read of the oldest free key and its erasure
//! are one atomic step: two concurrent claimers, in this process or another, never get the same
//! key. Reads use the store's read pool.
//!
//! Erasure: an acknowledged, expired or revoked DM is deleted with `secure_delete` on (its
//! cells are zeroed), and the WAL is checkpointed with `TRUNCATE` before the caller is
//! answered, so the ciphertext survives in neither file. A checkpoint blocked by a reader is
//! retried for a while; if it keeps failing, the channel writer's next erasing batch (or the
//! final checkpoint at close) folds the WAL.

use crate::rows::{to_i64, to_u64};
use crate::{SqliteStore, backend};
use async_trait::async_trait;
use herald_store::keys::{
    Claimed, Commit, DeviceOwner, DeviceRecord, DeviceUpload, Dm, DmSend, DmSent, EnvelopeRow, KeyStore,
    Registered,
};
use herald_store::{Result, StoreError};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;
use std::sync::Arc;

/// The write connection of the key tables.
pub(crate) struct KeyConn(Arc<Mutex<Option<Connection>>>);

impl KeyConn {
    pub fn new(conn: Connection) -> KeyConn {
        KeyConn(Arc::new(Mutex::new(Some(conn))))
    }

    /// Closes the connection (the store is closing).
    pub fn close(&self) {
        drop(self.0.lock().take());
    }

    /// Runs `f` in one immediate transaction on the key connection; with `erase`, checkpoints
    /// the WAL with `TRUNCATE` after the commit.
    async fn write<T, F>(&self, erase: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let conn = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock();
            let c = guard.as_mut().ok_or(StoreError::Closed)?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let out = f(&tx)?;
            tx.commit().map_err(backend)?;
            if erase {
                checkpoint(c);
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("key store task failed: {e}")))?
    }
}

/// Folds the WAL into the database and truncates it, retrying while readers block it.
fn checkpoint(c: &Connection) {
    for _ in 0..100 {
        match c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
            Ok(0) => return,
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint after a DM erasure failed");
                return;
            }
        }
    }
    tracing::warn!("WAL checkpoint after a DM erasure stayed blocked by readers");
}

fn json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

const DEVICE_COLS: &str = "d.user_id, d.device_id, d.keeper, d.identity, d.identity_signature, d.fallback_key, \
     (SELECT COUNT(*) FROM one_time_keys k WHERE k.app = d.app AND k.device_id = d.device_id \
      AND k.key IS NOT NULL)";

fn device_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        user: r.get(0)?,
        device_id: r.get(1)?,
        keeper: r.get(2)?,
        identity: json(r.get(3)?),
        identity_signature: json(r.get(4)?),
        fallback_key: r.get::<_, Option<String>>(5)?.map(json),
        one_time_keys: to_u64(r.get(6)?),
    })
}

fn owner(c: &Connection, app: &str, device_id: &str) -> Result<Option<(String, bool, bool, String)>> {
    c.prepare_cached(
        "SELECT user_id, revoked, keeper, identity FROM devices WHERE app = ?1 AND device_id = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![app, device_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional()
    })
    .map_err(backend)
}

fn free_keys(c: &Connection, app: &str, device_id: &str) -> Result<u64> {
    c.prepare_cached(
        "SELECT COUNT(*) FROM one_time_keys WHERE app = ?1 AND device_id = ?2 AND key IS NOT NULL",
    )
    .and_then(|mut s| s.query_row(params![app, device_id], |r| r.get::<_, i64>(0)))
    .map(to_u64)
    .map_err(backend)
}

fn dm_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Dm> {
    Ok(Dm {
        id: r.get(0)?,
        to_user: r.get(1)?,
        to_device: r.get(2)?,
        from: r.get(3)?,
        from_device: r.get(4)?,
        body: r.get(5)?,
        ts_ms: r.get(6)?,
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn register_device(&self, d: DeviceUpload) -> Result<Registered> {
        self.keys_conn
            .write(false, move |tx| {
                let identity = d.identity.to_string();
                let created = match owner(tx, &d.app, &d.device_id)? {
                    Some((_, true, _, _)) => {
                        return Err(StoreError::Forbidden(
                            "this device id was revoked and cannot be registered again",
                        ));
                    }
                    Some((user, _, _, _)) if user != d.user => {
                        return Err(StoreError::Forbidden("this device id is registered by another user"));
                    }
                    Some((_, _, _, stored)) if json(stored.clone()) != d.identity => {
                        return Err(StoreError::Forbidden(
                            "this device id is registered with another identity",
                        ));
                    }
                    Some(_) => {
                        tx.execute(
                            "UPDATE devices SET keeper = keeper OR ?3, identity_signature = ?4, \
                             fallback_key = COALESCE(?5, fallback_key) WHERE app = ?1 AND device_id = ?2",
                            params![
                                d.app,
                                d.device_id,
                                d.keeper,
                                d.identity_signature.to_string(),
                                d.fallback_key.as_ref().map(Value::to_string)
                            ],
                        )
                        .map_err(backend)?;
                        false
                    }
                    None => {
                        tx.execute(
                            "INSERT INTO devices (app, device_id, user_id, keeper, identity, \
                             identity_signature, fallback_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            params![
                                d.app,
                                d.device_id,
                                d.user,
                                d.keeper,
                                identity,
                                d.identity_signature.to_string(),
                                d.fallback_key.as_ref().map(Value::to_string)
                            ],
                        )
                        .map_err(backend)?;
                        true
                    }
                };
                for k in &d.one_time_keys {
                    tx.execute(
                        "INSERT OR IGNORE INTO one_time_keys (app, device_id, key_id, key) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![d.app, d.device_id, k.key_id, k.key.to_string()],
                    )
                    .map_err(backend)?;
                }
                let left = free_keys(tx, &d.app, &d.device_id)?;
                Ok(Registered { created, one_time_keys: left })
            })
            .await
    }

    async fn device_owner(&self, app: &str, device_id: &str) -> Result<Option<DeviceOwner>> {
        let (app, id) = (app.to_owned(), device_id.to_owned());
        self.read(move |c| {
            Ok(owner(c, &app, &id)?.map(|(user, revoked, keeper, _)| DeviceOwner { user, revoked, keeper }))
        })
        .await
    }

    async fn devices_of(&self, app: &str, user: &str) -> Result<Vec<DeviceRecord>> {
        let (app, user) = (app.to_owned(), user.to_owned());
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLS} FROM devices d WHERE d.app = ?1 AND d.user_id = ?2 \
                     AND d.revoked = 0 ORDER BY d.device_id"
                ))
                .map_err(backend)?;
            let rows = s.query_map(params![app, user], device_record).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn keepers(&self, app: &str) -> Result<Vec<DeviceRecord>> {
        let app = app.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLS} FROM devices d WHERE d.app = ?1 AND d.keeper AND d.revoked = 0 \
                     ORDER BY d.user_id, d.device_id"
                ))
                .map_err(backend)?;
            let rows = s.query_map(params![app], device_record).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn claim(&self, app: &str, user: &str, device_id: &str) -> Result<Option<Claimed>> {
        let (app, user, id) = (app.to_owned(), user.to_owned(), device_id.to_owned());
        self.keys_conn
            .write(false, move |tx| {
                let dev: Option<(String, String, Option<String>)> = tx
                    .prepare_cached(
                        "SELECT identity, identity_signature, fallback_key FROM devices \
                         WHERE app = ?1 AND device_id = ?2 AND user_id = ?3 AND revoked = 0",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![app, id, user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                            .optional()
                    })
                    .map_err(backend)?;
                let Some((identity, signature, fallback)) = dev else { return Ok(None) };
                let one: Option<(i64, String)> = tx
                    .prepare_cached(
                        "SELECT n, key FROM one_time_keys WHERE app = ?1 AND device_id = ?2 \
                         AND key IS NOT NULL ORDER BY n LIMIT 1",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![app, id], |r| Ok((r.get(0)?, r.get(1)?))).optional()
                    })
                    .map_err(backend)?;
                let (key, is_fallback) = match one {
                    Some((n, key)) => {
                        tx.execute("UPDATE one_time_keys SET key = NULL WHERE n = ?1", params![n])
                            .map_err(backend)?;
                        (key, false)
                    }
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
            .await
    }

    async fn revoke_device(&self, app: &str, user: &str, device_id: &str) -> Result<()> {
        let (app, user, id) = (app.to_owned(), user.to_owned(), device_id.to_owned());
        self.keys_conn
            .write(true, move |tx| {
                match owner(tx, &app, &id)? {
                    None | Some((_, true, _, _)) => return Err(StoreError::NotFound("device")),
                    Some((owner, ..)) if owner != user => {
                        return Err(StoreError::Forbidden("this device belongs to another user"));
                    }
                    Some(_) => {}
                }
                let run = |sql: &str| tx.execute(sql, params![app, id]).map_err(backend);
                run("UPDATE devices SET revoked = 1, fallback_key = NULL WHERE app = ?1 AND device_id = ?2")?;
                run("UPDATE one_time_keys SET key = NULL WHERE app = ?1 AND device_id = ?2")?;
                run("DELETE FROM dm_inbox WHERE app = ?1 AND device_id = ?2")?;
                tx.execute(
                    "DELETE FROM envelopes WHERE device_id = ?2 AND channel_id IN \
                     (SELECT id FROM channels WHERE app = ?1)",
                    params![app, id],
                )
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn dm_send(&self, s: DmSend) -> Result<DmSent> {
        self.keys_conn
            .write(false, move |tx| {
                if let Some(cid) = &s.client_id {
                    let ids: Option<String> = tx
                        .prepare_cached(
                            "SELECT ids FROM dm_client_ids WHERE app = ?1 AND from_device = ?2 AND client_id = ?3",
                        )
                        .and_then(|mut st| st.query_row(params![s.app, s.from_device, cid], |r| r.get(0)).optional())
                        .map_err(backend)?;
                    if let Some(ids) = ids {
                        let ids: Vec<String> = serde_json::from_str(&ids).map_err(backend)?;
                        return Ok(DmSent { ids, duplicate: true });
                    }
                }
                let mut adding: std::collections::HashMap<&str, u64> = Default::default();
                for c in &s.copies {
                    match owner(tx, &s.app, &c.to_device)? {
                        Some((user, false, _, _)) if user == c.to_user => {}
                        _ => return Err(StoreError::NotFound("device")),
                    }
                    *adding.entry(c.to_device.as_str()).or_default() += 1;
                }
                for (device, n) in &adding {
                    let held: i64 = tx
                        .prepare_cached("SELECT COUNT(*) FROM dm_inbox WHERE app = ?1 AND device_id = ?2")
                        .and_then(|mut st| st.query_row(params![s.app, device], |r| r.get(0)))
                        .map_err(backend)?;
                    if to_u64(held) + n > s.inbox_max {
                        return Err(StoreError::InboxFull);
                    }
                }
                for c in &s.copies {
                    tx.execute(
                        "INSERT INTO dm_inbox (app, device_id, id, to_user, from_user, from_device, body, \
                         ts_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![s.app, c.to_device, c.id, c.to_user, c.from, c.from_device, c.body, c.ts_ms],
                    )
                    .map_err(backend)?;
                }
                let ids: Vec<String> = s.copies.iter().map(|c| c.id.clone()).collect();
                if let Some(cid) = &s.client_id {
                    let list = serde_json::to_string(&ids).map_err(backend)?;
                    tx.execute(
                        "INSERT INTO dm_client_ids (app, from_device, client_id, ids) VALUES (?1, ?2, ?3, ?4)",
                        params![s.app, s.from_device, cid, list],
                    )
                    .map_err(backend)?;
                }
                Ok(DmSent { ids, duplicate: false })
            })
            .await
    }

    async fn dm_inbox(&self, app: &str, device_id: &str) -> Result<Vec<Dm>> {
        let (app, id) = (app.to_owned(), device_id.to_owned());
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT id, to_user, device_id, from_user, from_device, body, ts_ms FROM dm_inbox \
                     WHERE app = ?1 AND device_id = ?2 ORDER BY n",
                )
                .map_err(backend)?;
            let rows = s.query_map(params![app, id], dm_row).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn dm_ack(&self, app: &str, device_id: &str, ids: &[String]) -> Result<u64> {
        let (app, id, ids) = (app.to_owned(), device_id.to_owned(), ids.to_vec());
        if ids.is_empty() {
            return Ok(0);
        }
        self.keys_conn
            .write(true, move |tx| {
                let mut n = 0;
                for dm in &ids {
                    n += tx
                        .execute(
                            "DELETE FROM dm_inbox WHERE app = ?1 AND device_id = ?2 AND id = ?3",
                            params![app, id, dm],
                        )
                        .map_err(backend)? as u64;
                }
                Ok(n)
            })
            .await
    }

    async fn dm_expire(&self, before_ms: i64) -> Result<u64> {
        self.keys_conn
            .write(true, move |tx| {
                tx.execute("DELETE FROM dm_inbox WHERE ts_ms < ?1", params![before_ms])
                    .map(|n| n as u64)
                    .map_err(backend)
            })
            .await
    }

    async fn commits(&self, channel_id: &str, after: Option<u64>) -> Result<Vec<Commit>> {
        let ch = channel_id.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT epoch, prev_commit_hash, commit_hash, body FROM commits \
                     WHERE channel_id = ?1 AND (?2 IS NULL OR epoch > ?2) ORDER BY epoch",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![ch, after.map(to_i64)], |r| {
                    Ok(Commit {
                        epoch: to_u64(r.get(0)?),
                        prev_commit_hash: r.get(1)?,
                        commit_hash: r.get(2)?,
                        commit: json(r.get(3)?),
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn put_envelopes(&self, channel_id: &str, envelopes: Vec<EnvelopeRow>) -> Result<()> {
        let ch = channel_id.to_owned();
        self.keys_conn
            .write(false, move |tx| {
                for e in &envelopes {
                    let known = tx
                        .prepare_cached("SELECT 1 FROM commits WHERE channel_id = ?1 AND epoch = ?2")
                        .and_then(|mut s| s.exists(params![ch, to_i64(e.epoch)]))
                        .map_err(backend)?;
                    if !known {
                        return Err(StoreError::NotFound("epoch"));
                    }
                    tx.execute(
                        "INSERT OR REPLACE INTO envelopes (channel_id, device_id, epoch, body) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![ch, e.device_id, to_i64(e.epoch), e.envelope.to_string()],
                    )
                    .map_err(backend)?;
                }
                Ok(())
            })
            .await
    }

    async fn envelopes_for(&self, channel_id: &str, device_id: &str) -> Result<Vec<EnvelopeRow>> {
        let (ch, id) = (channel_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT device_id, epoch, body FROM envelopes WHERE channel_id = ?1 AND device_id = ?2 \
                     ORDER BY epoch",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![ch, id], |r| {
                    Ok(EnvelopeRow {
                        device_id: r.get(0)?,
                        epoch: to_u64(r.get(1)?),
                        envelope: json(r.get(2)?),
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }
}
