//! Counting: per-connection figures (merged at the end), the live figures the progress line
//! shows, and the report: JSON, an HdrHistogram percentile file (`.hgrm`) and an SVG chart of
//! latency by percentile.
//!
//! Accounting, for the requests of the measured window (after the warm-up): each ends in
//! exactly one of `received` (its answer, matched by 41 + 11 + 7, came back within the
//! timeout, whether or not it passed the checks), `timeouts` (no answer within `--timeout`),
//! `abandoned` (its connection closed first) and `in_flight_at_end` (still waiting when the
//! run was cut short by a second Ctrl-C; 0 otherwise, since a run waits for every answer or
//! timeout before it ends). So `sent == received + timeouts + abandoned + in_flight_at_end`.
//! `errors` counts answers that failed a check (`mismatch`; `unexpected_code` when it was DE
//! 39's, whose code is then in `response_codes` too), frames matching no request in
//! flight (`unmatched`, apart from answers arriving after their timeout, counted as `late`),
//! frames that do not decode (`undecodable`), connections lost (`connection`), the requests
//! that were in flight on a lost connection (`lost_in_flight`: never answered, so also
//! `abandoned`), requests that could not be encoded (`encode`) and, in open loop, measured
//! requests that fell due and were never sent (`unsent`: their connection was lost for good,
//! or a second Ctrl-C cut the drain short; not in `sent`). A lost connection is opened again
//! (`reconnects`) and the run goes on.
//! `tps` counts only `answered_in_window`: measured answers that passed their checks and
//! arrived before the window closed, so a backlog answered in the drain is not throughput.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::traffic::Kind;

/// Latencies are recorded in microseconds up to an hour.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are valid constants: creation cannot fail; fall back to an auto-resizing one.
    Histogram::new_with_max(MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable_hist());
        h.auto(true);
        h
    })
}

#[cold]
fn unreachable_hist() -> Histogram<u64> {
    std::process::abort()
}

/// Error counts by kind.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ErrorKinds {
    /// Matched answers failing a check other than DE 39's code.
    pub mismatch: u64,
    /// Matched answers whose DE 39 the request may not get (`Kind::codes`): 96, say.
    pub unexpected_code: u64,
    pub unmatched: u64,
    pub undecodable: u64,
    pub connection: u64,
    /// Requests in flight on a connection when it was lost: never answered.
    pub lost_in_flight: u64,
    /// Requests that could not be encoded (a spec without a field loadgen sends).
    pub encode: u64,
    /// Open loop: measured requests that fell due and were never sent (their connection was
    /// lost for good, or a second Ctrl-C cut the drain short). Not in `sent`.
    pub unsent: u64,
}

impl ErrorKinds {
    pub fn total(&self) -> u64 {
        self.mismatch
            + self.unexpected_code
            + self.unmatched
            + self.undecodable
            + self.connection
            + self.lost_in_flight
            + self.encode
            + self.unsent
    }

    fn add(&mut self, o: &ErrorKinds) {
        self.mismatch += o.mismatch;
        self.unexpected_code += o.unexpected_code;
        self.unmatched += o.unmatched;
        self.undecodable += o.undecodable;
        self.connection += o.connection;
        self.lost_in_flight += o.lost_in_flight;
        self.encode += o.encode;
        self.unsent += o.unsent;
    }
}

/// Response codes: `00`-`99` in a table, anything else in a short list.
#[derive(Debug, Clone)]
pub struct Codes {
    numeric: [u64; 100],
    other: Vec<([u8; 2], u64)>,
}

impl Default for Codes {
    fn default() -> Self {
        Codes {
            numeric: [0; 100],
            other: Vec::new(),
        }
    }
}

impl Codes {
    pub fn count(&mut self, code: [u8; 2]) {
        let [a, b] = code;
        if a.is_ascii_digit() && b.is_ascii_digit() {
            self.numeric[usize::from(a - b'0') * 10 + usize::from(b - b'0')] += 1;
        } else if let Some(e) = self.other.iter_mut().find(|(c, _)| *c == code) {
            e.1 += 1;
        } else {
            self.other.push((code, 1));
        }
    }

    fn add(&mut self, o: &Codes) {
        for (a, b) in self.numeric.iter_mut().zip(o.numeric.iter()) {
            *a += b;
        }
        for &(code, n) in &o.other {
            match self.other.iter_mut().find(|(c, _)| *c == code) {
                Some(e) => e.1 += n,
                None => self.other.push((code, n)),
            }
        }
    }

    pub fn to_map(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (i, &n) in self.numeric.iter().enumerate() {
            if n > 0 {
                m.insert(format!("{i:02}"), n);
            }
        }
        for &(code, n) in &self.other {
            // Response codes are `an`: printable. Anything else is shown escaped.
            m.insert(code.escape_ascii().to_string(), n);
        }
        m
    }
}

/// Sent and received by request kind.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct KindCount {
    pub sent: u64,
    pub received: u64,
}

/// Requests sent during the warm-up: not in any figure but this one.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Warmup {
    pub sent: u64,
    pub received: u64,
    pub timeouts: u64,
    pub errors: u64,
}

/// What one connection counted.
#[derive(Debug, Clone)]
pub struct ConnStats {
    pub hist: Histogram<u64>,
    /// Open loop: how long after its due time each measured request was encoded.
    pub send_lag: Histogram<u64>,
    pub sent: u64,
    pub received: u64,
    /// Measured answers that passed their checks and arrived before the window closed (not
    /// in the drain after it): what `tps` counts.
    pub answered_in_window: u64,
    pub timeouts: u64,
    pub abandoned: u64,
    pub in_flight_at_end: u64,
    pub late: u64,
    /// Lost connections opened again.
    pub reconnects: u64,
    pub errors: ErrorKinds,
    pub codes: Codes,
    pub kinds: [KindCount; Kind::COUNT],
    pub warmup: Warmup,
    pub samples: Vec<String>,
}

/// Error descriptions kept for the report.
const MAX_SAMPLES: usize = 10;

impl Default for ConnStats {
    fn default() -> Self {
        ConnStats {
            hist: new_histogram(),
            send_lag: new_histogram(),
            sent: 0,
            received: 0,
            answered_in_window: 0,
            timeouts: 0,
            abandoned: 0,
            in_flight_at_end: 0,
            late: 0,
            reconnects: 0,
            errors: ErrorKinds::default(),
            codes: Codes::default(),
            kinds: [KindCount::default(); Kind::COUNT],
            warmup: Warmup::default(),
            samples: Vec::new(),
        }
    }
}

impl ConnStats {
    pub fn sample(&mut self, text: impl FnOnce() -> String) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(text());
        }
    }

    pub fn merge(&mut self, o: &ConnStats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&o.hist);
        let _ = self.send_lag.add(&o.send_lag);
        self.sent += o.sent;
        self.received += o.received;
        self.answered_in_window += o.answered_in_window;
        self.timeouts += o.timeouts;
        self.abandoned += o.abandoned;
        self.in_flight_at_end += o.in_flight_at_end;
        self.late += o.late;
        self.reconnects += o.reconnects;
        self.errors.add(&o.errors);
        self.codes.add(&o.codes);
        for (a, b) in self.kinds.iter_mut().zip(o.kinds.iter()) {
            a.sent += b.sent;
            a.received += b.received;
        }
        self.warmup.sent += o.warmup.sent;
        self.warmup.received += o.warmup.received;
        self.warmup.timeouts += o.warmup.timeouts;
        self.warmup.errors += o.warmup.errors;
        for s in &o.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s.clone());
            }
        }
    }
}

/// Figures the progress line reads while the run goes on. Connections add to them a few
/// times a second, never per message.
#[derive(Debug)]
pub struct Live {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Latencies since the progress line last read them.
    pub interval: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            interval: Mutex::new(new_histogram()),
        }
    }
}

impl Live {
    pub fn add(&self, sent: u64, received: u64, errors: u64, timeouts: u64) {
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.received.fetch_add(received, Ordering::Relaxed);
        self.errors.fetch_add(errors, Ordering::Relaxed);
        self.timeouts.fetch_add(timeouts, Ordering::Relaxed);
    }
}

// ===== Report =====

#[derive(Debug, Serialize, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub min: u64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency {
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
                min: 0,
                mean: 0.0,
            };
        }
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// The JSON report (PROTOCOL.md section 4 names the first fields).
#[derive(Debug, Serialize)]
pub struct Report {
    pub sent: u64,
    pub received: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// `answered_in_window` per second of the measured window: answers that passed their
    /// checks, arriving in the window. What a target answers in the drain after it (an open
    /// loop's backlog) is `received` but not throughput.
    pub tps: f64,
    pub answered_in_window: u64,
    pub latency_us: Latency,
    /// Open loop: how late loadgen encoded requests after their due time (included in
    /// `latency_us`; large values mean loadgen, not the target, fell behind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Latency>,
    pub response_codes: BTreeMap<String, u64>,
    pub in_flight_at_end: u64,
    pub abandoned: u64,
    pub late: u64,
    /// Lost connections opened again during the run.
    pub reconnects: u64,
    pub error_kinds: ErrorKinds,
    pub error_samples: Vec<String>,
    pub requests: BTreeMap<&'static str, KindCount>,
    pub warmup: Warmup,
    pub run: RunInfo,
    /// The `.hgrm` and `.svg` files written next to the report.
    pub files: BTreeMap<&'static str, String>,
}

/// How the run was set up.
#[derive(Debug, Serialize, Clone)]
pub struct RunInfo {
    pub target: String,
    /// `switch` or `echo`.
    pub mode: &'static str,
    /// `closed` or `open`.
    pub load: &'static str,
    pub connections: usize,
    /// Closed loop: requests in flight per connection.
    pub pipeline: Option<usize>,
    /// Open loop: the requests per second scheduled.
    pub rate: Option<f64>,
    pub mix: String,
    pub spec: String,
    pub framing: String,
    pub threads: usize,
    pub timeout_ms: u64,
    pub warmup_s: f64,
    /// The measured window: from the end of the warm-up to the stop.
    pub duration_s: f64,
    pub stopped_early: bool,
    pub started_unix: i64,
}

impl Report {
    pub fn build(s: &ConnStats, run: RunInfo) -> Report {
        let tps = if run.duration_s > 0.0 {
            (s.answered_in_window as f64 / run.duration_s * 10.0).round() / 10.0
        } else {
            0.0
        };
        Report {
            sent: s.sent,
            received: s.received,
            timeouts: s.timeouts,
            errors: s.errors.total(),
            tps,
            answered_in_window: s.answered_in_window,
            latency_us: Latency::of(&s.hist),
            send_lag_us: run.rate.map(|_| Latency::of(&s.send_lag)),
            response_codes: s.codes.to_map(),
            in_flight_at_end: s.in_flight_at_end,
            abandoned: s.abandoned,
            late: s.late,
            reconnects: s.reconnects,
            error_kinds: s.errors,
            error_samples: s.samples.clone(),
            requests: Kind::ALL
                .iter()
                .zip(s.kinds.iter())
                .filter(|(_, c)| c.sent > 0 || c.received > 0)
                .map(|(k, c)| (k.name(), *c))
                .collect(),
            warmup: s.warmup,
            run,
            files: BTreeMap::new(),
        }
    }
}

// ===== .hgrm =====

/// The percentile distribution in HdrHistogram's text format (`outputPercentileDistribution`,
/// values in milliseconds, 5 ticks per half distance), which HdrHistogram's plotter reads.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{:12.3} {:2.12} {:10} {:14.2}",
                    ms(v.value_iterated_to()),
                    q,
                    total,
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    s,
                    "{:12.3} {:2.12} {:10}",
                    ms(v.value_iterated_to()),
                    q,
                    total
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        ms(h.max()),
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    s
}

/// HdrHistogram's sub-bucket count for a precision: the power of two above 2 * 10^sigfig.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    largest.next_power_of_two()
}

// ===== SVG =====

/// A latency-by-percentile chart: x is the percentile on HdrHistogram's usual log scale
/// (0%, 90%, 99%, 99.9%, ...), y the latency in milliseconds.
pub fn svg(h: &Histogram<u64>, title: &str) -> String {
    const W: f64 = 800.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;

    // Points: (nines = log10(1 / (1 - q)), latency ms); the top percentile sits at the end
    // of the axis.
    let mut points: Vec<(f64, f64)> = Vec::new();
    let count = h.len().max(1) as f64;
    let x_max_nines = (count.log10().ceil()).clamp(2.0, 6.0);
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let nines = if q >= 1.0 {
                x_max_nines
            } else {
                (-(1.0 - q).log10()).min(x_max_nines)
            };
            points.push((nines, v.value_iterated_to() as f64 / 1000.0));
        }
    }
    let y_top = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.05);
    let x = |n: f64| LEFT + n / x_max_nines * pw;
    let y = |ms: f64| TOP + ph - ms / y_top * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );
    // Horizontal grid and y labels.
    for i in 0..=5 {
        let v = y_top * f64::from(i) / 5.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            fmt_ms(v)
        );
    }
    // Vertical grid and x labels.
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
    for (n, label) in labels.iter().enumerate().take(x_max_nines as usize + 1) {
        let xx = x(n as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 10.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    if points.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no answers recorded</text>"#,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    } else {
        let mut path = String::new();
        for (i, (n, ms)) in points.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if i == 0 { "" } else { " " },
                x(*n),
                y(*ms)
            );
        }
        let _ = writeln!(
            s,
            r##"<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_ms(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        h
    }

    #[test]
    fn hgrm_has_the_hdr_shape() {
        let text = hgrm(&sample());
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("Percentile"));
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 20);
        // Value, percentile, cumulative count rising to the total; the last row at 1.0.
        let last = rows.last().unwrap();
        assert_eq!(last[1].parse::<f64>().unwrap(), 1.0);
        assert_eq!(last[2], "10000");
        let values: Vec<f64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            (values[values.len() - 1] - 100.0).abs() < 0.1,
            "max is 100 ms"
        );
        assert!(text.contains("#[Max     =      100.")); // in milliseconds
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn svg_is_a_chart() {
        let s = svg(&sample(), "a <test>");
        assert!(s.starts_with("<svg "));
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains("<polyline points="));
        assert!(s.contains("a &lt;test&gt;"));
        assert!(s.contains("99.99%"));
        let empty = svg(&new_histogram(), "none");
        assert!(empty.contains("no answers recorded"));
    }

    #[test]
    fn codes_merge() {
        let mut a = Codes::default();
        a.count(*b"00");
        a.count(*b"00");
        a.count(*b"Z1");
        let mut b = Codes::default();
        b.count(*b"51");
        b.count(*b"Z1");
        b.count(*b"Z1");
        a.add(&b);
        let m = a.to_map();
        assert_eq!(m["00"], 2);
        assert_eq!(m["51"], 1);
        assert_eq!(m["Z1"], 3);
    }

    #[test]
    fn latency_of_empty_is_zero() {
        assert_eq!(Latency::of(&new_histogram()).max, 0);
        let l = Latency::of(&sample());
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    }
}
