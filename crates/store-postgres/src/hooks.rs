//! [`HookStore`] on PostgreSQL: the webhooks' delivery state in four tables (schema version 3,
//! `schema.rs`), the presence outbox in two more (version 4), with `channel_bans` (moderation: [`herald_store::Mutation::Ban`]), written by the writer.
//! Every write is one autocommitted statement; the outbox row of a deleted channel is written
//! by the writer, in the transaction that deletes the channel. The lease row is what lets one
//! node of several deliver a channel's events (the others skip it until the lease expires).

use crate::{PgStore, db};
use async_trait::async_trait;
use herald_store::hooks::{
    DeletedChannel, HookBacklog, HookStore, PresenceEvent, PresenceOutbox, PresenceRow,
};
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

#[async_trait]
impl PresenceOutbox for PgStore {
    async fn add_presence(&self, events: &[PresenceEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // One statement: the rows commit together, in order (`n` follows the array order).
        let mut cols: [Vec<&str>; 5] = Default::default();
        let mut ts: Vec<i64> = Vec::with_capacity(events.len());
        for e in events {
            cols[0].push(&e.key);
            cols[1].push(&e.app);
            cols[2].push(&e.channel);
            cols[3].push(&e.event);
            cols[4].push(&e.data);
            ts.push(e.ts_ms);
        }
        let (cols, ts) = (&cols, &ts);
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "INSERT INTO hook_presence (key, app, channel_id, event, data, ts_ms) \
                     SELECT k, a, c, e, d, t FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::bigint[]) WITH ORDINALITY AS x(k, a, c, e, d, t, o) ORDER BY o \
                     ON CONFLICT (key) DO NOTHING",
                )
                .await
                .map_err(db)?;
            c.execute(&s, &[&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], ts]).await.map_err(db).map(drop)
        })
        .await
    }

    async fn presence_backlog(&self, hook: &str, limit: u32) -> Result<Vec<(String, String)>> {
        let limit = i64::from(limit);
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT app, channel_id FROM hook_presence p \
                     WHERE NOT EXISTS (SELECT 1 FROM hook_presence_acks a WHERE a.hook = $1 AND a.n = p.n) \
                     GROUP BY app, channel_id ORDER BY min(n) LIMIT $2",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for r in c.query(&s, &[&hook, &limit]).await.map_err(db)? {
                out.push((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?));
            }
            Ok(out)
        })
        .await
    }

    async fn hook_presence(&self, hook: &str, channel_id: &str, limit: u32) -> Result<Vec<PresenceRow>> {
        let limit = i64::from(limit);
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT n, key, app, channel_id, event, data, ts_ms FROM hook_presence p \
                     WHERE channel_id = $2 \
                     AND NOT EXISTS (SELECT 1 FROM hook_presence_acks a WHERE a.hook = $1 AND a.n = p.n) \
                     ORDER BY n LIMIT $3",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for r in c.query(&s, &[&hook, &channel_id, &limit]).await.map_err(db)? {
                out.push(PresenceRow {
                    n: seq_from_db(r.try_get(0).map_err(db)?),
                    event: PresenceEvent {
                        key: r.try_get(1).map_err(db)?,
                        app: r.try_get(2).map_err(db)?,
                        channel: r.try_get(3).map_err(db)?,
                        event: r.try_get(4).map_err(db)?,
                        data: r.try_get(5).map_err(db)?,
                        ts_ms: r.try_get(6).map_err(db)?,
                    },
                });
            }
            Ok(out)
        })
        .await
    }

    async fn ack_hook_presence(&self, hook: &str, n: u64) -> Result<()> {
        let n = seq_to_db(n);
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "INSERT INTO hook_presence_acks (hook, n) SELECT $1, n FROM hook_presence WHERE n = $2 \
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(db)?;
            c.execute(&s, &[&hook, &n]).await.map_err(db).map(drop)
        })
        .await
    }

    async fn prune_presence(&self, hooks: &[String]) -> Result<u64> {
        let mut hooks = hooks.to_vec();
        hooks.sort();
        hooks.dedup();
        if hooks.is_empty() {
            return Ok(0);
        }
        let k = i64::try_from(hooks.len()).unwrap_or(i64::MAX);
        let hooks = &hooks;
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "WITH done AS (DELETE FROM hook_presence WHERE n IN (SELECT n FROM hook_presence_acks \
                     WHERE hook = ANY($1) GROUP BY n HAVING count(DISTINCT hook) = $2) RETURNING n), \
                     acks AS (DELETE FROM hook_presence_acks WHERE n IN (SELECT n FROM done)) \
                     SELECT count(*) FROM done",
                )
                .await
                .map_err(db)?;
            let row = c.query_one(&s, &[hooks, &k]).await.map_err(db)?;
            let n: i64 = row.try_get(0).map_err(db)?;
            Ok(seq_from_db(n))
        })
        .await
    }
}
