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
    del_entries = "DELETE FROM entries WHERE channel_id = $1";
    del_contents = "DELETE FROM entry_contents WHERE channel_id = $1";
    del_messages = "DELETE FROM messages WHERE channel_id = $1";
    del_reactions = "DELETE FROM reactions WHERE channel_id = $1";
    del_members = "DELETE FROM members WHERE channel_id = $1";
    del_client_ids = "DELETE FROM client_ids WHERE channel_id = $1";
    del_channel = "DELETE FROM channels WHERE id = $1";
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
