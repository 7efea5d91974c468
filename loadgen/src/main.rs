//! `loadgen`: drives an ISO 8583 switch with checked traffic and reports what it saw.
//!
//! ```text
//! loadgen --target ADDR --data-dir DIR [--connections N] [--pipeline N] [--duration D]
//!         [--rate TPS] [--mix ...] [--report FILE] [--warmup D] [--timeout D]
//!         [--spec NAME|FILE] [--framing len2|len4|ascii4|bcd2] [--threads N] [--mode switch|echo]
//! ```
//!
//! - Closed loop (default): `--connections` connections, each keeping `--pipeline` requests in
//!   flight; a new request leaves as soon as an answer (or a timeout) frees a slot.
//! - Open loop (`--rate TPS`): requests due at fixed intervals spread over the connections,
//!   latency measured from each request's due time (see `pace`).
//! - Traffic from the cards and orders of `--data-dir` by `--mix` (see `mix`); every answer is
//!   matched by 41 + 11 + 7 and checked (see `traffic`).
//! - The first `--warmup` is left out of every figure; the run then lasts `--duration`; Ctrl-C
//!   (or SIGTERM) ends it early: nothing new is sent, answers in flight are awaited (each until
//!   its `--timeout`; a second Ctrl-C stops at once) and the report is written all the same.
//! - Report: `--report FILE` (JSON, see `stats`), with `FILE.hgrm` (HdrHistogram percentile
//!   distribution) and `FILE.svg` (latency by percentile) beside it; one summary line on
//!   standard output; a live progress line on standard error when it is a terminal.
//! - Exit status: 0 when every measured request was answered and passed its checks; 1 when
//!   the run completed with errors, timeouts or no answer at all (the report is written);
//!   2 when it could not run (bad arguments, unreadable data, no connection).
//!
//! `loadgen echo-server --listen ADDR` (hidden) serves the capacity benchmark's echo; drive it
//! with `--mode echo`, where an answer must be the request itself.

#![forbid(unsafe_code)]

mod clock;
mod conn;
mod data;
mod echo;
mod mix;
mod pace;
mod stats;
mod traffic;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use codec::framing::{Framing, LengthFramer};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::conn::{Conn, Phase, Shared};
use crate::data::Data;
use crate::mix::{Mix, Op};
use crate::pace::Schedule;
use crate::stats::{ConnStats, Live, Report, RunInfo};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the ISO 8583 switch: checked traffic, HdrHistogram latency reports"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A trivial length-prefixed echo server (the capacity benchmark's raw limit).
    #[command(hide = true)]
    EchoServer {
        /// Address to listen on; port 0 picks one (printed on standard output).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value = "len2")]
        framing: String,
        #[arg(long, default_value_t = codec::framing::DEFAULT_MAX_FRAME)]
        max_frame: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The peer is a switch: answers are MTI + 10 with DE 39.
    Switch,
    /// The peer is `loadgen echo-server`: an answer is the request, unchanged.
    Echo,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The switch's ISO 8583 address, HOST:PORT.
    #[arg(long)]
    target: Option<String>,
    /// Directory with accounts.csv (and orders.csv): the cards and orders to use.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TCP connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Closed loop: requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// Measured time after the warm-up (e.g. 10s, 500ms, 2m; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Time at the start left out of every figure.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop: requests per second, spread over the connections at fixed intervals.
    #[arg(long)]
    rate: Option<f64>,
    /// Operations by weight, e.g. purchase=70,auth_completion=10,reversal=5,balance=5,order=5,echo=5
    /// (names: purchase, auth_completion, reversal, balance, order, echo, decline).
    #[arg(long, default_value = mix::DEFAULT_MIX)]
    mix: Mix,
    /// JSON report; FILE.hgrm and FILE.svg are written beside it.
    #[arg(long, default_value = "loadgen-report.json")]
    report: PathBuf,
    /// Message layout: iso87-binary, iso87-ascii, iso87-bcd, or a JSON / jPOS XML spec file.
    #[arg(long, default_value = "iso87-binary")]
    spec: String,
    /// TCP length header: len2, len4, ascii4, bcd2.
    #[arg(long, default_value = "len2")]
    framing: String,
    /// Largest answer frame accepted, in bytes.
    #[arg(long, default_value_t = codec::framing::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// How long a request may wait for its answer before it counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Worker threads of loadgen's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// What answers: a switch, or `loadgen echo-server`.
    #[arg(long, value_enum, default_value_t = Mode::Switch)]
    mode: Mode,
    /// Seed of the card, amount and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Terminal ids (DE 41) are LG + 6 digits: this + the connection's index. Give concurrent
    /// loadgens against one switch different bases so their keys never meet.
    #[arg(long, default_value_t = 0)]
    terminal_base: u32,
}

/// `10s`, `500ms`, `2m`, `1.5s`, `250us`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 10s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (us, ms, s, m, h)")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::EchoServer {
            listen,
            framing,
            max_frame,
        }) => echo_server(listen, &framing, max_frame).map(|()| ExitCode::SUCCESS),
        None => run(cli.run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn parse_framing(name: &str) -> anyhow::Result<Framing> {
    name.parse::<Framing>()
        .map_err(|e| anyhow::anyhow!("--framing: {e}"))
}

/// Most requests in flight per connection (`--pipeline`), as the switch allows.
const MAX_PIPELINE: usize = 65_536;

/// Largest `--rate`: far above what one loadgen can send, and an open loop against a target
/// that stalls holds every request due until its timeout (memory grows with the rate).
const MAX_RATE: f64 = 10_000_000.0;

/// Terminal ids `LG000000` to `LG999999`.
const TERMINAL_IDS: u64 = 1_000_000;

/// `--max-frame` within what the switch accepts (20 to 65,535 bytes).
fn check_max_frame(max_frame: usize) -> anyhow::Result<()> {
    let range = codec::framing::MAX_FRAME_SETTING;
    if !range.contains(&max_frame) {
        bail!(
            "--max-frame must be {}..={} bytes",
            range.start(),
            range.end()
        );
    }
    Ok(())
}

/// Before any load is sent: the report can be written where asked, and does not take the name
/// of the `.hgrm` or `.svg` written beside it (found out at the end, the whole run would be
/// lost).
fn check_report_path(path: &Path) -> anyhow::Result<()> {
    if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("hgrm" | "svg")
    ) {
        bail!(
            "--report {}: the .hgrm and .svg files are written beside the report under its name; give the report another extension (.json)",
            path.display()
        );
    }
    // Opened as the final write will open it, and left as it was (no empty report behind).
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("--report {}: cannot be written", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn echo_server(listen: SocketAddr, framing: &str, max_frame: usize) -> anyhow::Result<()> {
    check_max_frame(max_frame)?;
    let framing = parse_framing(framing)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        tokio::select! {
            r = echo::serve(listener, framing, max_frame) => r?,
            r = shutdown_signal() => r?,
        }
        Ok(())
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(target) = args.target.clone() else {
        bail!("--target HOST:PORT is required");
    };
    let Some(data_dir) = args.data_dir.clone() else {
        bail!("--data-dir DIR is required");
    };
    if args.connections == 0 || args.pipeline == 0 || args.threads == 0 {
        bail!("--connections, --pipeline and --threads must be at least 1");
    }
    if args.pipeline > MAX_PIPELINE {
        bail!("--pipeline must be at most {MAX_PIPELINE} (the switch's own limit per connection)");
    }
    check_max_frame(args.max_frame)?;
    // Terminal ids are `LG` + six digits: past 999999 they would wrap onto another base's.
    if u64::from(args.terminal_base) + args.connections as u64 > TERMINAL_IDS {
        bail!("--terminal-base + --connections must be at most {TERMINAL_IDS} (terminal ids are LG + 6 digits)");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
        if rate > MAX_RATE {
            bail!("--rate must be at most {MAX_RATE} requests per second");
        }
    }
    if args.duration.is_zero() || args.timeout.is_zero() {
        bail!("--duration and --timeout must be above zero");
    }
    let spec = codec::load_spec(&args.spec).with_context(|| format!("--spec {}", args.spec))?;
    // One spec for the life of the process; decoded answers borrow it on every task.
    let spec: &'static codec::Spec = Box::leak(Box::new(spec));
    let framing = parse_framing(&args.framing)?;
    let framer = LengthFramer::new(framing).with_max_frame(args.max_frame);

    let started_unix = clock::unix_now();
    let data = Data::load(&data_dir, started_unix)?;
    let mut mix = args.mix.clone();
    if mix.weight(Op::Order) > 0 && data.orders.is_empty() {
        eprintln!(
            "loadgen: no open order payable with the usable cards: order payments become purchases"
        );
        mix.fold_into(Op::Order, Op::Purchase);
    }
    if mix.needs_cards() && data.cards.is_empty() {
        bail!(
            "{}: no usable card (active, not expired) among {} rows",
            data_dir.join("accounts.csv").display(),
            data.stats.account_rows
        );
    }
    let s = data.stats;
    eprintln!(
        "loadgen: {} usable cards ({} rows, {} unusable, {} bad), {} open orders ({} rows, {} bad)",
        data.cards.len(),
        s.account_rows,
        s.unusable_cards,
        s.bad_account_rows,
        data.orders.len(),
        s.order_rows,
        s.bad_order_rows
    );
    let load = match args.rate {
        Some(r) => format!("open loop at {r} requests/s"),
        None => format!("closed loop, {} in flight each", args.pipeline),
    };
    eprintln!(
        "loadgen: {} connections to {target}, {load}; warm-up {:?}, then {:?}; mix {mix}; mode {:?}",
        args.connections, args.warmup, args.duration, args.mode
    );

    // Last before connecting, once everything else is known good.
    check_report_path(&args.report)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("loadgen")
        .enable_all()
        .build()?;
    let outcome = rt.block_on(drive(&args, &target, spec, framer, data, mix.clone()))?;
    drop(rt);

    let (stats, run_info) = outcome;
    let run_info = RunInfo {
        started_unix,
        mix: mix.to_string(),
        ..run_info
    };
    let mut report = Report::build(&stats, run_info);
    write_report(&args.report, &mut report, &stats)?;
    let l = report.latency_us;
    let lag = report
        .send_lag_us
        .map(|g| format!(" send_lag_p99_us={}", g.p99))
        .unwrap_or_default();
    println!(
        "loadgen: sent={} received={} timeouts={} errors={} tps={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}{lag} report={}",
        report.sent,
        report.received,
        report.timeouts,
        report.errors,
        report.tps,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max,
        args.report.display()
    );
    let clean = report.errors == 0
        && report.timeouts == 0
        && report.abandoned == 0
        && report.in_flight_at_end == 0
        && report.received > 0;
    if !report.error_samples.is_empty() {
        eprintln!("loadgen: first errors:");
        for s in &report.error_samples {
            eprintln!("  {s}");
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Connects, runs, waits for the end: the merged figures and how the run went.
async fn drive(
    args: &RunArgs,
    target: &str,
    spec: &'static codec::Spec,
    framer: LengthFramer,
    data: Data,
    mix: Mix,
) -> anyhow::Result<(ConnStats, RunInfo)> {
    let mut streams = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let stream = tokio::time::timeout(args.timeout, TcpStream::connect(target))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {target}: timed out"))
            .and_then(|r| r.with_context(|| format!("connecting to {target}")))
            .with_context(|| format!("connection {} of {}", i + 1, args.connections))?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }

    let t0 = Instant::now();
    let warm_end = t0 + args.warmup;
    let end = warm_end + args.duration;
    let schedule = args
        .rate
        .map(|r| Schedule::new(t0.into_std(), end.into_std(), r, args.connections));
    // One run per process: the shared state lives as long as it (no reference counting on
    // the hot path).
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        spec,
        framer,
        data,
        mix,
        echo_mode: args.mode == Mode::Echo,
        pipeline: args.pipeline,
        schedule,
        timeout: args.timeout,
        warm_end,
        end,
        seed: args.seed,
        terminal_base: args.terminal_base,
        live: Live::default(),
        progress: std::io::stderr().is_terminal(),
        stopped_at: std::sync::OnceLock::new(),
    }));

    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let wake: Vec<Arc<Notify>> = (0..args.connections)
        .map(|_| Arc::new(Notify::new()))
        .collect();
    let mut handles = Vec::with_capacity(args.connections);
    for (i, stream) in streams.into_iter().enumerate() {
        let c = Conn::new(i, shared, args.connections);
        let pace = schedule.map(|_| wake[i].clone());
        handles.push(tokio::spawn(conn::run(
            c,
            stream,
            target.to_owned(),
            phase_rx.clone(),
            pace,
        )));
    }
    let pacer_stop = Arc::new(AtomicBool::new(false));
    let pacer = match schedule {
        Some(s) => Some(pace::spawn(s, wake.clone(), pacer_stop.clone())?),
        None => None,
    };
    let progress_done = Arc::new(Notify::new());
    let progress = shared
        .progress
        .then(|| tokio::spawn(progress(shared, t0, warm_end, end, progress_done.clone())));

    let mut stopped_early = false;
    let mut stop_at = end;
    tokio::select! {
        _ = tokio::time::sleep_until(end) => {}
        r = shutdown_signal() => {
            r?;
            stopped_early = true;
            stop_at = Instant::now();
            // Answers from here on are drained, not throughput.
            let _ = shared.stopped_at.set(stop_at);
            eprintln!(
                "\nloadgen: stopping; waiting up to {:?} for answers in flight (Ctrl-C again to stop now)",
                args.timeout
            );
        }
    }
    let _ = phase_tx.send(Phase::Draining);
    pacer_stop.store(true, Ordering::Relaxed);
    let mut joined = Box::pin(futures::future::join_all(handles));
    let results = tokio::select! {
        r = &mut joined => r,
        r = shutdown_signal() => {
            r?;
            let _ = phase_tx.send(Phase::Abort);
            joined.await
        }
    };
    if let Some(p) = progress {
        progress_done.notify_one();
        let _ = p.await;
    }
    if let Some(p) = pacer {
        let _ = p.join();
    }
    let mut total = ConnStats::default();
    for r in results {
        match r {
            Ok(s) => total.merge(&s),
            // Its counts are gone with it: the run cannot be called clean.
            Err(e) => {
                eprintln!("loadgen: a connection task failed: {e}");
                total.errors.connection += 1;
                total.sample(|| format!("a connection task failed: {e}"));
            }
        }
    }
    let measured = stop_at.saturating_duration_since(warm_end);
    let info = RunInfo {
        target: target.to_owned(),
        mode: match args.mode {
            Mode::Switch => "switch",
            Mode::Echo => "echo",
        },
        load: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        connections: args.connections,
        pipeline: args.rate.is_none().then_some(args.pipeline),
        rate: args.rate,
        mix: String::new(),
        spec: args.spec.clone(),
        framing: args.framing.clone(),
        threads: args.threads,
        timeout_ms: args.timeout.as_millis() as u64,
        warmup_s: args.warmup.as_secs_f64(),
        // To the microsecond: `tps` divides by it, and `--duration` takes microseconds.
        duration_s: (measured.as_secs_f64() * 1_000_000.0).round() / 1_000_000.0,
        stopped_early,
        started_unix: 0,
    };
    Ok((total, info))
}

/// The live line on a terminal: answers per second, p99 of the last second, errors.
async fn progress(
    shared: &'static Shared,
    t0: Instant,
    warm_end: Instant,
    end: Instant,
    done: Arc<Notify>,
) {
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_received = 0u64;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.notified() => {
                bar.finish_and_clear();
                return;
            }
        }
        let now = Instant::now();
        let received = shared.live.received.load(Ordering::Relaxed);
        let rate = (received - last_received) as f64 / now.duration_since(last).as_secs_f64();
        last_received = received;
        last = now;
        let p99 = match shared.live.interval.lock() {
            Ok(mut h) => {
                let v = if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(0.99)
                };
                h.reset();
                v
            }
            Err(_) => 0,
        };
        let phase = if now < warm_end {
            "warm-up"
        } else if now < end {
            "measuring"
        } else {
            "draining"
        };
        bar.set_message(format!(
            "{:>5.1}s {phase:<9} {:>10.0} answers/s  p99 {:>8.3} ms  sent {}  errors {}  timeouts {}",
            now.duration_since(t0).as_secs_f64(),
            rate,
            p99 as f64 / 1000.0,
            shared.live.sent.load(Ordering::Relaxed),
            shared.live.errors.load(Ordering::Relaxed),
            shared.live.timeouts.load(Ordering::Relaxed),
        ));
        bar.tick();
    }
}

/// Writes the JSON report, the `.hgrm` and the `.svg` beside it.
fn write_report(path: &Path, report: &mut Report, stats: &ConnStats) -> anyhow::Result<()> {
    let hgrm_path = path.with_extension("hgrm");
    let svg_path = path.with_extension("svg");
    std::fs::write(&hgrm_path, stats::hgrm(&stats.hist))
        .with_context(|| format!("writing {}", hgrm_path.display()))?;
    let title = format!(
        "{} {} loop, {} connections: {} answers, {:.0}/s",
        report.run.target, report.run.load, report.run.connections, report.received, report.tps
    );
    std::fs::write(&svg_path, stats::svg(&stats.hist, &title))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    report.files.insert("hgrm", hgrm_path.display().to_string());
    report.files.insert("svg", svg_path.display().to_string());
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "loadgen",
            "--target",
            "127.0.0.1:1",
            "--data-dir",
            "d",
            "--rate",
            "100",
            "--mix",
            "purchase=1",
        ])
        .unwrap();
        assert_eq!(cli.run.rate, Some(100.0));
        let cli =
            Cli::try_parse_from(["loadgen", "echo-server", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(cli.command, Some(Command::EchoServer { .. })));
        assert!(Cli::try_parse_from(["loadgen", "--mix", "nope=1"]).is_err());
    }
}
