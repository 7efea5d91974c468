//! The switch's stages, one bench each, to see where a request's time goes:
//!
//! - `routing/decide/purchase`: one `routing::Shard` (N = 1, 1,000 demo cards) deciding a
//!   0200 purchase, a new key each time (idempotency record, debit, approval code): the
//!   decision alone, no channel, no I/O.
//! - `routing/snapshot/500k_purchases`: serializing a shard (`Shard::snapshot`) that decided
//!   500,000 purchases (as many idempotency entries and transaction slots): what a periodic
//!   snapshot build spends after its replay, and a shutdown snapshot in full.
//! - `switch/shard_handoff`: a job's round trip to a shard thread over a bounded crossbeam
//!   channel (the switch's connection-to-shard queue) and back over an unbounded tokio
//!   channel (a connection's reply channel), with nothing to decide: the price of the
//!   hand-off between threads.
//! - `switch/e2e/0200`: one purchase end to end through a switch running in this process on
//!   127.0.0.1:0: encode, write with the 2-byte length header, the switch's decode, shard and
//!   answer, read, decode, check DE 39. One request in flight: a round-trip latency, not a
//!   throughput (that is `loadgen`'s job).
//!
//! Run: `cargo bench -p benches --bench switch -- --warm-up-time 1 --measurement-time 3`.
//! Record the machine (`nproc`, `lscpu` model name) with every figure.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use codec::framing::{encode_frame_with, Framing};
use codec::{Message, MessageWriter, Mti};
use criterion::{criterion_group, criterion_main, Criterion};
use routing::{
    build_shards, CardStatus, EngineConfig, Now, Output, ProcessingCode, Request, TerminalId,
};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Decisions between purges of the idempotency records (which would otherwise grow for as
/// long as criterion iterates).
const PURGE_EVERY: u64 = 100_000;

/// The usable ones of 1,000 demo accounts at `now`, and their (PAN, currency) pairs.
fn demo_cards(now: Now) -> (Vec<routing::data::Account>, Vec<(routing::Pan, u16)>) {
    let accounts: Vec<_> = (0..1000)
        .map(|i| routing::demo::demo_account(i, 1))
        .filter(|a| a.status == CardStatus::Active && !a.expiry.is_expired_at(now))
        .collect();
    let cards = accounts.iter().map(|a| (a.pan, a.currency)).collect();
    (accounts, cards)
}

/// Bench purchases: 0200s from terminal BENCH001, parsed once outside the timed loops.
struct Purchases {
    mti: routing::Mti,
    terminal: TerminalId,
    code: ProcessingCode,
}

impl Purchases {
    fn new() -> Self {
        Purchases {
            mti: routing::Mti::new(200).expect("mti"),
            terminal: TerminalId::new(b"BENCH001").expect("terminal id"),
            code: ProcessingCode::from_digits(b"000000").expect("processing code"),
        }
    }

    /// The `n`-th purchase: a key (11 + 7) of its own for every `n`.
    fn nth(&self, n: u64, (pan, currency): (routing::Pan, u16), amount: u64) -> Request {
        let mut req = Request::new(
            self.mti,
            (n % 999_999) as u32 + 1,
            1_126_104_500 + n / 999_999,
            self.terminal,
        );
        req.processing_code = Some(self.code);
        req.pan = Some(pan);
        req.amount = Some(amount);
        req.currency = Some(currency);
        req
    }
}

fn routing_decide(c: &mut Criterion) {
    let mut now = Now::from_unix_secs(unix_now());
    let (accounts, cards) = demo_cards(now);
    let config = EngineConfig {
        idempotency_window_secs: 60,
        ..EngineConfig::default()
    };
    let mut shards = build_shards(1, &config, accounts, Vec::new()).expect("shard builds");
    let mut shard = shards.pop().expect("one shard");
    let purchases = Purchases::new();
    let mut out: Vec<Output> = Vec::with_capacity(16);
    let mut n: u64 = 0;
    c.bench_function("routing/decide/purchase", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut start = Instant::now();
            for _ in 0..iters {
                n += 1;
                if n.is_multiple_of(PURGE_EVERY) {
                    // Outside the timing: move past the window and drop what it protected.
                    spent += start.elapsed();
                    now = now.plus_secs(61);
                    shard.purge_expired(now);
                    start = Instant::now();
                }
                let req = purchases.nth(n, cards[(n as usize) % cards.len()], 100);
                out.clear();
                shard.handle_request(now, n, req, &mut out);
                black_box(&out);
            }
            spent + start.elapsed()
        })
    });
}

/// Purchases decided before `routing/snapshot` serializes the shard: each leaves an
/// idempotency entry and a transaction slot, as in a periodic snapshot's state.
const SNAPSHOT_PURCHASES: u64 = 500_000;

fn routing_snapshot(c: &mut Criterion) {
    let now = Now::from_unix_secs(unix_now());
    let (accounts, cards) = demo_cards(now);
    let mut shards =
        build_shards(1, &EngineConfig::default(), accounts, Vec::new()).expect("shard builds");
    let mut shard = shards.pop().expect("one shard");
    let purchases = Purchases::new();
    let mut out: Vec<Output> = Vec::with_capacity(16);
    for n in 1..=SNAPSHOT_PURCHASES {
        let req = purchases.nth(n, cards[(n as usize) % cards.len()], 1);
        out.clear();
        shard.handle_request(now, n, req, &mut out);
    }
    let mut bytes = Vec::new();
    let mut group = c.benchmark_group("routing/snapshot");
    group.sample_size(10);
    group.bench_function("500k_purchases", |b| {
        b.iter(|| {
            bytes.clear();
            shard.snapshot(&mut bytes);
            black_box(bytes.len())
        })
    });
    group.finish();
}

/// The switch's two channels around a shard: a bounded crossbeam channel to the shard thread,
/// and the connection's unbounded tokio channel back (`shards::ReplyTo`).
fn shard_handoff(c: &mut Criterion) {
    use crossbeam::channel;
    let (job_tx, job_rx) = channel::bounded::<(u64, Box<[u64; 8]>)>(1024);
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Box<[u64; 8]>)>();
    let worker = std::thread::spawn(move || {
        while let Ok((token, job)) = job_rx.recv() {
            if reply_tx.send((token, job)).is_err() {
                break;
            }
        }
    });
    let mut token = 0u64;
    c.bench_function("switch/shard_handoff", |b| {
        b.iter(|| {
            token += 1;
            job_tx.send((token, Box::new([token; 8]))).expect("send");
            let (back, job) = reply_rx.blocking_recv().expect("reply");
            black_box((back, job));
        })
    });
    drop(job_tx);
    let _ = worker.join();
}

fn switch_e2e(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    switch::store::write_demo_data(dir.path(), 1000, 10, 1).expect("demo data");
    let config = switch::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_owned(),
        shards: 1,
        durability: switch::config::Durability::None,
        log: "warn".into(),
        ..switch::Config::default()
    };
    let running = rt.block_on(switch::start(config)).expect("switch starts");

    // A usable USD card of the demo set.
    let now = Now::from_unix_secs(unix_now());
    let card = (0..1000)
        .map(|i| routing::demo::demo_account(i, 1))
        .find(|a| {
            a.status == CardStatus::Active && a.currency == 840 && !a.expiry.is_expired_at(now)
        })
        .expect("a usable card");
    // Display masks a PAN; the wire needs its digits.
    let pan = card.pan.as_str().to_owned();
    let spec = codec::builtin("iso87-binary").expect("spec");
    let mti = Mti::parse("0200").expect("mti");
    let mut stream = TcpStream::connect(running.iso_addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut out = BytesMut::with_capacity(512);
    let mut body = vec![0u8; 8192];
    let mut stan = 0u64;
    let mut f7 = 1_126_104_500u64;
    c.bench_function("switch/e2e/0200", |b| {
        b.iter(|| {
            stan += 1;
            if stan > 999_999 {
                stan = 1;
                f7 += 1;
            }
            out.clear();
            encode_frame_with(&mut out, Framing::Len2, 8192, |dst| {
                let mut w = MessageWriter::new(spec, mti, dst)?;
                w.set(2, &pan)?.set(3, "000000")?.set_u64(4, 100)?;
                w.set_u64(7, f7)?.set_u64(11, stan)?;
                w.set(41, "BENCHE2E")?.set(49, "840")?;
                w.finish()
            })
            .expect("encodes");
            stream.write_all(&out).expect("write");
            let mut head = [0u8; 2];
            stream.read_exact(&mut head).expect("read header");
            let len = usize::from(u16::from_be_bytes(head));
            let answer = body.get_mut(..len).expect("frame fits");
            stream.read_exact(answer).expect("read body");
            let msg =
                Message::decode(spec, bytes::Bytes::copy_from_slice(answer)).expect("decodes");
            assert!(msg.field(39).is_some_and(|f| f.eq_text("00")), "approved");
            black_box(msg.mti());
        })
    });
    drop(stream);
    rt.block_on(running.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = routing_decide, routing_snapshot, shard_handoff, switch_e2e
}
criterion_main!(benches);
