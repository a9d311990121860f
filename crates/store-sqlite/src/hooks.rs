//! [`HookStore`] on SQLite: the webhooks' delivery state in four tables of the same database
//! (schema version 3, `schema.rs`), the presence outbox in two more (version 4), with `channel_bans` (moderation: [`herald_store::Mutation::Ban`]), written by the writer.
//! Cursors, acknowledgements and leases are written through a connection of their own, not the
//! group-commit writer (SQLite serializes the two; each of these writes is one short
//! transaction, durable like the store's commits); the outbox row of a deleted channel is
//! written by the writer, in the transaction that deletes the channel.

use crate::{SqliteStore, backend};
use async_trait::async_trait;
use herald_store::hooks::{
    DeletedChannel, HookBacklog, HookStore, PresenceEvent, PresenceOutbox, PresenceRow, PresenceWrite,
};
use herald_store::{Result, StoreError, seq_from_db, seq_to_db};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

/// The connection that writes the webhook state.
pub(crate) type HookWriter = Arc<Mutex<Connection>>;

/// Records a deleted channel in the outbox, inside the writer's transaction.
pub(crate) fn record_deleted(conn: &Connection, row: &herald_store::ChannelRow, ts_ms: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO hook_deleted (channel_id, app, name, title, ts_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![row.id, row.app, row.name, row.title, ts_ms]))
    .map_err(backend)?;
    Ok(())
}

impl SqliteStore {
    async fn hook_write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if self.tx.lock().is_none() {
            return Err(StoreError::Closed);
        }
        let conn = self.hook_writer.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock();
            let tx = conn.unchecked_transaction().map_err(backend)?;
            let r = f(&tx).map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(r)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("webhook state task failed: {e}")))?
    }
}

#[async_trait]
impl HookStore for SqliteStore {
    async fn hook_cursor(&self, hook: &str, channel_id: &str) -> Result<u64> {
        let (hook, ch) = (hook.to_owned(), channel_id.to_owned());
        self.read(move |c| {
            let seq: Option<i64> = c
                .prepare_cached("SELECT seq FROM hook_cursors WHERE hook = ?1 AND channel_id = ?2")
                .and_then(|mut s| s.query_row(params![hook, ch], |r| r.get(0)).optional())
                .map_err(backend)?;
            Ok(seq.map_or(0, seq_from_db))
        })
        .await
    }

    async fn set_hook_cursor(&self, hook: &str, channel_id: &str, seq: u64) -> Result<()> {
        let (hook, ch, seq) = (hook.to_owned(), channel_id.to_owned(), seq_to_db(seq));
        self.hook_write(move |c| {
            c.execute(
                "INSERT INTO hook_cursors (hook, channel_id, seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (hook, channel_id) DO UPDATE SET seq = max(seq, excluded.seq)",
                params![hook, ch, seq],
            )
            .map(drop)
        })
        .await
    }

    async fn hook_backlog(&self, hook: &str, limit: u32) -> Result<Vec<HookBacklog>> {
        let hook = hook.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT id, app, delivered, head FROM ( \
                       SELECT c.id AS id, c.app AS app, COALESCE(h.seq, 0) AS delivered, \
                              (SELECT COALESCE(MAX(e.seq), 0) FROM entries e WHERE e.channel_id = c.id) AS head \
                       FROM channels c LEFT JOIN hook_cursors h ON h.hook = ?1 AND h.channel_id = c.id) \
                     WHERE head > delivered ORDER BY id LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![hook, limit], |r| {
                    Ok(HookBacklog {
                        channel: r.get(0)?,
                        app: r.get(1)?,
                        delivered: seq_from_db(r.get(2)?),
                        head: seq_from_db(r.get(3)?),
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn hook_deleted(&self, hook: &str, limit: u32) -> Result<Vec<DeletedChannel>> {
        let hook = hook.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT d.channel_id, d.app, d.name, d.title, d.ts_ms FROM hook_deleted d \
                     WHERE NOT EXISTS (SELECT 1 FROM hook_acks a WHERE a.hook = ?1 AND a.channel_id = d.channel_id) \
                     ORDER BY d.rowid LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![hook, limit], |r| {
                    Ok(DeletedChannel {
                        channel: r.get(0)?,
                        app: r.get(1)?,
                        name: r.get(2)?,
                        title: r.get(3)?,
                        ts_ms: r.get(4)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn ack_hook_deleted(&self, hook: &str, channel_id: &str) -> Result<()> {
        let (hook, ch) = (hook.to_owned(), channel_id.to_owned());
        self.hook_write(move |c| {
            c.execute("INSERT OR IGNORE INTO hook_acks (hook, channel_id) VALUES (?1, ?2)", params![hook, ch])
                .map(drop)
        })
        .await
    }

    async fn claim_hook(
        &self,
        hook: &str,
        channel_id: &str,
        node: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let (hook, ch, node) = (hook.to_owned(), channel_id.to_owned(), node.to_owned());
        self.hook_write(move |c| {
            let n = c.execute(
                "INSERT INTO hook_leases (hook, channel_id, node, until_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (hook, channel_id) DO UPDATE SET node = excluded.node, until_ms = excluded.until_ms \
                 WHERE hook_leases.node = excluded.node OR hook_leases.until_ms < ?5",
                params![hook, ch, node, until_ms, now_ms],
            )?;
            Ok(n > 0)
        })
        .await
    }
}

#[async_trait]
impl PresenceOutbox for SqliteStore {
    async fn write_presence(&self, writes: &[PresenceWrite]) -> Result<()> {
        let writes = writes.to_vec();
        self.hook_write(move |c| {
            let mut event = c.prepare_cached(
                "INSERT OR IGNORE INTO hook_presence (key, app, channel_id, event, data, ts_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut present = c.prepare_cached(
                "INSERT OR REPLACE INTO hook_presence_open \
                 (channel_id, participant, node, key, app, event, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut absent = c.prepare_cached(
                "DELETE FROM hook_presence_open WHERE channel_id = ?1 AND participant = ?2",
            )?;
            for w in &writes {
                match w {
                    PresenceWrite::Event(e) => {
                        event.execute(params![e.key, e.app, e.channel, e.event, e.data, e.ts_ms])?;
                    }
                    PresenceWrite::Present { channel, participant, node, removal: r } => {
                        present.execute(params![
                            channel,
                            participant,
                            node,
                            r.key,
                            r.app,
                            r.event,
                            r.data
                        ])?;
                    }
                    PresenceWrite::Absent { channel, participant } => {
                        absent.execute(params![channel, participant])?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn close_presence(&self, node: &str, now_ms: i64) -> Result<Vec<(String, String)>> {
        let node = node.to_owned();
        self.hook_write(move |c| {
            let mut rooms = c.prepare_cached(
                "SELECT DISTINCT app, channel_id FROM hook_presence_open WHERE node = ?1 ORDER BY app, channel_id",
            )?;
            let rooms =
                rooms.query_map(params![node], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            c.prepare_cached(
                "INSERT OR IGNORE INTO hook_presence (key, app, channel_id, event, data, ts_ms) \
                 SELECT key, app, channel_id, event, data, ?2 FROM hook_presence_open WHERE node = ?1 \
                 ORDER BY channel_id, participant",
            )?
            .execute(params![node, now_ms])?;
            c.prepare_cached("DELETE FROM hook_presence_open WHERE node = ?1")?.execute(params![node])?;
            Ok(rooms)
        })
        .await
    }

    async fn present_nodes(&self) -> Result<Vec<String>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached("SELECT DISTINCT node FROM hook_presence_open ORDER BY node")
                .map_err(backend)?;
            let rows = s.query_map([], |r| r.get(0)).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<String>>>().map_err(backend)
        })
        .await
    }

    async fn presence_backlog(&self, hook: &str, limit: u32) -> Result<Vec<(String, String)>> {
        let hook = hook.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT app, channel_id FROM hook_presence p \
                     WHERE NOT EXISTS (SELECT 1 FROM hook_presence_acks a WHERE a.hook = ?1 AND a.n = p.n) \
                     GROUP BY app, channel_id ORDER BY min(n) LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = s.query_map(params![hook, limit], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn hook_presence(&self, hook: &str, channel_id: &str, limit: u32) -> Result<Vec<PresenceRow>> {
        let (hook, ch) = (hook.to_owned(), channel_id.to_owned());
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT n, key, app, channel_id, event, data, ts_ms FROM hook_presence p \
                     WHERE channel_id = ?2 \
                     AND NOT EXISTS (SELECT 1 FROM hook_presence_acks a WHERE a.hook = ?1 AND a.n = p.n) \
                     ORDER BY n LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![hook, ch, limit], |r| {
                    Ok(PresenceRow {
                        n: seq_from_db(r.get(0)?),
                        event: PresenceEvent {
                            key: r.get(1)?,
                            app: r.get(2)?,
                            channel: r.get(3)?,
                            event: r.get(4)?,
                            data: r.get(5)?,
                            ts_ms: r.get(6)?,
                        },
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn ack_hook_presence(&self, hook: &str, n: u64) -> Result<()> {
        let (hook, n) = (hook.to_owned(), seq_to_db(n));
        self.hook_write(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO hook_presence_acks (hook, n) \
                 SELECT ?1, n FROM hook_presence WHERE n = ?2",
                params![hook, n],
            )
            .map(drop)
        })
        .await
    }

    async fn prune_presence(&self, hooks: &[String]) -> Result<u64> {
        if hooks.is_empty() {
            return Ok(0);
        }
        let mut hooks = hooks.to_vec();
        hooks.sort();
        hooks.dedup();
        self.hook_write(move |c| {
            let marks = (0..hooks.len()).map(|i| format!("?{}", i + 1)).collect::<Vec<_>>().join(", ");
            let n = c.execute(
                &format!(
                    "DELETE FROM hook_presence WHERE n IN (SELECT n FROM hook_presence_acks \
                     WHERE hook IN ({marks}) GROUP BY n HAVING count(DISTINCT hook) = {})",
                    hooks.len()
                ),
                rusqlite::params_from_iter(hooks.iter()),
            )?;
            if n > 0 {
                c.execute("DELETE FROM hook_presence_acks WHERE n NOT IN (SELECT n FROM hook_presence)", [])?;
            }
            Ok(n as u64)
        })
        .await
    }
}
