//! Start-up, the accept loop and the drain.
//!
//! Start: load the store, start the shard threads, bind both listeners, then report ready.
//! Drain (SIGTERM): `/readyz` answers 503 at once, the listener closes, connections keep
//! answering what they receive and close once idle and quiet for a second; at the end of the
//! grace period the rest are closed; then the shards stop and `serve` returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin::{self, Health};
use crate::backend::Backend;
use crate::config::Config;
use crate::connection::{self, Phase, Shared};
use crate::metrics::{CloseReason, Metrics};
use crate::pg;
use crate::proxy;
use crate::shards;
use crate::store;

/// Requests waiting in one shard's queue before connections back off (their own in-flight
/// bound applies first).
const SHARD_QUEUE: usize = 16_384;

/// What stops once every connection is gone.
enum Deciders {
    Embedded(shards::ShardThreads),
    Postgres(pg::StoreWorkers),
}

/// A running switch.
#[derive(Debug)]
pub struct Running {
    /// Where the ISO listener is bound (useful with port 0).
    pub iso_addr: SocketAddr,
    /// Where the admin listener is bound.
    pub admin_addr: SocketAddr,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts the drain and waits until the switch has stopped.
    pub async fn shutdown(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }

    /// Waits until the switch has stopped (after [`Running::trigger_shutdown`]).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// Starts the drain without waiting.
    pub fn trigger_shutdown(&self) {
        let _ = self.stop_tx.send(true);
    }
}

/// Loads the store, binds the listeners and starts serving. Returns once ready.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let spec = codec::load_spec(&config.spec)?;
    // One spec for the life of the process; decoded messages borrow it on every task.
    let spec: &'static codec::Spec = Box::leak(Box::new(spec));
    let framing: codec::framing::Framing = config
        .framing
        .parse()
        .map_err(|e| anyhow::anyhow!("framing: {e}"))?;
    let framer = codec::framing::LengthFramer::new(framing).with_max_frame(config.max_frame);
    let shard_count = config.shard_count();
    let metrics = Metrics::new(shard_count);
    let health = Health::new();

    let (backend, deciders) = match &config.store {
        None => {
            if config.durability == crate::config::Durability::None {
                tracing::warn!(
                    "--durability none: decisions are not fsynced and a crash may lose them"
                );
            }
            if config.store_timeout_ms != crate::config::DEFAULT_STORE_TIMEOUT_MS {
                tracing::warn!(
                    "store_timeout_ms bounds the wait for the --store database: ignored without --store"
                );
            }
            let shard_states = store::load(&config, shard_count)?;
            let (set, threads) = shards::start(shard_states, SHARD_QUEUE, metrics.clone())
                .context("starting shard threads")?;
            (Backend::Embedded(set), Deciders::Embedded(threads))
        }
        Some(url) => {
            if config.expected_transactions > 0 {
                tracing::warn!(
                    "expected_transactions sizes the embedded store's maps: ignored with --store"
                );
            }
            let engine = routing::EngineConfig {
                idempotency_window_secs: config.idempotency_window_secs,
                bins: config.bin_table()?,
            };
            // With the database doing the work, fewer and bigger batches are faster: one
            // store worker (one connection) per replica unless --shards says otherwise
            // (benches/scale_out.sh: 1 worker 40,440 and 45,251/s, 2 workers 33,660 and
            // 32,855/s, interleaved).
            let workers = if config.shards == 0 { 1 } else { shard_count };
            let (set, workers) = pg::start(
                url,
                workers,
                SHARD_QUEUE,
                config.store_timeout(),
                engine,
                metrics.clone(),
            )
            .await
            .context("starting the PostgreSQL store")?;
            (Backend::Postgres(set), Deciders::Postgres(workers))
        }
    };

    health.watch_failure(backend.unavailable_flag());

    let iso = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the ISO listener on {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", config.admin_listen))?;
    let iso_addr = iso.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        health.clone(),
        admin_stop_rx,
    ));

    let shared = Arc::new(Shared {
        spec,
        framer,
        shards: backend,
        metrics: metrics.clone(),
        max_in_flight: config.max_in_flight,
        idle_timeout: config.idle_timeout(),
        proxy_protocol: config.proxy_protocol,
    });
    let grace = config.grace_period();
    let max_connections = config.max_connections;
    let task_health = health.clone();
    let task = tokio::spawn(async move {
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let tracker = TaskTracker::new();
        accept_loop(iso, shared, max_connections, &tracker, phase_rx, stop_rx).await;
        // Draining: not ready, no new connections; existing ones finish.
        task_health.set_ready(false);
        let _ = phase_tx.send(Phase::Draining);
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "grace period over; closing remaining connections");
            let _ = phase_tx.send(Phase::Closing);
            tracker.wait().await;
        }
        // Every connection (and its Backend clone) is gone: the deciders can finish and stop.
        match deciders {
            Deciders::Embedded(threads) => {
                let _ = tokio::task::spawn_blocking(move || threads.join()).await;
            }
            Deciders::Postgres(workers) => workers.join().await,
        }
        let _ = admin_stop_tx.send(true);
        tracing::info!("switch stopped");
    });

    health.set_ready(true);
    tracing::info!(%iso_addr, %admin_addr, spec = spec.name(), %framing, shards = shard_count, io_threads = tokio::runtime::Handle::current().metrics().num_workers(), "switch ready");
    Ok(Running {
        iso_addr,
        admin_addr,
        health,
        metrics,
        stop_tx,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_connections: usize,
    tracker: &TaskTracker,
    phase: watch::Receiver<Phase>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut backoff = Duration::from_millis(5);
    loop {
        // Take the connection permit before accepting: over the limit, new connections wait in
        // the kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = admin::stopped(&mut stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = admin::stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                spawn_connection(stream, peer, &shared, tracker, &phase, Some(permit));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                shared.metrics.accept_errors.inc();
                tracing::error!(error = %e, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    // Connections whose handshake the kernel has completed wait in the backlog; closing the
    // listener would reset them, and a load balancer that already connected does not retry
    // (the client's requests are lost with the link). Serve them like the others: the drain
    // answers what they send and closes them once quiet. A plain non-blocking accept sees the
    // backlog as it is, without waiting for the reactor.
    let backlog = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the listener's backlog");
            return;
        }
    };
    while let Ok((stream, peer)) = backlog.accept() {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        match stream {
            Ok(stream) => spawn_connection(stream, peer, &shared, tracker, &phase, None),
            Err(e) => tracing::warn!(error = %e, "dropping a connection from the backlog"),
        }
    }
}

fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    phase: &watch::Receiver<Phase>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    shared.metrics.connections_accepted.inc();
    shared.metrics.connections_open.inc();
    let task = open(stream, peer, shared.clone(), phase.clone());
    tracker.spawn(async move {
        task.await;
        drop(permit);
    });
}

/// Takes the PROXY v2 header when it is required, then serves the connection in a span named
/// after the client: the address the header carries, or the TCP peer without one.
async fn open(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) {
    let (span, client) = if shared.proxy_protocol {
        match proxy::read_header(&mut stream, peer).await {
            Ok(p) => (
                tracing::info_span!("conn", peer.addr = %p.client, proxy.addr = %p.proxy),
                p.client,
            ),
            Err(e) => {
                tracing::warn!(proxy.addr = %peer, error = %e, "closing connection: PROXY v2 header required");
                shared.metrics.closed(CloseReason::ProxyHeader);
                shared.metrics.connections_open.dec();
                return;
            }
        }
    } else {
        (tracing::info_span!("conn", peer.addr = %peer), peer)
    };
    span.in_scope(|| tracing::info!("connection opened"));
    connection::serve(stream, client, shared, phase)
        .instrument(span)
        .await;
}
