//! Recovery benchmark (issue 4): generate a journal of `RECORDS` records (default 10 million)
//! over `SHARDS` shards (default 2) by running purchases through the engine exactly as the
//! switch's shard threads would (each input journaled, then applied; messages to other shards
//! journaled by their receiver), then time `switch::store::recover` on it: restore the
//! snapshots, read and checksum every record, replay it, and collect what to re-deliver.
//!
//! Not a timed test: run it in release mode and read the figure.
//!
//! ```text
//! cargo test --release -p tests --test journal_recovery -- --ignored --nocapture
//! RECORDS=1000000 cargo test --release -p tests --test journal_recovery -- --ignored --nocapture
//! ```
//!
//! It also checks that recovery is exact: every recovered shard's snapshot is byte-identical
//! to the generating shard's, and every record was replayed.

use std::collections::VecDeque;
use std::time::Instant;

use routing::message::{ProcessingCode, TerminalId};
use routing::{EngineConfig, Input, Mti, Now, Output, Request};
use switch::journal::{self, Journal};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time this process has used (user + system, every thread), from `/proc/self/stat`; 0
/// where there is no such file.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

#[test]
#[ignore = "benchmark: cargo test --release -p tests --test journal_recovery -- --ignored --nocapture"]
fn recovery_of_10_million_journal_records() {
    let target = env("RECORDS", 10_000_000);
    let n = env("SHARDS", 2) as usize;
    let dir = tempfile::tempdir().expect("tmp");
    let state = journal::state_dir(dir.path());
    let (accounts_csv, _) = routing::demo::demo_data(10_000, 0, 1).expect("demo data");
    let accounts = routing::data::parse_accounts("accounts.csv", &accounts_csv).expect("parse");
    let engine = EngineConfig::default();
    let mut shards =
        routing::build_shards(n, &engine, accounts.iter().cloned(), []).expect("shards");
    journal::init_state_from(&state, &shards).expect("init state");
    let mut journals: Vec<Journal> = (0..n)
        .map(|i| Journal::open(&journal::shard_dir(&state, i), 0, 0, false).expect("journal"))
        .collect();

    let generated = Instant::now();
    let now = Now::from_unix_secs(1_795_000_000);
    let mut written = 0u64;
    let mut requests = 0u64;
    let mut queue: VecDeque<(usize, Input)> = VecDeque::new();
    let mut out = Vec::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while written < target {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let account = &accounts[(x % accounts.len() as u64) as usize];
        let terminal = format!("T{:07}", requests / 999_999);
        let mut req = Request::new(
            Mti::new(200).expect("mti"),
            (requests % 999_999) as u32 + 1,
            1_126_104_500,
            TerminalId::new(terminal.as_bytes()).expect("terminal"),
        );
        req.pan = Some(account.pan);
        req.processing_code = ProcessingCode::from_digits(b"000000");
        req.amount = Some(1 + (x >> 40) % 500);
        req.currency = Some(account.currency);
        req.expiry = Some(account.expiry);
        requests += 1;
        let home = req.home_shard(n);
        queue.push_back((
            home,
            Input::Request {
                now,
                token: requests,
                request: Box::new(req),
            },
        ));
        while let Some((i, input)) = queue.pop_front() {
            journals[i].append(&input);
            shards[i].apply(input, &mut out);
            written += 1;
            for o in out.drain(..) {
                if let Output::ToShard { shard, msg } = o {
                    queue.push_back((shard, Input::Peer { now, msg }));
                }
            }
        }
        if requests.is_multiple_of(4096) {
            for j in &mut journals {
                j.commit().expect("commit");
            }
        }
    }
    for j in &mut journals {
        j.commit().expect("commit");
    }
    let bytes: u64 = (0..n)
        .map(|i| {
            std::fs::metadata(
                journal::shard_dir(&state, i).join("journal-00000000000000000000.log"),
            )
            .expect("meta")
            .len()
        })
        .sum();
    println!(
        "generated {written} records ({requests} purchases, {:.0} MiB of journal, {n} shards) in {:?}",
        bytes as f64 / (1 << 20) as f64,
        generated.elapsed()
    );
    drop(journals);

    let started = Instant::now();
    let cpu = cpu_seconds();
    let (loaded, replayed) =
        switch::store::recover(&state, n, &engine, false, 0).expect("recovers");
    let took = started.elapsed();
    let cpu = cpu_seconds() - cpu;
    println!(
        "recovered {replayed} records in {took:?} ({:.0} records/s; {cpu:.2} s of CPU, user + system, all threads: the figure to compare on a busy machine)",
        replayed as f64 / took.as_secs_f64()
    );
    assert_eq!(replayed, written);
    assert!(loaded.redeliver.is_empty(), "nothing was in flight");
    assert_eq!(loaded.shards.len(), shards.len());
    for (generated, recovered) in shards.iter().zip(&loaded.shards) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generated.snapshot(&mut a);
        recovered.snapshot(&mut b);
        assert!(a == b, "shard {}: recovery is exact", generated.id());
    }
}
