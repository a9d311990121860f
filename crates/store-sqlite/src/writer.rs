//! The writer thread: the one owner of the write connection, committing many jobs per
//! transaction (group commit).
//!
//! It blocks for the first job, drains up to `max_batch - 1` more without waiting, opens one
//! `BEGIN IMMEDIATE` transaction, applies each job inside its own `SAVEPOINT` (a job that fails
//! is rolled back alone and answered with its error; a `Send` runs without one, see
//! [`needs_savepoint`]), commits (the one fsync of the batch),
//! checkpoints the WAL if a job erased content, then passes the batch to the publisher thread,
//! which hands every successful [`Applied`] to the [`CommitSink`] in order and only then answers
//! each job. Two threads, so that fan-out of batch N (the sink's work, which grows with the
//! channel's size) overlaps the transaction of batch N+1 instead of delaying it; the publisher
//! takes batches in commit order from a short bounded queue, so the sink still sees every commit
//! once, in commit order, before its caller is answered.

use crate::apply::{Channels, Heads, Job as ApplyJob, needs_savepoint};
use crate::backend;
use herald_store::{Applied, CommitSink, Mutation, Result, StoreError};
use parking_lot::RwLock;
use rusqlite::Connection;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The store's shared observer type (latency here: `BEGIN` to durable `COMMIT`).
pub use herald_store::CommitObserver;

/// Counters of the writer, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub commits: u64,
    /// Jobs received (each one [`Mutation`]).
    pub jobs: u64,
}

/// State shared between the store handle and its writer thread.
#[derive(Default)]
pub struct Shared {
    pub commits: AtomicU64,
    pub jobs: AtomicU64,
    pub observer: RwLock<Option<CommitObserver>>,
}

pub struct Job {
    pub mutation: Mutation,
    pub reply: oneshot::Sender<Result<Applied>>,
}

/// A committed (or failed) batch on its way to the sink and the callers.
struct Published {
    results: Vec<Result<Applied>>,
    replies: Vec<oneshot::Sender<Result<Applied>>>,
}

/// Publishes on the calling thread (only when the publisher thread is unavailable).
fn publish_inline(p: Published, sink: &Arc<dyn CommitSink>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    if tx.send(p).is_ok() {
        drop(tx);
        publish(rx, sink.clone());
    }
}

/// Batches the writer may be ahead of the publisher: enough to overlap, small enough that a
/// slow sink holds the writer back rather than piling up memory.
const PUBLISH_QUEUE: usize = 4;

fn publish(rx: std::sync::mpsc::Receiver<Published>, sink: Arc<dyn CommitSink>) {
    for Published { results, replies } in rx {
        for r in results.iter().flatten() {
            sink.committed(r);
        }
        for (reply, r) in replies.into_iter().zip(results) {
            // The caller may have gone away (its future dropped); the write stands regardless.
            let _ = reply.send(r);
        }
    }
}

pub struct Writer {
    pub conn: Connection,
    pub rx: mpsc::Receiver<Job>,
    pub sink: Arc<dyn CommitSink>,
    pub shared: Arc<Shared>,
    pub max_batch: usize,
    pub heads: Heads,
    pub channels: Channels,
    /// A TRUNCATE checkpoint after a delete has not completed yet.
    pub truncate_pending: bool,
}

impl Writer {
    /// Runs until every sender is gone and the queue is drained.
    pub fn run(mut self) {
        let (out, published) = std::sync::mpsc::sync_channel(PUBLISH_QUEUE);
        let sink = self.sink.clone();
        let publisher = match std::thread::Builder::new()
            .name("herald-sqlite-publish".into())
            .spawn(move || publish(published, sink))
        {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot spawn the publisher thread; publishing from the writer");
                None
            }
        };
        let out = publisher.as_ref().map(|_| out);
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let p = self.commit_batch(&mut batch);
            match &out {
                Some(out) => {
                    if let Err(std::sync::mpsc::SendError(p)) = out.send(p) {
                        publish_inline(p, &self.sink);
                    }
                }
                None => publish_inline(p, &self.sink),
            }
        }
        // Every batch is handed over: let the publisher finish them before the final checkpoint.
        drop(out);
        if let Some(t) = publisher
            && t.join().is_err()
        {
            tracing::error!("the publisher thread panicked");
        }
        // Leave the WAL folded into the database on a clean stop.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Job>) -> Published {
        let n = batch.len();
        self.shared.jobs.fetch_add(n as u64, Ordering::Relaxed);
        let start = Instant::now();
        let (mutations, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|j| (j.mutation, j.reply)).unzip();
        let results = self.run_batch(mutations);
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, jobs = n, "batch commit failed");
                self.heads.rollback();
                self.channels.rollback();
                let results = (0..n).map(|_| Err(StoreError::Backend(e.to_string()))).collect();
                return Published { results, replies };
            }
        };
        let elapsed = start.elapsed();
        let observer = self.shared.observer.read().clone();
        if let Some(f) = observer {
            f(elapsed, n);
        }
        Published { results, replies }
    }

    /// One transaction. `Err` means the whole batch failed (nothing of it is committed).
    fn run_batch(&mut self, batch: Vec<Mutation>) -> Result<Vec<Result<Applied>>> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut erased = false;
        for m in batch {
            match self.run_job(m) {
                Ok((applied, e)) => {
                    erased |= e;
                    results.push(Ok(applied));
                }
                Err(JobError::Refused(e)) => results.push(Err(e)),
                Err(JobError::Fatal(e)) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(backend(e));
        }
        self.heads.commit();
        self.channels.commit();
        // A checkpoint that readers blocked is retried after every later batch until it
        // succeeds: erased text must not linger in the WAL.
        if erased || self.truncate_pending {
            self.truncate_pending = !self.checkpoint();
        }
        Ok(results)
    }

    fn run_job(&mut self, m: Mutation) -> Result<(Applied, bool), JobError> {
        let savepoint = needs_savepoint(&m);
        if savepoint {
            self.step("SAVEPOINT job")?;
        }
        let wrote = Cell::new(false);
        let job = ApplyJob::new(&self.conn, &wrote, &mut self.heads, &mut self.channels);
        match job.apply(m) {
            Ok((applied, job)) => {
                let erased = job.erased;
                job.release();
                if savepoint {
                    self.step("RELEASE job")?;
                }
                Ok((applied, erased))
            }
            Err(e) if savepoint => {
                self.step("ROLLBACK TO job")?;
                self.step("RELEASE job")?;
                Err(JobError::Refused(e))
            }
            // Refused before it wrote anything: nothing to undo.
            Err(e) if !wrote.get() => Err(JobError::Refused(e)),
            // Part of it is in the transaction and nothing can take it out alone.
            Err(e) => Err(JobError::Fatal(e)),
        }
    }

    /// Runs one statement of the batch's own (savepoints), prepared once: `execute_batch`
    /// would parse it again for every job.
    fn step(&self, sql: &str) -> Result<(), JobError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(|e| JobError::Fatal(backend(e)))
    }

    /// Folds the WAL into the database and truncates it, so erased text survives neither in
    /// the WAL nor (with `secure_delete`) in free pages of the database file.
    /// True when it completed.
    fn checkpoint(&self) -> bool {
        let r = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        match r {
            Ok(0) => true,
            Ok(_) => {
                tracing::warn!(
                    "WAL checkpoint after a delete was blocked by readers; retrying after the next commit"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint after a delete failed; retrying after the next commit");
                false
            }
        }
    }
}

enum JobError {
    /// The mutation was refused or failed alone; its savepoint was rolled back.
    Refused(StoreError),
    /// The transaction itself is broken: the whole batch fails.
    Fatal(StoreError),
}
