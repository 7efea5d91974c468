//! Scale-out (issue 6): three `switch` processes sharing one PostgreSQL database, HAProxy
//! (`deploy/haproxy/haproxy.cfg`, `mode tcp`, PROXY v2 to the replicas) in front.
//!
//! 1. `switch import` loads the data once; a second import is refused, naming the card.
//! 2. Contention across replicas: 30 purchases of 10.00 on one card holding 100.00, sent at
//!    once to the three replicas directly: exactly 10 approved, the balance ends at zero; each
//!    of 6 orders paid twice at once through two replicas: exactly one 00, the other 94; a
//!    balance inquiry on another replica sees an approval at once (read-after-write).
//! 3. Pipelined purchases through HAProxy from several clients while replica 2 is SIGKILLed
//!    and restarted. Afterwards every request that got no answer is retransmitted through
//!    HAProxy until answered, and answered requests are retransmitted to each replica directly:
//!    every retransmission gets the original answer (39 and 38). Then every card's balance is
//!    exactly its opening balance minus the purchases the clients saw approved, and the ledger
//!    adds up to it.
//!
//! Skips with a message when PostgreSQL (`SWITCH_TEST_PG_URL`, default
//! `postgres://switch:switch@127.0.0.1:5432/postgres`; `.ci/run` starts one) or HAProxy is
//! missing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tests::pg::{pg_test_url, TestDatabase};
use tests::replicas::{binaries, loopback_env_free_ports, metric, Haproxy, Replica, ReplicaConfig};
use tests::{luhn_pan, Client, Reply, Req};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CARDS: usize = 24;
const OPENING: i64 = 1_000_000; // 10,000.00 in minor units
const TIGHT_CARD_BALANCE: i64 = 10_000; // 100.00
const ORDERS: usize = 6;
const CLIENTS: u32 = 6;
const WINDOW: usize = 8;

fn card(i: usize) -> String {
    luhn_pan(&format!("41111100{:07}", i))
}

fn tight_card() -> String {
    luhn_pan("411111999999999")
}

fn write_data(dir: &Path) {
    let mut accounts = String::from("pan,expiry,status,currency,balance,daily_limit\n");
    for i in 0..CARDS {
        accounts.push_str(&format!(
            "{},3012,active,840,{}.00,9999999.00\n",
            card(i),
            OPENING / 100
        ));
    }
    accounts.push_str(&format!(
        "{},3012,active,840,{}.00,9999999.00\n",
        tight_card(),
        TIGHT_CARD_BALANCE / 100
    ));
    let mut orders = String::from("order_id,merchant_id,amount,currency,status\n");
    for i in 0..ORDERS {
        orders.push_str(&format!("ORD-{i},SHOP00000000001,25.00,840,open\n"));
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("accounts.csv"), accounts).unwrap();
    std::fs::write(dir.join("orders.csv"), orders).unwrap();
}

fn run_switch(args: &[&str]) -> std::process::Output {
    std::process::Command::new(&binaries().switch)
        .args(args)
        .output()
        .expect("run switch")
}

/// A fresh database with this file's data imported by `switch import`.
fn imported_database(url: &str) -> TestDatabase {
    let db = TestDatabase::create(url);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_data(&data);
    let out = run_switch(&[
        "import",
        "--store",
        &db.url,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

/// A client straight to a replica that requires PROXY v2: a LOCAL header first.
async fn direct(addr: SocketAddr) -> Client {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to a replica");
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    stream.write_all(&header).await.expect("PROXY header");
    Client::from_stream(stream, "iso87-binary")
}

fn purchase(pan: &str, amount: u64, terminal: &str, stan: u32) -> Req {
    Req::financial(pan, "000000", amount, stan).set(41, terminal)
}

/// What one request got: DE 39 and DE 38.
type Answer = (String, Option<String>);

fn answer_of(r: &Reply) -> Answer {
    (r.code().to_owned(), r.get(38).map(str::to_owned))
}

#[derive(Clone, Debug)]
struct Sent {
    req: Req,
    pan: String,
    amount: u64,
}

type Key = (String, String); // (41, 11)

fn key_of(req: &Req) -> Key {
    (req.fields[&41].clone(), req.fields[&11].clone())
}

/// Sends `reqs` pipelined on one connection; returns the answers that came back before the link
/// closed or went quiet for 3 s.
async fn exchange(addr: SocketAddr, reqs: &[Req], via_proxy_header: bool) -> HashMap<Key, Answer> {
    let mut got = HashMap::new();
    let connect = async {
        if via_proxy_header {
            Some(direct(addr).await)
        } else {
            TcpStream::connect(addr)
                .await
                .ok()
                .map(|s| Client::from_stream(s, "iso87-binary"))
        }
    };
    let Some(mut client) = connect.await else {
        return got;
    };
    for r in reqs {
        let mut b = codec::MessageBuilder::new(
            codec::builtin("iso87-binary").unwrap(),
            codec::Mti::parse("0200").unwrap(),
        );
        for (n, v) in &r.fields {
            b.set(*n, v).unwrap();
        }
        let mut body = bytes::BytesMut::new();
        b.encode_into(&mut body).unwrap();
        if futures::SinkExt::send(&mut client.framed, body.freeze())
            .await
            .is_err()
        {
            return got;
        }
    }
    while got.len() < reqs.len() {
        match tokio::time::timeout(Duration::from_secs(3), client.framed.next()).await {
            Ok(Some(Ok(frame))) => {
                let spec = codec::builtin("iso87-binary").unwrap();
                let msg = codec::Message::decode(spec, frame).expect("answer decodes");
                let reply = Reply {
                    mti: msg.mti().to_string(),
                    fields: msg.fields().map(|f| (f.number(), f.to_string())).collect(),
                };
                let k = (
                    reply.get(41).unwrap_or_default().to_owned(),
                    reply.get(11).unwrap_or_default().to_owned(),
                );
                got.insert(k, answer_of(&reply));
            }
            _ => break,
        }
    }
    got
}

struct Db {
    client: tokio_postgres::Client,
}

impl Db {
    async fn connect(url: &str) -> Db {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(conn);
        Db { client }
    }

    async fn balance(&self, pan: &str) -> (i64, i64) {
        let row = self
            .client
            .query_one("SELECT balance, held FROM accounts WHERE pan = $1", &[&pan])
            .await
            .expect("account row");
        (row.get(0), row.get(1))
    }

    async fn ledger_sum(&self, pan: &str) -> i64 {
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(balance_delta), 0)::int8 FROM ledger WHERE pan = $1",
                &[&pan],
            )
            .await
            .expect("ledger");
        row.get(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_ledger_through_haproxy_and_a_crash() {
    let Some(url) = pg_test_url("scale-out") else {
        return;
    };
    let Some(haproxy_bin) = Haproxy::binary("scale-out") else {
        return;
    };
    let db = TestDatabase::create(&url);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_data(&data);
    let store = db.url.as_str();
    let data_arg = data.to_str().unwrap();

    // 1. Import once; a second import loads nothing and names the card, masked.
    let out = run_switch(&["import", "--store", store, "--data-dir", data_arg]);
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_switch(&["import", "--store", store, "--data-dir", data_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second import must fail");
    assert!(err.contains("already in the store"), "{err}");
    assert!(!err.contains(&card(0)[6..]), "no full PAN in errors: {err}");

    // Three replicas and HAProxy on free loopback ports.
    let env = loopback_env_free_ports();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut replicas = Vec::new();
    for n in 1..=3 {
        let iso: SocketAddr = env[&format!("SWITCH_{n}_ISO")].parse().unwrap();
        let admin_port: u16 = env[&format!("SWITCH_{n}_ADMIN_PORT")].parse().unwrap();
        let mut config =
            ReplicaConfig::new(&format!("switch-{n}"), dir.path().join(format!("r{n}")))
                .arg("--store")
                .arg(store)
                .arg("--proxy-protocol")
                .arg("--shards")
                .arg("2");
        config.listen = iso;
        config.admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        replicas.push(Replica::start_ready(config, &logs).await);
    }
    let mut haproxy = Haproxy::start(&haproxy_bin, &env, &logs);
    for n in 1..=3 {
        haproxy
            .wait_server(&format!("switch-{n}"), "UP", Duration::from_secs(15))
            .await;
    }
    let front = haproxy.front;
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.config.listen).collect();
    let iso = |i: usize| addrs[i];

    let dbc = Db::connect(store).await;
    assert_eq!(
        dbc.ledger_sum(&card(0)).await,
        OPENING,
        "opening ledger row"
    );

    // 2a. 30 purchases of 10.00 on a card holding 100.00, ten on each replica at once.
    let tight = tight_card();
    let mut tasks = Vec::new();
    for r in 0..3 {
        let addr = iso(r);
        let reqs: Vec<Req> = (0..10)
            .map(|i| purchase(&tight, 1_000, &format!("TIGHT00{r}"), 1 + i))
            .collect();
        tasks.push(tokio::spawn(
            async move { exchange(addr, &reqs, true).await },
        ));
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (_, (code, _)) in t.await.unwrap() {
            *codes.entry(code).or_default() += 1;
        }
    }
    assert_eq!(
        codes.get("00"),
        Some(&10),
        "exactly ten approved: {codes:?}"
    );
    assert_eq!(
        codes.get("51"),
        Some(&20),
        "the rest declined 51: {codes:?}"
    );
    assert_eq!(dbc.balance(&tight).await, (0, 0));
    assert_eq!(dbc.ledger_sum(&tight).await, 0);

    // 2b. Each order paid twice at once, through replicas 1 and 3.
    for o in 0..ORDERS {
        let pay = |term: &str, pan: String| {
            purchase(&pan, 2_500, term, 100 + o as u32)
                .set(42, "SHOP00000000001")
                .set(48, &format!("ORD-{o}"))
        };
        let a = pay("ORDERA01", card(o));
        let b = pay("ORDERB01", card(o + ORDERS));
        let (a, b) = ([a], [b]);
        let (ra, rb) = tokio::join!(exchange(iso(0), &a, true), exchange(iso(2), &b, true));
        let mut got: Vec<String> = ra
            .into_values()
            .chain(rb.into_values())
            .map(|a| a.0)
            .collect();
        got.sort();
        assert_eq!(got, ["00", "94"], "order ORD-{o}");
    }
    let paid_orders: i64 = dbc
        .client
        .query_one("SELECT count(*) FROM orders WHERE status = 'paid'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(paid_orders, ORDERS as i64);

    // 2c. Read-after-write: approved on replica 1, seen by a balance inquiry on replica 2.
    let pan = card(CARDS - 1);
    let got = exchange(iso(0), &[purchase(&pan, 12_345, "RAW00001", 1)], true).await;
    assert_eq!(got.values().next().map(|a| a.0.as_str()), Some("00"));
    let inquiry = Req::financial(&pan, "310000", 0, 2).set(41, "RAW00001");
    let mut c = direct(iso(1)).await;
    let reply = c.call("0100", &inquiry.list()).await;
    assert_eq!(reply.code(), "00");
    let de54 = reply.get(54).expect("DE 54").to_owned();
    let (balance, held) = dbc.balance(&pan).await;
    assert_eq!(balance, OPENING - 12_345);
    assert_eq!(de54, format!("0002840C{:012}", balance - held));
    // Accounts touched in part 2 are left out of part 3's arithmetic.
    let touched: Vec<String> = (0..2 * ORDERS).map(card).chain([pan.clone()]).collect();
    let mut expected_debits: HashMap<String, i64> = HashMap::new();

    // 3. Load through HAProxy while replica 2 is killed and restarted.
    let answered: Arc<Mutex<HashMap<Key, Answer>>> = Arc::default();
    let unanswered: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let all_sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (answered, unanswered, all_sent, stop) = (
            answered.clone(),
            unanswered.clone(),
            all_sent.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let terminal = format!("LOAD{c:04}");
            let mut stan = 0u32;
            let mut rng = 0x9e37_79b9_u64.wrapping_mul(u64::from(c) + 1);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<Sent> = (0..WINDOW)
                    .map(|_| {
                        stan += 1;
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let pan = card(2 * ORDERS + (rng as usize % (CARDS - 2 * ORDERS - 1)));
                        let amount = 1 + rng % 999;
                        Sent {
                            req: purchase(&pan, amount, &terminal, stan),
                            pan,
                            amount,
                        }
                    })
                    .collect();
                let reqs: Vec<Req> = batch.iter().map(|s| s.req.clone()).collect();
                let got = exchange(front, &reqs, false).await;
                all_sent.lock().unwrap().extend(batch.iter().cloned());
                for s in batch {
                    match got.get(&key_of(&s.req)) {
                        Some(a) => {
                            answered.lock().unwrap().insert(key_of(&s.req), a.clone());
                        }
                        None => unanswered.lock().unwrap().push(s),
                    }
                }
            }
        }));
    }
    // Replica 2 must be answering this load when it is killed, or the crash proves nothing.
    let decided = "switch_decision_duration_seconds_count";
    let before_load = metric(&replicas[1], decided).await.expect(decided);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_kill = metric(&replicas[1], decided).await.expect(decided);
    assert!(
        at_kill > before_load,
        "replica 2 answered none of the load before its crash ({before_load} -> {at_kill})"
    );
    replicas[1].sigkill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    replicas[1].restart().await;
    haproxy
        .wait_server("switch-2", "UP", Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let first_answers = answered.lock().unwrap().len();
    let lost = std::mem::take(&mut *unanswered.lock().unwrap());
    eprintln!(
        "load phase: {} requests, {first_answers} answered, {} without an answer (replica 2 killed)",
        all_sent.lock().unwrap().len(),
        lost.len()
    );
    assert!(first_answers > 200, "load went through: {first_answers}");

    // Retransmit what got no answer, through HAProxy, until each is answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending = lost.clone();
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} never answered",
            pending.len()
        );
        let reqs: Vec<Req> = pending.iter().map(|s| s.req.clone()).collect();
        let got = exchange(front, &reqs, false).await;
        pending.retain(|s| match got.get(&key_of(&s.req)) {
            Some(a) => {
                answered.lock().unwrap().insert(key_of(&s.req), a.clone());
                false
            }
            None => true,
        });
    }
    let answered = answered.lock().unwrap().clone();
    let all_sent = all_sent.lock().unwrap().clone();
    assert_eq!(
        answered.len(),
        all_sent.len(),
        "every request answered once retransmitted"
    );

    // Retransmissions to each replica directly get the original answers: every request that
    // had been lost, and a sample of the others.
    let mut sample: Vec<Sent> = lost.clone();
    sample.extend(all_sent.iter().step_by(7).take(60).cloned());
    for r in 0..3 {
        for chunk in sample.chunks(32) {
            let reqs: Vec<Req> = chunk.iter().map(|s| s.req.clone()).collect();
            let got = exchange(iso(r), &reqs, true).await;
            for s in chunk {
                let k = key_of(&s.req);
                assert_eq!(
                    got.get(&k),
                    answered.get(&k),
                    "retransmission of {k:?} to replica {}",
                    r + 1
                );
            }
        }
    }

    // Approval codes come from blocks no two replicas share (nor one replica after its
    // restart): no code was given twice.
    let mut codes: HashMap<&str, &Key> = HashMap::new();
    for (k, (code, approval)) in &answered {
        if let (true, Some(approval)) = (code == "00", approval) {
            if let Some(other) = codes.insert(approval.as_str(), k) {
                panic!("approval code {approval} given to {other:?} and {k:?}");
            }
        }
    }

    // Every approval the clients saw is applied exactly once, and nothing else is.
    for s in &all_sent {
        let (code, _) = &answered[&key_of(&s.req)];
        assert!(code == "00" || code == "51", "unexpected {code}");
        if code == "00" {
            *expected_debits.entry(s.pan.clone()).or_default() += s.amount as i64;
        }
    }
    for i in 2 * ORDERS..CARDS {
        let pan = card(i);
        if touched.contains(&pan) {
            continue;
        }
        let debits = expected_debits.get(&pan).copied().unwrap_or(0);
        let (balance, held) = dbc.balance(&pan).await;
        assert_eq!(
            (balance, held),
            (OPENING - debits, 0),
            "card #{i}: balance = opening - approved purchases"
        );
        assert_eq!(dbc.ledger_sum(&pan).await, balance, "card #{i}: ledger");
    }
    for r in &mut replicas {
        assert!(
            r.is_running(),
            "{} still running:\n{}",
            r.config.name,
            r.log()
        );
    }
    drop(haproxy);
    drop(replicas);
    drop(db);
}

/// A TCP forwarder to PostgreSQL that the test can cut: every forwarded link is dropped, and
/// new ones are refused, until it is restored.
struct Cuttable {
    addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Cuttable {
    async fn start(upstream: SocketAddr) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*up_rx.borrow() {
                    continue; // dropped: refused
                }
                let mut up_rx = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up_rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Cuttable { addr, up }
    }

    fn set(&self, up: bool) {
        let _ = self.up.send(up);
    }
}

/// The database unreachable: requests are answered 96 within the store timeout, `/readyz`
/// answers 503; once it is back, readiness returns and requests are approved again, with
/// nothing of the 96-answered requests applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_answers_96_and_turns_readiness_off() {
    let Some(url) = pg_test_url("scale-out") else {
        return;
    };
    let db = imported_database(&url);

    // The same database through a forwarder the test can cut.
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("TCP host expected, got {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let cut = Cuttable::start(upstream).await;
    let via_cut = format!(
        "postgres://{}:{}@{}/{}?sslmode=disable",
        config.get_user().unwrap_or("switch"),
        String::from_utf8_lossy(config.get_password().unwrap_or(b"switch")),
        cut.addr,
        config.get_dbname().unwrap()
    );
    let sw = tests::TestSwitch::start_with("", "", |c| {
        c.store = Some(via_cut);
        c.store_timeout_ms = 1_000;
        c.shards = 1;
    })
    .await;
    let pan = card(3);
    let mut client = sw.client().await;
    let reply = client
        .call("0200", &purchase(&pan, 100, "UNREACH1", 1).list())
        .await;
    assert_eq!(reply.code(), "00");
    assert_eq!(sw.admin_get("/readyz").await.0, 200);

    cut.set(false);
    let started = Instant::now();
    let reply = client
        .call("0200", &purchase(&pan, 200, "UNREACH1", 2).list())
        .await;
    assert_eq!(reply.code(), "96", "database unreachable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the store timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while sw.admin_get("/readyz").await.0 != 503 {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cut.set(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sw.admin_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = client
        .call("0200", &purchase(&pan, 400, "UNREACH1", 3).list())
        .await;
    assert_eq!(reply.code(), "00", "served again");
    let dbc = Db::connect(&db.url).await;
    assert_eq!(
        dbc.balance(&pan).await,
        (OPENING - 500, 0),
        "the 96 applied nothing"
    );
    sw.running.shutdown().await;
}

/// The store's deferrals and its optimistic first attempt, against a real database: a card
/// another transaction holds waits for it (other cards go on) and gets 96 past the store
/// timeout with nothing applied; a card not in the store is declined 14; a retransmission
/// makes the optimistic attempt run again and replays the original answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_unknown_and_retransmitted_cards_through_the_store() {
    let Some(url) = pg_test_url("scale-out") else {
        return;
    };
    let db = imported_database(&url);
    let store = db.url.clone();
    let sw = tests::TestSwitch::start_with("", "", |c| {
        c.store = Some(store);
        c.store_timeout_ms = 1_500;
        c.shards = 1;
    })
    .await;
    let dbc = Db::connect(&db.url).await;
    let mut client = sw.client().await;
    let retries = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("switch_store_retries_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("switch_store_retries_total")
    };

    // A card the store does not hold: 14, twice the same answer.
    let unknown = luhn_pan("411111777777777");
    let first = client
        .call("0200", &purchase(&unknown, 100, "STORE001", 1).list())
        .await;
    assert_eq!(first.code(), "14", "unknown card");
    let again = client
        .call("0200", &purchase(&unknown, 100, "STORE001", 1).list())
        .await;
    assert_eq!(answer_of(&again), answer_of(&first));

    // A new key needs one attempt; a retransmission runs the batch again reading its entry.
    let before = retries(&sw.admin_get("/metrics").await.1);
    let pan = card(3);
    let first = client
        .call("0200", &purchase(&pan, 700, "STORE001", 2).list())
        .await;
    assert_eq!(first.code(), "00");
    let again = client
        .call("0200", &purchase(&pan, 700, "STORE001", 2).list())
        .await;
    assert_eq!(answer_of(&again), answer_of(&first), "the original answer");
    assert_eq!(dbc.balance(&pan).await, (OPENING - 700, 0), "applied once");
    let after = retries(&sw.admin_get("/metrics").await.1);
    assert!(
        after > before,
        "the retransmission's optimistic attempt met its key and ran again ({before} -> {after})"
    );

    // Card 4 held by another transaction: its purchase waits, card 5's goes on; released, it
    // is decided.
    let (locker, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let lock = |pan: String| {
        let locker = &locker;
        async move {
            locker.batch_execute("BEGIN").await.unwrap();
            locker
                .query("SELECT 1 FROM accounts WHERE pan = $1 FOR UPDATE", &[&pan])
                .await
                .unwrap();
        }
    };
    lock(card(4)).await;
    client
        .send("0200", &purchase(&card(4), 400, "STORE001", 3).list())
        .await;
    let other = client
        .call("0200", &purchase(&card(5), 500, "STORE001", 4).list())
        .await;
    assert_eq!(other.code(), "00", "another card is not held up");
    assert!(
        client.try_recv(Duration::from_millis(300)).await.is_none(),
        "the locked card's purchase waits for its lock"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    let waited = client.recv().await;
    assert_eq!((waited.get(11), waited.code()), (Some("000003"), "00"));
    assert_eq!(dbc.balance(&card(4)).await, (OPENING - 400, 0));

    // Held past the store timeout: 96 and nothing applied; afterwards it is decided afresh.
    lock(card(6)).await;
    let started = Instant::now();
    let timed_out = client
        .call("0200", &purchase(&card(6), 600, "STORE001", 5).list())
        .await;
    assert_eq!(timed_out.code(), "96", "locked past the store timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        dbc.balance(&card(6)).await,
        (OPENING, 0),
        "the 96 applied nothing"
    );
    let retried = client
        .call("0200", &purchase(&card(6), 600, "STORE001", 5).list())
        .await;
    assert_eq!(
        retried.code(),
        "00",
        "retransmitted after a 96: decided afresh"
    );
    assert_eq!(dbc.balance(&card(6)).await, (OPENING - 600, 0));
    sw.running.shutdown().await;
}

/// At `--log debug` (and `tokio_postgres=trace`) a replica on PostgreSQL logs plenty, but no
/// card number: tokio-postgres prints each statement's parameters at `debug`, and the switch's
/// log drops those events whatever the filter (`switch/src/logging.rs`). Without that limit
/// this log held hundreds of full PANs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_log_on_the_store_holds_no_card_number() {
    let Some(url) = pg_test_url("scale-out") else {
        return;
    };
    let db = imported_database(&url);
    let dir = tempfile::tempdir().unwrap();
    let config = ReplicaConfig::new("debug-log", dir.path().join("r"))
        .arg("--store")
        .arg(&db.url)
        .arg("--grace-period")
        .arg("1")
        .env("SWITCH_LOG", "debug,tokio_postgres=trace");
    let mut replica = Replica::start_ready(config, dir.path()).await;
    let reqs: Vec<Req> = (0..CARDS)
        .map(|i| purchase(&card(i), 100, "DEBUGLOG", 1 + i as u32))
        .collect();
    let answers = exchange(replica.config.listen, &reqs, false).await;
    assert_eq!(answers.len(), CARDS, "every purchase answered");
    assert!(
        answers.values().all(|(code, _)| code == "00"),
        "{answers:?}"
    );
    replica.sigterm();
    replica.wait_exit(Duration::from_secs(15)).await;
    let log = replica.log();
    assert!(
        log.contains("DEBUG"),
        "the filter let debug lines through:\n{log}"
    );
    for i in 0..CARDS {
        let pan = card(i);
        assert!(!log.contains(&pan), "card {i}'s number in the log:\n{log}");
    }
    assert!(!log.contains(&tight_card()));
}

/// A `records` row as the test compares it: identity, slot, order, answers (MTI encoding and
/// entry, as a set: their order in the row does not matter), expiry.
type RecordRow = (
    Vec<u8>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    std::collections::BTreeSet<(Vec<u8>, Vec<u8>)>,
    Option<i64>,
);

async fn records(db: &Db) -> Vec<RecordRow> {
    let rows = db
        .client
        .query(
            "SELECT id, slot, order_merchant, order_id, answers, expires_at
             FROM records ORDER BY id",
            &[],
        )
        .await
        .expect("records");
    rows.iter()
        .map(|r| {
            // The layout migration 3 documents: [n][MTI, n bytes][m, 4 bytes BE][entry].
            let mut answers = std::collections::BTreeSet::new();
            let mut b: &[u8] = r.get(4);
            while let Some((&n, rest)) = b.split_first() {
                let (mti, rest) = rest.split_at(usize::from(n));
                let (len, rest) = rest.split_at(4);
                let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
                let (entry, rest) = rest.split_at(len);
                answers.insert((mti.to_vec(), entry.to_vec()));
                b = rest;
            }
            (r.get(0), r.get(1), r.get(2), r.get(3), answers, r.get(5))
        })
        .collect()
}

/// Migration 3 (one `records` row per transaction identity, instead of an `idempotency` row
/// per answer and a `transactions` row per slot) keeps what a version-2 store holds. Answers,
/// a purchase, an open hold, a late-original marker and an identity with two answers are
/// written through the wire, put back into the version-2 tables, and `switch migrate` moves
/// them again: the rows come out as they were, retransmissions get their original answers,
/// and the reversal, the completion and the late original find what they act on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3_keeps_the_answers_and_slots_of_a_version_2_store() {
    let Some(url) = pg_test_url("scale-out") else {
        return;
    };
    let db = imported_database(&url);
    let start = || {
        let store = db.url.clone();
        tests::TestSwitch::start_with("", "", move |c| {
            c.store = Some(store);
            c.shards = 1;
        })
    };
    let (a, b, c, d) = (card(7), card(8), card(9), card(10));
    let bought = purchase(&a, 1_000, "MIGRATE1", 1);
    let held = purchase(&b, 2_000, "MIGRATE1", 2);
    let late = purchase(&c, 300, "MIGRATE1", 3);
    let early = purchase(&c, 300, "MIGRATE1", 4).set(90, &late.field90("0200"));
    let refused = purchase(&a, 2 * OPENING as u64, "MIGRATE1", 5);
    // Reversed with the original's own STAN and date-time: two answers, one identity.
    let undone = purchase(&d, 400, "MIGRATE1", 6);
    let undo = undone.clone().set(90, &undone.field90("0200"));
    let sent = [
        ("0200", &bought, "00"),
        ("0100", &held, "00"),
        ("0400", &early, "25"),
        ("0200", &refused, "51"),
        ("0200", &undone, "00"),
        ("0400", &undo, "00"),
    ];
    let sw = start().await;
    let mut client = sw.client().await;
    let mut answers = Vec::new();
    for (mti, req, code) in sent {
        let r = client.call(mti, &req.list()).await;
        assert_eq!(r.code(), code, "{mti} STAN {:?}", req.fields.get(&11));
        answers.push(answer_of(&r));
    }
    drop(client);
    sw.running.shutdown().await;

    // Back to schema version 2 (the tables of migrations 1 and 2), holding the same data.
    let dbc = Db::connect(&db.url).await;
    let before = records(&dbc).await;
    assert!(
        before.iter().any(|r| r.4.len() == 2),
        "an identity with two answers"
    );
    assert!(
        before.iter().any(|r| r.1.is_some() && r.4.is_empty()),
        "a late-original marker (a slot without answers)"
    );
    assert!(
        before.iter().any(|r| r.1.is_some() && r.5.is_none()),
        "an open hold"
    );
    dbc.client
        .batch_execute(
            r#"CREATE TABLE idempotency (key bytea PRIMARY KEY, entry bytea NOT NULL,
                   expires_at bigint NOT NULL);
               CREATE TABLE transactions (id bytea PRIMARY KEY, slot bytea NOT NULL,
                   expires_at bigint, order_merchant text COLLATE "C",
                   order_id text COLLATE "C");"#,
        )
        .await
        .unwrap();
    for (id, slot, merchant, order, row_answers, expires) in &before {
        if let Some(slot) = slot {
            dbc.client
                .execute(
                    "INSERT INTO transactions VALUES ($1, $2, $3, $4, $5)",
                    &[id, slot, expires, merchant, order],
                )
                .await
                .unwrap();
        }
        for (mti, entry) in row_answers {
            let key = [mti.as_slice(), id].concat();
            let expires = expires.unwrap_or(i64::MAX);
            dbc.client
                .execute(
                    "INSERT INTO idempotency VALUES ($1, $2, $3)",
                    &[&key, entry, &expires],
                )
                .await
                .unwrap();
        }
    }
    dbc.client
        .batch_execute("DROP TABLE records; DELETE FROM switch_schema_migrations WHERE version = 3")
        .await
        .unwrap();

    let out = run_switch(&["migrate", "--store", &db.url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "migrate: {err}");
    assert!(err.contains("[3]"), "applied migration 3: {err}");
    assert_eq!(records(&dbc).await, before, "every row as it was");

    let sw = start().await;
    let mut client = sw.client().await;
    for ((mti, req, _), answer) in sent.iter().zip(&answers) {
        let r = client.call(mti, &req.list()).await;
        assert_eq!(
            &answer_of(&r),
            answer,
            "{mti} retransmitted after the migration"
        );
    }
    let reversal = purchase(&a, 1_000, "MIGRATE1", 7).set(90, &bought.field90("0200"));
    assert_eq!(client.call("0400", &reversal.list()).await.code(), "00");
    assert_eq!(
        dbc.balance(&a).await,
        (OPENING, 0),
        "the purchase was found and undone"
    );
    let completion = purchase(&b, 1_500, "MIGRATE1", 8).set(90, &held.field90("0100"));
    assert_eq!(client.call("0220", &completion.list()).await.code(), "00");
    assert_eq!(
        dbc.balance(&b).await,
        (OPENING - 1_500, 0),
        "the hold was found"
    );
    assert_eq!(
        client.call("0200", &late.list()).await.code(),
        "05",
        "the late original meets its marker"
    );
    assert_eq!(dbc.balance(&d).await, (OPENING, 0), "reversed once");
    drop(client);
    sw.running.shutdown().await;
}

/// Replicas starting together migrate safely: four `switch migrate` at once on a fresh
/// database all succeed and apply each version once; a bad `--store` stops start-up with a
/// clear error and a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_once_and_bad_urls_are_refused() {
    let out = run_switch(&[
        "serve",
        "--store",
        "postgres://u:secret@[bad",
        "--data-dir",
        "/nonexistent",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("store"), "names the setting: {err}");
    assert!(!err.contains("secret"), "never echoes the password: {err}");

    let Some(url) = pg_test_url("scale-out") else {
        return;
    };
    let db = TestDatabase::create(&url);
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&binaries().switch)
                .args(["migrate", "--store", &db.url])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn switch migrate")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dbc = Db::connect(&db.url).await;
    let rows = dbc
        .client
        .query(
            "SELECT version FROM switch_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let files = std::fs::read_dir(tests::replicas::workspace_root().join("switch/migrations"))
        .expect("switch/migrations")
        .count();
    let expected: Vec<i32> = (1..=files as i32).collect();
    assert_eq!(versions, expected, "each migration applied once");
}

/// A database error shown to an operator keeps its SQLSTATE and message and drops the DETAIL
/// line, which quotes the row (here a card number in a unique violation).
#[tokio::test]
async fn database_errors_are_shown_without_the_row_they_quote() {
    let Some(url) = pg_test_url("scale-out") else {
        return;
    };
    let db = TestDatabase::create(&url);
    let dbc = Db::connect(&db.url).await;
    let pan = card(7);
    dbc.client
        .batch_execute("CREATE TABLE t (pan text PRIMARY KEY)")
        .await
        .unwrap();
    let insert = "INSERT INTO t VALUES ($1)";
    dbc.client.execute(insert, &[&pan]).await.unwrap();
    let err = dbc.client.execute(insert, &[&pan]).await.unwrap_err();
    let raw = format!("{:#}", anyhow::Error::new(err).context("loading"));
    assert!(
        raw.contains(&pan),
        "the unscrubbed chain quotes the row: {raw}"
    );
    let err = dbc.client.execute(insert, &[&pan]).await.unwrap_err();
    let shown = format!(
        "{:#}",
        switch::pg::scrub(anyhow::Error::new(err).context("loading"))
    );
    assert!(!shown.contains(&pan[6..]), "{shown}");
    assert!(
        shown.contains("23505") && shown.starts_with("loading"),
        "{shown}"
    );
}
