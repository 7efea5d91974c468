//! Prometheus metrics. Every handle is created once at start-up and cached, so the hot path
//! increments an atomic without a label lookup; every family is registered (and so shows its
//! HELP and TYPE) from the first scrape. No PAN, STAN or terminal id is ever a label value.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Request MTIs counted by name; anything else is `other`.
pub const MTI_LABELS: [&str; 7] = ["0100", "0200", "0220", "0400", "0420", "0800", "other"];

/// Response codes the switch answers.
pub const CODE_LABELS: [&str; 15] = [
    "00", "05", "12", "13", "14", "25", "30", "41", "43", "51", "54", "57", "61", "94", "96",
];

/// Why a frame was skipped without an answer.
#[derive(Clone, Copy, Debug)]
pub enum SkipReason {
    /// The MTI (or bitmap) could not be read.
    Undecodable,
    /// Decoded, but DE 11 was not readable, so no 30 could be addressed.
    NoStan,
    /// A response MTI or another message the switch does not answer.
    NotARequest,
}

/// How a periodic snapshot build ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// Written and in force: the journal before it was removed.
    InForce,
    /// Given up: overdue, the shard stopping, or a journal failure elsewhere.
    Abandoned,
    /// An error (disk, or the rebuilt state disagreeing with the running shard).
    Failed,
}

/// Why a connection was closed by the switch.
#[derive(Clone, Copy, Debug)]
pub enum CloseReason {
    Peer,
    Idle,
    FramingLost,
    Io,
    Shutdown,
    /// `proxy_protocol` is on and the connection did not begin with a valid PROXY v2 header.
    ProxyHeader,
}

pub struct Metrics {
    registry: Registry,
    /// `[mti][code]`.
    messages: Vec<[Counter; CODE_LABELS.len()]>,
    /// Observed once per answer on every connection: lock-free (prometheus-client's own
    /// histogram takes a lock per observation).
    pub decision_seconds: AtomicHistogram,
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    closed: [Counter; 6],
    pub in_flight: Gauge,
    shard_queue: Vec<Gauge>,
    pub format_errors: Counter,
    skipped: [Counter; 3],
    pub accept_errors: Counter,
    /// Journal writes or fsyncs that failed (each one stops the switch's decisions: 96).
    pub journal_errors: Counter,
    /// Time of one group commit (write + fsync of a shard's batch).
    pub journal_commit_seconds: Histogram,
    /// PostgreSQL store: batches retried after a conflict with another transaction.
    pub store_retries: Counter,
    /// PostgreSQL store: batches answered 96 (database unreachable, timed out, or an error).
    pub store_errors: Counter,
    /// PostgreSQL store: time of one batch's transaction (both round trips and the commit).
    pub store_batch_seconds: Histogram,
    /// Periodic snapshot builders running now (they share the cores with the shards).
    pub snapshot_builders: Gauge,
    snapshots: [Counter; 3],
    /// Time from a build's start to its snapshot being in force.
    pub snapshot_build_seconds: Histogram,
}

/// A histogram of atomic counters: `observe` takes no lock, so every connection task can
/// record each answer without contending. Encoded like prometheus-client's `Histogram`.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(Arc<AtomicHistogramInner>);

#[derive(Debug)]
struct AtomicHistogramInner {
    bounds: Vec<f64>,
    /// One counter a bound, then one for +Inf.
    counts: Vec<AtomicU64>,
    /// Sum of observations in nanoseconds (the unit of every histogram here is seconds).
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: impl Iterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(AtomicHistogramInner {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Records one observation, in seconds.
    #[inline]
    pub fn observe(&self, seconds: f64) {
        let h = &self.0;
        let i = h.bounds.partition_point(|b| *b < seconds);
        if let Some(c) = h.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        h.sum_nanos
            .fetch_add((seconds.max(0.0) * 1e9).round() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(h.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<()>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

type Labels = Vec<(&'static str, String)>;

impl Metrics {
    pub fn new(shards: usize) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("switch");

        let messages_family = Family::<Labels, Counter>::default();
        registry.register(
            "messages",
            "ISO 8583 requests answered, by request MTI (repeat digit cleared) and response code (DE 39)",
            messages_family.clone(),
        );
        let messages = MTI_LABELS
            .iter()
            .map(|mti| {
                CODE_LABELS.map(|code| {
                    messages_family
                        .get_or_create(&vec![("mti", (*mti).to_owned()), ("code", code.to_owned())])
                        .clone()
                })
            })
            .collect();

        let decision_seconds = AtomicHistogram::new(exponential_buckets(0.000_025, 2.0, 16));
        registry.register(
            "decision_duration_seconds",
            "Time from a request's arrival to its answer being queued for writing",
            decision_seconds.clone(),
        );

        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "ISO connections open now",
            connections_open.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "ISO connections accepted",
            connections_accepted.clone(),
        );
        let closed = counters_by(
            &mut registry,
            "connections_closed",
            "ISO connections closed, by reason",
            "reason",
            [
                "peer",
                "idle",
                "framing_lost",
                "io_error",
                "shutdown",
                "proxy_header",
            ],
        );

        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests received and not yet answered",
            in_flight.clone(),
        );
        let queue_family = Family::<Labels, Gauge>::default();
        registry.register(
            "shard_queue_depth",
            "Requests waiting in each authorization shard's queue (queued in batches, one per connection read)",
            queue_family.clone(),
        );
        let shard_queue = (0..shards)
            .map(|s| {
                queue_family
                    .get_or_create(&vec![("shard", s.to_string())])
                    .clone()
            })
            .collect();

        let format_errors = Counter::default();
        registry.register(
            "format_errors",
            "Requests answered 30 (format error)",
            format_errors.clone(),
        );
        let skipped = counters_by(
            &mut registry,
            "frames_skipped",
            "Frames dropped without an answer, by reason",
            "reason",
            ["undecodable", "no_stan", "not_a_request"],
        );

        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Errors accepting ISO connections",
            accept_errors.clone(),
        );

        let journal_errors = Counter::default();
        registry.register(
            "journal_errors",
            "Journal writes or fsyncs that failed; the switch then answers 96",
            journal_errors.clone(),
        );
        let journal_commit_seconds = Histogram::new(exponential_buckets(0.000_010, 2.0, 18));
        registry.register(
            "journal_commit_duration_seconds",
            "Time of one group commit of a shard's journal (write, and fsync under --durability fsync)",
            journal_commit_seconds.clone(),
        );

        let store_retries = Counter::default();
        registry.register(
            "store_retries",
            "PostgreSQL store: batches run again after a conflict (an existing or concurrently created key, deadlock, serialization)",
            store_retries.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "PostgreSQL store: batches answered 96 (database unreachable, timed out, or an error)",
            store_errors.clone(),
        );
        let store_batch_seconds = Histogram::new(exponential_buckets(0.000_050, 2.0, 18));
        registry.register(
            "store_batch_duration_seconds",
            "PostgreSQL store: time of one batch's transaction, reads to commit",
            store_batch_seconds.clone(),
        );

        let snapshot_builders = Gauge::default();
        registry.register(
            "snapshot_builders",
            "Periodic snapshot builders running now (replaying a shard's journal beside the shards)",
            snapshot_builders.clone(),
        );
        let snapshots = counters_by(
            &mut registry,
            "snapshots",
            "Periodic snapshot builds finished, by outcome (in_force, abandoned, failed)",
            "outcome",
            ["in_force", "abandoned", "failed"],
        );
        let snapshot_build_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 10));
        registry.register(
            "snapshot_build_duration_seconds",
            "Time from a periodic snapshot build's start to the snapshot being in force",
            snapshot_build_seconds.clone(),
        );

        Arc::new(Metrics {
            registry,
            messages,
            decision_seconds,
            connections_open,
            connections_accepted,
            closed,
            in_flight,
            shard_queue,
            format_errors,
            skipped,
            accept_errors,
            journal_errors,
            journal_commit_seconds,
            store_retries,
            store_errors,
            store_batch_seconds,
            snapshot_builders,
            snapshots,
            snapshot_build_seconds,
        })
    }

    pub fn snapshot_finished(&self, outcome: SnapshotOutcome) {
        self.snapshots[outcome as usize].inc();
    }

    /// Counts one answered request.
    #[inline]
    pub fn answered(&self, request_mti: codec::Mti, code: &str) {
        let mti = request_mti.without_repeat();
        let m = MTI_LABELS
            .iter()
            .position(|l| l.as_bytes() == mti.as_bytes())
            .unwrap_or(MTI_LABELS.len() - 1);
        let c = CODE_LABELS.iter().position(|l| *l == code);
        if let (Some(row), Some(c)) = (self.messages.get(m), c) {
            row[c].inc();
        }
    }

    pub fn skipped(&self, reason: SkipReason) {
        self.skipped[reason as usize].inc();
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].inc();
    }

    pub fn shard_queue(&self, shard: usize) -> Option<&Gauge> {
        self.shard_queue.get(shard)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut open_metrics = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut open_metrics, &self.registry);
        to_prometheus_text(&open_metrics)
    }
}

/// Registers a counter family with one label and returns its counter for each of `values`,
/// in that order (so an enum's discriminant indexes it): every value is exposed from start-up.
fn counters_by<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&str; N],
) -> [Counter; N] {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    values.map(|v| family.get_or_create(&vec![(label, v.to_owned())]).clone())
}

/// The client writes OpenMetrics, where a counter family `x` has samples `x_total`. Prometheus'
/// classic text format (what `promtool check metrics` and older scrapers read) names the family
/// by its samples: rename counters' HELP/TYPE to `x_total` and drop the `# EOF` marker.
fn to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let counters: Vec<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    /// The lock-free histogram is exposed exactly as prometheus-client's own would be.
    #[test]
    fn atomic_histogram_encodes_like_the_client_histogram() {
        let values = [0.000_01, 0.000_025, 0.000_03, 0.001, 0.25, 0.5, 3.0, 99.0];
        let ours = AtomicHistogram::new(exponential_buckets(0.000_025, 2.0, 16));
        let theirs = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        for v in values {
            ours.observe(v);
            theirs.observe(v);
        }
        let a = text(|r| r.register("d", "help", ours));
        let b = text(|r| r.register("d", "help", theirs));
        let lines = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with("d_sum"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(lines(&a), lines(&b));
        assert!(a.contains("d_bucket{le=\"+Inf\"} 8"), "{a}");
        let sum = |t: &str| -> f64 {
            t.lines()
                .find_map(|l| l.strip_prefix("d_sum "))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!((sum(&a) - values.iter().sum::<f64>()).abs() < 1e-6);
    }
}
