//! One store worker: each batch of requests decided in one database transaction (the design
//! and the isolation argument are in the module docs of `pg`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use routing::{
    split_idem_key, AccountRow, BatchKeys, CardStatus, EngineConfig, EntryRow, MerchantId, Now,
    OrderRef, OrderRow, OrderStatus, Output, Pan, Response, ResponseCode, Shard, Yymm,
};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::{set_unreachable, MAX_ATTEMPTS, MAX_BATCH};
use crate::metrics::Metrics;
use crate::shards::Job;

/// Approval codes per block: a batch never gives more.
const CODE_BLOCK: u64 = MAX_BATCH as u64;
/// Blocks one value of the `approval_blocks` sequence reserves: its increment (migration 2).
const BLOCKS_PER_VALUE: u64 = 16;

/// The switch's clock, as the engine takes it.
pub(crate) fn now() -> Now {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now::from_unix_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The statements of a batch, prepared once per connection.
struct Statements {
    begin: Statement,
    commit: Statement,
    select_existing: Statement,
    select_accounts: Statement,
    select_records: Statement,
    select_orders: Statement,
    next_block: Statement,
    write: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
        let (begin, commit, select_existing, select_accounts) = tokio::try_join!(
            c.prepare("BEGIN"),
            c.prepare("COMMIT"),
            c.prepare("SELECT pan FROM accounts WHERE pan = ANY($1::text[])"),
            // Never waits for a card another transaction holds: its requests are deferred
            // to the next batch instead (module docs).
            c.prepare(
                "SELECT pan, expiry, status, currency, balance, held, daily_limit, day, day_total
                 FROM accounts WHERE pan = ANY($1::text[]) ORDER BY pan FOR UPDATE SKIP LOCKED"
            ),
        )?;
        let (select_records, select_orders, next_block) = tokio::try_join!(
            c.prepare(
                "SELECT id, slot, answers FROM records WHERE id = ANY($1::bytea[])
                     ORDER BY id FOR UPDATE"
            ),
            // The orders the requests name, and those the targets' payments hold (a
            // reversal reopens the order of its original).
            c.prepare(
                "SELECT o.merchant_id, o.order_id, o.amount, o.currency, o.status, o.paid_by
                     FROM orders o
                     WHERE (o.merchant_id, o.order_id) IN (
                         SELECT r.m, r.i FROM unnest($1::text[], $2::text[]) AS r(m, i)
                         UNION
                         SELECT t.order_merchant, t.order_id FROM records t
                         WHERE t.id = ANY($3::bytea[]) AND t.order_id IS NOT NULL)
                     ORDER BY o.merchant_id, o.order_id FOR UPDATE OF o"
            ),
            c.prepare("SELECT nextval('approval_blocks')"),
        )?;
        // Every write of a batch as one statement: one execution and one answer instead of
        // up to seven (the server's per-statement work and a send each were measurable).
        // The parts with empty arrays write nothing.
        let write = c
            .prepare(
                "WITH
                 acc AS (
                     UPDATE accounts a SET balance = u.balance, held = u.held, day = u.day,
                         day_total = u.day_total
                     FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[])
                         AS u(pan, balance, held, day, day_total)
                     WHERE a.pan = u.pan),
                 led AS (
                     INSERT INTO ledger (pan, at, balance_delta, held_delta, balance, held)
                     SELECT u.pan, $6, u.bd, u.hd, u.b, u.h
                     FROM unnest($1::text[], $7::int8[], $8::int8[], $2::int8[], $3::int8[])
                         AS u(pan, bd, hd, b, h)),
                 ord AS (
                     UPDATE orders o SET status = u.status, paid_by = u.paid_by
                     FROM unnest($9::text[], $10::text[], $11::text[], $12::bytea[])
                         AS u(m, i, status, paid_by)
                     WHERE o.merchant_id = u.m AND o.order_id = u.i),
                 rec_new AS (
                     INSERT INTO records (id, slot, order_merchant, order_id, answers, expires_at)
                     SELECT * FROM unnest($13::bytea[], $14::bytea[], $15::text[], $16::text[],
                         $17::bytea[], $18::int8[])),
                 rec_changed AS (
                     UPDATE records r SET slot = u.slot, order_merchant = u.m, order_id = u.i,
                         answers = u.answers, expires_at = u.expires_at
                     FROM unnest($19::bytea[], $20::bytea[], $21::text[], $22::text[],
                         $23::bytea[], $24::int8[]) AS u(id, slot, m, i, answers, expires_at)
                     WHERE r.id = u.id)
                 SELECT 1",
            )
            .await?;
        Ok(Self {
            begin,
            commit,
            select_existing,
            select_accounts,
            select_records,
            select_orders,
            next_block,
            write,
        })
    }
}

/// Why an attempt at a batch failed.
enum Failure {
    /// Another transaction got there first (unique key, deadlock, serialization): retry.
    Conflict,
    /// The connection is gone: reconnect and retry while time is left.
    Connection(tokio_postgres::Error),
    /// Anything else (an unexpected SQL error, a row the engine cannot read): answer 96.
    Fatal(anyhow::Error),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::UNIQUE_VIOLATION
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                Failure::Conflict
            }
            Some(_) => Failure::Fatal(anyhow!(super::describe(&e))),
            // No SQLSTATE: the link (closed, or an I/O error), or a row this switch cannot
            // read, which no reconnection mends.
            None if e.is_closed() || source_is_io(&e) => Failure::Connection(e),
            None => Failure::Fatal(anyhow!(super::describe(&e))),
        }
    }
}

fn source_is_io(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// A request waiting in a worker, and since when.
struct Queued {
    job: Job,
    since: Instant,
}

fn answer_96(job: &Job) {
    let response = Response::plain(job.request.mti.response(), ResponseCode::SystemMalfunction);
    let _ = job.reply.tx.send((job.reply.slot, response));
}

pub(super) struct Worker {
    id: usize,
    config: super::StoreConfig,
    jobs: mpsc::Receiver<Job>,
    timeout: Duration,
    engine: EngineConfig,
    metrics: Arc<Metrics>,
    unreachable: Arc<AtomicBool>,
    conn: Option<(Client, Statements)>,
    keys: BatchKeys,
    /// Whether the next batch starts with an optimistic attempt (module docs).
    optimistic: bool,
    /// What the last batch found out about the cards of deferred requests: those that
    /// exist (their requests wait for the card) and those that do not (answered 14).
    existing: HashSet<Pan>,
    missing: HashSet<Pan>,
    /// The approval codes this worker may still give: `(next, end)` counters of the engine.
    codes: Option<(u64, u64)>,
}

impl Worker {
    pub(super) fn new(
        id: usize,
        config: super::StoreConfig,
        jobs: mpsc::Receiver<Job>,
        timeout: Duration,
        engine: EngineConfig,
        metrics: Arc<Metrics>,
        unreachable: Arc<AtomicBool>,
    ) -> Self {
        Self {
            id,
            config,
            jobs,
            timeout,
            engine,
            metrics,
            unreachable,
            conn: None,
            keys: BatchKeys::default(),
            optimistic: true,
            existing: HashSet::new(),
            missing: HashSet::new(),
            codes: None,
        }
    }

    /// Decides batches until every sender is gone and nothing is left to decide.
    pub(super) async fn run(mut self) {
        // Requests deferred by the last batch (their card was locked by another transaction)
        // lead the next one, in arrival order.
        let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
        let mut incoming: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        loop {
            let room = MAX_BATCH.saturating_sub(batch.len()).max(1);
            if batch.is_empty() {
                if self.jobs.recv_many(&mut incoming, room).await == 0 {
                    break;
                }
            } else {
                while incoming.len() < room {
                    match self.jobs.try_recv() {
                        Ok(job) => incoming.push(job),
                        Err(_) => break,
                    }
                }
            }
            let since = Instant::now();
            batch.extend(incoming.drain(..).map(|job| Queued { job, since }));
            let answered = self.decide(&mut batch).await;
            if answered == 0 && !batch.is_empty() {
                // Every card is locked elsewhere right now: let those transactions commit.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tracing::debug!(worker = self.id, "store worker stopped");
    }

    /// Decides one batch: answers what it decided (or 96 for all on failure) and leaves the
    /// deferred requests in `batch`. Returns how many were answered.
    async fn decide(&mut self, batch: &mut Vec<Queued>) -> usize {
        let started = Instant::now();
        // A request deferred for longer than the store timeout is answered 96 (nothing applied).
        let before = batch.len();
        batch.retain(|q| {
            let expired = q.since.elapsed() >= self.timeout;
            if expired {
                answer_96(&q.job);
            }
            !expired
        });
        if batch.len() < before {
            self.metrics.store_errors.inc();
            tracing::error!(
                worker = self.id,
                requests = before - batch.len(),
                "answering 96: their cards stayed locked by other transactions past the store timeout"
            );
        }
        if batch.is_empty() {
            return before;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let now = now();
        self.keys.clear();
        for q in batch.iter() {
            self.keys.add(&q.job.request);
        }
        self.keys.finish();
        let mut attempts = 0;
        let mut optimistic = self.optimistic;
        let outcome = loop {
            if self.conn.is_none() {
                match tokio::time::timeout_at(deadline, self.open()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(worker = self.id, error = %e, "cannot reach the store");
                        set_unreachable(&self.unreachable, true);
                        let retry_at = tokio::time::Instant::now() + Duration::from_millis(100);
                        if retry_at >= deadline {
                            break Err("store unreachable");
                        }
                        tokio::time::sleep_until(retry_at).await;
                        continue;
                    }
                    Err(_) => {
                        set_unreachable(&self.unreachable, true);
                        break Err("store unreachable");
                    }
                }
            }
            let result =
                tokio::time::timeout_at(deadline, self.attempt(batch, now, optimistic)).await;
            if !matches!(result, Ok(Ok(_))) {
                // A failed attempt may have given codes (even committed them, if the link died
                // in COMMIT): the next one takes a fresh block.
                self.codes = None;
            }
            match result {
                Ok(Ok(decided)) => break Ok(decided),
                Ok(Err(Failure::Conflict)) => {
                    self.rollback(deadline).await;
                    // Whatever the conflict, the next attempt reads every key.
                    optimistic = false;
                    attempts += 1;
                    self.metrics.store_retries.inc();
                    if attempts >= MAX_ATTEMPTS {
                        break Err("conflicts persisted");
                    }
                }
                Ok(Err(Failure::Connection(e))) => {
                    tracing::warn!(worker = self.id, error = %e, "store connection lost; retrying the batch");
                    self.conn = None;
                }
                Ok(Err(Failure::Fatal(e))) => {
                    tracing::error!(worker = self.id, error = %e, "store error; answering 96");
                    self.rollback(deadline).await;
                    break Err("store error");
                }
                Err(_) => {
                    // The transaction's fate is unknown (module docs, "Failures"): drop the
                    // connection, which rolls back whatever had not committed.
                    self.conn = None;
                    break Err("store timed out");
                }
            }
        };
        self.metrics
            .store_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Decided {
                mut responses,
                met_existing_keys,
                probed,
                found,
                codes,
            }) => {
                self.codes = codes;
                // A batch that found a retransmission (or a late original) reads every key
                // next time too; one that found none tries the optimistic way again.
                self.optimistic = !met_existing_keys;
                self.missing = probed.difference(&found).copied().collect();
                self.existing.extend(found);
                let mut answered = before - batch.len();
                let mut i = 0;
                batch.retain(|q| {
                    let response = responses[i].take();
                    i += 1;
                    match response {
                        Some(r) => {
                            let _ = q.job.reply.tx.send((q.job.reply.slot, r));
                            answered += 1;
                            false
                        }
                        None => true,
                    }
                });
                // Only cards still waiting matter (nearly always none or a few).
                if !self.existing.is_empty() {
                    let waiting: HashSet<Pan> =
                        batch.iter().filter_map(|q| q.job.request.pan).collect();
                    self.existing.retain(|p| waiting.contains(p));
                }
                answered
            }
            Err(why) => {
                self.metrics.store_errors.inc();
                tracing::error!(
                    worker = self.id,
                    requests = batch.len(),
                    reason = why,
                    "answering a batch 96: nothing of it was applied, or its outcome is unknown"
                );
                for q in batch.drain(..) {
                    answer_96(&q.job);
                }
                before
            }
        }
    }

    async fn open(&mut self) -> anyhow::Result<()> {
        let client = super::connect(&self.config).await?;
        // Every statement here looks rows up by key. Left to itself the planner picks
        // sequential scans for a batch of a few hundred keys while a table's statistics are
        // stale (new tables grow by thousands of rows a second): measured, a batch of 772 then
        // spent 540 ms scanning `transactions`, and it grows with the table. Seq scans off for
        // these connections keeps every look-up on its primary key.
        client
            .batch_execute("SET enable_seqscan = off")
            .await
            .map_err(|e| anyhow!("configuring the store connection: {}", super::describe(&e)))?;
        let statements = Statements::prepare(&client).await?;
        self.conn = Some((client, statements));
        Ok(())
    }

    /// Ends an aborted or half-read transaction (a no-op, with a server warning, when none is
    /// open). A connection that cannot do even that is dropped.
    async fn rollback(&mut self, deadline: tokio::time::Instant) {
        let ok = match &self.conn {
            Some((c, _)) => matches!(
                tokio::time::timeout_at(deadline, c.batch_execute("ROLLBACK")).await,
                Ok(Ok(()))
            ),
            None => return,
        };
        if !ok {
            self.conn = None;
        }
    }

    /// One attempt: read and lock, decide, write and commit. Returns the answers in batch
    /// order once committed; `None` for a request deferred because its card is locked by
    /// another transaction (or not known yet to exist). An `optimistic` attempt does not read
    /// idempotency entries or the own transaction slots of holds and purchases: it takes them
    /// as new, and the unique index refuses the batch if one was not (module docs).
    async fn attempt(
        &self,
        batch: &[Queued],
        now: Now,
        optimistic: bool,
    ) -> Result<Decided, Failure> {
        let (client, st) = self
            .conn
            .as_ref()
            .ok_or_else(|| Failure::Fatal(anyhow!("no store connection")))?;
        let keys = &self.keys;
        let t0 = Instant::now();
        // Each idempotency key as (MTI, identity): its answer is kept in that identity's
        // record.
        let answer_keys = keys
            .idem
            .iter()
            .map(|key| split_idem_key(key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::Fatal(anyhow!("idempotency key: {e}")))?;
        // Every record the batch may write: those identities and the slots it acts on,
        // sorted (the lock order).
        let mut record_ids: Vec<&[u8]> = keys.txns.iter().map(Vec::as_slice).collect();
        record_ids.extend(answer_keys.iter().map(|&(_, id)| id));
        record_ids.sort_unstable();
        record_ids.dedup();
        let mut ws = Shard::working_set(self.engine.clone());
        let stateless = keys.accounts.is_empty() && keys.idem.is_empty();
        let mut loaded = Loaded::default();
        let mut decided = Decided::default();
        let mut probe: Vec<&str> = Vec::new();
        let mut codes = self.codes.unwrap_or((0, 0));
        if !stateless {
            // Round trip 1: lock and read every row the batch may touch.
            let pans: Vec<&str> = keys.accounts.iter().map(pan_str).collect();
            let (merchants, order_ids): (Vec<&str>, Vec<&str>) = keys
                .orders
                .iter()
                .filter_map(|o| Some((merchant_str(&o.merchant)?, o.order_id.as_str())))
                .unzip();
            let targets: Vec<&[u8]>;
            let read_ids: &[&[u8]] = if optimistic {
                targets = keys.targets.iter().map(Vec::as_slice).collect();
                &targets
            } else {
                &record_ids
            };
            // Approval codes: a fresh block when what is left might not do for this batch.
            let fresh_codes = codes.1.wrapping_sub(codes.0) < batch.len() as u64;
            let p_accounts: [&(dyn ToSql + Sync); 1] = [&pans];
            let p_records: [&(dyn ToSql + Sync); 1] = [&read_ids];
            let p_orders: [&(dyn ToSql + Sync); 3] = [&merchants, &order_ids, &keys.targets];
            // A statement with nothing to look up is not sent at all.
            let query_if = |wanted: bool, statement, params| async move {
                if wanted {
                    client.query(statement, params).await
                } else {
                    Ok(Vec::new())
                }
            };
            let (begin, accounts, records, orders, block) = tokio::join!(
                client.execute(&st.begin, &[]),
                query_if(!pans.is_empty(), &st.select_accounts, &p_accounts[..]),
                query_if(!read_ids.is_empty(), &st.select_records, &p_records[..]),
                query_if(
                    !merchants.is_empty() || !keys.targets.is_empty(),
                    &st.select_orders,
                    &p_orders[..]
                ),
                query_if(fresh_codes, &st.next_block, &[]),
            );
            begin?;
            let (accounts, records, orders, block) = (accounts?, records?, orders?, block?);
            if let Some(row) = block.first() {
                let value: i64 = row.try_get(0)?;
                let first = (value as u64).wrapping_mul(CODE_BLOCK);
                codes = (first, first.wrapping_add(BLOCKS_PER_VALUE * CODE_BLOCK));
            }
            loaded.fill(&mut ws, &accounts, &records, &orders)?;
            decided.met_existing_keys = loaded
                .records
                .keys()
                .any(|id| keys.targets.binary_search(id).is_err());
            // A card not returned is locked by another transaction (SKIP LOCKED) or does not
            // exist. Unless the last batch found out which, its requests wait for the next
            // batch, and this batch's second round trip finds out (module docs).
            for pan in &keys.accounts {
                if loaded.accounts.contains_key(pan) || self.missing.contains(pan) {
                    continue;
                }
                loaded.deferred.insert(*pan);
                if !self.existing.contains(pan) {
                    probe.push(pan_str(pan));
                    decided.probed.insert(*pan);
                }
            }
        }

        ws.set_approvals(codes.0);
        let mut out = Vec::with_capacity(batch.len());
        let mut deferred = vec![false; batch.len()];
        for (i, q) in batch.iter().enumerate() {
            if q.job
                .request
                .pan
                .is_some_and(|p| loaded.deferred.contains(&p))
            {
                deferred[i] = true;
                continue;
            }
            ws.handle_request(now, i as u64, q.job.request.clone(), &mut out);
        }
        if !ws.is_settled() {
            return Err(Failure::Fatal(anyhow!(
                "the working set left a decision in flight"
            )));
        }
        decided.responses = vec![None; batch.len()];
        for o in out {
            if let Output::Reply {
                token, response, ..
            } = o
            {
                if let Some(r) = decided.responses.get_mut(token as usize) {
                    *r = Some(response);
                }
            }
        }
        if decided
            .responses
            .iter()
            .zip(&deferred)
            .any(|(r, d)| r.is_none() != *d)
        {
            return Err(Failure::Fatal(anyhow!("a request got no answer")));
        }
        if stateless {
            decided.codes = self.codes;
            return Ok(decided);
        }
        decided.codes = Some((ws.approvals(), codes.1));

        let t1 = Instant::now();
        // Round trip 2: write what changed, find out which unreturned cards exist, then
        // commit, pipelined.
        let w = Writes::collect(&ws, keys, &answer_keys, &record_ids, &loaded, now)?;
        let (n, c) = (&w.rec_new, &w.rec_changed);
        let params: [&(dyn ToSql + Sync); 24] = [
            &w.acc_pan,
            &w.acc_balance,
            &w.acc_held,
            &w.acc_day,
            &w.acc_day_total,
            &w.at,
            &w.led_bd,
            &w.led_hd,
            &w.ord_m,
            &w.ord_i,
            &w.ord_status,
            &w.ord_paid_by,
            &n.id,
            &n.slot,
            &n.merchant,
            &n.order_id,
            &n.answers,
            &n.expires,
            &c.id,
            &c.slot,
            &c.merchant,
            &c.order_id,
            &c.answers,
            &c.expires,
        ];
        let p_probe: [&(dyn ToSql + Sync); 1] = [&probe];
        let writes =
            !(w.acc_pan.is_empty() && w.ord_m.is_empty() && n.id.is_empty() && c.id.is_empty());
        // Sent in this order before any answer is awaited; the first error decides (after
        // one, PostgreSQL ignores the rest and COMMIT rolls back).
        let t2 = Instant::now();
        let (written, existing, committed) = tokio::join!(
            async {
                if writes {
                    client.execute(&st.write, &params).await.map(drop)
                } else {
                    Ok(())
                }
            },
            async {
                if probe.is_empty() {
                    Ok(Vec::new())
                } else {
                    client.query(&st.select_existing, &p_probe).await
                }
            },
            client.execute(&st.commit, &[]),
        );
        written?;
        let existing = existing?;
        committed?;
        for row in &existing {
            let pan: &str = row.try_get(0)?;
            if let Ok(pan) = Pan::from_digits(pan.as_bytes()) {
                decided.found.insert(pan);
            }
        }
        tracing::debug!(
            worker = self.id,
            requests = batch.len(),
            optimistic,
            read_and_decide_us = (t1 - t0).as_micros() as u64,
            collect_us = (t2 - t1).as_micros() as u64,
            write_and_commit_us = t2.elapsed().as_micros() as u64,
            "store batch"
        );
        Ok(decided)
    }
}

/// What a committed attempt decided and found out.
#[derive(Default)]
struct Decided {
    /// The answers in batch order; `None` for a deferred request.
    responses: Vec<Option<Response>>,
    /// Whether it read an idempotency entry or a transaction slot that was not a target of
    /// a completion or reversal (a retransmission, a late original).
    met_existing_keys: bool,
    /// Cards it asked about (deferred, not returned, not known to exist).
    probed: HashSet<Pan>,
    /// Of those, the cards that exist.
    found: HashSet<Pan>,
    /// The approval codes left after it.
    codes: Option<(u64, u64)>,
}

/// The rows read in round trip 1, to tell what the batch changed.
#[derive(Default)]
struct Loaded {
    accounts: HashMap<Pan, AccountRow>,
    /// Cards locked by another transaction: their requests are deferred.
    deferred: HashSet<Pan>,
    orders: Vec<OrderRow>,
    /// `records` rows by identity.
    records: HashMap<Vec<u8>, StoredRecord>,
}

/// A `records` row as read.
struct StoredRecord {
    slot: Option<Vec<u8>>,
    answers: Vec<u8>,
}

impl Loaded {
    fn fill(
        &mut self,
        ws: &mut Shard,
        accounts: &[Row],
        records: &[Row],
        orders: &[Row],
    ) -> Result<(), Failure> {
        for row in accounts {
            let a = account_from_row(row).map_err(Failure::Fatal)?;
            ws.put_account(&a);
            self.accounts.insert(a.pan, a);
        }
        for row in orders {
            let o = order_from_row(row).map_err(Failure::Fatal)?;
            ws.put_order(&o)
                .map_err(|e| Failure::Fatal(anyhow!("orders: unreadable paid_by: {e}")))?;
            self.orders.push(o);
        }
        let mut key = Vec::new();
        for row in records {
            let id: Vec<u8> = row.try_get(0)?;
            let slot: Option<Vec<u8>> = row.try_get(1)?;
            let answers: Vec<u8> = row.try_get(2)?;
            if let Some(slot) = &slot {
                ws.put_txn(&id, slot)
                    .map_err(|e| Failure::Fatal(anyhow!("records: unreadable slot: {e}")))?;
            }
            for answer in Answers(&answers) {
                let (mti, entry) = answer.map_err(Failure::Fatal)?;
                key.clear();
                key.extend_from_slice(mti);
                key.extend_from_slice(&id);
                ws.put_idem(&key, entry)
                    .map_err(|e| Failure::Fatal(anyhow!("records: unreadable answer: {e}")))?;
            }
            self.records.insert(id, StoredRecord { slot, answers });
        }
        Ok(())
    }
}

/// The `answers` of a `records` row (migration 3 documents the layout): each item is the
/// encoding of the request's MTI, which the row's identity follows in the idempotency key,
/// and the engine's entry.
struct Answers<'a>(&'a [u8]);

impl<'a> Iterator for Answers<'a> {
    type Item = anyhow::Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&n, rest) = self.0.split_first()?;
        let item = (|| {
            let (mti, rest) = rest.split_at_checked(usize::from(n))?;
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let (entry, rest) = rest.split_at_checked(u32::from_be_bytes(*len) as usize)?;
            Some((mti, entry, rest))
        })();
        match item {
            Some((mti, entry, rest)) => {
                self.0 = rest;
                Some(Ok((mti, entry)))
            }
            None => {
                self.0 = &[];
                Some(Err(anyhow!("records: unreadable answers")))
            }
        }
    }
}

fn put_answer(out: &mut Vec<u8>, mti: &[u8], entry: &[u8]) {
    // An MTI's encoding is at most 3 bytes, an entry far below 4 GiB.
    out.push(mti.len() as u8);
    out.extend_from_slice(mti);
    out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    out.extend_from_slice(entry);
}

/// Column arrays of `records` rows to insert or update.
#[derive(Default)]
struct RecordColumns<'k> {
    /// Borrowed from the batch's keys.
    id: Vec<&'k [u8]>,
    slot: Vec<Option<Vec<u8>>>,
    merchant: Vec<Option<String>>,
    order_id: Vec<Option<String>>,
    answers: Vec<Vec<u8>>,
    /// `None` keeps the row (an open hold).
    expires: Vec<Option<i64>>,
}

impl<'k> RecordColumns<'k> {
    fn push(
        &mut self,
        id: &'k [u8],
        slot: Option<EntryRow>,
        answers: Vec<u8>,
        expires: Option<i64>,
    ) {
        let (slot, order) = match slot {
            Some(s) => (Some(s.value), s.order),
            None => (None, None),
        };
        let (m, i) = match order {
            Some(o) => (
                merchant_str(&o.merchant).map(str::to_owned),
                Some(o.order_id),
            ),
            None => (None, None),
        };
        self.id.push(id);
        self.slot.push(slot);
        self.merchant.push(m);
        self.order_id.push(i);
        self.answers.push(answers);
        self.expires.push(expires);
    }
}

/// What round trip 2 writes.
#[derive(Default)]
struct Writes<'k> {
    at: i64,
    /// Borrowed from the batch's keys: no copy per account.
    acc_pan: Vec<&'k str>,
    acc_balance: Vec<i64>,
    acc_held: Vec<i64>,
    acc_day: Vec<i64>,
    acc_day_total: Vec<i64>,
    led_bd: Vec<i64>,
    led_hd: Vec<i64>,
    ord_m: Vec<String>,
    ord_i: Vec<String>,
    ord_status: Vec<&'static str>,
    ord_paid_by: Vec<Option<Vec<u8>>>,
    rec_new: RecordColumns<'k>,
    rec_changed: RecordColumns<'k>,
}

impl<'k> Writes<'k> {
    fn collect(
        ws: &Shard,
        keys: &'k BatchKeys,
        answer_keys: &[(&'k [u8], &'k [u8])],
        record_ids: &[&'k [u8]],
        loaded: &Loaded,
        now: Now,
    ) -> Result<Self, Failure> {
        let mut w = Writes {
            at: now.unix_secs(),
            ..Writes::default()
        };
        for pan in &keys.accounts {
            let (Some(before), Some(after)) = (loaded.accounts.get(pan), ws.account_row(pan))
            else {
                continue;
            };
            if *before == after {
                continue;
            }
            w.acc_pan.push(pan_str(pan));
            w.acc_balance.push(after.balance);
            w.acc_held.push(after.held);
            w.acc_day.push(after.day);
            w.acc_day_total.push(after.day_total);
            w.led_bd.push(after.balance - before.balance);
            w.led_hd.push(after.held - before.held);
        }
        for before in &loaded.orders {
            let Some(after) = ws.order_row(&before.order) else {
                continue;
            };
            if *before == after {
                continue;
            }
            let Some(m) = merchant_str(&after.order.merchant) else {
                continue;
            };
            w.ord_m.push(m.to_owned());
            w.ord_i.push(after.order.order_id.clone());
            w.ord_status.push(after.status.as_str());
            w.ord_paid_by.push(after.paid_by);
        }
        let unreadable = |e: routing::WireError| Failure::Fatal(anyhow!("entry key: {e}"));
        // The MTI encodings of the batch's answers, by identity.
        let mut batch_mtis: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
        for &(mti, id) in answer_keys {
            batch_mtis.entry(id).or_default().push(mti);
        }
        let mut mtis: Vec<&[u8]> = Vec::new();
        let mut key = Vec::new();
        for &id in record_ids {
            let stored = loaded.records.get(id);
            // The row's answers after the batch: those read, in their order, then the
            // batch's new ones, each as the working set now holds it.
            mtis.clear();
            if let Some(r) = stored {
                for answer in Answers(&r.answers) {
                    mtis.push(answer.map_err(Failure::Fatal)?.0);
                }
            }
            for &mti in batch_mtis.get(id).into_iter().flatten() {
                if !mtis.contains(&mti) {
                    mtis.push(mti);
                }
            }
            let mut answers = Vec::new();
            let mut expires: Option<i64> = None;
            for &mti in &mtis {
                key.clear();
                key.extend_from_slice(mti);
                key.extend_from_slice(id);
                if let Some(row) = ws.idem_row(&key).map_err(unreadable)? {
                    put_answer(&mut answers, mti, &row.value);
                    expires = expires.max(row.expires);
                }
            }
            let slot = ws.txn_row(id).map_err(unreadable)?;
            let expires = match &slot {
                // An open hold keeps its row.
                Some(s) if s.expires.is_none() => None,
                Some(s) => expires.max(s.expires),
                None => expires,
            };
            match stored {
                None if slot.is_none() && answers.is_empty() => {}
                None => w.rec_new.push(id, slot, answers, expires),
                Some(r)
                    if r.answers != answers
                        || r.slot.as_deref() != slot.as_ref().map(|s| s.value.as_slice()) =>
                {
                    w.rec_changed.push(id, slot, answers, expires)
                }
                Some(_) => {}
            }
        }
        Ok(w)
    }
}

fn pan_str(pan: &Pan) -> &str {
    // A Pan holds ASCII digits only.
    std::str::from_utf8(pan.as_bytes()).unwrap_or("")
}

pub(super) fn pan_string(pan: &Pan) -> String {
    pan_str(pan).to_owned()
}

/// Merchant ids are stored as text; one that is not UTF-8 cannot be in the table.
fn merchant_str(m: &MerchantId) -> Option<&str> {
    std::str::from_utf8(m.as_bytes()).ok()
}

/// Reads an `accounts` row; errors name the column, never the card.
pub(super) fn account_from_row(row: &Row) -> anyhow::Result<AccountRow> {
    let bad = |col: &str| anyhow!("accounts: a row has an invalid {col}");
    let pan: &str = row.try_get(0)?;
    let expiry: &str = row.try_get(1)?;
    let status: &str = row.try_get(2)?;
    let currency: i16 = row.try_get(3)?;
    Ok(AccountRow {
        pan: Pan::from_digits(pan.as_bytes()).map_err(|_| bad("pan"))?,
        expiry: Yymm::from_digits(expiry.as_bytes()).ok_or_else(|| bad("expiry"))?,
        status: CardStatus::parse(status).ok_or_else(|| bad("status"))?,
        currency: u16::try_from(currency).map_err(|_| bad("currency"))?,
        balance: row.try_get(4)?,
        held: row.try_get(5)?,
        daily_limit: row.try_get(6)?,
        day: row.try_get(7)?,
        day_total: row.try_get(8)?,
    })
}

/// Reads an `orders` row.
fn order_from_row(row: &Row) -> anyhow::Result<OrderRow> {
    let bad = |col: &str| anyhow!("orders: a row has an invalid {col}");
    let merchant: &str = row.try_get(0)?;
    let status: &str = row.try_get(4)?;
    let currency: i16 = row.try_get(3)?;
    Ok(OrderRow {
        order: OrderRef {
            merchant: MerchantId::new(merchant.as_bytes()).map_err(|_| bad("merchant_id"))?,
            order_id: row.try_get(1)?,
        },
        amount: row.try_get(2)?,
        currency: u16::try_from(currency).map_err(|_| bad("currency"))?,
        status: OrderStatus::parse(status).ok_or_else(|| bad("status"))?,
        paid_by: row.try_get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_back_as_written_and_a_cut_list_is_an_error() {
        let mut bytes = Vec::new();
        put_answer(&mut bytes, &[200, 1], b"first entry");
        put_answer(&mut bytes, &[100], b"");
        put_answer(&mut bytes, &[144, 3], &[7; 300]);
        let read: Vec<(&[u8], &[u8])> = Answers(&bytes).map(Result::unwrap).collect();
        let expected: [(&[u8], &[u8]); 3] = [
            (&[200, 1], b"first entry"),
            (&[100], b""),
            (&[144, 3], &[7; 300]),
        ];
        assert_eq!(read, expected);
        assert_eq!(Answers(&[]).count(), 0);
        for cut in 1..bytes.len() {
            let results: Vec<_> = Answers(&bytes[..cut]).collect();
            let whole = [2 + 1 + 4 + 11, 2 + 1 + 4 + 11 + 1 + 1 + 4];
            if whole.contains(&cut) {
                assert!(results.iter().all(Result::is_ok), "cut at {cut}");
            } else {
                assert!(results.last().unwrap().is_err(), "cut at {cut}");
            }
        }
    }
}
