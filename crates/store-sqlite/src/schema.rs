//! The database schema and its version (`PRAGMA user_version`), created on open.

use crate::backend;
use herald_store::{Result, StoreError};
use rusqlite::Connection;

/// The schema version this code writes and reads.
pub const VERSION: i64 = 2;

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

/// Creates the schema on an empty database, or checks the version of an existing one.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
    match version {
        0 | 1 => {
            let tx =
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            if version == 0 {
                tx.execute_batch(V1).map_err(backend)?;
            }
            tx.execute_batch(V2).map_err(backend)?;
            tx.pragma_update(None, "user_version", VERSION).map_err(backend)?;
            tx.commit().map_err(backend)
        }
        VERSION => Ok(()),
        v => Err(StoreError::Backend(format!(
            "database schema version {v} is newer than this server understands ({VERSION})"
        ))),
    }
}
