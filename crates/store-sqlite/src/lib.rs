//! Herald's embedded store: SQLite in WAL mode with group commit ([`SqliteStore`]), and
//! content-addressed blobs on the filesystem ([`FsBlobStore`]).
//!
//! This is the default backend of `herald serve`. It implements the guarantees documented in
//! `herald-store` (atomicity, durability, gapless hash-chained logs, idempotency, hard delete)
//! and nothing above them: it never calls up into the engine (the only way out of a commit is
//! the [`CommitSink`] it was opened with), and it never logs message content, names or any
//! other user data, only counts and errors.
//!
//! # Layout
//!
//! - `lib.rs`: [`SqliteConfig`], [`SqliteStore`] (open, the read pool, the `Store` reads).
//! - `schema.rs`: the tables, versioned with `PRAGMA user_version`, created on open.
//! - `writer.rs`: the writer thread and group commit; [`WriterStats`].
//! - `apply.rs`: each `Mutation`'s checks, rows and log entries; the channel head cache.
//! - `rows.rs`: row mappers shared by the writer and the readers.
//! - `blob.rs`: [`FsBlobStore`].
//!
//! # Schema
//!
//! `channels` (id, app, unique (app, name)), `users` per (app, id), `members` with `last_read`,
//! `entries` (the hash-chained log, key (channel_id, seq), with the columns `x_*` that rebuild an
//! event: message id, type, client_id, member name, channel title, reacted message), `messages`
//! (one row per message that is not deleted, key (channel_id, id): its `seq`, and what its last
//! edit changed; the rest, the original content included, is read from its `message` entry, so no
//! text is stored twice; history pages walk the log's key and find each row by the entry's
//! `x_id`), `reactions`, and `client_ids` (the idempotency keys, kept after a delete so that a
//! retry cannot bring deleted text back). A hard delete nulls `content` and `salt` of the
//! message's entries, deletes its rows, and checkpoints the WAL with `TRUNCATE` once the batch
//! commits; `secure_delete=ON` zeroes the freed cells, so the text is gone from every file.
//!
//! # Group commit
//!
//! One writer thread owns the only write connection. [`Store::apply`] sends the mutation with a
//! oneshot responder over a bounded queue and awaits the answer. The writer blocks for the first
//! job, drains up to `max_batch - 1` more that are already waiting (never waits for more),
//! runs them in one `BEGIN IMMEDIATE` transaction, each inside its own `SAVEPOINT` so a refused
//! job is rolled back alone (all but `Send`, which makes every check before its first write:
//! an error in its writes fails the batch), and commits: one fsync for the whole batch. Then,
//! in order, it hands each successful [`herald_store::Applied`] to the sink, and only then
//! answers the callers. A failed `COMMIT` answers every job of the batch with
//! `StoreError::Backend`. Under load batches grow by themselves; alone, a write commits at
//! once.
//!
//! The writer keeps each channel's head `(seq, hash)` in memory (loaded on first use); a job's
//! head changes reach that cache only if it succeeds and the batch commits.
//!
//! Reads use a small pool of read-only connections on `spawn_blocking`; WAL lets them run
//! beside the writer.
//!
//! # Why a std thread
//!
//! SQLite calls block, and the writer holds its connection and an open transaction for a whole
//! batch. A dedicated OS thread owns the `!Sync` connection for its whole life, never ties up
//! a tokio worker or the blocking pool, and makes the commit order a plain loop order.

mod apply;
mod blob;
mod hooks;
mod keys;
mod rows;
mod schema;
mod writer;

pub use blob::FsBlobStore;
pub use writer::{CommitObserver, WriterStats};

use async_trait::async_trait;
use herald_proto::model::{Channel, ChannelSummary, DirectoryEntry, Member, Message, UserKind};
use herald_proto::names::looks_like_uuid;
use herald_store::{Applied, CommitSink, HistoryRange, Mutation, Result, Store, StoreError, StoredEntry};
use parking_lot::Mutex;
use rows::{to_i64, to_u64};
use rusqlite::{Connection, OpenFlags, params};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How hard each commit waits for the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before anyone is answered. The default.
    #[default]
    Fsync,
    /// `synchronous=NORMAL`: a power loss may lose the last commits (never corrupts). For
    /// benchmarks; loudly named so nobody picks it by accident.
    Relaxed,
}

/// Where and how to open the store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The data directory; the database is `dir/herald.db`.
    pub dir: PathBuf,
    pub durability: Durability,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
    /// Read-only connections in the pool.
    pub readers: usize,
}

impl SqliteConfig {
    /// The defaults for a data directory: fsync, batches of up to 1,024, four readers.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SqliteConfig { dir: dir.into(), durability: Durability::Fsync, max_batch: 1024, readers: 4 }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("herald.db")
    }
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// WAL pages after which a commit checkpoints (SQLite's default is 1,000). Pages that many
/// commits rewrite (index pages of busy channels) are then copied to the database once.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 8_000;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store. Cheap to share behind an `Arc`; see the crate doc for its design.
pub struct SqliteStore {
    /// The data directory's lock, held until [`Store::close`] (or drop): two processes on one
    /// database would each cache channel heads and fork the chains.
    lock: Mutex<Option<std::fs::File>>,
    tx: Mutex<Option<mpsc::Sender<writer::Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<writer::Shared>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_permits: Arc<Semaphore>,
    /// Writes the webhooks' delivery state (`hooks.rs`).
    hook_writer: hooks::HookWriter,
    /// The write connection of the end-to-end encryption tables (`keys.rs`).
    keys_conn: keys::KeyConn,
}

/// The lock file in a data directory.
pub const LOCK_FILE: &str = "herald.lock";

/// Takes the data directory's exclusive lock (`flock` on `herald.lock`), or says who has it.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
            "data directory {} is in use by another herald process (it holds {}); stop it or use another --data",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Backend(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

impl SqliteStore {
    /// Creates the directory and the schema if needed, opens the read pool and starts the
    /// writer thread.
    pub fn open(config: SqliteConfig, sink: Arc<dyn CommitSink>) -> Result<Self> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| StoreError::Backend(format!("create {}: {e}", config.dir.display())))?;
        let lock = lock_dir(&config.dir)?;
        let path = config.db_path();
        let mut conn = Connection::open(&path).map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!("could not enable WAL (journal_mode={mode})")));
        }
        let sync = match config.durability {
            Durability::Fsync => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA secure_delete = ON; PRAGMA foreign_keys = OFF; \
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
        ))
        .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn)?;
        let hook_conn = Connection::open(&path).map_err(backend)?;
        hook_conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        hook_conn.execute_batch(&format!("PRAGMA synchronous = {sync};")).map_err(backend)?;
        let keys_conn = Connection::open(&path).map_err(backend)?;
        keys_conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        keys_conn
            .execute_batch(&format!("PRAGMA synchronous = {sync}; PRAGMA secure_delete = ON;"))
            .map_err(backend)?;

        let readers = (0..config.readers.max(1)).map(|_| open_reader(&path)).collect::<Result<Vec<_>>>()?;
        let n_readers = readers.len();

        let max_batch = config.max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
        let shared = Arc::new(writer::Shared::default());
        let w = writer::Writer {
            conn,
            rx,
            sink,
            shared: shared.clone(),
            max_batch,
            heads: Default::default(),
            channels: Default::default(),
            truncate_pending: false,
        };
        let thread = std::thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || w.run())
            .map_err(|e| StoreError::Backend(format!("spawn writer thread: {e}")))?;
        Ok(SqliteStore {
            lock: Mutex::new(Some(lock)),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            shared,
            readers: Arc::new(Mutex::new(readers)),
            read_permits: Arc::new(Semaphore::new(n_readers)),
            hook_writer: Arc::new(Mutex::new(hook_conn)),
            keys_conn: keys::KeyConn::new(keys_conn),
        })
    }

    /// Commits and jobs so far: `jobs / commits` is the mean batch size.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            jobs: self.shared.jobs.load(Ordering::Relaxed),
        }
    }

    /// Sets the function called after each commit with its latency and batch size (e.g. to
    /// feed a histogram). It runs on the writer thread: it must be quick.
    pub fn set_commit_observer(&self, f: CommitObserver) {
        *self.shared.observer.write() = Some(f);
    }

    /// Runs `f` on a pooled read connection, inside one read transaction (one snapshot).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self.read_permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = Pooled::take(pool)?;
            let tx = conn.conn()?.unchecked_transaction().map_err(backend)?;
            let r = f(&tx);
            // A read transaction has nothing to commit; ending it frees the snapshot.
            tx.finish().map_err(backend)?;
            r
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// A read connection borrowed from the pool, returned on drop (even if the read panics).
struct Pooled {
    pool: Arc<Mutex<Vec<Connection>>>,
    conn: Option<Connection>,
}

impl Pooled {
    fn take(pool: Arc<Mutex<Vec<Connection>>>) -> Result<Self> {
        // The semaphore admits at most as many readers as there are connections.
        let conn = pool.lock().pop();
        match conn {
            Some(conn) => Ok(Pooled { pool, conn: Some(conn) }),
            None => Err(StoreError::Backend("read pool is empty".into())),
        }
    }

    fn conn(&self) -> Result<&Connection> {
        self.conn.as_ref().ok_or_else(|| StoreError::Backend("read connection gone".into()))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.lock().push(c);
        }
    }
}

fn open_reader(path: &std::path::Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(backend)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    fn hooks(&self) -> Option<&dyn herald_store::hooks::HookStore> {
        Some(self)
    }

    async fn apply(&self, m: Mutation) -> Result<Applied> {
        let tx = self.tx.lock().clone().ok_or(StoreError::Closed)?;
        let (reply, rx) = oneshot::channel();
        tx.send(writer::Job { mutation: m, reply }).await.map_err(|_| StoreError::Closed)?;
        drop(tx);
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn channel(&self, app: &str, id_or_name: &str) -> Result<Option<Channel>> {
        let (app, key) = (app.to_owned(), id_or_name.to_owned());
        self.read(move |c| {
            // A 36-character name can have the shape of a UUID: try the id, then the name.
            let mut row = None;
            if looks_like_uuid(&key) {
                row = rows::channel_by_id(c, &app, &key)?;
            }
            if row.is_none() {
                row = rows::channel_by_name(c, &app, &key)?;
            }
            match row {
                None => Ok(None),
                Some(row) => {
                    let head = rows::stored_head(c, &row.id)?.0;
                    Ok(Some(row.to_channel(head)))
                }
            }
        })
        .await
    }

    async fn members(&self, channel_id: &str) -> Result<Vec<Member>> {
        let ch = channel_id.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT m.user_id, u.name, u.kind, m.last_read FROM members m \
                     JOIN channels ch ON ch.id = m.channel_id \
                     LEFT JOIN users u ON u.app = ch.app AND u.id = m.user_id \
                     WHERE m.channel_id = ?1 ORDER BY m.user_id",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![ch], |r| {
                    let kind: Option<String> = r.get(2)?;
                    Ok(Member {
                        user: r.get(0)?,
                        name: r.get(1)?,
                        kind: kind.as_deref().and_then(UserKind::parse).unwrap_or_default(),
                        last_read: to_u64(r.get(3)?),
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn channels_of(&self, app: &str, user: &str) -> Result<Vec<ChannelSummary>> {
        let (app, user) = (app.to_owned(), user.to_owned());
        // Unread: message entries of others after the read marker, counted in the log itself
        // (one range of its primary key; a hard delete nulls the entry's content). Through
        // `messages` it would take a lookup of each message's entry for its author.
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT ch.id, ch.name, ch.title, \
                       (SELECT COUNT(*) FROM entries me WHERE me.channel_id = ch.id \
                          AND me.seq > m.last_read AND me.kind = 'message' \
                          AND me.content IS NOT NULL AND me.author <> m.user_id), \
                       (SELECT COALESCE(MAX(seq), 0) FROM entries e WHERE e.channel_id = ch.id) \
                     FROM members m JOIN channels ch ON ch.id = m.channel_id \
                     WHERE m.user_id = ?1 AND ch.app = ?2 ORDER BY ch.created_ms, ch.id",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![user, app], |r| {
                    Ok(ChannelSummary {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        title: r.get(2)?,
                        unread: to_u64(r.get(3)?),
                        last_seq: to_u64(r.get(4)?),
                    })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn directory(&self, app: &str, user: &str, admin: bool) -> Result<Vec<DirectoryEntry>> {
        let (app, user) = (app.to_owned(), user.to_owned());
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT ch.name, ch.id FROM channels ch WHERE ch.app = ?1 AND ch.name IS NOT NULL \
                     AND (?3 OR ch.policy = 'open' OR EXISTS (SELECT 1 FROM members m \
                          WHERE m.channel_id = ch.id AND m.user_id = ?2)) \
                     ORDER BY ch.name",
                )
                .map_err(backend)?;
            let rows = s
                .query_map(params![app, user, admin], |r| {
                    Ok(DirectoryEntry { name: r.get(0)?, id: r.get(1)? })
                })
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn history(&self, channel_id: &str, range: &HistoryRange) -> Result<(Vec<Message>, bool)> {
        let ch = channel_id.to_owned();
        let range = range.clone();
        self.read(move |c| history(c, &ch, &range)).await
    }

    async fn log(&self, channel_id: &str, after: u64, limit: u32) -> Result<(Vec<StoredEntry>, bool)> {
        let ch = channel_id.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "{} WHERE e.channel_id = ?1 AND e.seq > ?2 ORDER BY e.seq LIMIT ?3",
                    rows::ENTRY_SELECT
                ))
                .map_err(backend)?;
            let raw = s
                .query_map(params![ch, to_i64(after), i64::from(limit) + 1], rows::entry_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            let mut entries = raw.into_iter().map(|r| r.into_entry()).collect::<Result<Vec<_>>>()?;
            let has_more = entries.len() > limit as usize;
            entries.truncate(limit as usize);
            Ok((entries, has_more))
        })
        .await
    }

    async fn health(&self) -> Result<()> {
        let writer_alive = self.tx.lock().as_ref().is_some_and(|tx| !tx.is_closed())
            && self.thread.lock().as_ref().is_some_and(|t| !t.is_finished());
        if !writer_alive {
            return Err(StoreError::Backend("the SQLite writer is not running".into()));
        }
        self.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map_err(backend)).await.map(|_| ())
    }

    async fn head_seq(&self, channel_id: &str) -> Result<u64> {
        let ch = channel_id.to_owned();
        self.read(move |c| Ok(rows::stored_head(c, &ch)?.0)).await
    }

    async fn member_channels(&self, app: &str, user: &str) -> Result<Vec<String>> {
        let (app, user) = (app.to_owned(), user.to_owned());
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT m.channel_id FROM members m JOIN channels ch ON ch.id = m.channel_id \
                     WHERE m.user_id = ?1 AND ch.app = ?2",
                )
                .map_err(backend)?;
            let rows = s.query_map(params![user, app], |r| r.get(0)).map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<String>>>().map_err(backend)
        })
        .await
    }

    async fn is_member(&self, app: &str, channel_id: &str, user: &str) -> Result<bool> {
        let (app, ch, user) = (app.to_owned(), channel_id.to_owned(), user.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT 1 FROM members m JOIN channels ch ON ch.id = m.channel_id \
                 WHERE m.channel_id = ?1 AND m.user_id = ?2 AND ch.app = ?3",
            )
            .and_then(|mut s| s.exists(params![ch, user, app]))
            .map_err(backend)
        })
        .await
    }

    fn keys(&self) -> &dyn herald_store::keys::KeyStore {
        self
    }

    async fn close(&self) -> Result<()> {
        // Dropping the last sender lets the writer drain what is queued, then stop.
        drop(self.tx.lock().take());
        self.keys_conn.close();
        let thread = self.thread.lock().take();
        if let Some(t) = thread {
            tokio::task::spawn_blocking(move || t.join())
                .await
                .map_err(|e| StoreError::Backend(format!("join writer: {e}")))?
                .map_err(|_| StoreError::Backend("the writer thread panicked".into()))?;
        }
        // Everything is written: another process may take the directory now.
        drop(self.lock.lock().take());
        Ok(())
    }
}

/// One page of history; see [`Store::history`].
fn history(c: &Connection, ch: &str, range: &HistoryRange) -> Result<(Vec<Message>, bool)> {
    let ascending = range.after.is_some();
    // The log's key drives the page: `seq` bounds are always bound (an open end as the widest
    // value), never `?2 IS NULL OR`, so that SQLite seeks to them instead of walking the
    // channel's log from its end. The walk steps over the channel's other entries (edits,
    // reactions, joins) and the entries of deleted messages (no `messages` row).
    let sql = format!(
        "{} WHERE e.channel_id = ?1 AND e.kind = 'message' AND e.seq < ?2 AND e.seq > ?3 \
         AND (?4 IS NULL OR e.ts_ms >= ?4) AND (?5 IS NULL OR e.ts_ms <= ?5) \
         ORDER BY e.seq {} LIMIT ?6",
        rows::MESSAGE_SELECT,
        if ascending { "ASC" } else { "DESC" }
    );
    let limit = range.limit.max(1);
    let mut s = c.prepare_cached(&sql).map_err(backend)?;
    let mut messages = s
        .query_map(
            params![
                ch,
                range.before.map_or(i64::MAX, to_i64),
                range.after.map_or(-1, to_i64),
                range.from_ms,
                range.to_ms,
                i64::from(limit) + 1
            ],
            rows::message_row,
        )
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    for m in &mut messages {
        m.reactions = Some(rows::reactions(c, ch, &m.id)?);
    }
    Ok((messages, has_more))
}
