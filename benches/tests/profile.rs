//! `benches/profile.sh` end to end, on the suite's own (debug) binaries and short durations:
//! a switch under load is recorded, the flame graph drawn from real `perf` stacks, the counts
//! divided by real answers, and nothing is left running or on disk but the results.
//! Skipped with a message where `perf` is missing or may not record (`tests::skip`: a failure
//! under `.ci/run`, which installs it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn perf_can_record() -> Result<(), String> {
    let out = Command::new("perf")
        .args([
            "record",
            "-q",
            "-o",
            "/dev/null",
            "-e",
            "cpu-clock",
            "--",
            "true",
        ])
        .output()
        .map_err(|e| format!("perf is not installed ({e}); Debian: apt-get install linux-perf"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "perf cannot record here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn profile_script_draws_the_switch_threads_and_counts_per_answer() {
    if let Err(why) = perf_can_record() {
        tests::skip(why);
        return;
    }
    let binaries = tests::replicas::binaries();
    // The script takes one directory holding all three binaries.
    let bin = tempfile::tempdir().unwrap();
    for (name, path) in [
        ("switch", binaries.switch.as_path()),
        ("loadgen", binaries.loadgen.as_path()),
        ("flamegraph", Path::new(env!("CARGO_BIN_EXE_flamegraph"))),
    ] {
        std::os::unix::fs::symlink(path, bin.path().join(name)).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let script = tests::replicas::workspace_root().join("benches/profile.sh");
    let started = Instant::now();
    let run = Command::new("bash")
        .arg(&script)
        .env("BIN", bin.path())
        .env("OUT", out.path())
        .env("CONNECTIONS", "4")
        .env("PIPELINE", "8")
        .env("WARMUP", "1")
        .env("RECORD", "2")
        .env("COUNT", "1")
        .env("FREQ", "499")
        // addr2line takes over a minute on a debug build's inlined frames.
        .env("INLINE", "0")
        .output()
        .expect("run benches/profile.sh");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "profile.sh failed:\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );

    // The graph is drawn from the switch's own threads, down to the engine.
    let svg = read(&out.path().join("switch.svg"));
    assert!(svg.starts_with("<?xml"), "not an SVG");
    for frame in [
        "shard-0",
        "shard-1",
        "switch-io",
        "switch::shards::Worker::run",
    ] {
        assert!(svg.contains(frame), "no {frame} frame in the flame graph");
    }
    let folded = read(&out.path().join("switch.folded"));
    assert!(
        folded.lines().any(|l| l.starts_with("shard-0;")),
        "no stack rooted at shard-0 in the folded stacks"
    );
    assert!(!read(&out.path().join("top.txt")).trim().is_empty());

    // Figures per answer, from a switch that answered.
    let summary = read(&out.path().join("summary.txt"));
    let answered: u64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("answered in the "))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no answered count in:\n{summary}"));
    assert!(answered > 0, "{summary}");
    let cpu: f64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("CPU per answer: "))
        .and_then(|l| l.strip_suffix(" us"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CPU per answer in:\n{summary}"));
    assert!(cpu > 0.0 && cpu.is_finite(), "{summary}");
    assert!(
        summary.contains("context-switches per answer: "),
        "{summary}"
    );
    let shard_share = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("shard-0"))
        .and_then(|l| l.trim().strip_suffix('%'))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no CPU share of shard-0 in:\n{summary}"));
    assert!(shard_share > 0.0 && shard_share < 100.0, "{summary}");
    assert!(summary.contains("timeouts=0 errors=0"), "{summary}");

    // Only the results stay: the switch's data directory is removed, the raw script too.
    assert!(!out.path().join("state").exists());
    assert!(!out.path().join("switch.script").exists());
}
