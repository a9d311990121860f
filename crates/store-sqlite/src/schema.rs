//! The database schema and its version (`PRAGMA user_version`), created on open.

use crate::backend;
use herald_store::{Result, StoreError};
use rusqlite::Connection;

/// The schema version this code writes and reads.
pub const VERSION: i64 = 1;

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

/// Creates the schema on an empty database, or checks the version of an existing one.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(backend)?;
    match version {
        0 => {
            let tx =
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
            tx.execute_batch(V1).map_err(backend)?;
            tx.pragma_update(None, "user_version", VERSION).map_err(backend)?;
            tx.commit().map_err(backend)
        }
        VERSION => Ok(()),
        v => Err(StoreError::Backend(format!(
            "database schema version {v} is newer than this server understands ({VERSION})"
        ))),
    }
}
