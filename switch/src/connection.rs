//! One task per ISO connection: reads frames, answers what needs no shard at once, sends the
//! rest to the shards, and writes answers as they come back (in any order; clients match them by
//! 41 + 11 + 7). Answers are gathered into one buffer and written with one syscall per batch.
//!
//! Backpressure: with `max_in_flight` requests undecided the task stops reading the socket, so a
//! client that sends faster than the switch decides is slowed by TCP, never dropped.

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

use crate::iso::{self, Action, Answer};
use crate::metrics::{CloseReason, Metrics, SkipReason};
use crate::shards::{Job, Rejected, ReplyTo, ShardSet};

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    pub spec: &'static Spec,
    pub framer: LengthFramer,
    pub shards: ShardSet,
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

/// A request waiting for its shard's decision.
struct Pending {
    request: Message<'static>,
    received: Instant,
}

struct Connection {
    shared: Arc<Shared>,
    /// Answers waiting to be written, already framed.
    out: BytesMut,
    pending: Vec<Option<Pending>>,
    free: Vec<u32>,
    in_flight: usize,
    replies_tx: mpsc::UnboundedSender<(u32, Response)>,
    /// Framing was lost: answer what is in flight, read nothing more, close.
    pending_close: bool,
}

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
    let mut conn = Connection {
        shared,
        out: BytesMut::with_capacity(64 * 1024),
        pending: Vec::new(),
        free: Vec::new(),
        in_flight: 0,
        replies_tx,
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
        if current == Phase::Closing {
            // Grace period over: read nothing more, but still deliver the answers already being
            // decided (shards answer in microseconds), then close.
            reading = false;
            let deadline = *closing_deadline.get_or_insert_with(|| Instant::now() + CLOSING_FLUSH);
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
        let can_read = reading && conn.in_flight < conn.shared.max_in_flight;
        tokio::select! {
            biased;
            reply = replies_rx.recv() => {
                if let Some((slot, response)) = reply {
                    conn.answered(slot, &response);
                    while let Ok((slot, response)) = replies_rx.try_recv() {
                        conn.answered(slot, &response);
                    }
                }
            }
            frame = frames.next(), if can_read => {
                last_frame = Instant::now();
                match conn.frame(frame).await {
                    Ok(true) => {
                        // Take the frames already buffered before writing answers.
                        for _ in 0..READ_BATCH {
                            if conn.in_flight >= conn.shared.max_in_flight {
                                break;
                            }
                            match frames.next().now_or_never() {
                                Some(frame) => match conn.frame(frame).await {
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
            }
            _ = phase.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)), if current != Phase::Running => {}
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
    /// Handles one item from the framer: `Ok(false)` at end of stream, `Err` when framing is lost.
    async fn frame(
        &mut self,
        item: Option<Result<bytes::Bytes, FrameError>>,
    ) -> Result<bool, FrameError> {
        let frame = match item {
            None => return Ok(false),
            Some(Err(e)) => return Err(e),
            // A zero-length frame is a keep-alive some terminals send: it refreshes the idle
            // timer (already done by the caller) and needs no answer.
            Some(Ok(frame)) if frame.is_empty() => return Ok(true),
            Some(Ok(frame)) => frame,
        };
        let metrics = &self.shared.metrics;
        let msg = match Message::decode_partial(self.shared.spec, frame) {
            Ok(msg) => msg,
            Err(e) => {
                // The error names the part and reason, never the bytes.
                tracing::warn!(error = %e, "skipping undecodable frame");
                metrics.skipped(SkipReason::Undecodable);
                return Ok(true);
            }
        };
        match iso::classify(&msg) {
            Action::Skip(reason) => {
                tracing::warn!(mti = %msg.mti(), ?reason, error = ?msg.error(), "skipping frame that cannot be answered");
                metrics.skipped(reason);
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
                self.write(&msg, answer);
            }
            Action::Route(request) => self.route(msg, request).await,
        }
        Ok(true)
    }

    async fn route(&mut self, msg: Message<'static>, request: routing::Request) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.pending.push(None);
                (self.pending.len() - 1) as u32
            }
        };
        let mut job = Job {
            request,
            reply: ReplyTo {
                tx: self.replies_tx.clone(),
                slot,
            },
        };
        let mut backoff = Duration::from_micros(100);
        loop {
            match self.shared.shards.submit(job) {
                Ok(()) => break,
                Err(Rejected::Full(back)) => {
                    // The shard's queue is full: wait (this connection stops reading meanwhile).
                    job = back;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(10));
                }
                Err(Rejected::Stopped(_)) => {
                    self.free.push(slot);
                    let Some(response_mti) = msg.mti().response() else {
                        return;
                    };
                    tracing::error!("shards stopped; answering 96");
                    let answer = Answer {
                        response_mti,
                        code: "96",
                        approval_code: None,
                        additional_amounts: None,
                        network: false,
                    };
                    self.write(&msg, answer);
                    return;
                }
            }
        }
        if let Some(p) = self.pending.get_mut(slot as usize) {
            *p = Some(Pending {
                request: msg,
                received: Instant::now(),
            });
        }
        self.in_flight += 1;
        self.shared.metrics.in_flight.inc();
    }

    /// A shard's decision for the request in `slot`.
    fn answered(&mut self, slot: u32, response: &Response) {
        let Some(pending) = self.pending.get_mut(slot as usize).and_then(Option::take) else {
            tracing::error!(slot, "answer for an unknown request slot");
            return;
        };
        self.free.push(slot);
        self.in_flight -= 1;
        self.shared.metrics.in_flight.dec();
        let Some(response_mti) = codec::Mti::new(response.mti.to_digits()) else {
            return;
        };
        let answer = Answer {
            response_mti,
            code: response.code.as_str(),
            approval_code: response.approval_code.as_ref().map(|c| c.as_str()),
            additional_amounts: response.additional_amounts.as_ref().map(|a| a.as_str()),
            network: false,
        };
        self.write(&pending.request, answer);
        self.shared
            .metrics
            .decision_seconds
            .observe(pending.received.elapsed().as_secs_f64());
    }

    /// Frames and queues one answer for writing.
    fn write(&mut self, request: &Message<'_>, answer: Answer<'_>) {
        let written = self.shared.framer.encode_with(&mut self.out, |dst| {
            iso::write_response(request, answer, dst)
        });
        match written {
            Ok(()) => self.shared.metrics.answered(request.mti(), answer.code),
            Err(e) => tracing::error!(error = %e, mti = %request.mti(), "cannot encode response"),
        }
    }

    fn lost(&mut self, reason: FrameError) {
        tracing::warn!(error = %reason, "framing lost; closing connection");
        self.pending_close = true;
    }

    fn framing_lost(&self) -> bool {
        self.pending_close && self.in_flight == 0
    }
}
