//! [`HookStore`] on PostgreSQL: the webhooks' delivery state in four tables (schema version 3,
//! `schema.rs`), with `channel_bans` (moderation: [`herald_store::Mutation::Ban`]), written by the writer.
//! Every write is one autocommitted statement; the outbox row of a deleted channel is written
//! by the writer, in the transaction that deletes the channel. The lease row is what lets one
//! node of several deliver a channel's events (the others skip it until the lease expires).

use crate::{PgStore, db};
use async_trait::async_trait;
use herald_store::hooks::{DeletedChannel, HookBacklog, HookStore};
use herald_store::{Result, seq_from_db, seq_to_db};

#[async_trait]
impl HookStore for PgStore {
    async fn hook_cursor(&self, hook: &str, channel_id: &str) -> Result<u64> {
        self.read(|c| async move {
            let s = c
                .prepare_cached("SELECT seq FROM hook_cursors WHERE hook = $1 AND channel_id = $2")
                .await
                .map_err(db)?;
            let row = c.query_opt(&s, &[&hook, &channel_id]).await.map_err(db)?;
            Ok(match row {
                Some(r) => seq_from_db(r.try_get(0).map_err(db)?),
                None => 0,
            })
        })
        .await
    }

    async fn set_hook_cursor(&self, hook: &str, channel_id: &str, seq: u64) -> Result<()> {
        let seq = seq_to_db(seq);
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "INSERT INTO hook_cursors (hook, channel_id, seq) VALUES ($1, $2, $3) \
                     ON CONFLICT (hook, channel_id) DO UPDATE SET seq = GREATEST(hook_cursors.seq, excluded.seq)",
                )
                .await
                .map_err(db)?;
            c.execute(&s, &[&hook, &channel_id, &seq]).await.map_err(db).map(drop)
        })
        .await
    }

    async fn hook_backlog(&self, hook: &str, limit: u32) -> Result<Vec<HookBacklog>> {
        let limit = i64::from(limit);
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT c.id, c.app, COALESCE(h.seq, 0), c.head_seq FROM channels c \
                     LEFT JOIN hook_cursors h ON h.hook = $1 AND h.channel_id = c.id \
                     WHERE c.head_seq > COALESCE(h.seq, 0) ORDER BY c.id LIMIT $2",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for r in c.query(&s, &[&hook, &limit]).await.map_err(db)? {
                out.push(HookBacklog {
                    channel: r.try_get(0).map_err(db)?,
                    app: r.try_get(1).map_err(db)?,
                    delivered: seq_from_db(r.try_get(2).map_err(db)?),
                    head: seq_from_db(r.try_get(3).map_err(db)?),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn hook_deleted(&self, hook: &str, limit: u32) -> Result<Vec<DeletedChannel>> {
        let limit = i64::from(limit);
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT d.channel_id, d.app, d.name, d.title, d.ts_ms FROM hook_deleted d \
                     WHERE NOT EXISTS (SELECT 1 FROM hook_acks a WHERE a.hook = $1 AND a.channel_id = d.channel_id) \
                     ORDER BY d.n LIMIT $2",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for r in c.query(&s, &[&hook, &limit]).await.map_err(db)? {
                out.push(DeletedChannel {
                    channel: r.try_get(0).map_err(db)?,
                    app: r.try_get(1).map_err(db)?,
                    name: r.try_get(2).map_err(db)?,
                    title: r.try_get(3).map_err(db)?,
                    ts_ms: r.try_get(4).map_err(db)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn ack_hook_deleted(&self, hook: &str, channel_id: &str) -> Result<()> {
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "INSERT INTO hook_acks (hook, channel_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(db)?;
            c.execute(&s, &[&hook, &channel_id]).await.map_err(db).map(drop)
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
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "INSERT INTO hook_leases (hook, channel_id, node, until_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (hook, channel_id) DO UPDATE SET node = excluded.node, until_ms = excluded.until_ms \
                     WHERE hook_leases.node = excluded.node OR hook_leases.until_ms < $5",
                )
                .await
                .map_err(db)?;
            let n = c.execute(&s, &[&hook, &channel_id, &node, &until_ms, &now_ms]).await.map_err(db)?;
            Ok(n > 0)
        })
        .await
    }
}
