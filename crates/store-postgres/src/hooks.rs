//! [`HookStore`] on PostgreSQL: the webhooks' delivery state in four tables (schema version 3,
//! `schema.rs`), the presence outbox in two more (version 4), with `channel_bans` (moderation: [`herald_store::Mutation::Ban`]), written by the writer.
//! Every write is one autocommitted statement; the outbox row of a deleted channel is written
//! by the writer, in the transaction that deletes the channel. The lease row is what lets one
//! node of several deliver a channel's events (the others skip it until the lease expires).

use crate::{PgStore, db};
use async_trait::async_trait;
use herald_store::hooks::{
    DeletedChannel, HookBacklog, HookStore, PresenceEvent, PresenceOutbox, PresenceRow, PresenceWrite,
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
    async fn write_presence(&self, writes: &[PresenceWrite]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        // Three statements in one transaction: the events in order (`n` follows the array
        // order), then each participant's last state in the batch (a later write of a
        // participant replaces an earlier one, so only the last one matters).
        let mut ev: [Vec<String>; 5] = Default::default();
        let mut ts: Vec<i64> = Vec::new();
        let mut last: std::collections::BTreeMap<(&str, &str), Option<(&str, &PresenceEvent)>> =
            std::collections::BTreeMap::new();
        for w in writes {
            match w {
                PresenceWrite::Event(e) => {
                    for (col, v) in ev.iter_mut().zip([&e.key, &e.app, &e.channel, &e.event, &e.data]) {
                        col.push(v.clone());
                    }
                    ts.push(e.ts_ms);
                }
                PresenceWrite::Present { channel, participant, node, removal } => {
                    last.insert((channel, participant), Some((node, removal)));
                }
                PresenceWrite::Absent { channel, participant } => {
                    last.insert((channel, participant), None);
                }
            }
        }
        let mut present: [Vec<String>; 7] = Default::default();
        let mut absent: [Vec<String>; 2] = Default::default();
        for ((channel, participant), state) in &last {
            match state {
                Some((node, r)) => {
                    for (col, v) in present.iter_mut().zip([
                        *channel,
                        *participant,
                        *node,
                        r.key.as_str(),
                        r.app.as_str(),
                        r.event.as_str(),
                        r.data.as_str(),
                    ]) {
                        col.push(v.to_owned());
                    }
                }
                None => {
                    absent[0].push((*channel).to_owned());
                    absent[1].push((*participant).to_owned());
                }
            }
        }
        self.key_tx(false, move |tx| {
            Box::pin(async move {
                if !ts.is_empty() {
                    tx.execute(
                        "INSERT INTO hook_presence (key, app, channel_id, event, data, ts_ms) \
                         SELECT k, a, c, e, d, t FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                         $5::text[], $6::bigint[]) WITH ORDINALITY AS x(k, a, c, e, d, t, o) ORDER BY o \
                         ON CONFLICT (key) DO NOTHING",
                        &[&ev[0], &ev[1], &ev[2], &ev[3], &ev[4], &ts],
                    )
                    .await
                    .map_err(db)?;
                }
                if !present[0].is_empty() {
                    tx.execute(
                        "INSERT INTO hook_presence_open (channel_id, participant, node, key, app, event, data) \
                         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::text[], $7::text[]) \
                         ON CONFLICT (channel_id, participant) DO UPDATE SET node = excluded.node, \
                         key = excluded.key, app = excluded.app, event = excluded.event, data = excluded.data",
                        &[&present[0], &present[1], &present[2], &present[3], &present[4], &present[5], &present[6]],
                    )
                    .await
                    .map_err(db)?;
                }
                if !absent[0].is_empty() {
                    tx.execute(
                        "DELETE FROM hook_presence_open o USING unnest($1::text[], $2::text[]) AS x(c, p) \
                         WHERE o.channel_id = x.c AND o.participant = x.p",
                        &[&absent[0], &absent[1]],
                    )
                    .await
                    .map_err(db)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn close_presence(&self, node: &str, now_ms: i64) -> Result<Vec<(String, String)>> {
        let node = node.to_owned();
        self.key_tx(false, move |tx| {
            Box::pin(async move {
                // Locks the node's rows first: two nodes closing one dead node write each
                // removal once (the outbox key is unique besides).
                let rows = tx
                    .query(
                        "DELETE FROM hook_presence_open WHERE node = $1 \
                         RETURNING channel_id, participant, key, app, event, data",
                        &[&node],
                    )
                    .await
                    .map_err(db)?;
                let mut gone: Vec<(String, String, String, String, String, String)> = rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                    .collect();
                gone.sort();
                let mut cols: [Vec<&str>; 5] = Default::default();
                let mut rooms: Vec<(String, String)> = Vec::new();
                for (channel, _, key, app, event, data) in &gone {
                    for (col, v) in cols.iter_mut().zip([key, app, channel, event, data]) {
                        col.push(v);
                    }
                    let room = (app.clone(), channel.clone());
                    if !rooms.contains(&room) {
                        rooms.push(room);
                    }
                }
                if !gone.is_empty() {
                    tx.execute(
                        "INSERT INTO hook_presence (key, app, channel_id, event, data, ts_ms) \
                         SELECT k, a, c, e, d, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                         $5::text[]) WITH ORDINALITY AS x(k, a, c, e, d, o) ORDER BY o \
                         ON CONFLICT (key) DO NOTHING",
                        &[&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &now_ms],
                    )
                    .await
                    .map_err(db)?;
                }
                Ok(rooms)
            })
        })
        .await
    }

    async fn present_nodes(&self) -> Result<Vec<String>> {
        self.read(|c| async move {
            let rows = c
                .query("SELECT DISTINCT node FROM hook_presence_open ORDER BY node", &[])
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
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
