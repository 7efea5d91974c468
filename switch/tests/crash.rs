//! Crash test (issue 4): the real `switch` binary under pipelined load on several connections is
//! killed with SIGKILL at random moments, several times, on one data directory with
//! `--durability fsync`. After each restart the clients retransmit (as repeats) every request
//! they got no answer to. At the end, every request has an answer, and:
//!
//! - no key got two different answers (DE 39 and DE 38 equal across every answer of a key);
//! - every approval is reflected in the balances exactly once: each card's available balance
//!   (balance inquiry, DE 54) is its opening balance minus the purchases and holds approved on
//!   it, and the sum over cards is the opening total minus every approved debit and hold.
//!
//! Periodic snapshots are taken every 3000 records per shard, so kills also land around
//! snapshots and journal removals. The seed of the random kill moments is printed (and can be
//! set with `CRASH_SEED`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use codec::{Message, MessageBuilder, Mti, Spec};

const BIN: &str = env!("CARGO_BIN_EXE_switch");
const CARDS: usize = 8;
const CONNECTIONS: usize = 4;
/// Opening balance of every card, in cents.
const OPENING: i64 = 10_000_000;
/// Requests one connection keeps unanswered on the wire.
const WINDOW: usize = 32;
const KILLS: usize = 4;

fn spec() -> &'static Spec {
    codec::builtin("iso87-binary").expect("spec")
}

fn luhn_pan(payload: &str) -> String {
    let check = routing::luhn::check_digit(payload.as_bytes()).expect("a payload of digits");
    format!("{payload}{}", char::from(check))
}

fn card(i: usize) -> String {
    luhn_pan(&format!("4222220000000{i:02}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// xorshift64*: enough for kill moments and amounts.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One request of the load: a purchase (0200) or a hold (0100) on a card.
#[derive(Clone, Debug)]
struct Request {
    hold: bool,
    card: usize,
    amount: i64,
    terminal: String,
    stan: u32,
}

impl Request {
    fn encode(&self, repeat: bool) -> Bytes {
        let mti = match (self.hold, repeat) {
            (true, false) => "0100",
            (true, true) => "0101",
            (false, false) => "0200",
            (false, true) => "0201",
        };
        let fields = [
            (2, card(self.card)),
            (3, "000000".to_owned()),
            (4, format!("{:012}", self.amount)),
            (7, "1126104500".to_owned()),
            (11, format!("{:06}", self.stan)),
            (41, self.terminal.clone()),
            (49, "840".to_owned()),
        ];
        let mut b = MessageBuilder::new(spec(), Mti::parse(mti).expect("mti"));
        for (n, v) in &fields {
            b.set(*n, v).expect("field");
        }
        frame(&b)
    }
}

fn frame(b: &MessageBuilder<'_, '_>) -> Bytes {
    let mut body = BytesMut::new();
    b.encode_into(&mut body).expect("encodes");
    let mut framed = Vec::with_capacity(body.len() + 2);
    framed.extend_from_slice(&u16::try_from(body.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(&body);
    Bytes::from(framed)
}

/// An answer: DE 39 and DE 38.
type Answer = (String, Option<String>);

#[derive(Default)]
struct Ledger {
    /// Every answer each request got, by (terminal, stan).
    answers: BTreeMap<(String, u32), Vec<Answer>>,
}

/// Reads one len2 frame; `None` at EOF or on an error.
fn read_frame(s: &mut TcpStream) -> Option<Message<'static>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).ok()?;
    Some(Message::decode(spec(), Bytes::from(body)).expect("answer decodes"))
}

fn field(m: &Message<'_>, n: usize) -> Option<String> {
    m.fields().find(|f| f.number() == n).map(|f| f.to_string())
}

/// Sends `work` (first `retransmit` as repeats, then the rest) pipelined on one connection and
/// records answers until every request is answered, the connection dies, or `deadline`.
fn run_connection(
    addr: SocketAddr,
    work: Vec<(Request, bool)>,
    ledger: Arc<Mutex<Ledger>>,
    deadline: Instant,
) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let answered = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let total = work.len();
    let reader_thread = {
        let (answered, dead, ledger) = (answered.clone(), dead.clone(), ledger.clone());
        std::thread::spawn(move || {
            while answered.load(Ordering::SeqCst) < total && Instant::now() < deadline {
                let mut len = [0u8; 2];
                match reader.peek(&mut len) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(_) => break,
                }
                let _ = reader.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(m) = read_frame(&mut reader) else {
                    break;
                };
                let _ = reader.set_read_timeout(Some(Duration::from_millis(200)));
                let key = (
                    field(&m, 41).expect("DE 41 echoed"),
                    field(&m, 11).expect("DE 11").parse().expect("stan"),
                );
                let answer = (field(&m, 39).expect("DE 39"), field(&m, 38));
                ledger
                    .lock()
                    .expect("ledger")
                    .answers
                    .entry(key)
                    .or_default()
                    .push(answer);
                answered.fetch_add(1, Ordering::SeqCst);
            }
            dead.store(true, Ordering::SeqCst);
        })
    };
    for (sent, (req, repeat)) in work.iter().enumerate() {
        while sent - answered.load(Ordering::SeqCst) >= WINDOW {
            if dead.load(Ordering::SeqCst) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if dead.load(Ordering::SeqCst) || stream.write_all(&req.encode(*repeat)).is_err() {
            break;
        }
    }
    let _ = reader_thread.join();
}

/// The child switch, killed if the test fails before stopping it.
struct Switch(Child);

impl Drop for Switch {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Periodic snapshots put in force, as the rounds' logs say.
fn periodic_snapshots(dir: &Path) -> usize {
    (0..=KILLS)
        .map(|r| {
            std::fs::read_to_string(dir.join(format!("switch-{r}.log")))
                .unwrap_or_default()
                .matches("periodic snapshot in force")
                .count()
        })
        .sum()
}

fn spawn_switch(dir: &Path, round: usize) -> (Switch, SocketAddr) {
    let iso: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let admin = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join(format!("switch-{round}.log"))).expect("log");
    let child = Command::new(BIN)
        .args([
            "--listen",
            &iso.to_string(),
            "--admin-listen",
            &admin,
            "--data-dir",
            dir.join("data").to_str().expect("utf8"),
            "--shards",
            "4",
            "--durability",
            "fsync",
            "--log",
            "info",
        ])
        .env_remove("SWITCH_CONFIG")
        // Periodic snapshots every thousand records, so kills land around them too. (Builders
        // wait for idle CPU, which this load leaves little of; a build overdue when the next
        // falls due is given up and the next built at nice 10: at 3,000 records a round was
        // sometimes killed before any was confirmed.)
        .env("SWITCH_SNAPSHOT_EVERY_RECORDS", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn switch");
    let child = Switch(child);
    let start = Instant::now();
    while TcpStream::connect(iso).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "switch ready (round {round}); log: {}",
            std::fs::read_to_string(dir.join(format!("switch-{round}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, iso)
}

/// Available balance of a card (balance inquiry), in cents.
fn balance(addr: SocketAddr, card_index: usize, stan: u32) -> i64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let fields = [
        (2, card(card_index)),
        (3, "310000".to_owned()),
        (7, "1126104500".to_owned()),
        (11, format!("{stan:06}")),
        (41, "TERMBAL0".to_owned()),
        (49, "840".to_owned()),
    ];
    let mut b = MessageBuilder::new(spec(), Mti::parse("0100").expect("mti"));
    for (n, v) in &fields {
        b.set(*n, v).expect("field");
    }
    s.write_all(&frame(&b)).expect("send");
    let m = read_frame(&mut s).expect("balance answer");
    assert_eq!(field(&m, 39).as_deref(), Some("00"), "balance inquiry");
    let de54 = field(&m, 54).expect("DE 54");
    let amount: i64 = de54[de54.len() - 12..].parse().expect("amount");
    if de54.as_bytes()[7] == b'D' {
        -amount
    } else {
        amount
    }
}

#[test]
fn sigkill_under_load_loses_no_approval_and_applies_none_twice() {
    let started = Instant::now();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut csv = String::from("pan,expiry,status,currency,balance,daily_limit\n");
    for i in 0..CARDS {
        csv.push_str(&format!(
            "{},3012,active,840,{}.00,99999999.00\n",
            card(i),
            OPENING / 100
        ));
    }
    std::fs::write(data.join("accounts.csv"), csv).expect("accounts");
    std::fs::write(
        data.join("orders.csv"),
        "order_id,merchant_id,amount,currency,status\n",
    )
    .expect("orders");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // Every request ever sent, per connection.
    let mut sent: Vec<Vec<Request>> = vec![Vec::new(); CONNECTIONS];
    let mut next_stan = vec![1u32; CONNECTIONS];
    for round in 0..=KILLS {
        let last = round == KILLS;
        let (mut child, addr) = spawn_switch(dir.path(), round);
        let deadline = Instant::now() + Duration::from_secs(if last { 30 } else { 10 });
        let mut threads = Vec::new();
        for (c, (reqs, stan)) in sent.iter_mut().zip(&mut next_stan).enumerate() {
            let answered = ledger.lock().expect("ledger");
            // Unanswered requests are retransmitted (as repeats) after each restart; in the
            // last round also every 5th answered one, so that a key answered twice differently
            // (a decision lost and made again) would show.
            let mut work: Vec<(Request, bool)> = reqs
                .iter()
                .enumerate()
                .filter(|(i, r)| {
                    !answered.answers.contains_key(&(r.terminal.clone(), r.stan))
                        || (last && i % 5 == 0)
                })
                .map(|(_, r)| (r.clone(), true))
                .collect();
            drop(answered);
            if !last {
                for _ in 0..3000 {
                    let req = Request {
                        hold: rng.below(5) == 0,
                        card: rng.below(CARDS as u64) as usize,
                        amount: 100 + rng.below(900) as i64,
                        terminal: format!("TERMC{c:03}"),
                        stan: *stan,
                    };
                    *stan += 1;
                    reqs.push(req.clone());
                    work.push((req, false));
                }
            }
            let ledger = ledger.clone();
            threads.push(std::thread::spawn(move || {
                run_connection(addr, work, ledger, deadline)
            }));
        }
        if !last {
            std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
            let killed = Command::new("kill")
                .args(["-KILL", &child.0.id().to_string()])
                .status()
                .expect("kill");
            assert!(killed.success());
            let _ = child.0.wait();
        }
        for t in threads {
            t.join().expect("connection thread");
        }
        let answered = ledger.lock().expect("ledger").answers.len();
        println!(
            "round {round}: {answered} of {} requests answered",
            sent.iter().map(Vec::len).sum::<usize>()
        );
        if last {
            let all: Vec<&Request> = sent.iter().flatten().collect();
            let ledger = ledger.lock().expect("ledger");
            let missing = all
                .iter()
                .filter(|r| !ledger.answers.contains_key(&(r.terminal.clone(), r.stan)))
                .count();
            assert_eq!(missing, 0, "every request answered in the end");
            let mut debited = [0i64; CARDS];
            let mut approved = 0;
            for r in &all {
                let answers = &ledger.answers[&(r.terminal.clone(), r.stan)];
                assert!(
                    answers.iter().all(|a| a == &answers[0]),
                    "{} {} got different answers: {answers:?}",
                    r.terminal,
                    r.stan
                );
                let (code, approval) = &answers[0];
                assert_eq!(
                    code, "00",
                    "{} {}: every purchase and hold fits the balance; no journal failure here",
                    r.terminal, r.stan
                );
                assert!(approval.is_some(), "an approval carries DE 38");
                debited[r.card] += r.amount;
                approved += 1;
            }
            assert!(approved > 1000, "the load did something: {approved}");
            let mut total = 0;
            for (c, d) in debited.iter().enumerate() {
                let b = balance(addr, c, 900_000 + c as u32);
                assert_eq!(
                    b,
                    OPENING - d,
                    "card {c}: every approval applied exactly once"
                );
                total += b;
            }
            assert_eq!(
                total,
                OPENING * CARDS as i64 - debited.iter().sum::<i64>(),
                "balances + approved debits and holds = opening total"
            );
            // Builders wait for idle CPU, which the load leaves little of (on a busy CI
            // machine, none): if none was confirmed yet, the last round's get a bounded
            // moment now that the load is over, before the stop.
            let deadline = Instant::now() + Duration::from_secs(20);
            while periodic_snapshots(dir.path()) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let term = Command::new("kill")
                .args(["-TERM", &child.0.id().to_string()])
                .status()
                .expect("kill");
            assert!(term.success());
            let stopping = Instant::now();
            let status = loop {
                if let Some(status) = child.0.try_wait().expect("wait") {
                    break status;
                }
                assert!(
                    stopping.elapsed() < Duration::from_secs(20),
                    "the switch stops within its grace period"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(status.success(), "clean exit after SIGTERM");
        }
    }
    // A restart after the clean stop replays nothing (shutdown snapshot) and still agrees.
    let log =
        std::fs::read_to_string(dir.path().join(format!("switch-{KILLS}.log"))).expect("last log");
    assert!(log.contains("shutdown snapshots written"), "{log}");
    let periodic = periodic_snapshots(dir.path());
    println!("{periodic} periodic snapshots confirmed");
    assert!(
        periodic > 0,
        "periodic snapshots were taken and confirmed under load"
    );
    assert!(!log.contains(&card(0)), "no full PAN in the log");
    println!("crash test took {:?}", started.elapsed());
}
