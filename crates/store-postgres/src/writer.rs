//! The writer task: group commit of the mutations of one `PgStore`.
//!
//! It waits for the first job, drains up to `max_batch - 1` more without waiting, and runs
//! them in one transaction on one pooled connection: it locks the channel rows of the batch in
//! sorted id order (`SELECT … FOR UPDATE ORDER BY id`, so two nodes' batches queue behind each
//! other instead of deadlocking), applies each job in its own `SAVEPOINT` (a refused job is
//! rolled back alone; a planned run of sends shares one, and is planned again without the
//! refused send), writes the new heads and commits. Then it hands every committed
//! [`Applied`] to the [`CommitSink`] in order and only then answers the callers. A batch that
//! meets `serialization_failure` or `deadlock_detected` is run again from the start; any other
//! failure of the transaction answers every job with [`StoreError::Backend`] and the writer
//! goes on with the next batch on a fresh connection (it never dies with the database).

use crate::apply::{Batch, Fail, Job as ApplyJob, SendPlan, Undo, Write, in_order, run_writes};
use crate::rows;
use crate::stmts::Stmts;
use crate::{CommitObserver, db};
use deadpool_postgres::{Object, Pool};
use herald_store::{Applied, CommitSink, Mutation, Result, StoreError};
use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

/// State shared between the store handle and its writer task.
#[derive(Default)]
pub struct Shared {
    pub commits: AtomicU64,
    pub jobs: AtomicU64,
    pub retries: AtomicU64,
    pub observer: RwLock<Option<CommitObserver>>,
}

pub struct Job {
    pub mutation: Mutation,
    pub reply: oneshot::Sender<Result<Applied>>,
}

pub struct Writer {
    pub pool: Pool,
    pub rx: mpsc::Receiver<Job>,
    pub sink: Arc<dyn CommitSink>,
    pub shared: Arc<Shared>,
    pub max_batch: usize,
    pub max_retries: u32,
    pub op_timeout: Duration,
    /// Wakes the vacuum task after a batch that erased content committed.
    pub vacuum: Arc<Notify>,
    /// The attempt in progress has sent `COMMIT`: a lost connection leaves its outcome unknown.
    pub committing: std::sync::atomic::AtomicBool,
}

/// How a whole batch attempt failed.
enum BatchFail {
    /// Worth running again (serialization failure, deadlock).
    Retry(String),
    /// The transaction or the connection is broken.
    Fatal(StoreError),
}

impl Writer {
    /// Runs until every sender is gone and the queue is drained.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch).await;
        }
    }

    async fn commit_batch(&mut self, batch: &mut Vec<Job>) {
        let n = batch.len();
        self.shared.jobs.fetch_add(n as u64, Ordering::Relaxed);
        let (mutations, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|j| (j.mutation, j.reply)).unzip();
        let start = Instant::now();
        let mut attempt = 0;
        let mut committed = false;
        let results = loop {
            let r = tokio::time::timeout(self.op_timeout, self.attempt(&mutations)).await;
            match r {
                Ok(Ok(results)) => {
                    committed = true;
                    break results;
                }
                Ok(Err(BatchFail::Retry(why))) if attempt < self.max_retries => {
                    attempt += 1;
                    self.shared.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(attempt, reason = %why, "postgres batch conflicted; running it again");
                }
                Ok(Err(BatchFail::Retry(why))) => {
                    let e = format!("postgres: batch still conflicting after {attempt} retries: {why}");
                    break (0..n).map(|_| Err(StoreError::Backend(e.clone()))).collect();
                }
                Ok(Err(BatchFail::Fatal(e))) => {
                    tracing::error!(error = %e, jobs = n, "postgres batch failed");
                    let e = e.to_string();
                    break (0..n).map(|_| Err(StoreError::Backend(e.clone()))).collect();
                }
                Err(_) => {
                    tracing::error!(jobs = n, "postgres batch timed out");
                    let e = format!("postgres: no answer within {:?}", self.op_timeout);
                    break (0..n).map(|_| Err(StoreError::Backend(e.clone()))).collect::<Vec<_>>();
                }
            }
        };
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        // As in the SQLite backend, the observer sees commits, not failures.
        let observer = self.shared.observer.read().clone();
        if let Some(f) = observer
            && committed
        {
            f(start.elapsed(), n);
        }
        for r in results.iter().flatten() {
            self.sink.committed(r);
        }
        for (reply, r) in replies.into_iter().zip(results) {
            // The caller may have gone away (timed out, or its future dropped); the write stands.
            let _ = reply.send(r);
        }
    }

    /// One transaction over the whole batch.
    async fn attempt(&self, mutations: &[Mutation]) -> Result<Vec<Result<Applied>>, BatchFail> {
        let obj = self.pool.get().await.map_err(|e| BatchFail::Fatal(crate::pool_error(e)))?;
        // Dropped unkept (a failure, or this future cancelled by the batch timeout), the
        // connection is closed rather than handed back mid-transaction.
        let conn = Checkout(Some(obj));
        let Some(obj) = conn.0.as_ref() else {
            return Err(BatchFail::Fatal(StoreError::Backend("postgres: connection gone".into())));
        };
        self.committing.store(false, Ordering::Relaxed);
        let st = match Stmts::prepare(obj).await {
            Ok(st) => st,
            Err(f) => return Err(classify_batch(f, false)),
        };
        match self.transaction(obj, &st, mutations).await {
            Ok((results, erased)) => {
                if erased {
                    self.vacuum.notify_one();
                }
                conn.keep();
                Ok(results)
            }
            Err(f) => {
                let f = classify_batch(f, self.committing.load(Ordering::Relaxed));
                if let BatchFail::Retry(_) = f
                    && obj.execute(&st.rollback, &[]).await.is_ok()
                {
                    conn.keep();
                }
                Err(f)
            }
        }
    }

    async fn transaction(
        &self,
        client: &Object,
        st: &Stmts,
        mutations: &[Mutation],
    ) -> std::result::Result<(Vec<Result<Applied>>, bool), Fail> {
        let mut ids: Vec<String> = mutations.iter().filter_map(|m| m.channel().map(str::to_owned)).collect();
        ids.sort();
        ids.dedup();
        let (begin, locked) =
            futures::future::join(client.execute(&st.begin, &[]), client.query(&st.lock_channels, &[&ids]))
                .await;
        begin?;
        let mut batch = Batch::default();
        for id in &ids {
            batch.channels.insert(id.clone(), None);
        }
        for r in locked? {
            let (row, head) = rows::channel_row(&r)?;
            batch.heads.insert(row.id.clone(), head);
            batch.channels.insert(row.id.clone(), Some(row));
        }
        let n = mutations.len();
        let mut results: Vec<Result<Applied>> = Vec::with_capacity(n);
        let mut erased = false;
        let mut rerun = vec![false; n];
        // The last job's writes, not yet confirmed: they travel with the next job's first
        // statements (one round trip for both), and are undone if they fail.
        let mut prev: Option<(usize, Vec<Write<'_>>, Undo)> = None;
        let mut sp = Savepoint::None;
        let mut i = 0;
        // Jobs before this index are not planned ahead again (one of them failed its plan).
        let mut plan_from = 0;
        while i < n || prev.is_some() {
            if i < n && i >= plan_from && prev.is_none() {
                let planned = self.planned_sends(client, st, &mut batch, &mutations[i..], i).await?;
                if let Some((done, failed_at)) = planned {
                    results.extend(done);
                    i = results.len();
                    if let Some(f) = failed_at {
                        plan_from = f + 1;
                    }
                    // The run left its savepoint open: the next job opens a new one on top.
                    sp = Savepoint::None;
                    continue;
                }
            }
            // A send that can be planned comes next: send the last job's writes alone first, so
            // that a run can start after them.
            let flush_only = i < n
                && i >= plan_from
                && prev.is_some()
                && matches!(&mutations[i], Mutation::Send { reply_to: None, .. });
            let writes = prev.as_mut().map(|p| std::mem::take(&mut p.1)).unwrap_or_default();
            let sp_sql = match (i < n && !flush_only, sp) {
                (false, _) | (true, Savepoint::Current) => None,
                (true, Savepoint::None) => Some("SAVEPOINT job"),
                // Keeps the last job (its savepoint is merged into the transaction) and opens
                // this one's, in one message.
                (true, Savepoint::Used) => Some("RELEASE SAVEPOINT job; SAVEPOINT job"),
            };
            let job =
                mutations.get(i).filter(|_| !flush_only).map(|m| (ApplyJob::new(client, st, &mut batch), m));
            let (w, s, r) = futures::future::join3(
                run_writes(client, writes),
                async {
                    match sp_sql {
                        Some(q) => client.batch_execute(q).await,
                        None => Ok(()),
                    }
                },
                async {
                    match job {
                        Some((job, m)) => Some(job.apply(m.clone()).await),
                        None => None,
                    }
                },
            )
            .await;
            if let Err(f) = w {
                // The last job's writes failed: everything sent after them was refused. Back
                // to before that job; it failed alone, this one runs again.
                drop(r);
                client.execute(&st.rollback_to, &[]).await?;
                let Some((idx, _, undo)) = prev.take() else { break };
                batch.undo(undo);
                results.truncate(idx);
                sp = Savepoint::Current;
                match classify_job(f, &mutations[idx], rerun[idx]) {
                    JobFail::Refused(e) => results.push(Err(e)),
                    JobFail::Rerun => {
                        rerun[idx] = true;
                        i = idx;
                    }
                    JobFail::Fatal(f) => return Err(f),
                }
                continue;
            }
            prev = None;
            s?;
            let Some(r) = r else {
                if flush_only {
                    continue;
                }
                break;
            };
            match r {
                Ok((applied, job)) => {
                    erased |= job.erased;
                    let (writes, undo) = job.release();
                    results.push(Ok(applied));
                    prev = Some((i, writes, undo));
                    sp = Savepoint::Used;
                    i += 1;
                }
                Err(f) => {
                    client.execute(&st.rollback_to, &[]).await?;
                    sp = Savepoint::Current;
                    match classify_job(f, &mutations[i], rerun[i]) {
                        JobFail::Refused(e) => {
                            results.push(Err(e));
                            i += 1;
                        }
                        JobFail::Rerun => rerun[i] = true,
                        JobFail::Fatal(f) => return Err(f),
                    }
                }
            }
        }
        let heads: Vec<(String, i64, Vec<u8>)> = batch
            .dirty
            .iter()
            .filter(|ch| batch.channels.get(*ch).is_some_and(Option::is_some))
            .filter_map(|ch| batch.heads.get(ch).map(|(s, h)| (ch.clone(), rows::to_i64(*s), h.to_vec())))
            .collect();
        for chunk in heads.chunks(24) {
            let futs = chunk
                .iter()
                .map(|(ch, seq, hash)| async move { client.execute(&st.set_head, &[ch, seq, hash]).await });
            futures::future::try_join_all(futs).await?;
        }
        self.committing.store(true, Ordering::Relaxed);
        client.execute(&st.commit, &[]).await?;
        Ok((results, erased))
    }
}

/// A run of sends planned at once: at most this many.
const MAX_PLANNED: usize = 128;

impl Writer {
    /// Plans the run of `Send`s at the start of `jobs` and sends their checks and writes in one
    /// pipeline, behind one savepoint for the whole run (`SAVEPOINT run`: a savepoint per send
    /// would cost a statement and a subtransaction each). If every check is answered as planned
    /// and every write succeeds, they are all done. Otherwise the batch rolls back to that
    /// savepoint, undoes every plan, and plans again only the sends before the first that was
    /// not answered as planned (their checks are answered the same, since nothing else changed
    /// under the batch's locks); that one (its index is returned) then runs the ordinary way,
    /// which refuses it properly. `None`: the first job cannot be planned.
    async fn planned_sends(
        &self,
        client: &Object,
        st: &Stmts,
        batch: &mut Batch,
        jobs: &[Mutation],
        base: usize,
    ) -> std::result::Result<Option<(Vec<Result<Applied>>, Option<usize>)>, Fail> {
        let mut limit = MAX_PLANNED;
        // The first send not answered as planned, once one was.
        let mut failed_at = None;
        loop {
            let mut plans = Vec::new();
            for m in jobs.iter().take(limit) {
                match ApplyJob::new(client, st, batch).plan_send(m) {
                    Some((plan, applied, job)) => {
                        let (writes, undo) = job.release();
                        plans.push((plan, applied, writes, undo));
                    }
                    None => break,
                }
            }
            if plans.is_empty() {
                return Ok(failed_at.map(|f| (Vec::new(), Some(f))));
            }
            match self.run_plans(client, st, &mut plans).await? {
                None => {
                    let done = plans.into_iter().map(|(_, a, _, _)| Ok(a)).collect();
                    return Ok(Some((done, failed_at)));
                }
                Some(f) => {
                    client.batch_execute("ROLLBACK TO SAVEPOINT run").await?;
                    for (_, _, _, undo) in plans.into_iter().rev() {
                        batch.undo(undo);
                    }
                    failed_at = Some(base + f);
                    if f == 0 {
                        return Ok(Some((Vec::new(), failed_at)));
                    }
                    limit = f;
                }
            }
        }
    }

    /// Sends the planned run; the index of the first plan not answered as planned, if any.
    ///
    /// First as three statements whatever the run's length (`SAVEPOINT run`, the checks of
    /// every send in one query over arrays, every insert in one statement over arrays): a
    /// statement costs PostgreSQL far more than a row. If that insert fails (two sends of the
    /// run with one `client_id`, or anything else that names no send), the run is rolled back
    /// and sent again statement by statement, which finds the send that fails.
    async fn run_plans(
        &self,
        client: &Object,
        st: &Stmts,
        plans: &mut [(SendPlan, Applied, Vec<Write<'_>>, Undo)],
    ) -> std::result::Result<Option<usize>, Fail> {
        match self.run_plans_bulk(client, st, plans).await? {
            Bulk::Done => Ok(None),
            Bulk::Refused(k) => Ok(Some(k)),
            Bulk::Unknown => {
                client.batch_execute("ROLLBACK TO SAVEPOINT run").await?;
                self.run_plans_each(client, st, plans).await
            }
        }
    }

    async fn run_plans_bulk(
        &self,
        client: &Object,
        st: &Stmts,
        plans: &[(SendPlan, Applied, Vec<Write<'_>>, Undo)],
    ) -> std::result::Result<Bulk, Fail> {
        let n = plans.len();
        let mut a = BulkRows::with_capacity(n);
        for (plan, applied, _, _) in plans {
            let [e] = applied.entries.as_slice() else { return Ok(Bulk::Unknown) };
            a.check_ch.push(plan.channel.clone());
            a.check_member.push(plan.member.clone());
            a.check_author.push(plan.client_id.as_ref().map(|(au, _)| au.clone()));
            a.check_cid.push(plan.client_id.as_ref().map(|(_, c)| c.clone()));
            a.push(e);
        }
        type P<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
        let check_params: [P<'_>; 4] = [&a.check_ch, &a.check_member, &a.check_author, &a.check_cid];
        let insert_params: [P<'_>; 19] = [
            &a.ch,
            &a.seq,
            &a.kind,
            &a.author,
            &a.reference,
            &a.ts,
            &a.content_hash,
            &a.prev_hash,
            &a.hash,
            &a.id,
            &a.msg_type,
            &a.client_id,
            &a.name,
            &a.title,
            &a.message_id,
            &a.reply_author,
            &a.content,
            &a.salt,
            &a.epoch,
        ];
        let checks = client.query(&st.run_checks, &check_params);
        let inserts = client.execute(&st.run_inserts, &insert_params);
        // In this order on the wire: tokio-postgres sends each statement on its first poll.
        let (sp, checks, inserts) = {
            let mut sp = Box::pin(futures::future::maybe_done(client.batch_execute("SAVEPOINT run")));
            let mut checks = Box::pin(futures::future::maybe_done(checks));
            let mut inserts = Box::pin(futures::future::maybe_done(inserts));
            futures::future::poll_fn(|cx| {
                let a = sp.as_mut().poll(cx).is_ready();
                let b = checks.as_mut().poll(cx).is_ready();
                let c = inserts.as_mut().poll(cx).is_ready();
                if a && b && c { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
            })
            .await;
            (sp.as_mut().take_output(), checks.as_mut().take_output(), inserts.as_mut().take_output())
        };
        let (Some(sp), Some(checks), Some(inserts)) = (sp, checks, inserts) else {
            return Err(Fail::Store(StoreError::Backend(
                "postgres: a pipelined statement lost its answer".into(),
            )));
        };
        // A lost connection or a conflict is the whole batch's, not a send's.
        let sp = match sp {
            Err(e) if batch_wide(&e) => return Err(Fail::Db(e)),
            other => other,
        };
        let checks = match checks {
            Err(e) if batch_wide(&e) => return Err(Fail::Db(e)),
            other => other,
        };
        let inserts = match inserts {
            Err(e) if batch_wide(&e) => return Err(Fail::Db(e)),
            other => other,
        };
        sp?;
        let Ok(rows) = checks else { return Ok(Bulk::Unknown) };
        if let Some(row) = rows.first() {
            let i: i64 = row.try_get(0)?;
            return Ok(match usize::try_from(i - 1) {
                Ok(k) if k < n => Bulk::Refused(k),
                _ => Bulk::Unknown,
            });
        }
        Ok(if inserts.is_ok() { Bulk::Done } else { Bulk::Unknown })
    }

    /// Sends the planned run in one pipeline, each send's checks and writes as their own
    /// statements; the index of the first plan not answered as planned, if any.
    async fn run_plans_each(
        &self,
        client: &Object,
        st: &Stmts,
        plans: &mut [(SendPlan, Applied, Vec<Write<'_>>, Undo)],
    ) -> std::result::Result<Option<usize>, Fail> {
        type Fut<'f> = std::pin::Pin<
            Box<dyn Future<Output = std::result::Result<Option<Row>, tokio_postgres::Error>> + Send + 'f>,
        >;
        let mut futs: Vec<Fut<'_>> = Vec::new();
        futs.push(Box::pin(async move { client.batch_execute("SAVEPOINT run").await.map(|_| None) }));
        // Per plan: where its futures start, and which of them are the two checks.
        let mut spans = Vec::with_capacity(plans.len());
        for (plan, _, writes, _) in plans.iter_mut() {
            let start = futs.len();
            let member = plan.member.as_ref().map(|u| {
                let ch = &plan.channel;
                futs.push(Box::pin(async move { client.query_opt(&st.is_member, &[ch, u]).await }));
                futs.len() - 1
            });
            let cid = plan.client_id.as_ref().map(|(a, c)| {
                let ch = &plan.channel;
                futs.push(Box::pin(async move { client.query_opt(&st.client_id, &[ch, a, c]).await }));
                futs.len() - 1
            });
            for (s, params) in std::mem::take(writes) {
                futs.push(Box::pin(async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|v| &**v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                    client.execute(s, &refs).await.map(|_| None)
                }));
            }
            spans.push((start, futs.len(), member, cid));
        }
        let answers = in_order(futs).await;
        // A lost connection or a conflict is the whole batch's, not a send's.
        if let Some(k) = answers.iter().position(|a| a.as_ref().is_err_and(batch_wide)) {
            return match answers.into_iter().nth(k) {
                Some(Err(e)) => Err(Fail::Db(e)),
                _ => Ok(Some(0)),
            };
        }
        for (k, (start, end, member, cid)) in spans.iter().enumerate() {
            let all_ok = answers[*start..*end].iter().all(|a| a.is_ok());
            let member_ok = member.is_none_or(|x| matches!(answers[x], Ok(Some(_))));
            let cid_ok = cid.is_none_or(|x| matches!(answers[x], Ok(None)));
            if !(all_ok && member_ok && cid_ok) {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }
}

/// How a run sent as three statements went.
enum Bulk {
    /// Every check passed and every row is written.
    Done,
    /// This send's checks failed (the first such).
    Refused(usize),
    /// Something failed that names no send: run them one by one.
    Unknown,
}

/// The columns of a planned run, one array per column (`run_checks`, `run_inserts`).
#[derive(Default)]
struct BulkRows {
    check_ch: Vec<String>,
    check_member: Vec<Option<String>>,
    check_author: Vec<Option<String>>,
    check_cid: Vec<Option<String>>,
    ch: Vec<String>,
    seq: Vec<i64>,
    kind: Vec<&'static str>,
    author: Vec<String>,
    reference: Vec<String>,
    ts: Vec<i64>,
    content_hash: Vec<Vec<u8>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    id: Vec<Option<String>>,
    msg_type: Vec<Option<String>>,
    client_id: Vec<Option<String>>,
    name: Vec<Option<String>>,
    title: Vec<Option<String>>,
    message_id: Vec<Option<String>>,
    reply_author: Vec<Option<String>>,
    content: Vec<String>,
    salt: Vec<Vec<u8>>,
    epoch: Vec<Option<i64>>,
}

impl BulkRows {
    fn with_capacity(n: usize) -> Self {
        let mut b = BulkRows::default();
        b.ch.reserve(n);
        b.content.reserve(n);
        b
    }

    /// The entry's columns, as `Job::append` writes them one by one.
    fn push(&mut self, e: &herald_store::StoredEntry) {
        self.ch.push(e.channel_id.clone());
        self.seq.push(rows::to_i64(e.seq));
        self.kind.push(e.kind.as_str());
        self.author.push(e.author.clone());
        self.reference.push(e.reference.clone());
        self.ts.push(e.ts_ms);
        self.content_hash.push(e.content_hash.to_vec());
        self.prev_hash.push(e.prev_hash.to_vec());
        self.hash.push(e.hash.to_vec());
        self.id.push(e.extra.id.clone());
        self.msg_type.push(e.extra.msg_type.clone());
        self.client_id.push(e.extra.client_id.clone());
        self.name.push(e.extra.name.clone());
        self.title.push(e.extra.title.clone());
        self.message_id.push(e.extra.message_id.clone());
        self.reply_author.push(e.extra.reply.as_ref().map(|r| r.author.clone()));
        self.content.push(e.content.clone().unwrap_or_default());
        self.salt.push(e.salt.unwrap_or_default().to_vec());
        self.epoch.push(e.extra.epoch.map(rows::to_i64));
    }
}

/// Where the batch's savepoint stands before the next job.
#[derive(Clone, Copy)]
enum Savepoint {
    /// None opened yet.
    None,
    /// Open and holding the last job's changes: release it and open a new one.
    Used,
    /// Open and empty (just rolled back to): the next job runs in it.
    Current,
}

/// How one job failed.
enum JobFail {
    /// Refused or failed alone; answered with this error.
    Refused(StoreError),
    /// Worth running again in a fresh savepoint (another node registered the name meanwhile).
    Rerun,
    /// The transaction is lost.
    Fatal(Fail),
}

fn classify_job(f: Fail, m: &Mutation, rerun_already: bool) -> JobFail {
    let e = match f {
        Fail::Store(e) => return JobFail::Refused(e),
        Fail::Db(e) => e,
    };
    if retryable(&e) || e.is_closed() || e.as_db_error().is_none() {
        return JobFail::Fatal(Fail::Db(e));
    }
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or("");
        if constraint == "channels_app_name" && !rerun_already {
            // Another node registered the name while this job ran; its commit is visible now:
            // run the job again to find it.
            return JobFail::Rerun;
        }
        if constraint == "channels_pkey"
            && let Some(id) = m.channel()
        {
            return JobFail::Refused(StoreError::Invalid(format!("channel id {id:?} already exists")));
        }
    }
    JobFail::Refused(db(e))
}

/// An error that loses the whole transaction rather than one job's statements.
fn batch_wide(e: &tokio_postgres::Error) -> bool {
    retryable(e) || e.is_closed() || e.as_db_error().is_none()
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Sorts a failed batch into retry or fatal. A connection lost before `COMMIT` was sent (a
/// pooled connection PostgreSQL closed while idle, say after a restart) committed nothing,
/// so the batch is run again on another; lost during `COMMIT`, the outcome is unknown and
/// the callers are told so.
fn classify_batch(f: Fail, committing: bool) -> BatchFail {
    match f {
        Fail::Db(e) if retryable(&e) => BatchFail::Retry(e.to_string()),
        Fail::Db(e) if !committing && (e.is_closed() || e.as_db_error().is_none()) => {
            BatchFail::Retry(format!("connection lost: {e}"))
        }
        Fail::Db(e) => BatchFail::Fatal(db(e)),
        Fail::Store(e) => BatchFail::Fatal(e),
    }
}

/// A pooled connection that goes back to the pool only if kept; dropped otherwise, it is
/// detached from the pool and closed (the server then rolls back whatever was open).
pub struct Checkout(pub Option<Object>);

impl Checkout {
    pub fn keep(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(o) = self.0.take() {
            drop(Object::take(o));
        }
    }
}
