//! The `switch` binary as a user runs it: demo data, configuration errors, bad data files,
//! start on an empty data directory, healthcheck, SIGTERM.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switch");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SWITCH_LISTEN")
        .output()
        .expect("switch runs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn demo_data_writes_both_files_deterministically() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("a");
    let out2 = dir.path().join("b");
    for d in [&out, &out2] {
        let o = run(&[
            "demo-data",
            "--out",
            d.to_str().expect("utf8"),
            "--accounts",
            "50",
            "--orders",
            "20",
            "--seed",
            "3",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let accounts = std::fs::read_to_string(out.join("accounts.csv")).expect("accounts");
    let orders = std::fs::read_to_string(out.join("orders.csv")).expect("orders");
    assert_eq!(accounts.lines().count(), 51);
    assert_eq!(orders.lines().count(), 21);
    assert!(accounts.starts_with("pan,expiry,status,currency,balance,daily_limit"));
    assert!(orders.starts_with("order_id,merchant_id,amount,currency,status"));
    assert_eq!(
        accounts,
        std::fs::read_to_string(out2.join("accounts.csv")).expect("again")
    );
}

#[test]
fn unknown_config_key_fails_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("switch.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:1\"\ngrace_perod_secs = 3\n").expect("write");
    let o = run(&["--config", cfg.to_str().expect("utf8")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("grace_perod_secs"), "{err}");
}

#[test]
fn a_config_that_does_not_parse_is_refused_without_quoting_the_line() {
    // The line may be the store's URL, password and all.
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("switch.toml");
    let text = "listen = \"127.0.0.1:1\"\nstore = \"postgres://switch:s3cret-pw@db:5432/switch\n";
    std::fs::write(&cfg, text).expect("write");
    let o = run(&["--config", cfg.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("switch.toml, line 2, column"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // A value of the wrong type is named with its key, still without the line.
    std::fs::write(&cfg, "listen = \"127.0.0.1:1\"\nshards = \"two\"\n").expect("write");
    let o = run(&["--config", cfg.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2, column 10"), "{err}");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn bad_flag_values_fail_with_a_clear_error() {
    let o = run(&["--framing", "len3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("framing"));
    let o = run(&["--durability", "sometimes"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("durability"));
    let o = run(&["--io-threads", "5000"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("io_threads"));
    let o = run(&["--expected-transactions", "4294967297"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected_transactions"));
    // Within the key's range but beyond this machine's memory: refused at start, not an
    // abort on a failed allocation.
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().to_str().expect("utf8");
    let o = run(&["--data-dir", data, "--expected-transactions", "4294967296"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("expected_transactions = 4294967296"), "{err}");
}

#[test]
fn a_bad_snapshot_interval_is_refused_before_the_data_dir_is_touched() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["--data-dir", data.to_str().expect("utf8")])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("SWITCH_SNAPSHOT_EVERY_RECORDS", "2e6")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("switch runs");
    // Bounded: a switch that took the value would serve until stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the switch started despite a bad SWITCH_SNAPSHOT_EVERY_RECORDS");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().expect("output");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SWITCH_SNAPSHOT_EVERY_RECORDS must be"),
        "{err}"
    );
    assert!(!data.exists(), "nothing written: no demo data, no state");
}

#[test]
fn a_bad_data_row_stops_start_up_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("accounts.csv"),
        "pan,expiry,status,currency,balance,daily_limit\n4111111111111111,3012,active,840,10.00,5.00\n4111111111111112,3012,active,840,10.00,5.00\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("orders.csv"),
        "order_id,merchant_id,amount,currency,status\n",
    )
    .expect("write");
    let port = free_port().to_string();
    let admin = free_port().to_string();
    let o = run(&[
        "--data-dir",
        dir.path().to_str().expect("utf8"),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("accounts.csv: line 3:"), "{err}");
    assert!(
        !err.contains("4111111111111112"),
        "no full PAN in errors: {err}"
    );
}

/// The names of a process's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task list")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

fn wait_ready(admin: &str, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if run(&["healthcheck", "--admin", admin]).status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn starts_on_an_empty_data_dir_reads_env_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let iso = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    // Admin address from the environment, ISO address from a flag.
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            &iso,
            "--data-dir",
            data.to_str().expect("utf8"),
            "--shards",
            "2",
        ])
        .env("SWITCH_ADMIN_LISTEN", &admin)
        .env("SWITCH_DURABILITY", "none")
        .env("SWITCH_IO_THREADS", "3")
        .env("SWITCH_EXPECTED_TRANSACTIONS", "100000")
        .env("SWITCH_STORE_TIMEOUT_MS", "5000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let ready = wait_ready(&admin, Duration::from_secs(30));
    if !ready {
        let _ = child.kill();
    }
    assert!(ready, "switch became ready");
    assert!(
        Path::new(&data.join("accounts.csv")).exists(),
        "demo data generated"
    );
    assert!(Path::new(&data.join("orders.csv")).exists());
    // Maps sized at start: transparent huge pages are not turned off for the process (they
    // are when the maps grow: tests/tests/rolling_restart.rs), unless the system has none.
    let system =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !system.is_empty() && !system.contains("[never]") {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["THP_enabled:", "1"])),
            "{status}"
        );
    }
    // The thread counts asked for, by the names the switch gives its threads.
    let names = thread_names(child.id());
    let count = |name: &str| names.iter().filter(|n| n.as_str() == name).count();
    assert_eq!(count("switch-io"), 3, "{names:?}");
    assert_eq!(count("shard-0") + count("shard-1"), 2, "{names:?}");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "exits within the grace period"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit 0 after a drain");
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).expect("read");
    assert!(stderr.contains("generated a demo data set"), "{stderr}");
    // A setting of the PostgreSQL store, given without --store, is named as ignored.
    assert!(
        stderr.contains(
            "store_timeout_ms bounds the wait for the --store database: ignored without --store"
        ),
        "{stderr}"
    );
    // Each of the two shards sized its maps for half the expected transactions.
    assert!(
        stderr.contains("sized for the expected transactions expected=100000 per_shard=50000"),
        "{stderr}"
    );
    assert!(
        !run(&["healthcheck", "--admin", &admin]).status.success(),
        "stopped"
    );
}
