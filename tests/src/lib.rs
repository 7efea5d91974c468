//! Test support: start a real switch in-process on 127.0.0.1:0 with given data files, and a
//! client that speaks real ISO 8583 bytes to it over TCP.
//!
//! [`replicas`]: real `switch`, `loadgen` and HAProxy child processes (killed on drop);
//! [`pg`]: the PostgreSQL server of the scale-out tests and a fresh database per test run.

pub mod pg;
pub mod replicas;

pub use pg::{fresh_database, pg_test_url};

/// A test whose external tool (PostgreSQL, HAProxy, promtool, psql) is missing: prints why it
/// is skipped, or fails when `SWITCH_TEST_REQUIRE_EXTERNAL=1`. `.ci/run` sets it, having
/// installed the tools, so that a green CI means these tests really ran.
pub fn skip(why: impl std::fmt::Display) {
    if std::env::var("SWITCH_TEST_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1") {
        panic!("SWITCH_TEST_REQUIRE_EXTERNAL=1 but {why}");
    }
    eprintln!("SKIPPED: {why}");
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use codec::framing::LengthFramer;
use codec::{Message, MessageBuilder, Mti, Spec};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How long any one answer may take before a test fails.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A switch running in this process, with its data directory.
#[derive(Debug)]
pub struct TestSwitch {
    pub running: switch::Running,
    pub dir: tempfile::TempDir,
}

impl TestSwitch {
    /// Starts a switch on loopback with these data files (CSV text, header included).
    pub async fn start(accounts_csv: &str, orders_csv: &str) -> TestSwitch {
        TestSwitch::start_with(accounts_csv, orders_csv, |_| {}).await
    }

    pub async fn start_with(
        accounts_csv: &str,
        orders_csv: &str,
        tweak: impl FnOnce(&mut switch::Config),
    ) -> TestSwitch {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("accounts.csv"), accounts_csv).expect("write accounts");
        std::fs::write(dir.path().join("orders.csv"), orders_csv).expect("write orders");
        let mut config = switch::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().to_owned(),
            shards: 4,
            durability: switch::config::Durability::None,
            log: "warn".into(),
            ..switch::Config::default()
        };
        tweak(&mut config);
        let running = switch::start(config).await.expect("switch starts");
        TestSwitch { running, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.iso_addr
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr(), "iso87-binary").await
    }

    /// GET on the admin endpoint: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.running.admin_addr, path).await
    }
}

/// A minimal HTTP/1.1 GET.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(ANSWER_TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("admin answers in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A decoded answer: MTI and every field as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub mti: String,
    pub fields: BTreeMap<usize, String>,
}

impl Reply {
    pub fn get(&self, n: usize) -> Option<&str> {
        self.fields.get(&n).map(String::as_str)
    }

    /// DE 39.
    pub fn code(&self) -> &str {
        self.get(39).unwrap_or("<none>")
    }

    /// The match key clients use: 41 + 11 + 7.
    pub fn key(&self) -> (String, String, String) {
        (
            self.get(41).unwrap_or_default().to_owned(),
            self.get(11).unwrap_or_default().to_owned(),
            self.get(7).unwrap_or_default().to_owned(),
        )
    }
}

/// A client on one TCP connection.
#[derive(Debug)]
pub struct Client {
    pub framed: Framed<TcpStream, LengthFramer>,
    spec: &'static Spec,
}

impl Client {
    pub async fn connect(addr: SocketAddr, spec: &str) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::from_stream(stream, spec)
    }

    /// A client on an already connected stream.
    pub fn from_stream(stream: TcpStream, spec: &str) -> Client {
        stream.set_nodelay(true).expect("nodelay");
        Client {
            framed: Framed::new(stream, LengthFramer::default()),
            spec: codec::builtin(spec).expect("builtin spec"),
        }
    }

    /// Encodes and sends one request without waiting.
    pub async fn send(&mut self, mti: &str, fields: &[(usize, String)]) {
        let mut b = MessageBuilder::new(self.spec, Mti::parse(mti).expect("mti"));
        for (n, v) in fields {
            b.set(*n, v).expect("field");
        }
        let mut body = BytesMut::new();
        b.encode_into(&mut body).expect("encodes");
        self.framed.send(body.freeze()).await.expect("send");
    }

    /// Sends raw body bytes as one frame.
    pub async fn send_raw(&mut self, body: &[u8]) {
        self.framed
            .send(bytes::Bytes::copy_from_slice(body))
            .await
            .expect("send");
    }

    /// The next answer.
    pub async fn recv(&mut self) -> Reply {
        let frame = tokio::time::timeout(ANSWER_TIMEOUT, self.framed.next())
            .await
            .expect("answer in time")
            .expect("connection open")
            .expect("frame");
        let msg = Message::decode(self.spec, frame).expect("answer decodes");
        Reply {
            mti: msg.mti().to_string(),
            fields: msg.fields().map(|f| (f.number(), f.to_string())).collect(),
        }
    }

    /// The next answer, or `None` if nothing arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Reply> {
        match tokio::time::timeout(wait, self.framed.next()).await {
            Ok(Some(Ok(frame))) => {
                let msg = Message::decode(self.spec, frame).expect("answer decodes");
                Some(Reply {
                    mti: msg.mti().to_string(),
                    fields: msg.fields().map(|f| (f.number(), f.to_string())).collect(),
                })
            }
            _ => None,
        }
    }

    /// Sends and waits for the answer.
    pub async fn call(&mut self, mti: &str, fields: &[(usize, String)]) -> Reply {
        self.send(mti, fields).await;
        self.recv().await
    }
}

/// Builds request fields. Terminal `TERM0001`, transmission time fixed, STAN given.
#[derive(Debug, Clone)]
pub struct Req {
    pub fields: BTreeMap<usize, String>,
}

impl Req {
    /// A purchase / hold / reversal skeleton: 2, 3, 4, 7, 11, 41, 49.
    pub fn financial(pan: &str, processing: &str, amount: u64, stan: u32) -> Req {
        let mut fields = BTreeMap::new();
        fields.insert(2, pan.to_owned());
        fields.insert(3, processing.to_owned());
        fields.insert(4, format!("{amount:012}"));
        fields.insert(7, "1126104500".to_owned());
        fields.insert(11, format!("{stan:06}"));
        fields.insert(41, "TERM0001".to_owned());
        fields.insert(49, "840".to_owned());
        Req { fields }
    }

    pub fn set(mut self, n: usize, v: &str) -> Req {
        self.fields.insert(n, v.to_owned());
        self
    }

    pub fn without(mut self, n: usize) -> Req {
        self.fields.remove(&n);
        self
    }

    pub fn list(&self) -> Vec<(usize, String)> {
        self.fields.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// DE 90 naming this request as an original: MTI, STAN, date-time, zeros.
    pub fn field90(&self, mti: &str) -> String {
        format!(
            "{mti}{}{}{}",
            self.fields.get(&11).cloned().unwrap_or_default(),
            self.fields.get(&7).cloned().unwrap_or_default(),
            "0".repeat(22)
        )
    }
}

/// Luhn-valid PAN from a 15-digit (or any length - 1) payload.
pub fn luhn_pan(payload: &str) -> String {
    let check = routing::luhn::check_digit(payload.as_bytes()).expect("a payload of digits");
    format!("{payload}{}", char::from(check))
}
