//! One task per ISO connection: reads frames, answers what needs no shard at once, sends the
//! rest to the shards, and writes answers as they come back (in any order; clients match them by
//! 41 + 11 + 7). Answers are gathered into one buffer and written with one syscall per batch.
//!
//! The requests of one read batch go to the shards as one [`Batch`] per shard, queued once the
//! batch's frames are handled: one queue operation per shard and batch rather than per request.
//!
//! Backpressure: with `max_in_flight` requests undecided the task stops reading the socket, so a
//! client that sends faster than the switch decides is slowed by TCP, never dropped. A shard
//! whose queue is full does the same: the refused batch waits in the task (offered again after
//! 100 us, doubling up to 10 ms) and nothing more is read until it is queued.
//!
//! The hot path does not await and does not move the decoded request: each frame is decoded
//! into a free slot of the connection's request table ([`codec::Message::decode_partial_into`])
//! and its answer is written from there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use codec::framing::{FrameError, LengthFramer};
use codec::{Message, Spec};
use futures::{FutureExt, StreamExt};
use routing::Response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::backend::Backend;
use crate::iso::{self, Action, Answer};
use crate::metrics::{CloseReason, Metrics, SkipReason};
use crate::shards::{connection_id, Batch, Rejected};

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub spec: &'static Spec,
    pub framer: LengthFramer,
    pub shards: Backend,
    pub metrics: Arc<Metrics>,
    pub max_in_flight: usize,
    pub idle_timeout: Option<Duration>,
    /// Every connection must begin with a PROXY v2 header (see [`crate::proxy`]).
    pub proxy_protocol: bool,
}

/// The switch's shutdown phases, as connections see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Answer what arrives, close once idle and quiet for a second.
    Draining,
    /// The grace period is over: close now.
    Closing,
}

/// How long a draining connection must be quiet (nothing in flight, nothing received) before
/// it is closed.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// After the grace period, how long a connection may wait for answers already in flight.
const CLOSING_FLUSH: Duration = Duration::from_secs(2);

/// Frames handled before answers are flushed, when more are already buffered.
const READ_BATCH: usize = 128;

/// One request slot. A frame is decoded straight into a free slot's message and, when it goes
/// to a shard, stays there until the answer comes back: the decoded message (about 1.6 KB) is
/// never moved. A free slot's message is cleared, so that it holds no frame (and no share of
/// a read buffer).
struct Slot {
    request: Message<'static>,
    received: Instant,
    /// Waiting for a shard's decision.
    live: bool,
}

struct Connection {
    shared: Arc<Shared>,
    /// Answers waiting to be written, already framed.
    out: BytesMut,
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    replies_tx: mpsc::UnboundedSender<(u32, Response)>,
    /// This connection's id in the shards' reply books.
    id: u64,
    /// Requests of the read batch being handled, by shard (each with its slot), queued at its
    /// end ([`Connection::queue_batches`]).
    outbox: Vec<Vec<(u32, routing::Request)>>,
    /// Batches a shard refused because its queue was full: retried after `backoff`, and
    /// nothing more is read meanwhile (backpressure).
    stalled: Vec<(usize, Batch)>,
    backoff: Duration,
    /// Framing was lost: answer what is in flight, read nothing more, close.
    pending_close: bool,
}

/// First wait before a job refused for a full shard queue is offered again; doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_micros(100);
const MAX_BACKOFF: Duration = Duration::from_millis(10);

/// Serves one connection until it closes; never returns an error (each is logged and counted).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    let metrics = shared.metrics.clone();
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let mut frames = FramedRead::with_capacity(read_half, shared.framer.clone(), 64 * 1024);
    let (replies_tx, mut replies_rx) = mpsc::unbounded_channel();
    let queues = shared.shards.queues();
    let mut conn = Connection {
        shared,
        out: BytesMut::with_capacity(64 * 1024),
        slots: Vec::new(),
        free: Vec::new(),
        in_flight: 0,
        replies_tx,
        id: connection_id(),
        outbox: (0..queues).map(|_| Vec::new()).collect(),
        stalled: Vec::new(),
        backoff: FIRST_BACKOFF,
        pending_close: false,
    };
    let mut last_frame = Instant::now();
    let mut reading = true;
    let mut closing_deadline: Option<Instant> = None;
    let reason = loop {
        if !conn.out.is_empty() {
            if let Err(e) = write_half.write_all(&conn.out).await {
                tracing::debug!(error = %e, "write failed");
                break CloseReason::Io;
            }
            conn.out.clear();
        }
        let current = *phase.borrow();
        let backoff = conn.backoff;
        if current == Phase::Closing {
            // Grace period over: read nothing more, but still deliver the answers already being
            // decided (shards answer in microseconds), then close.
            reading = false;
            let deadline = *closing_deadline.get_or_insert_with(|| Instant::now() + CLOSING_FLUSH);
            if !conn.stalled.is_empty() {
                conn.refuse_stalled();
                continue;
            }
            if conn.in_flight == 0 || Instant::now() >= deadline {
                break CloseReason::Shutdown;
            }
        }
        if current == Phase::Draining && conn.in_flight == 0 && last_frame.elapsed() >= DRAIN_QUIET
        {
            break CloseReason::Shutdown;
        }
        if !reading && conn.in_flight == 0 {
            break CloseReason::Peer;
        }
        let idle_deadline = conn.shared.idle_timeout.map(|t| last_frame + t);
        let can_read = conn.can_read(reading);
        tokio::select! {
            biased;
            reply = replies_rx.recv() => {
                if let Some((slot, response)) = reply {
                    // One clock read for the batch of answers (the decision time metric).
                    let now = Instant::now();
                    conn.answered(slot, &response, now);
                    while let Ok((slot, response)) = replies_rx.try_recv() {
                        conn.answered(slot, &response, now);
                    }
                }
            }
            frame = frames.next(), if can_read => {
                last_frame = Instant::now();
                // One clock read for the frames of this read batch: they arrived together.
                let now = last_frame;
                match conn.frame(frame, now) {
                    Ok(true) => {
                        // Take the frames already buffered before writing answers.
                        for _ in 0..READ_BATCH {
                            if !conn.can_read(true) {
                                break;
                            }
                            match frames.next().now_or_never() {
                                Some(frame) => match conn.frame(frame, now) {
                                    Ok(true) => {}
                                    Ok(false) => { reading = false; break; }
                                    Err(reason) => { reading = false; conn.lost(reason); break; }
                                },
                                None => break,
                            }
                        }
                    }
                    Ok(false) => reading = false,
                    Err(reason) => { reading = false; conn.lost(reason); }
                }
                conn.queue_batches();
            }
            // select! builds every branch's future on each pass, enabled or not: the sleeps
            // are wrapped so that a timer is only made when its branch is polled.
            _ = async { tokio::time::sleep(backoff).await }, if !conn.stalled.is_empty() => conn.retry(),
            _ = phase.changed() => {}
            _ = async { tokio::time::sleep(Duration::from_millis(100)).await }, if current != Phase::Running => {}
            _ = sleep_until_opt(idle_deadline), if current == Phase::Running && idle_deadline.is_some() => {
                tracing::info!("closing idle connection");
                break CloseReason::Idle;
            }
        }
        if conn.framing_lost() {
            // Answer what is already decided, then close: the byte stream cannot be trusted.
            if !conn.out.is_empty() {
                let _ = write_half.write_all(&conn.out).await;
            }
            break CloseReason::FramingLost;
        }
    };
    let _ = write_half.shutdown().await;
    metrics.closed(reason);
    metrics.connections_open.dec();
    if conn.in_flight > 0 {
        metrics.in_flight.dec_by(conn.in_flight as i64);
    }
    tracing::info!(peer.addr = %peer, ?reason, "connection closed");
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Whether another frame may be taken: reading, under the in-flight limit, and no job
    /// waiting for room in a shard's queue.
    fn can_read(&self, reading: bool) -> bool {
        reading && self.stalled.is_empty() && self.in_flight < self.shared.max_in_flight
    }

    /// A free slot's index (a new slot when none is free).
    fn take_slot(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        self.slots.push(Slot {
            request: Message::empty(self.shared.spec),
            received: Instant::now(),
            live: false,
        });
        (self.slots.len() - 1) as u32
    }

    /// Handles one item from the framer: `Ok(false)` at end of stream, `Err` when framing is lost.
    fn frame(
        &mut self,
        item: Option<Result<bytes::Bytes, FrameError>>,
        now: Instant,
    ) -> Result<bool, FrameError> {
        let frame = match item {
            None => return Ok(false),
            Some(Err(e)) => return Err(e),
            // A zero-length frame is a keep-alive some terminals send: it refreshes the idle
            // timer (already done by the caller) and needs no answer.
            Some(Ok(frame)) if frame.is_empty() => return Ok(true),
            Some(Ok(frame)) => frame,
        };
        let index = self.take_slot();
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Ok(true);
        };
        let shared = &*self.shared;
        let metrics = &shared.metrics;
        let msg = &mut slot.request;
        if let Err(e) = msg.decode_partial_into(shared.spec, frame) {
            // The error names the part and reason, never the bytes.
            tracing::warn!(error = %e, "skipping undecodable frame");
            metrics.skipped(SkipReason::Undecodable);
            self.free.push(index);
            return Ok(true);
        }
        match iso::classify(msg) {
            Action::Skip(reason) => {
                tracing::warn!(mti = %msg.mti(), ?reason, error = ?msg.error(), "skipping frame that cannot be answered");
                metrics.skipped(reason);
                msg.clear();
                self.free.push(index);
            }
            Action::Answer {
                response_mti,
                code,
                network,
            } => {
                if code == "30" {
                    metrics.format_errors.inc();
                    tracing::info!(mti = %msg.mti(), error = ?msg.error(), "format error");
                }
                let answer = Answer {
                    response_mti,
                    code,
                    approval_code: None,
                    additional_amounts: None,
                    network,
                };
                write(shared, &mut self.out, msg, answer);
                msg.clear();
                self.free.push(index);
            }
            Action::Route(request) => {
                slot.received = now;
                slot.live = true;
                self.in_flight += 1;
                metrics.in_flight.inc();
                let queue = shared.shards.queue_of(&request);
                match self.outbox.get_mut(queue) {
                    Some(jobs) => jobs.push((index, request)),
                    None => self.refuse(index),
                }
            }
        }
        Ok(true)
    }

    /// Queues the read batch's requests, one batch per shard.
    fn queue_batches(&mut self) {
        for queue in 0..self.outbox.len() {
            let Some(jobs) = self.outbox.get_mut(queue).filter(|j| !j.is_empty()) else {
                continue;
            };
            // The next read batch's requests go to a new vector: this one travels with the batch.
            let jobs = std::mem::take(jobs);
            let batch = Batch {
                conn: self.id,
                tx: self.replies_tx.clone(),
                jobs,
            };
            self.submit(queue, batch);
        }
    }

    /// Queues a batch on its shard; a full queue leaves it in `stalled` for
    /// [`Connection::retry`].
    fn submit(&mut self, queue: usize, batch: Batch) {
        match self.shared.shards.submit_batch(queue, batch) {
            Ok(()) => self.backoff = FIRST_BACKOFF,
            Err(Rejected::Full(batch)) => self.stalled.push((queue, batch)),
            Err(Rejected::Stopped(batch)) => {
                tracing::error!(requests = batch.jobs.len(), "shards stopped; answering 96");
                for (index, _) in batch.jobs {
                    self.refuse(index);
                }
            }
        }
    }

    /// Answers 96 at once to the request in slot `index`, which no shard will decide.
    fn refuse(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        slot.live = false;
        self.free.push(index);
        self.in_flight -= 1;
        self.shared.metrics.in_flight.dec();
        if let Some(response_mti) = slot.request.mti().response() {
            let answer = Answer {
                response_mti,
                code: "96",
                approval_code: None,
                additional_amounts: None,
                network: false,
            };
            write(&self.shared, &mut self.out, &slot.request, answer);
        }
        slot.request.clear();
    }

    /// Offers the stalled batches again, after a longer wait next time if a queue is still
    /// full.
    fn retry(&mut self) {
        if self.stalled.is_empty() {
            return;
        }
        let longer = (self.backoff * 2).min(MAX_BACKOFF);
        for (queue, batch) in std::mem::take(&mut self.stalled) {
            self.submit(queue, batch);
        }
        if !self.stalled.is_empty() {
            self.backoff = longer;
        }
    }

    /// Answers 96 to the requests of the batches still refused (closing: none will be
    /// queued). They were never applied.
    fn refuse_stalled(&mut self) {
        for (_, batch) in std::mem::take(&mut self.stalled) {
            for (index, _) in batch.jobs {
                self.refuse(index);
            }
        }
    }

    /// A shard's decision for the request in `slot`.
    fn answered(&mut self, index: u32, response: &Response, now: Instant) {
        let Some(slot) = self.slots.get_mut(index as usize).filter(|s| s.live) else {
            tracing::error!(slot = index, "answer for an unknown request slot");
            return;
        };
        slot.live = false;
        self.free.push(index);
        self.in_flight -= 1;
        let metrics = &self.shared.metrics;
        metrics.in_flight.dec();
        metrics
            .decision_seconds
            .observe(now.saturating_duration_since(slot.received).as_secs_f64());
        let Some(response_mti) = codec::Mti::new(response.mti.to_digits()) else {
            slot.request.clear();
            return;
        };
        let answer = Answer {
            response_mti,
            code: response.code.as_str(),
            approval_code: response.approval_code.as_ref().map(|c| c.as_str()),
            additional_amounts: response.additional_amounts.as_ref().map(|a| a.as_str()),
            network: false,
        };
        write(&self.shared, &mut self.out, &slot.request, answer);
        // A free slot holds no frame: the read buffer it shares can be reused or freed.
        slot.request.clear();
    }

    fn lost(&mut self, reason: FrameError) {
        tracing::warn!(error = %reason, "framing lost; closing connection");
        self.pending_close = true;
    }

    fn framing_lost(&self) -> bool {
        self.pending_close && self.in_flight == 0
    }
}

/// Frames and queues one answer for writing.
fn write(shared: &Shared, out: &mut BytesMut, request: &Message<'_>, answer: Answer<'_>) {
    let written = shared
        .framer
        .encode_with(out, |dst| iso::write_response(request, answer, dst));
    match written {
        Ok(()) => shared.metrics.answered(request.mti(), answer.code),
        Err(e) => tracing::error!(error = %e, mti = %request.mti(), "cannot encode response"),
    }
}
