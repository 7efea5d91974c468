//! A rolling restart behind a real HAProxy, with real processes only: three `switch` replicas
//! (child processes, `tests::replicas::Cluster`), HAProxy running `deploy/haproxy/haproxy.cfg`
//! unchanged (leastconn, /readyz health checks, PROXY v2 to the replicas started with
//! `--proxy-protocol`) on the keys of `deploy/haproxy/loopback.env` (free loopback ports), and
//! the `loadgen` binary driving closed-loop load through HAProxy while each replica in turn gets
//! SIGTERM, drains, exits 0 and is started again on its data directory. Every loadgen report
//! must be clean: zero errors, zero timeouts, nothing abandoned, received == sent, exit status 0;
//! no answer may be 96 (system error) or 94 (a key seen twice). Skips with a message when haproxy
//! is not installed.
//!
//! How the load behaves, and why that is the deployment's contract rather than a test trick:
//! a draining replica serves the links it has until the client closes them, and cuts the rest
//! at the end of its grace period (PROTOCOL.md section 2). So clients that want zero errors
//! through a rolling restart end their links from time to time and open new ones, which HAProxy
//! sends to replicas still in rotation. Here loadgen runs back to back in two staggered lanes,
//! each run 2 s on fresh connections (`loadgen` keeps its connections for the whole run), so
//! load never stops and every replica holds live links when its SIGTERM comes (checked on its
//! `switch_connections_open` gauge). The grace period (15 s, production's default) is longer
//! than a run, and the drain must end well before it (12 s): a drain that needed the cut would
//! lose answers and fail the reports anyway.
//!
//! `a_replica_killed_with_sigkill_is_routed_around`: the crash case. Load runs while one replica
//! is killed outright; every loadgen run that starts after the kill is clean (HAProxy's
//! retries and redispatch send new links to the two others, before and after its health
//! checks mark the dead one DOWN), and the replica restarts on its own data (durability fsync)
//! and takes links again.
//!
//! The replicas each keep their own embedded store (one demo data set copied into each data
//! directory); the shared PostgreSQL ledger is issue 6's multi-replica test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tests::replicas::{
    binaries, loadgen_back_to_back, wait_metric, Cluster, Haproxy, LoadRun, ReplicaConfig,
};

/// The two tests take turns: each runs three replicas, HAProxy and loadgen on a 2-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Seconds a replica may drain: longer than a loadgen run.
const GRACE_SECS: u64 = 15;
const MIX: &str = "purchase=60,auth_completion=15,reversal=10,balance=5,echo=5,decline=5";

/// loadgen's arguments for one run of `run` seconds.
fn load_args(run: &str) -> Vec<&str> {
    vec![
        "--connections",
        "3",
        "--pipeline",
        "8",
        "--duration",
        run,
        "--warmup",
        "0s",
        "--timeout",
        "5s",
        "--mix",
        MIX,
    ]
}

/// A clean run: zero errors, zero timeouts, nothing abandoned, received == sent, exit 0, and no
/// 96 or 94 answer.
fn is_clean(r: &LoadRun) -> bool {
    let rep = &r.report;
    rep.is_clean()
        && !rep.response_codes.contains_key("96")
        && !rep.response_codes.contains_key("94")
}

fn describe(r: &LoadRun) -> String {
    let rep = &r.report;
    format!(
        "{}: sent {} received {} errors {} timeouts {} abandoned {} in flight at end {} codes \
         {:?}, exit {}\nerror samples: {}\noutput:\n{}",
        r.name,
        rep.sent,
        rep.received,
        rep.errors,
        rep.timeouts,
        rep.abandoned,
        rep.in_flight_at_end,
        rep.response_codes,
        rep.status,
        rep.json["error_samples"],
        rep.output
    )
}

/// A demo data set made by the real binary: loadgen's cards, and every replica's opening state.
fn demo_data(dir: &Path) -> PathBuf {
    let data = dir.join("demo");
    let out = std::process::Command::new(&binaries().switch)
        .args(["demo-data", "--out"])
        .arg(&data)
        .args(["--accounts", "2000", "--orders", "200", "--seed", "7"])
        .output()
        .expect("switch demo-data");
    assert!(
        out.status.success(),
        "switch demo-data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// Three replicas on copies of `data`, behind HAProxy.
async fn cluster(haproxy: &Path, dir: &Path, data: &Path, extra: &[&str]) -> Cluster {
    Cluster::start(haproxy, dir, |_, mut config: ReplicaConfig| {
        for f in ["accounts.csv", "orders.csv"] {
            std::fs::copy(data.join(f), config.data_dir.join(f)).expect("copy demo data");
        }
        config.args.extend(extra.iter().map(Into::into));
        config
    })
    .await
}

fn totals(runs: &[LoadRun]) -> (u64, u64, u64) {
    let sent = runs.iter().map(|r| r.report.sent).sum();
    let received = runs.iter().map(|r| r.report.received).sum();
    let approved = runs
        .iter()
        .filter_map(|r| r.report.response_codes.get("00"))
        .sum();
    (sent, received, approved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_haproxy_loses_nothing() {
    let Some(haproxy_bin) = Haproxy::binary("rolling restart") else {
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path();
    let data = demo_data(logs);
    let grace = GRACE_SECS.to_string();
    let mut cluster = cluster(&haproxy_bin, logs, &data, &["--grace-period", &grace]).await;
    let front = cluster.front();
    // Each `switch serve` turned transparent huge pages off for itself (README, "Capacity
    // benchmark"): the kernel's per-process flag, as /proc shows it.
    for r in &cluster.replicas {
        let pid = r.pid().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
        assert_eq!(
            thp.map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["THP_enabled:", "0"]),
            "{}: THP flag in /proc/{pid}/status",
            r.config.name
        );
    }

    let runs = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    let args = load_args("2s");
    let check = |r: &LoadRun| assert!(is_clean(r), "{}", describe(r));
    let mut drains = Vec::new();
    // Everything runs on the test's own thread (join!, not spawn): the children it starts die
    // with it (tests::replicas module doc).
    let restarts = async {
        let Cluster {
            replicas, haproxy, ..
        } = &mut cluster;
        for r in replicas.iter_mut() {
            let name = r.config.name.clone();
            // Under load: links open on this replica right now.
            wait_metric(r, "switch_connections_open", "open ISO links", |v| v > 0.0).await;
            let t = Instant::now();
            let status = r.drain(Duration::from_secs(GRACE_SECS + 10)).await;
            let took = t.elapsed();
            assert!(
                status.success(),
                "{name} exited with {status} after SIGTERM; log:\n{}",
                r.log()
            );
            assert!(
                took < Duration::from_secs(GRACE_SECS - 3),
                "{name}: the drain took {took:?}: links were cut at the end of the grace period"
            );
            drains.push((name.clone(), took));
            haproxy
                .wait_server(&name, "DOWN", Duration::from_secs(10))
                .await;
            r.restart().await;
            haproxy
                .wait_server(&name, "UP", Duration::from_secs(15))
                .await;
            // Back in rotation: new links reach it before the next replica goes.
            wait_metric(
                r,
                "switch_connections_accepted_total",
                "new links after the restart",
                |v| v > 0.0,
            )
            .await;
        }
        // A little more load on the restarted set, then the lanes finish their runs.
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let (data, args, runs, stop, check) = (&data, &args, &runs, &stop, &check);
    let lane = |delay: u64| async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let timeout = Duration::from_secs(20);
        loadgen_back_to_back(front, data, args, logs, runs, stop, timeout, check).await
    };
    let (a, b, ()) = tokio::join!(lane(0), lane(1000), restarts);

    let reports: Vec<LoadRun> = a.into_iter().chain(b).collect();
    let (sent, received, approved) = totals(&reports);
    eprintln!(
        "rolling restart: {} loadgen runs, {sent} sent, {received} received, {approved} approved, \
         0 errors, 0 timeouts; drains {drains:?}; {:.1} s in all",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sent, received);
    assert!(
        received > 1000 && approved > 0,
        "too little traffic to mean anything: {received} answers, {approved} approved"
    );
    assert_eq!(drains.len(), 3);
    // Each replica restarted once, and they drain cleanly at the end too.
    for r in &mut cluster.replicas {
        assert_eq!(r.starts, 2);
        let status = r.drain(Duration::from_secs(GRACE_SECS + 5)).await;
        assert!(status.success(), "{}: {status}", r.config.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_with_sigkill_is_routed_around() {
    let Some(haproxy_bin) = Haproxy::binary("replica crash") else {
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path();
    let data = demo_data(logs);
    let mut cluster = cluster(&haproxy_bin, logs, &data, &["--durability", "fsync"]).await;
    let front = cluster.front();

    let runs = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    let args = load_args("1500ms");
    let mut killed_at = None;
    let crash = async {
        let Cluster {
            replicas, haproxy, ..
        } = &mut cluster;
        let victim = &mut replicas[1];
        let name = victim.config.name.clone();
        wait_metric(victim, "switch_connections_open", "open ISO links", |v| {
            v > 0.0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.sigkill();
        killed_at = Some(Instant::now());
        haproxy
            .wait_server(&name, "DOWN", Duration::from_secs(10))
            .await;
        // Two runs' worth of load on the two survivors.
        tokio::time::sleep(Duration::from_secs(3)).await;
        victim.restart().await;
        haproxy
            .wait_server(&name, "UP", Duration::from_secs(15))
            .await;
        wait_metric(
            victim,
            "switch_connections_accepted_total",
            "new links after the restart",
            |v| v > 0.0,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
    };
    let timeout = Duration::from_secs(20);
    let (reports, ()) = tokio::join!(
        loadgen_back_to_back(front, &data, &args, logs, &runs, &stop, timeout, |_| {}),
        crash
    );
    let killed_at = killed_at.expect("killed");

    // Runs cut by the kill may lose the links they had on the victim; every run that started
    // after it must be clean.
    let after: Vec<&LoadRun> = reports.iter().filter(|r| r.started > killed_at).collect();
    for r in &after {
        assert!(is_clean(r), "a run after the kill: {}", describe(r));
    }
    assert!(
        after.len() >= 3,
        "too few runs after the kill: {}",
        after.len()
    );
    let cut: Vec<&LoadRun> = reports
        .iter()
        .filter(|r| r.started <= killed_at && !is_clean(r))
        .collect();
    let (sent, received, approved) = totals(&reports);
    eprintln!(
        "replica crash: {} loadgen runs ({} after the kill, all clean; {} cut by it), {sent} sent, \
         {received} received, {approved} approved; {:.1} s in all",
        reports.len(),
        after.len(),
        cut.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(approved > 0);
    assert_eq!(cluster.replicas[1].starts, 2);
    for r in &mut cluster.replicas {
        let status = r.drain(Duration::from_secs(20)).await;
        assert!(status.success(), "{}: {status}", r.config.name);
    }
}
