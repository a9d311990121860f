//! The writer's statements, prepared once per connection (deadpool's statement cache keeps
//! them): a pipeline only keeps its order if no statement needs a `Parse` round trip first.

use crate::apply::Fail;
use crate::rows::{CHANNEL_COLS, ENTRY_COLS, MESSAGE_SELECT};
use herald_store::StoreError;
use tokio_postgres::Statement;

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        /// Every statement the writer runs.
        pub struct Stmts { $(pub $name: Statement,)* }

        impl Stmts {
            /// Prepares (or takes from the connection's cache) every statement.
            pub async fn prepare(client: &deadpool_postgres::ClientWrapper) -> Result<Stmts, Fail> {
                let sqls: Vec<String> = vec![$($sql.to_string(),)*];
                let mut prepared = Vec::with_capacity(sqls.len());
                for chunk in sqls.chunks(16) {
                    let futs = chunk.iter().map(|q| client.prepare_cached(q));
                    prepared.extend(futures::future::try_join_all(futs).await?);
                }
                let mut it = prepared.into_iter();
                Ok(Stmts { $($name: next(&mut it)?,)* })
            }
        }
    };
}

fn next(it: &mut std::vec::IntoIter<Statement>) -> Result<Statement, Fail> {
    // The iterator holds exactly one statement per field, in field order.
    it.next().ok_or_else(|| Fail::Store(StoreError::Backend("postgres: statement list out of step".into())))
}

statements! {
    begin = "BEGIN";
    commit = "COMMIT";
    rollback = "ROLLBACK";
    rollback_to = "ROLLBACK TO SAVEPOINT job";
    lock_channels = format!("SELECT {CHANNEL_COLS} FROM channels WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    channel_by_name = format!("SELECT {CHANNEL_COLS} FROM channels WHERE app = $1 AND name = $2");
    set_head = "UPDATE channels SET head_seq = $2, head_hash = $3 WHERE id = $1";
    is_member = "SELECT 1 FROM members WHERE channel_id = $1 AND user_id = $2";
    member_ids = "SELECT user_id FROM members WHERE channel_id = $1 ORDER BY user_id";
    user_name = "SELECT name FROM users WHERE app = $1 AND id = $2";
    user_insert = "INSERT INTO users (app, id, name, kind) VALUES ($1, $2, $3, $4) ON CONFLICT (app, id) DO NOTHING";
    user_update = "UPDATE users SET name = $3, kind = $4 WHERE app = $1 AND id = $2 \
        AND (name IS DISTINCT FROM $3 OR kind IS DISTINCT FROM $4)";
    insert_channel = "INSERT INTO channels (id, app, name, title, encrypted, policy, created_by, created_ms, \
        head_seq, head_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)";
    insert_member = "INSERT INTO members (channel_id, user_id, last_read) VALUES ($1, $2, 0)";
    delete_member = "DELETE FROM members WHERE channel_id = $1 AND user_id = $2";
    // The entry and its content in one statement: one execution instead of two per entry.
    insert_entry = format!("WITH c AS (INSERT INTO entry_contents (channel_id, seq, content, salt) \
        VALUES ($1, $2, $17, $18)) INSERT INTO entries ({ENTRY_COLS}) VALUES \
        ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $19)");
    // A message: its entry, content and row in one statement.
    insert_send = format!("WITH c AS (INSERT INTO entry_contents (channel_id, seq, content, salt) \
        VALUES ($1, $2, $17, $18)), m AS (INSERT INTO messages (channel_id, id, seq, author, type, content, \
        reply_to, reply_author, client_id, ts_ms, epoch) VALUES ($1, $10, $2, $4, $11, $17, $20, $16, $12, $6, $19)) \
        INSERT INTO entries ({ENTRY_COLS}) VALUES \
        ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $19)");
    // A planned run of sends in two statements instead of four per send (see `writer.rs`):
    // the first planned send whose checks fail (1-based; no row: all pass) ...
    run_checks = "SELECT t.i FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
        WITH ORDINALITY AS t(ch, member, author, cid, i) \
        WHERE (t.member IS NOT NULL AND NOT EXISTS (SELECT 1 FROM members m \
            WHERE m.channel_id = t.ch AND m.user_id = t.member)) \
        OR (t.cid IS NOT NULL AND EXISTS (SELECT 1 FROM client_ids k \
            WHERE k.channel_id = t.ch AND k.author = t.author AND k.client_id = t.cid)) \
        ORDER BY t.i LIMIT 1";
    // ... and every send's entry, content, message row and client id, from arrays.
    run_inserts = format!("WITH t AS (SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], \
        $5::text[], $6::int8[], $7::bytea[], $8::bytea[], $9::bytea[], $10::text[], $11::text[], $12::text[], \
        $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bytea[], $19::int8[]) \
        AS t(channel_id, seq, kind, author, ref, ts_ms, content_hash, prev_hash, hash, x_id, x_msg_type, \
        x_client_id, x_name, x_title, x_message_id, x_reply_author, content, salt, x_epoch)), \
        c AS (INSERT INTO entry_contents (channel_id, seq, content, salt) \
            SELECT channel_id, seq, content, salt FROM t), \
        m AS (INSERT INTO messages (channel_id, id, seq, author, type, content, reply_to, reply_author, \
            client_id, ts_ms, epoch) SELECT channel_id, x_id, seq, author, x_msg_type, content, NULL, \
            x_reply_author, x_client_id, ts_ms, x_epoch FROM t), \
        k AS (INSERT INTO client_ids (channel_id, author, client_id, message_id) \
            SELECT channel_id, author, x_client_id, x_id FROM t WHERE x_client_id IS NOT NULL) \
        INSERT INTO entries ({ENTRY_COLS}) SELECT channel_id, seq, kind, author, ref, ts_ms, content_hash, \
        prev_hash, hash, x_id, x_msg_type, x_client_id, x_name, x_title, x_message_id, x_reply_author, x_epoch \
        FROM t");
    del_entries = "DELETE FROM entries WHERE channel_id = $1";
    del_contents = "DELETE FROM entry_contents WHERE channel_id = $1";
    del_messages = "DELETE FROM messages WHERE channel_id = $1";
    del_reactions = "DELETE FROM reactions WHERE channel_id = $1";
    del_members = "DELETE FROM members WHERE channel_id = $1";
    del_client_ids = "DELETE FROM client_ids WHERE channel_id = $1";
    del_channel = "DELETE FROM channels WHERE id = $1";
    del_bans = "DELETE FROM channel_bans WHERE channel_id = $1";
    is_banned = "SELECT 1 FROM channel_bans WHERE channel_id = $1 AND user_id = $2 \
        AND (until_ms IS NULL OR until_ms > $3)";
    ban = "INSERT INTO channel_bans (channel_id, user_id, until_ms) VALUES ($1, $2, $3) \
        ON CONFLICT (channel_id, user_id) DO UPDATE SET until_ms = excluded.until_ms";
    unban = "DELETE FROM channel_bans WHERE channel_id = $1 AND user_id = $2";
    record_deleted = "INSERT INTO hook_deleted (channel_id, app, name, title, ts_ms) VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (channel_id) DO UPDATE SET app = excluded.app, name = excluded.name, \
        title = excluded.title, ts_ms = excluded.ts_ms";
    client_id = "SELECT message_id FROM client_ids WHERE channel_id = $1 AND author = $2 AND client_id = $3";
    message = format!("{MESSAGE_SELECT} WHERE m.channel_id = $1 AND m.id = $2");
    reactions = "SELECT id, emoji, user_id FROM reactions WHERE channel_id = $1 AND message_id = $2 ORDER BY seq";
    insert_client_id = "INSERT INTO client_ids (channel_id, author, client_id, message_id) VALUES ($1, $2, $3, $4)";
    message_author = "SELECT author, seq FROM messages WHERE channel_id = $1 AND id = $2";
    erase_message = "DELETE FROM entry_contents WHERE channel_id = $1 AND seq = $2";
    erase_edits = "DELETE FROM entry_contents c USING entries e WHERE e.channel_id = $1 \
        AND e.kind = 'message_edited' AND e.ref = $2 AND c.channel_id = e.channel_id AND c.seq = e.seq";
    del_reactions_of = "DELETE FROM reactions WHERE channel_id = $1 AND message_id = $2";
    del_message = "DELETE FROM messages WHERE channel_id = $1 AND id = $2";
    edit_message = "UPDATE messages SET content = $3, edited_ms = $4, epoch = $5 WHERE channel_id = $1 AND id = $2";
    head_commit = "SELECT epoch, commit_hash FROM commits WHERE channel_id = $1 ORDER BY epoch DESC LIMIT 1";
    insert_commit = "INSERT INTO commits (channel_id, epoch, prev_commit_hash, commit_hash, body) \
        VALUES ($1, $2, $3, $4, $5)";
    upsert_envelope = "INSERT INTO envelopes (channel_id, device_id, epoch, body) VALUES ($1, $2, $3, $4) \
        ON CONFLICT (channel_id, device_id, epoch) DO UPDATE SET body = excluded.body";
    del_commits = "DELETE FROM commits WHERE channel_id = $1";
    del_envelopes = "DELETE FROM envelopes WHERE channel_id = $1";
    insert_reaction = "INSERT INTO reactions (id, channel_id, message_id, user_id, emoji, seq) \
        VALUES ($1, $2, $3, $4, $5, $6)";
    reaction_of = "SELECT user_id, message_id FROM reactions WHERE channel_id = $1 AND id = $2";
    del_reaction = "DELETE FROM reactions WHERE channel_id = $1 AND id = $2";
    read_mark = "UPDATE members SET last_read = GREATEST(last_read, $3) WHERE channel_id = $1 AND user_id = $2";
}
