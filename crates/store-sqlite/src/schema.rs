//! The database schema and its version (`PRAGMA user_version`), created on open.

use crate::backend;
use herald_store::{Result, StoreError};
use rusqlite::Connection;

/// The schema version this code writes and reads.
pub const VERSION: i64 = 7;

const V1: &str = r#"
CREATE TABLE channels (
    id          TEXT PRIMARY KEY,
    app         TEXT NOT NULL,
    name        TEXT,
    title       TEXT,
    encrypted   INTEGER NOT NULL,
    policy      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE UNIQUE INDEX channels_app_name ON channels(app, name) WHERE name IS NOT NULL;

CREATE TABLE users (
    app   TEXT NOT NULL,
    id    TEXT NOT NULL,
    name  TEXT,
    kind  TEXT NOT NULL,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;

CREATE TABLE members (
    channel_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    last_read   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_user ON members(user_id, channel_id);

CREATE TABLE entries (
    channel_id    TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    author        TEXT NOT NULL,
    ref           TEXT NOT NULL,
    ts_ms         INTEGER NOT NULL,
    content       TEXT,
    salt          BLOB,
    content_hash  BLOB NOT NULL,
    prev_hash     BLOB NOT NULL,
    hash          BLOB NOT NULL,
    x_id          TEXT,
    x_msg_type    TEXT,
    x_client_id   TEXT,
    x_name        TEXT,
    x_title       TEXT,
    x_message_id  TEXT,
    x_reply_author TEXT,
    PRIMARY KEY (channel_id, seq)
) WITHOUT ROWID;
-- Only a hard delete looks entries up by `ref`, for the edits of one message.
CREATE INDEX entries_edits ON entries(channel_id, ref) WHERE kind = 'message_edited';

CREATE TABLE messages (
    channel_id    TEXT NOT NULL,
    id            TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    author        TEXT NOT NULL,
    type          TEXT NOT NULL,
    content       TEXT NOT NULL,
    reply_to      TEXT,
    reply_author  TEXT,
    client_id     TEXT,
    ts_ms         INTEGER NOT NULL,
    edited_ms     INTEGER,
    PRIMARY KEY (channel_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_id ON messages(channel_id, id);

CREATE TABLE reactions (
    id          TEXT PRIMARY KEY,
    channel_id  TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    emoji       TEXT NOT NULL,
    seq         INTEGER NOT NULL
);
CREATE INDEX reactions_message ON reactions(channel_id, message_id, seq);

CREATE TABLE client_ids (
    channel_id  TEXT NOT NULL,
    author      TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    PRIMARY KEY (channel_id, author, client_id)
) WITHOUT ROWID;
"#;

/// Version 2: end-to-end encryption (PROTOCOL.md §7). The key epoch of encrypted messages
/// and edits; devices and their one-time keys; DM inboxes; roster commits and key envelopes.
/// Every table that holds ciphertext or keys is deleted from like a hard delete (secure_delete,
/// then a `TRUNCATE` checkpoint).
const V2: &str = r#"
ALTER TABLE entries ADD COLUMN x_epoch INTEGER;
ALTER TABLE messages ADD COLUMN epoch INTEGER;

CREATE TABLE devices (
    app                 TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    keeper              INTEGER NOT NULL,
    revoked             INTEGER NOT NULL DEFAULT 0,
    identity            TEXT NOT NULL,
    identity_signature  TEXT NOT NULL,
    fallback_key        TEXT,
    PRIMARY KEY (app, device_id)
) WITHOUT ROWID;
CREATE INDEX devices_user ON devices(app, user_id);

-- A claimed key keeps its row (its key_id stays used) with `key` erased.
CREATE TABLE one_time_keys (
    n          INTEGER PRIMARY KEY,
    app        TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key        TEXT
);
CREATE UNIQUE INDEX one_time_keys_id ON one_time_keys(app, device_id, key_id);
CREATE INDEX one_time_keys_free ON one_time_keys(app, device_id, n) WHERE key IS NOT NULL;

CREATE TABLE dm_inbox (
    n            INTEGER PRIMARY KEY,
    app          TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    to_user      TEXT NOT NULL,
    from_user    TEXT NOT NULL,
    from_device  TEXT NOT NULL,
    body         TEXT NOT NULL,
    ts_ms        INTEGER NOT NULL
);
CREATE INDEX dm_inbox_device ON dm_inbox(app, device_id, n);
CREATE INDEX dm_inbox_ts ON dm_inbox(ts_ms);

CREATE TABLE dm_client_ids (
    app          TEXT NOT NULL,
    from_device  TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    ids          TEXT NOT NULL,
    PRIMARY KEY (app, from_device, client_id)
) WITHOUT ROWID;

CREATE TABLE commits (
    channel_id        TEXT NOT NULL,
    epoch             INTEGER NOT NULL,
    prev_commit_hash  TEXT NOT NULL,
    commit_hash       TEXT NOT NULL,
    body              TEXT NOT NULL,
    PRIMARY KEY (channel_id, epoch)
) WITHOUT ROWID;

CREATE TABLE envelopes (
    channel_id  TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (channel_id, device_id, epoch)
) WITHOUT ROWID;
CREATE INDEX envelopes_device ON envelopes(device_id);
"#;

/// Version 3: the webhooks' delivery state (cursors, the deleted-channel outbox and its
/// acknowledgements, leases; `hooks.rs`) and moderation's `channel_bans`. `IF NOT EXISTS`: a
/// database of a build that created them outside the versioned schema keeps its rows.
const V3: &str = r#"
CREATE TABLE IF NOT EXISTS hook_cursors (
    hook        TEXT NOT NULL,
    channel_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (hook, channel_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hook_deleted (
    channel_id  TEXT NOT NULL UNIQUE,
    app         TEXT NOT NULL,
    name        TEXT,
    title       TEXT,
    ts_ms       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hook_acks (
    hook        TEXT NOT NULL,
    channel_id  TEXT NOT NULL,
    PRIMARY KEY (hook, channel_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_bans (
    channel_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    until_ms    INTEGER,
    PRIMARY KEY (channel_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hook_leases (
    hook        TEXT NOT NULL,
    channel_id  TEXT NOT NULL,
    node        TEXT NOT NULL,
    until_ms    INTEGER NOT NULL,
    PRIMARY KEY (hook, channel_id)
) WITHOUT ROWID;
"#;

/// Version 4: the webhooks' room presence outbox (`hooks.rs`): presence events written by
/// the node hosting the participant, acknowledged per webhook, pruned once every webhook has.
const V4: &str = r#"
CREATE TABLE IF NOT EXISTS hook_presence (
    n           INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL UNIQUE,
    app         TEXT NOT NULL,
    channel_id  TEXT NOT NULL,
    event       TEXT NOT NULL,
    data        TEXT NOT NULL,
    ts_ms       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hook_presence_channel ON hook_presence(channel_id, n);
CREATE TABLE IF NOT EXISTS hook_presence_acks (
    hook  TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (hook, n)
) WITHOUT ROWID;
"#;

/// Version 5: the participants present on each node (`hooks.rs`), whose removals are written
/// to the presence outbox when their node is found dead or restarts.
const V5: &str = r#"
CREATE TABLE IF NOT EXISTS hook_presence_open (
    channel_id   TEXT NOT NULL,
    participant  TEXT NOT NULL,
    node         TEXT NOT NULL,
    key          TEXT NOT NULL,
    app          TEXT NOT NULL,
    event        TEXT NOT NULL,
    data         TEXT NOT NULL,
    PRIMARY KEY (channel_id, participant)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hook_presence_open_node ON hook_presence_open(node);
"#;

/// Version 6: a message row holds only what its entry does not: the id (unique per channel),
/// and what the last edit changed (content, time, epoch; NULL while never edited). The rest,
/// author, type, original content, reply, client id, time and epoch, is read from the
/// `message` entry at the same `seq`: the rows no longer store every message twice. Rebuilt
/// in place from version 5's rows (SQLite cannot drop the old columns' NOT NULL).
const V6: &str = r#"
CREATE TABLE messages_v6 (
    channel_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    id          TEXT NOT NULL,
    content     TEXT,
    edited_ms   INTEGER,
    epoch       INTEGER,
    PRIMARY KEY (channel_id, seq)
) WITHOUT ROWID;
INSERT INTO messages_v6 (channel_id, seq, id, content, edited_ms, epoch)
    SELECT channel_id, seq, id,
           CASE WHEN edited_ms IS NULL THEN NULL ELSE content END,
           edited_ms,
           CASE WHEN edited_ms IS NULL THEN NULL ELSE epoch END
    FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v6 RENAME TO messages;
CREATE UNIQUE INDEX messages_id ON messages(channel_id, id);
"#;

/// Version 7: a message row is keyed by its id, `(channel_id, id)`, and has no second
/// index. Version 6 kept it under `(channel_id, seq)` with a unique index on the id: two
/// B-trees besides the log's for every send (about a tenth of an append's cost: BENCHMARKS.md).
/// A lookup by id reads this key; history walks the log's own `(channel_id, seq)` key and
/// finds each message's row by the id its entry carries (`x_id`).
const V7: &str = r#"
CREATE TABLE messages_v7 (
    channel_id  TEXT NOT NULL,
    id          TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    content     TEXT,
    edited_ms   INTEGER,
    epoch       INTEGER,
    PRIMARY KEY (channel_id, id)
) WITHOUT ROWID;
INSERT INTO messages_v7 (channel_id, id, seq, content, edited_ms, epoch)
    SELECT channel_id, id, seq, content, edited_ms, epoch FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v7 RENAME TO messages;
"#;

/// Creates the schema on an empty database, or checks the version of an existing one.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
    match version {
        0..=6 => {
            let tx =
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            if version == 0 {
                tx.execute_batch(V1).map_err(backend)?;
            }
            if version <= 1 {
                tx.execute_batch(V2).map_err(backend)?;
            }
            if version <= 2 {
                tx.execute_batch(V3).map_err(backend)?;
            }
            if version <= 3 {
                tx.execute_batch(V4).map_err(backend)?;
            }
            if version <= 4 {
                tx.execute_batch(V5).map_err(backend)?;
            }
            if version <= 5 {
                tx.execute_batch(V6).map_err(backend)?;
            }
            tx.execute_batch(V7).map_err(backend)?;
            tx.pragma_update(None, "user_version", VERSION).map_err(backend)?;
            tx.commit().map_err(backend)
        }
        VERSION => Ok(()),
        v => Err(StoreError::Backend(format!(
            "database schema version {v} is newer than this server understands ({VERSION})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut s =
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
        s.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    }

    /// A database left at version 6 (message rows keyed by seq), 5 (every message stored
    /// twice), 4 (presence without the present participants), 3 (webhooks without presence),
    /// 2 (main's E2EE schema) or 1 upgrades in place to the current version, and its messages
    /// read back the same.
    #[test]
    fn older_versions_upgrade_in_place() {
        for old in [1, 2, 3, 4, 5, 6] {
            let mut conn = Connection::open_in_memory().unwrap();
            conn.execute_batch(V1).unwrap();
            if old >= 2 {
                conn.execute_batch(V2).unwrap();
            }
            if old >= 3 {
                conn.execute_batch(V3).unwrap();
                conn.execute("INSERT INTO hook_cursors (hook, channel_id, seq) VALUES ('h', 'c', 7)", [])
                    .unwrap();
            }
            if old >= 4 {
                conn.execute_batch(V4).unwrap();
            }
            if old >= 5 {
                conn.execute_batch(V5).unwrap();
            }
            // Two messages as version 5 and before stored them: `m1`, and `m2` replying to it,
            // edited since (version 6 rebuilds these rows below).
            conn.execute_batch(
                "INSERT INTO entries (channel_id, seq, kind, author, ref, ts_ms, content, \
                   content_hash, prev_hash, hash, x_id, x_msg_type, x_reply_author) VALUES \
                   ('c', 1, 'message', 'u', '', 5, 'hello', x'00', x'00', x'00', 'm1', 'chat.text', NULL), \
                   ('c', 2, 'message', 'u', 'm1', 6, 'first words', x'00', x'00', x'00', 'm2', 'chat.text', 'u'); \
                 INSERT INTO messages (channel_id, id, seq, author, type, content, reply_to, \
                   reply_author, client_id, ts_ms, edited_ms) VALUES \
                   ('c', 'm1', 1, 'u', 'chat.text', 'hello', NULL, NULL, NULL, 5, NULL), \
                   ('c', 'm2', 2, 'u', 'chat.text', 'edited words', 'm1', 'u', NULL, 6, 9);",
            )
            .unwrap();
            if old >= 6 {
                conn.execute_batch(V6).unwrap();
            }
            conn.pragma_update(None, "user_version", old).unwrap();
            conn.execute("INSERT INTO users (app, id, name, kind) VALUES ('a', 'u', NULL, 'user')", [])
                .unwrap();
            migrate(&mut conn).unwrap();
            let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(v, VERSION);
            let t = tables(&conn);
            for name in [
                "devices",
                "envelopes",
                "channel_bans",
                "hook_cursors",
                "hook_leases",
                "hook_presence",
                "hook_presence_acks",
                "hook_presence_open",
            ] {
                assert!(t.iter().any(|x| x == name), "version {old}: {name} missing");
            }
            let n: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
            assert_eq!(n, 1, "rows survive");
            if old >= 3 {
                let seq: i64 = conn.query_row("SELECT seq FROM hook_cursors", [], |r| r.get(0)).unwrap();
                assert_eq!(seq, 7, "version 3's webhook cursors survive");
            }
            let m1 = crate::rows::message(&conn, "c", "m1").unwrap().unwrap();
            let m2 = crate::rows::message(&conn, "c", "m2").unwrap().unwrap();
            assert_eq!((m1.seq, m1.content.as_str(), m1.edited_at.as_deref()), (1, "hello", None));
            assert_eq!((m1.author.as_str(), m1.kind.as_str()), ("u", "chat.text"));
            assert_eq!((m2.content.as_str(), m2.edited_at.is_some()), ("edited words", true));
            let reply = m2.reply_to.unwrap();
            assert_eq!((reply.id.as_str(), reply.author.as_str()), ("m1", "u"));
            assert_eq!((reply.content.as_deref(), reply.edited), (Some("hello"), false));
            let stored: Option<String> =
                conn.query_row("SELECT content FROM messages WHERE id = 'm1'", [], |r| r.get(0)).unwrap();
            assert_eq!(stored, None, "an unedited message's text is stored once, in its entry");
            let indexes: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(indexes, 0, "version {old}: a message row is found by its key alone");
            let page =
                crate::history(&conn, "c", &herald_store::HistoryRange { limit: 10, ..Default::default() })
                    .unwrap()
                    .0;
            assert_eq!(page.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m2", "m1"]);
            migrate(&mut conn).unwrap();
        }
    }
}
