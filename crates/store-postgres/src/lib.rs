//! Herald's shared store: PostgreSQL for several `herald serve` nodes on one database
//! ([`PgStore`]), and blobs in PostgreSQL too ([`PgBlobStore`]).
//!
//! It implements the guarantees documented in `herald-store` (atomicity, durability, gapless
//! hash-chained logs, idempotency, hard delete) with the exact semantics of the SQLite backend
//! (same refusals, same idempotency, same history, unread counts, directory and `EntryExtra`),
//! and nothing above them: it never calls up into the engine (the only way out of a commit is
//! the [`CommitSink`] it was opened with), and it never logs message content, names or any
//! other user data, only counts and errors.
//!
//! # Layout
//!
//! - `lib.rs`: [`PgConfig`], [`PgStore`] (open, the `Store` reads, health, close), the vacuum.
//! - `schema.rs`: the tables, versioned in `schema_version`, migrated under an advisory lock.
//! - `writer.rs`: the writer task and group commit.
//! - `apply.rs`: each `Mutation`'s checks, rows and log entries, pipelined.
//! - `stmts.rs`: the writer's prepared statements.
//! - `rows.rs`: row mappers shared by the writer and the readers.
//! - `blob.rs`: [`PgBlobStore`].
//! - [`scratch`]: throwaway databases for tests (this crate's and other crates').
//!
//! # Several nodes, one order
//!
//! Each node has its own `PgStore` and its own writer; the database orders each channel's log.
//! A batch first locks the rows of every channel it names, in sorted id order
//! (`SELECT … FROM channels WHERE id = ANY($1) ORDER BY id FOR UPDATE`). The head `(seq, hash)`
//! lives in that row, so the node holding the lock is the only one appending to the channel
//! until it commits; the next node's batch then reads the new head. Sorted locking means two
//! batches never wait on each other in a cycle; the rare lock taken later (a channel found by
//! name) can deadlock, which PostgreSQL detects, and the writer then runs the batch again, as
//! it does on a serialization failure. Seqs are gapless and the chain links across nodes.
//!
//! # Group commit and pipelining
//!
//! [`Store::apply`] queues the mutation for its channel's writer task and awaits its answer (at
//! most `op_timeout`). The writer takes what is queued (up to `max_batch`), runs it in one
//! transaction with a `SAVEPOINT` per mutation (a refused one is rolled back alone), commits,
//! hands each committed [`Applied`] to the sink in commit order (per writer, so per channel),
//! then answers the callers.
//! Within the transaction statements are pipelined (tokio-postgres sends the statements of
//! futures polled together on one connection back to back, and the server runs them in that
//! order):
//!
//! - A run of queued `Send`s without `reply_to` is *planned*: their entries are linked from the
//!   heads the batch holds locked, as they will be if their checks pass, and one `SAVEPOINT`
//!   for the whole run, then each send's checks (membership, the `client_id` not used yet) and
//!   writes go out in one pipeline. The answers are verified in order; at the first send whose
//!   check is answered otherwise (or whose write fails) the batch rolls back to the run's
//!   savepoint, forgets every plan, plans and sends again only the sends before that one
//!   (answered as before: nothing else can change under the batch's locks), and runs that one
//!   the ordinary way, which refuses it (or finds it a duplicate) exactly as it would have
//!   alone. A savepoint per send would cost a statement and a subtransaction each (and, past
//!   64 in one transaction, PostgreSQL's subtransaction cache overflows); one per run raised
//!   `append_bench 256 16 5 1` from a median of 9.4k to 10.6k appends/s on a 2-core machine,
//!   at the price of a second round trip for a run that has a refused send in it.
//! - Such a run is first sent as three statements whatever its length: the savepoint, every
//!   send's checks as one query over arrays (`unnest … WITH ORDINALITY`, answering the first
//!   send that fails them), and every send's rows (entry, content, message, client id) as one
//!   `INSERT … SELECT FROM unnest(…)` per table in one statement. A statement costs PostgreSQL
//!   far more than a row, and four statements per send was most of a send's time there. Only
//!   if that insert fails without a check naming the send (two sends of the run with one
//!   `client_id`) is the run rolled back and sent as the pipeline of per-send statements above,
//!   which finds the send.
//! - Any other job runs its reads one by one; its writes are queued and sent with its next
//!   read, and its last writes with the next job's savepoint and first read (undone, and the job
//!   answered alone, if they fail).
//!
//! `examples/append_bench.rs` prints the appends/s of one or several stores.
//!
//! Batches of one writer are not pipelined (the next one running on a second connection while
//! the last waits for its `COMMIT`): a busy batch names nearly every active channel, and the
//! next one's `FOR UPDATE` then waits for those rows, which stay locked until the WAL flush is
//! done, so nothing overlaps but the batches get smaller. Tried with two in flight, it was
//! slower (`append_bench 256 16 5 1`: median 4.8k against 5.4k appends/s). Instead the store
//! runs [`PgConfig::writers`] writer tasks, each owning the channels whose id hashes to it:
//! their batches lock disjoint rows, so one commits while another waits for its WAL flush
//! (`append_bench 256 16 5 1 0 <writers>` on 2 cores: median 22.0k appends/s with one writer,
//! 28.0k with two, 23.3k with four). A mutation naming no channel (a user upsert) goes to the
//! first writer.
//!
//! # Durability
//!
//! `apply` resolves after `COMMIT` returned, so a write is as durable as the server's
//! `synchronous_commit` makes it: with the default (`on`) it is flushed to the WAL on disk (and,
//! with synchronous replicas configured, to them). With `synchronous_commit = off` PostgreSQL
//! answers `COMMIT` before the WAL is flushed, and a crash of PostgreSQL (not of Herald) loses
//! the last moments of acknowledged messages: do not run Herald's database that way. A batch
//! whose connection breaks before `COMMIT` was sent committed nothing and is run again on
//! another connection (so the first writes after a PostgreSQL restart succeed). One whose
//! connection breaks during `COMMIT`, or that exceeds `op_timeout` (the caller's own wait is
//! bounded by `op_timeout` too), is answered with [`StoreError::Backend`], yet may have
//! committed: its entries are then in the log (a resume or `log` read finds them) but the sink
//! never saw them, and a client retry with its `client_id` is answered with the original
//! message. The SQLite backend has no such uncertain outcome.
//!
//! # Hard delete, and what PostgreSQL still retains
//!
//! Message text and salt live in `entry_contents` (one row per entry) and the current text in
//! `messages`; a hard delete deletes those rows (their TOAST chunks go with them) and keeps the
//! entry's `content_hash` in `entries`, so the chain still verifies. After a batch that erased
//! something the store runs `VACUUM` on `entry_contents` and `messages` in the background
//! (debounced by `vacuum_debounce`, default 1 s), which removes the dead tuples. End-to-end
//! encryption state (`keys.rs`) is erased the same way: an acknowledged, expired or revoked
//! DM's row in `dm_inbox`, a claimed one-time key's row and a revoked device's envelopes are
//! deleted, and the same vacuum (which also covers `dm_inbox`, `one_time_keys` and
//! `envelopes`) follows; the list below applies to that ciphertext too. What PostgreSQL itself
//! still retains, and for how long:
//!
//! - **Dead tuples** of the deleted rows (and of earlier versions of an edited message) stay in
//!   the heap and TOAST pages until that vacuum (or autovacuum) runs: about `vacuum_debounce`
//!   after the delete, longer if a long-running transaction anywhere in the cluster still holds
//!   an older snapshot (vacuum cannot remove tuples a snapshot may see).
//! - **Freed space** is not zeroed by vacuum: the bytes remain in the data files until
//!   PostgreSQL reuses that space for new rows, which may be never for a quiet table
//!   (`VACUUM FULL` rewrites the table, at the cost of an exclusive lock; we do not run it).
//! - **WAL**: the inserted text is in the WAL segments written when it was sent (and, with
//!   `full_page_writes`, in page images) until those segments are recycled or removed after a
//!   checkpoint (`checkpoint_timeout`, default 5 min, or `max_wal_size`), longer when
//!   `wal_keep_size`, replication slots or a failing `archive_command` hold them back.
//! - **WAL archives, streaming and logical replicas, and backups** (`pg_basebackup`, dumps,
//!   snapshots) keep whatever they copied for as long as they are kept; a replica applies the
//!   delete but has its own dead tuples, free space and WAL, as above.
//!
//! Erasure from all of these is the operator's to arrange (retention of archives and backups,
//! checkpoint settings); this store erases what the database exposes.
//!
//! # Blobs
//!
//! [`PgBlobStore`] keeps blobs in the `blobs` table (`bytea`, keyed by channel and BLAKE3 id),
//! through the same pool: every node sees every blob without a shared filesystem mount, and a
//! blob is exactly as durable and backed up as the messages that refer to it.
//!
//! # Outages
//!
//! Every read and every `apply` answers within `op_timeout` ([`StoreError::Backend`] naming
//! postgres and the reason while PostgreSQL is unreachable); the pool reconnects by itself and
//! the writer outlives any failure, so the store recovers when PostgreSQL returns, without
//! being reopened. Connections are plain TCP (or a Unix socket) without TLS.

mod apply;
mod blob;
mod hooks;
mod keys;
mod rows;
mod schema;
pub mod scratch;
mod stmts;
mod writer;

pub use blob::PgBlobStore;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use herald_proto::model::{Channel, ChannelSummary, DirectoryEntry, Member, Message, ReactionView, UserKind};
use herald_proto::names::looks_like_uuid;
use herald_store::{Applied, CommitSink, HistoryRange, Mutation, Result, Store, StoreError, StoredEntry};
use parking_lot::Mutex;
use rows::{to_i64, to_u64};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The store's shared observer type (latency here: first attempt to durable `COMMIT`).
pub use herald_store::CommitObserver;

/// Counters of the writer, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or attempted; a retried batch counts once).
    pub commits: u64,
    /// Jobs received (each one [`Mutation`]).
    pub jobs: u64,
    /// Batches run again after a serialization failure or deadlock.
    pub retries: u64,
}

/// How to reach PostgreSQL and how to use it.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user[:password]@host[:port]/dbname[?options]` (or libpq's `key=value` form).
    pub url: String,
    /// Connections in the pool, shared by the writer (one at a time), the reads, the blob
    /// store and the vacuum. Default 16.
    pub pool_size: usize,
    /// Mutations per transaction at most. Default 256.
    pub max_batch: usize,
    /// Writer tasks, each with its own batches on its own connection; a channel's mutations
    /// always go to the same one (by a hash of its id), so their batches lock disjoint
    /// channel rows and commit side by side. Default 2.
    pub writers: usize,
    /// How long opening a connection may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long any `apply` or read may take, waiting for a connection included. Default 10 s.
    pub op_timeout: Duration,
    /// How long `health()` waits for `SELECT 1`. Default 2 s.
    pub health_timeout: Duration,
    /// How many times a batch is run again after a serialization failure or deadlock. Default 5.
    pub max_retries: u32,
    /// How long after a hard delete the content tables are vacuumed (deletes within it share
    /// one vacuum). Default 1 s.
    pub vacuum_debounce: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig {
            url: url.into(),
            pool_size: 16,
            max_batch: 256,
            writers: 2,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(10),
            health_timeout: Duration::from_secs(2),
            max_retries: 5,
            vacuum_debounce: Duration::from_secs(1),
        }
    }
}

/// A database error as a store error naming postgres.
pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Backend(format!("postgres: {} ({})", d.message(), d.code().code())),
        None => StoreError::Backend(format!("postgres: {e}")),
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        e => StoreError::Backend(format!("postgres: {e}")),
    }
}

/// Builds the pool for `config` (connections are opened lazily).
pub(crate) fn pool(config: &PgConfig) -> Result<Pool> {
    let mut pg: tokio_postgres::Config =
        config.url.parse().map_err(|e| StoreError::Invalid(format!("postgres url: {e}")))?;
    pg.connect_timeout(config.connect_timeout);
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(30));
    if pg.get_application_name().is_none() {
        pg.application_name("herald");
    }
    let mgr = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(mgr)
        .max_size(config.pool_size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.op_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .build()
        .map_err(|e| StoreError::Backend(format!("postgres: pool: {e}")))
}

/// The PostgreSQL store. See the crate doc.
pub struct PgStore {
    pool: Pool,
    config: PgConfig,
    /// One queue per writer task.
    tx: Mutex<Option<Vec<mpsc::Sender<writer::Job>>>>,
    writer: Mutex<Option<Vec<JoinHandle<()>>>>,
    vacuum: Mutex<Option<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    shared: Arc<writer::Shared>,
    /// Wakes the vacuum task (the key store's erasures too).
    vacuum_notify: Arc<Notify>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("pool_size", &self.config.pool_size).finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects (failing if PostgreSQL is not reachable within `connect_timeout`), creates or
    /// checks the schema, and starts the writer and the vacuum tasks.
    pub async fn open(config: PgConfig, sink: Arc<dyn CommitSink>) -> Result<PgStore> {
        let pool = pool(&config)?;
        let mut obj = tokio::time::timeout(config.connect_timeout, pool.get())
            .await
            .map_err(|_| {
                StoreError::Backend(format!("postgres: not reachable within {:?}", config.connect_timeout))
            })?
            .map_err(pool_error)?;
        tokio::time::timeout(config.op_timeout.max(Duration::from_secs(30)), schema::migrate(&mut obj))
            .await
            .map_err(|_| StoreError::Backend("postgres: migration timed out".into()))??;
        drop(obj);

        let max_batch = config.max_batch.max(1);
        let shared = Arc::new(writer::Shared::default());
        let notify = Arc::new(Notify::new());
        let (mut txs, mut writers) = (Vec::new(), Vec::new());
        for _ in 0..config.writers.clamp(1, 64) {
            let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
            let w = writer::Writer {
                pool: pool.clone(),
                rx,
                sink: sink.clone(),
                shared: shared.clone(),
                max_batch,
                max_retries: config.max_retries,
                op_timeout: config.op_timeout,
                vacuum: notify.clone(),
                committing: Default::default(),
            };
            txs.push(tx);
            writers.push(tokio::spawn(w.run()));
        }
        let (stop, stopped) = watch::channel(false);
        let vacuum = tokio::spawn(vacuum_task(pool.clone(), notify.clone(), stopped, config.vacuum_debounce));
        Ok(PgStore {
            pool,
            config,
            tx: Mutex::new(Some(txs)),
            writer: Mutex::new(Some(writers)),
            vacuum: Mutex::new(Some(vacuum)),
            stop,
            shared,
            vacuum_notify: notify,
        })
    }

    /// Commits and jobs so far: `jobs / commits` is the mean batch size.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            jobs: self.shared.jobs.load(Ordering::Relaxed),
            retries: self.shared.retries.load(Ordering::Relaxed),
        }
    }

    /// Sets the function called after each commit with its latency and batch size (e.g. to
    /// feed a histogram). It runs on the writer task: it must be quick.
    pub fn set_commit_observer(&self, f: CommitObserver) {
        *self.shared.observer.write() = Some(f);
    }

    /// A blob store on this store's pool.
    pub fn blob_store(&self) -> PgBlobStore {
        PgBlobStore::with_pool(self.pool.clone(), self.config.op_timeout)
    }

    /// Runs `f` on a pooled connection, within `op_timeout` (waiting for the connection
    /// included).
    async fn read<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let t = self.config.op_timeout;
        let work = async {
            let obj = self.pool.get().await.map_err(pool_error)?;
            f(obj).await
        };
        tokio::time::timeout(t, work)
            .await
            .map_err(|_| StoreError::Backend(format!("postgres: no answer within {t:?}")))?
    }
}

/// Vacuums the content tables after deletes, at most once per `debounce`.
async fn vacuum_task(pool: Pool, notify: Arc<Notify>, mut stop: watch::Receiver<bool>, debounce: Duration) {
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = stop.changed() => return,
        }
        // Deletes arriving during the pause share this vacuum.
        tokio::select! {
            _ = tokio::time::sleep(debounce) => {}
            _ = stop.changed() => {}
        }
        let r = async {
            let obj = pool.get().await.map_err(pool_error)?;
            obj.batch_execute("VACUUM entry_contents, messages, dm_inbox, one_time_keys, envelopes")
                .await
                .map_err(db)
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %e, "vacuum after a delete failed; it runs again after the next delete");
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn hooks(&self) -> Option<&dyn herald_store::hooks::HookStore> {
        Some(self)
    }

    fn keys(&self) -> &dyn herald_store::keys::KeyStore {
        self
    }

    async fn apply(&self, m: Mutation) -> Result<Applied> {
        let tx = {
            let txs = self.tx.lock();
            let txs = txs.as_ref().ok_or(StoreError::Closed)?;
            // A channel's mutations to one writer (per-channel commit order); the others (a
            // user upsert) to the first.
            let i = match m.channel() {
                Some(ch) if txs.len() > 1 => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    std::hash::Hash::hash(ch, &mut h);
                    (std::hash::Hasher::finish(&h) % txs.len() as u64) as usize
                }
                _ => 0,
            };
            txs[i].clone()
        };
        let (reply, rx) = oneshot::channel();
        let t = self.config.op_timeout;
        let answer = async move {
            tx.send(writer::Job { mutation: m, reply }).await.map_err(|_| StoreError::Closed)?;
            drop(tx);
            rx.await.map_err(|_| StoreError::Closed)?
        };
        tokio::time::timeout(t, answer)
            .await
            .map_err(|_| StoreError::Backend(format!("postgres: no answer within {t:?}")))?
    }

    async fn channel(&self, app: &str, id_or_name: &str) -> Result<Option<Channel>> {
        self.read(|c| async move {
            let sql = format!("SELECT {} FROM channels WHERE app = $1 AND ", rows::CHANNEL_COLS);
            // A 36-character name can have the shape of a UUID: try the id, then the name.
            let mut row = None;
            if looks_like_uuid(id_or_name) {
                let s = c.prepare_cached(&format!("{sql} id = $2")).await.map_err(db)?;
                row = c.query_opt(&s, &[&app, &id_or_name]).await.map_err(db)?;
            }
            if row.is_none() {
                let s = c.prepare_cached(&format!("{sql} name = $2")).await.map_err(db)?;
                row = c.query_opt(&s, &[&app, &id_or_name]).await.map_err(db)?;
            }
            match row {
                None => Ok(None),
                Some(r) => {
                    let (row, (seq, _)) = rows::channel_row(&r)?;
                    Ok(Some(row.to_channel(seq)))
                }
            }
        })
        .await
    }

    async fn members(&self, channel_id: &str) -> Result<Vec<Member>> {
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT m.user_id, u.name, u.kind, m.last_read FROM members m \
                     JOIN channels ch ON ch.id = m.channel_id \
                     LEFT JOIN users u ON u.app = ch.app AND u.id = m.user_id \
                     WHERE m.channel_id = $1 ORDER BY m.user_id",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for r in c.query(&s, &[&channel_id]).await.map_err(db)? {
                let kind: Option<String> = r.try_get(2).map_err(db)?;
                out.push(Member {
                    user: r.try_get(0).map_err(db)?,
                    name: r.try_get(1).map_err(db)?,
                    kind: kind.as_deref().and_then(UserKind::parse).unwrap_or_default(),
                    last_read: to_u64(r.try_get(3).map_err(db)?),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn channels_of(&self, app: &str, user: &str) -> Result<Vec<ChannelSummary>> {
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT ch.id, ch.name, ch.title, \
                       (SELECT COUNT(*) FROM messages msg WHERE msg.channel_id = ch.id \
                          AND msg.seq > m.last_read AND msg.author <> m.user_id), \
                       ch.head_seq \
                     FROM members m JOIN channels ch ON ch.id = m.channel_id \
                     WHERE m.user_id = $1 AND ch.app = $2 ORDER BY ch.created_ms, ch.id",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for r in c.query(&s, &[&user, &app]).await.map_err(db)? {
                out.push(ChannelSummary {
                    id: r.try_get(0).map_err(db)?,
                    name: r.try_get(1).map_err(db)?,
                    title: r.try_get(2).map_err(db)?,
                    unread: to_u64(r.try_get(3).map_err(db)?),
                    last_seq: to_u64(r.try_get(4).map_err(db)?),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn directory(&self, app: &str, user: &str, admin: bool) -> Result<Vec<DirectoryEntry>> {
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT ch.name, ch.id FROM channels ch WHERE ch.app = $1 AND ch.name IS NOT NULL \
                     AND ($3 OR ch.policy = 'open' OR EXISTS (SELECT 1 FROM members m \
                          WHERE m.channel_id = ch.id AND m.user_id = $2)) \
                     ORDER BY ch.name",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for r in c.query(&s, &[&app, &user, &admin]).await.map_err(db)? {
                out.push(DirectoryEntry { name: r.try_get(0).map_err(db)?, id: r.try_get(1).map_err(db)? });
            }
            Ok(out)
        })
        .await
    }

    async fn history(&self, channel_id: &str, range: &HistoryRange) -> Result<(Vec<Message>, bool)> {
        self.read(|mut c| async move { history(&mut c, channel_id, range).await }).await
    }

    async fn log(&self, channel_id: &str, after: u64, limit: u32) -> Result<(Vec<StoredEntry>, bool)> {
        self.read(|c| async move {
            let s = c
                .prepare_cached(&format!(
                    "{} WHERE e.channel_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3",
                    rows::ENTRY_SELECT
                ))
                .await
                .map_err(db)?;
            let rows =
                c.query(&s, &[&channel_id, &to_i64(after), &(i64::from(limit) + 1)]).await.map_err(db)?;
            let mut entries = rows.iter().map(rows::entry_row).collect::<Result<Vec<_>>>()?;
            let has_more = entries.len() > limit as usize;
            entries.truncate(limit as usize);
            Ok((entries, has_more))
        })
        .await
    }

    async fn head_seq(&self, channel_id: &str) -> Result<u64> {
        self.read(|c| async move {
            let s = c.prepare_cached("SELECT head_seq FROM channels WHERE id = $1").await.map_err(db)?;
            match c.query_opt(&s, &[&channel_id]).await.map_err(db)? {
                None => Ok(0),
                Some(r) => Ok(to_u64(r.try_get(0).map_err(db)?)),
            }
        })
        .await
    }

    async fn member_channels(&self, app: &str, user: &str) -> Result<Vec<String>> {
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT m.channel_id FROM members m JOIN channels ch ON ch.id = m.channel_id \
                     WHERE m.user_id = $1 AND ch.app = $2",
                )
                .await
                .map_err(db)?;
            let rows = c.query(&s, &[&user, &app]).await.map_err(db)?;
            rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
        })
        .await
    }

    async fn is_member(&self, app: &str, channel_id: &str, user: &str) -> Result<bool> {
        self.read(|c| async move {
            let s = c
                .prepare_cached(
                    "SELECT 1 FROM members m JOIN channels ch ON ch.id = m.channel_id \
                     WHERE m.channel_id = $1 AND m.user_id = $2 AND ch.app = $3",
                )
                .await
                .map_err(db)?;
            Ok(c.query_opt(&s, &[&channel_id, &user, &app]).await.map_err(db)?.is_some())
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        // Dropping the last sender lets the writer drain what is queued, then stop.
        drop(self.tx.lock().take());
        let writers = self.writer.lock().take();
        for w in writers.into_iter().flatten() {
            w.await.map_err(|e| StoreError::Backend(format!("postgres writer task: {e}")))?;
        }
        let _ = self.stop.send(true);
        let vacuum = self.vacuum.lock().take();
        if let Some(v) = vacuum {
            v.await.map_err(|e| StoreError::Backend(format!("postgres vacuum task: {e}")))?;
        }
        self.pool.close();
        Ok(())
    }

    async fn health(&self) -> Result<()> {
        let writer_alive = self.tx.lock().as_ref().is_some_and(|txs| txs.iter().all(|tx| !tx.is_closed()))
            && self.writer.lock().as_ref().is_some_and(|ws| ws.iter().all(|t| !t.is_finished()));
        if !writer_alive {
            return Err(StoreError::Backend("the postgres writer is not running".into()));
        }
        let t = self.config.health_timeout;
        let check = async {
            let c = self.pool.get().await.map_err(pool_error)?;
            c.simple_query("SELECT 1").await.map_err(db).map(|_| ())
        };
        tokio::time::timeout(t, check)
            .await
            .map_err(|_| StoreError::Backend(format!("postgres: no answer to SELECT 1 within {t:?}")))?
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Tasks have owners: without a close, stop the vacuum; the writer ends with its queue.
        let _ = self.stop.send(true);
    }
}

/// One page of history; see [`Store::history`]. One snapshot for the page and its reactions.
async fn history(
    c: &mut deadpool_postgres::Object,
    ch: &str,
    range: &HistoryRange,
) -> Result<(Vec<Message>, bool)> {
    let ascending = range.after.is_some();
    let sql = format!(
        "{} WHERE m.channel_id = $1 AND ($2::bigint IS NULL OR m.seq < $2) \
         AND ($3::bigint IS NULL OR m.seq > $3) \
         AND ($4::bigint IS NULL OR m.ts_ms >= $4) AND ($5::bigint IS NULL OR m.ts_ms <= $5) \
         ORDER BY m.seq {} LIMIT $6",
        rows::MESSAGE_SELECT,
        if ascending { "ASC" } else { "DESC" }
    );
    let limit = range.limit.max(1);
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db)?;
    let s = tx.prepare_cached(&sql).await.map_err(db)?;
    let rows = tx
        .query(
            &s,
            &[
                &ch,
                &range.before.map(to_i64),
                &range.after.map(to_i64),
                &range.from_ms,
                &range.to_ms,
                &(i64::from(limit) + 1),
            ],
        )
        .await
        .map_err(db)?;
    let mut messages = rows.iter().map(rows::message_row).collect::<Result<Vec<_>>>()?;
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let s = tx
        .prepare_cached(
            "SELECT message_id, id, emoji, user_id FROM reactions \
             WHERE channel_id = $1 AND message_id = ANY($2) ORDER BY seq",
        )
        .await
        .map_err(db)?;
    let mut by_message: HashMap<String, Vec<ReactionView>> = HashMap::new();
    for r in tx.query(&s, &[&ch, &ids]).await.map_err(db)? {
        let mid: String = r.try_get(0).map_err(db)?;
        by_message.entry(mid).or_default().push(ReactionView {
            reaction_id: r.try_get(1).map_err(db)?,
            emoji: r.try_get(2).map_err(db)?,
            user: r.try_get(3).map_err(db)?,
        });
    }
    tx.commit().await.map_err(db)?;
    for m in &mut messages {
        m.reactions = Some(by_message.remove(&m.id).unwrap_or_default());
    }
    Ok((messages, has_more))
}
