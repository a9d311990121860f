//! The tables, versioned in `schema_version`, migrated at open under an advisory lock so that
//! several nodes starting at once on an empty database create the schema exactly once.

use crate::db;
use herald_store::{Result, StoreError};
use tokio_postgres::Client;

/// The schema version this code writes and reads.
pub const VERSION: i32 = 5;

/// The key of the advisory lock migrations run under (any constant unique to Herald).
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64_0001;

/// Identifiers sort and compare bytewise (`COLLATE "C"`), as in the SQLite backend, whatever
/// the database's default collation: member lists and the directory come out in the same order.
const V1: &str = r#"
CREATE TABLE channels (
    id          text COLLATE "C" PRIMARY KEY,
    app         text COLLATE "C" NOT NULL,
    name        text COLLATE "C",
    title       text,
    encrypted   boolean NOT NULL,
    policy      text NOT NULL,
    created_by  text COLLATE "C" NOT NULL,
    created_ms  bigint NOT NULL,
    head_seq    bigint NOT NULL DEFAULT 0,
    head_hash   bytea NOT NULL
);
CREATE UNIQUE INDEX channels_app_name ON channels(app, name) WHERE name IS NOT NULL;

CREATE TABLE users (
    app   text COLLATE "C" NOT NULL,
    id    text COLLATE "C" NOT NULL,
    name  text,
    kind  text NOT NULL,
    PRIMARY KEY (app, id)
);

CREATE TABLE members (
    channel_id  text COLLATE "C" NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    last_read   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX members_user ON members(user_id, channel_id);

CREATE TABLE entries (
    channel_id     text COLLATE "C" NOT NULL,
    seq            bigint NOT NULL,
    kind           text NOT NULL,
    author         text NOT NULL,
    ref            text NOT NULL,
    ts_ms          bigint NOT NULL,
    content_hash   bytea NOT NULL,
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL,
    x_id           text,
    x_msg_type     text,
    x_client_id    text,
    x_name         text,
    x_title        text,
    x_message_id   text,
    x_reply_author text,
    PRIMARY KEY (channel_id, seq)
);
CREATE INDEX entries_edits ON entries(channel_id, ref) WHERE kind = 'message_edited';

-- Content and salt of every entry, apart: a hard delete deletes the rows (and so their TOAST
-- chunks) instead of overwriting columns of a row that stays.
CREATE TABLE entry_contents (
    channel_id  text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    content     text NOT NULL,
    salt        bytea NOT NULL,
    PRIMARY KEY (channel_id, seq)
);

CREATE TABLE messages (
    channel_id    text COLLATE "C" NOT NULL,
    id            text COLLATE "C" NOT NULL,
    seq           bigint NOT NULL,
    author        text NOT NULL,
    type          text NOT NULL,
    content       text NOT NULL,
    reply_to      text,
    reply_author  text,
    client_id     text,
    ts_ms         bigint NOT NULL,
    edited_ms     bigint,
    PRIMARY KEY (channel_id, seq)
);
CREATE UNIQUE INDEX messages_id ON messages(channel_id, id);

CREATE TABLE reactions (
    id          text COLLATE "C" PRIMARY KEY,
    channel_id  text COLLATE "C" NOT NULL,
    message_id  text COLLATE "C" NOT NULL,
    user_id     text NOT NULL,
    emoji       text NOT NULL,
    seq         bigint NOT NULL
);
CREATE INDEX reactions_message ON reactions(channel_id, message_id, seq);

CREATE TABLE client_ids (
    channel_id  text COLLATE "C" NOT NULL,
    author      text COLLATE "C" NOT NULL,
    client_id   text COLLATE "C" NOT NULL,
    message_id  text NOT NULL,
    PRIMARY KEY (channel_id, author, client_id)
);

CREATE TABLE blobs (
    channel_id  text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    bytes       bytea NOT NULL,
    PRIMARY KEY (channel_id, id)
);
"#;

/// Version 2: end-to-end encryption (PROTOCOL.md §7), as in the SQLite backend. DM bodies and
/// one-time keys live in rows that are deleted (not overwritten) when erased, then vacuumed.
const V2: &str = r#"
ALTER TABLE entries ADD COLUMN x_epoch bigint;
ALTER TABLE messages ADD COLUMN epoch bigint;

CREATE TABLE devices (
    app                 text COLLATE "C" NOT NULL,
    device_id           text COLLATE "C" NOT NULL,
    user_id             text COLLATE "C" NOT NULL,
    keeper              boolean NOT NULL,
    revoked             boolean NOT NULL DEFAULT false,
    identity            text NOT NULL,
    identity_signature  text NOT NULL,
    fallback_key        text,
    PRIMARY KEY (app, device_id)
);
CREATE INDEX devices_user ON devices(app, user_id);

-- Every key id ever uploaded (a re-upload is ignored); the key itself in one_time_keys until
-- claimed (the row is then deleted).
CREATE TABLE one_time_key_ids (
    app        text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    key_id     text COLLATE "C" NOT NULL,
    PRIMARY KEY (app, device_id, key_id)
);
CREATE TABLE one_time_keys (
    n          bigserial PRIMARY KEY,
    app        text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    key_id     text COLLATE "C" NOT NULL,
    key        text NOT NULL
);
CREATE INDEX one_time_keys_device ON one_time_keys(app, device_id, n);

CREATE TABLE dm_inbox (
    n            bigserial PRIMARY KEY,
    app          text COLLATE "C" NOT NULL,
    device_id    text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    to_user      text NOT NULL,
    from_user    text NOT NULL,
    from_device  text NOT NULL,
    body         text NOT NULL,
    ts_ms        bigint NOT NULL
);
CREATE INDEX dm_inbox_device ON dm_inbox(app, device_id, n);
CREATE INDEX dm_inbox_ts ON dm_inbox(ts_ms);

CREATE TABLE dm_client_ids (
    app          text COLLATE "C" NOT NULL,
    from_device  text COLLATE "C" NOT NULL,
    client_id    text COLLATE "C" NOT NULL,
    ids          text NOT NULL,
    PRIMARY KEY (app, from_device, client_id)
);

CREATE TABLE commits (
    channel_id        text COLLATE "C" NOT NULL,
    epoch             bigint NOT NULL,
    prev_commit_hash  text NOT NULL,
    commit_hash       text NOT NULL,
    body              text NOT NULL,
    PRIMARY KEY (channel_id, epoch)
);

CREATE TABLE envelopes (
    channel_id  text COLLATE "C" NOT NULL,
    device_id   text COLLATE "C" NOT NULL,
    epoch       bigint NOT NULL,
    body        text NOT NULL,
    PRIMARY KEY (channel_id, device_id, epoch)
);
CREATE INDEX envelopes_device ON envelopes(device_id);
"#;

/// Version 3: the webhooks' delivery state (cursors, the deleted-channel outbox and its
/// acknowledgements, leases; `hooks.rs`) and moderation's `channel_bans`. `IF NOT EXISTS`: a
/// database of a build that created them outside the versioned schema keeps its rows.
const V3: &str = r#"
CREATE TABLE IF NOT EXISTS hook_cursors (
    hook        text COLLATE "C" NOT NULL,
    channel_id  text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (hook, channel_id)
);
CREATE TABLE IF NOT EXISTS hook_deleted (
    n           bigserial,
    channel_id  text COLLATE "C" PRIMARY KEY,
    app         text COLLATE "C" NOT NULL,
    name        text,
    title       text,
    ts_ms       bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS hook_acks (
    hook        text COLLATE "C" NOT NULL,
    channel_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (hook, channel_id)
);
CREATE TABLE IF NOT EXISTS channel_bans (
    channel_id  text COLLATE "C" NOT NULL,
    user_id     text COLLATE "C" NOT NULL,
    until_ms    bigint,
    PRIMARY KEY (channel_id, user_id)
);
CREATE TABLE IF NOT EXISTS hook_leases (
    hook        text COLLATE "C" NOT NULL,
    channel_id  text COLLATE "C" NOT NULL,
    node        text NOT NULL,
    until_ms    bigint NOT NULL,
    PRIMARY KEY (hook, channel_id)
);
"#;

/// Version 4: the webhooks' room presence outbox (`hooks.rs`): presence events written by
/// the node hosting the participant, acknowledged per webhook, pruned once every webhook has.
const V4: &str = r#"
CREATE TABLE IF NOT EXISTS hook_presence (
    n           bigserial PRIMARY KEY,
    key         text COLLATE "C" NOT NULL UNIQUE,
    app         text COLLATE "C" NOT NULL,
    channel_id  text COLLATE "C" NOT NULL,
    event       text NOT NULL,
    data        text NOT NULL,
    ts_ms       bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS hook_presence_channel ON hook_presence(channel_id, n);
CREATE TABLE IF NOT EXISTS hook_presence_acks (
    hook  text COLLATE "C" NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (hook, n)
);
"#;

/// Version 5: the participants present on each node (`hooks.rs`), whose removals are written
/// to the presence outbox when their node is found dead or restarts.
const V5: &str = r#"
CREATE TABLE IF NOT EXISTS hook_presence_open (
    channel_id   text COLLATE "C" NOT NULL,
    participant  text COLLATE "C" NOT NULL,
    node         text COLLATE "C" NOT NULL,
    key          text COLLATE "C" NOT NULL,
    app          text COLLATE "C" NOT NULL,
    event        text NOT NULL,
    data         text NOT NULL,
    PRIMARY KEY (channel_id, participant)
);
CREATE INDEX IF NOT EXISTS hook_presence_open_node ON hook_presence_open(node);
"#;

/// Creates the schema on an empty database, or checks the version of an existing one. Runs in
/// one transaction holding a transaction-scoped advisory lock: a second node starting at the
/// same time waits, then finds the schema made.
pub async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .await
        .map_err(db)?;
    let version: Option<i32> = tx
        .query_opt("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(db)?
        .and_then(|r| r.get(0));
    match version {
        None | Some(1) | Some(2) | Some(3) | Some(4) => {
            if version.is_none() {
                tx.batch_execute(V1).await.map_err(db)?;
            }
            if version.is_none_or(|v| v < 2) {
                tx.batch_execute(V2).await.map_err(db)?;
            }
            if version.is_none_or(|v| v < 3) {
                tx.batch_execute(V3).await.map_err(db)?;
            }
            if version.is_none_or(|v| v < 4) {
                tx.batch_execute(V4).await.map_err(db)?;
            }
            tx.batch_execute(V5).await.map_err(db)?;
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&VERSION]).await.map_err(db)?;
        }
        Some(VERSION) => {}
        Some(v) => {
            return Err(StoreError::Backend(format!(
                "postgres: database schema version {v} is newer than this server understands ({VERSION})"
            )));
        }
    }
    tx.commit().await.map_err(db)
}
