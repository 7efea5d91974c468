//! A rolling restart behind a real HAProxy: three switch replicas on the loopback ports of
//! `deploy/haproxy/loopback.env`, HAProxy running `deploy/haproxy/haproxy.cfg` unchanged (leastconn,
//! /readyz health checks, PROXY v2 to the replicas), and clients driving purchases through it while
//! each replica in turn drains and restarts. Every request sent must be answered 00: zero errors,
//! zero timeouts. Skips with a message when haproxy is not installed.
//!
//! The replicas run in this process (`switch::start`, drained with `trigger_shutdown`, the same
//! path SIGTERM takes in `main.rs`; switch/tests/cli.rs covers the signal itself). Spawning the
//! `switch` binary would need it built and current, which `cargo test -p tests` does not ensure.
//!
//! The clients behave as the deployment expects of them:
//! - Busy clients pipeline 8 requests and open a new link every 40 requests. A link on a
//!   draining replica goes on being served until the client closes it; the next link goes to
//!   another replica (HAProxy redispatches when the draining one refuses, and marks it down
//!   within 2 s of /readyz turning 503). A client that never closes a busy link would be cut at
//!   the end of the grace period instead.
//! - Quiet clients (one echo every 2.5 s) keep their link: a draining replica closes it after
//!   a second of quiet with nothing in flight, and the client reconnects.
//!
//! A link that ends while a request is unanswered, an answer other than 00, a mismatched
//! answer, or 5 s without an answer is a failure.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codec::framing::LengthFramer;
use codec::{Message, MessageBuilder, Mti, Spec};
use futures::{SinkExt, StreamExt};
use tests::luhn_pan;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const BUSY_CLIENTS: u32 = 6;
const QUIET_CLIENTS: u32 = 2;
const WINDOW: usize = 8;
const PER_LINK: u32 = 40;
const QUIET_GAP: Duration = Duration::from_millis(2500);
const ANSWER_WAIT: Duration = Duration::from_secs(5);
const CARDS: u32 = 32;
/// Shorter than production's 15 s so a drain that hangs fails the test quickly.
const GRACE_SECS: u64 = 8;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `tool` on PATH, or in the sbin directories Debian installs haproxy to (a non-root PATH
/// often lacks them).
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

fn loopback_env() -> BTreeMap<String, String> {
    let path = repo().join("deploy/haproxy/loopback.env");
    std::fs::read_to_string(&path)
        .expect("loopback.env")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ===== HAProxy =====

/// HAProxy in the foreground; killed when dropped. Its log goes to a file shown on failure.
struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Haproxy {
    fn start(binary: &Path, env: &BTreeMap<String, String>, dir: &Path) -> Haproxy {
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(repo().join("deploy/haproxy/haproxy.cfg"))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start haproxy");
        Haproxy { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HTTP/1.0 GET (the server closes after the answer).
async fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The body of a `Transfer-Encoding: chunked` answer (HAProxy chunks even for HTTP/1.0).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Each `switch-N` server's status in HAProxy's CSV statistics ("UP", "DOWN", "UP 1/2", ...).
async fn server_states(stats: &str) -> BTreeMap<String, String> {
    let Some(page) = get(stats, "/stats;csv").await else {
        return BTreeMap::new();
    };
    let (head, body) = page.split_once("\r\n\r\n").unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let mut lines = body.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(sv), Some(status)) = (col("svname"), col("status")) else {
        return BTreeMap::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(sv).is_some_and(|s| s.starts_with("switch-")))
        .map(|f| {
            (
                f[sv].to_owned(),
                f.get(status).copied().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn wait_for(what: &str, haproxy: &Haproxy, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; haproxy log:\n{}",
            haproxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ===== Replicas =====

struct Replica {
    config: switch::Config,
    running: Option<switch::Running>,
}

impl Replica {
    async fn start(config: switch::Config) -> Replica {
        let mut r = Replica {
            config,
            running: None,
        };
        r.restart().await;
        r
    }

    /// Starts the switch; the previous instance's admin listener may take a moment to close.
    async fn restart(&mut self) {
        for attempt in 0.. {
            match switch::start(self.config.clone()).await {
                Ok(running) => {
                    self.running = Some(running);
                    return;
                }
                Err(e) if attempt < 50 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("replica on {} does not start: {e:#}", self.config.listen),
            }
        }
    }

    /// Drains (as on SIGTERM) and waits until stopped.
    async fn drain(&mut self) {
        let running = self.running.take().expect("running");
        running.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(GRACE_SECS + 5), running.stopped())
            .await
            .expect("the drain ends within the grace period");
    }

    fn accepted(&self) -> u64 {
        self.running
            .as_ref()
            .map_or(0, |r| r.metrics.connections_accepted.get())
    }
}

// ===== Clients =====

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    answered: u64,
    links: u64,
    /// Links a replica closed while nothing was outstanding (quiet clients during a drain).
    closed_idle: u64,
    timeouts: u64,
    errors: Vec<String>,
}

struct Link {
    framed: Framed<TcpStream, LengthFramer>,
}

impl Link {
    async fn open(addr: SocketAddr) -> std::io::Result<Link> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Link {
            framed: Framed::new(stream, LengthFramer::default()),
        })
    }

    async fn send(&mut self, spec: &'static Spec, mti: &str, fields: &[(usize, String)]) -> bool {
        let mut b = MessageBuilder::new(spec, Mti::parse(mti).expect("mti"));
        for (n, v) in fields {
            b.set(*n, v).expect("field");
        }
        let mut body = BytesMut::new();
        b.encode_into(&mut body).expect("encodes");
        self.framed.send(body.freeze()).await.is_ok()
    }
}

/// What an answer says: (MTI, DE 11, DE 39).
fn read_answer(
    spec: &'static Spec,
    frame: bytes::Bytes,
) -> Result<(String, String, String), String> {
    let msg = Message::decode(spec, frame).map_err(|e| format!("answer does not decode: {e}"))?;
    let field = |n| {
        msg.field(n)
            .map(|f| f.to_string())
            .unwrap_or_else(|| "<none>".to_owned())
    };
    Ok((msg.mti().to_string(), field(11), field(39)))
}

async fn busy_client(
    id: u32,
    addr: SocketAddr,
    pans: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let spec = codec::builtin("iso87-binary").expect("spec");
    let terminal = format!("B{id:07}");
    let mut t = Tally::default();
    let mut stan = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut link = match Link::open(addr).await {
            Ok(l) => l,
            Err(e) => {
                t.errors
                    .push(format!("{terminal}: connect to HAProxy: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        t.links += 1;
        let mut outstanding: HashSet<String> = HashSet::new();
        let mut on_link = 0;
        loop {
            while outstanding.len() < WINDOW && on_link < PER_LINK && !stop.load(Ordering::Relaxed)
            {
                stan = stan % 999_999 + 1;
                on_link += 1;
                let pan = &pans[(stan % CARDS) as usize];
                let fields = [
                    (2, pan.clone()),
                    (3, "000000".to_owned()),
                    (4, "000000000100".to_owned()),
                    (7, "1126104500".to_owned()),
                    (11, format!("{stan:06}")),
                    (41, terminal.clone()),
                    (49, "840".to_owned()),
                ];
                t.sent += 1;
                if !link.send(spec, "0200", &fields).await {
                    t.errors
                        .push(format!("{terminal}: write failed, STAN {stan:06} lost"));
                    break;
                }
                outstanding.insert(format!("{stan:06}"));
            }
            if outstanding.is_empty() {
                break;
            }
            match tokio::time::timeout(ANSWER_WAIT, link.framed.next()).await {
                Err(_) => {
                    t.timeouts += outstanding.len() as u64;
                    break;
                }
                Ok(None | Some(Err(_))) => {
                    t.errors.push(format!(
                        "{terminal}: link closed with {} requests unanswered",
                        outstanding.len()
                    ));
                    break;
                }
                Ok(Some(Ok(frame))) => match read_answer(spec, frame) {
                    Ok((mti, stan, code))
                        if mti == "0210" && code == "00" && outstanding.remove(&stan) =>
                    {
                        t.answered += 1;
                    }
                    Ok(other) => t
                        .errors
                        .push(format!("{terminal}: unexpected answer {other:?}")),
                    Err(e) => t.errors.push(format!("{terminal}: {e}")),
                },
            }
        }
    }
    t
}

async fn quiet_client(id: u32, addr: SocketAddr, stop: Arc<AtomicBool>) -> Tally {
    let spec = codec::builtin("iso87-binary").expect("spec");
    let terminal = format!("Q{id:07}");
    let mut t = Tally::default();
    let mut stan = 0u32;
    'links: while !stop.load(Ordering::Relaxed) {
        let mut link = match Link::open(addr).await {
            Ok(l) => l,
            Err(e) => {
                t.errors
                    .push(format!("{terminal}: connect to HAProxy: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        t.links += 1;
        while !stop.load(Ordering::Relaxed) {
            stan += 1;
            let echo = [
                (7, "1126104500".to_owned()),
                (11, format!("{stan:06}")),
                (41, terminal.clone()),
                (70, "301".to_owned()),
            ];
            t.sent += 1;
            if !link.send(spec, "0800", &echo).await {
                t.errors
                    .push(format!("{terminal}: write failed, echo {stan:06} lost"));
                continue 'links;
            }
            match tokio::time::timeout(ANSWER_WAIT, link.framed.next()).await {
                Err(_) => {
                    t.timeouts += 1;
                    continue 'links;
                }
                Ok(None | Some(Err(_))) => {
                    t.errors.push(format!(
                        "{terminal}: link closed with echo {stan:06} unanswered"
                    ));
                    continue 'links;
                }
                Ok(Some(Ok(frame))) => match read_answer(spec, frame) {
                    Ok((mti, s, code))
                        if mti == "0810" && code == "00" && s == format!("{stan:06}") =>
                    {
                        t.answered += 1;
                    }
                    Ok(other) => t
                        .errors
                        .push(format!("{terminal}: unexpected answer {other:?}")),
                    Err(e) => t.errors.push(format!("{terminal}: {e}")),
                },
            }
            // Quiet: a draining replica may close the link now; that is not an error.
            match tokio::time::timeout(QUIET_GAP, link.framed.next()).await {
                Err(_) => {}
                Ok(None | Some(Err(_))) => {
                    t.closed_idle += 1;
                    continue 'links;
                }
                Ok(Some(Ok(_))) => t
                    .errors
                    .push(format!("{terminal}: an answer nobody asked for")),
            }
        }
    }
    t
}

// ===== The test =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_haproxy_loses_nothing() {
    let Some(haproxy_bin) = which("haproxy") else {
        eprintln!("SKIPPED rolling restart: haproxy not installed (apt-get install haproxy)");
        return;
    };
    let env = loopback_env();
    let var = |k: &str| {
        env.get(k)
            .unwrap_or_else(|| panic!("loopback.env lacks {k}"))
            .clone()
    };
    let dir = tempfile::tempdir().expect("temp dir");

    // Every replica gets the same cards (its own embedded store: the shared PostgreSQL store
    // is issue 6), with balances no test run can exhaust.
    let pans: Vec<String> = (0..CARDS)
        .map(|i| luhn_pan(&format!("4111117{i:08}")))
        .collect();
    let mut accounts = "pan,expiry,status,currency,balance,daily_limit\n".to_owned();
    for pan in &pans {
        accounts.push_str(&format!(
            "{pan},3012,active,840,100000000.00,100000000.00\n"
        ));
    }
    let mut replicas = Vec::new();
    for n in 1..=3 {
        let data = dir.path().join(format!("switch-{n}"));
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join("accounts.csv"), &accounts).expect("accounts");
        std::fs::write(
            data.join("orders.csv"),
            "order_id,merchant_id,amount,currency,status\n",
        )
        .expect("orders");
        let config = switch::Config {
            listen: var(&format!("SWITCH_{n}_ISO"))
                .parse()
                .expect("ISO address"),
            admin_listen: SocketAddr::from((
                [127, 0, 0, 1],
                var(&format!("SWITCH_{n}_ADMIN_PORT"))
                    .parse()
                    .expect("admin port"),
            )),
            data_dir: data,
            shards: 2,
            durability: switch::config::Durability::None,
            proxy_protocol: true,
            grace_period_secs: GRACE_SECS,
            log: "warn".into(),
            ..switch::Config::default()
        };
        replicas.push(Replica::start(config).await);
    }

    let haproxy = Haproxy::start(&haproxy_bin, &env, dir.path());
    let stats = var("HAPROXY_STATS_BIND");
    let front: SocketAddr = var("HAPROXY_BIND").parse().expect("HAProxy address");
    wait_for("HAProxy to see three replicas UP", &haproxy, async || {
        let s = server_states(&stats).await;
        s.len() == 3 && s.values().all(|v| v == "UP")
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let pans = Arc::new(pans);
    let mut clients = Vec::new();
    for id in 0..BUSY_CLIENTS {
        clients.push(tokio::spawn(busy_client(
            id,
            front,
            pans.clone(),
            stop.clone(),
        )));
    }
    for id in 0..QUIET_CLIENTS {
        clients.push(tokio::spawn(quiet_client(id, front, stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for r in &replicas {
        assert!(r.accepted() > 0, "{} got no links", r.config.listen);
    }

    for (n, replica) in replicas.iter_mut().enumerate() {
        let name = format!("switch-{}", n + 1);
        replica.drain().await;
        // A restart that takes a while (a new container, a new pod): HAProxy sees the
        // replica DOWN and the other two take all the traffic meanwhile.
        wait_for(&format!("{name} DOWN in HAProxy"), &haproxy, async || {
            server_states(&stats)
                .await
                .get(&name)
                .is_some_and(|s| s.starts_with("DOWN"))
        })
        .await;
        replica.restart().await;
        // Back in HAProxy's rotation and taking links again before the next one goes.
        wait_for(&format!("{name} UP in HAProxy"), &haproxy, async || {
            server_states(&stats).await.get(&name).map(String::as_str) == Some("UP")
        })
        .await;
        let replica = &*replica;
        wait_for(
            &format!("{name} to take links again"),
            &haproxy,
            async || replica.accepted() > 0,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = Tally::default();
    for c in clients {
        let t = tokio::time::timeout(Duration::from_secs(20), c)
            .await
            .expect("clients finish")
            .expect("client task");
        total.sent += t.sent;
        total.answered += t.answered;
        total.links += t.links;
        total.closed_idle += t.closed_idle;
        total.timeouts += t.timeouts;
        total.errors.extend(t.errors);
    }
    eprintln!(
        "rolling restart: {} sent, {} answered, {} links, {} quiet links closed by a drain, {} timeouts, {} errors",
        total.sent,
        total.answered,
        total.links,
        total.closed_idle,
        total.timeouts,
        total.errors.len()
    );
    assert!(
        total.errors.is_empty() && total.timeouts == 0,
        "{} timeouts; errors: {:#?}\nhaproxy log:\n{}",
        total.timeouts,
        total.errors,
        haproxy.log()
    );
    assert_eq!(total.answered, total.sent);
    assert!(
        total.answered > 500,
        "too little traffic to mean anything: {total:?}"
    );
    for r in &mut replicas {
        r.drain().await;
    }
}
