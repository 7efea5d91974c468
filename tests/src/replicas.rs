//! Real processes for deployment tests: `switch` replicas, `loadgen` runs and HAProxy, each a
//! child process of the test that is killed when its handle is dropped (on a panic too).
//!
//! - [`binaries`] makes sure the `switch` and `loadgen` binaries are current, once per test
//!   process, and returns their paths as cargo's JSON messages give them. A test of the `tests`
//!   package cannot name another package's binary (`CARGO_BIN_EXE_*` is only set for the
//!   package's own), and a binary found lying in `target/` may be stale. The build is `cargo
//!   test --workspace --no-run` in the test's own profile: exactly what the README's `cargo test
//!   --workspace` (and CI) has just built, so there it is a no-op check of a second or two. The
//!   narrower `cargo build -p switch -p loadgen --bins` would unify dependency features
//!   differently (no dev-dependencies) and compile a second copy of tokio and the rest, about 40 s
//!   on this 2-core machine, in every CI run. The price: `cargo test -p tests` alone builds the
//!   rest of the workspace's tests the first time. `SWITCH_TEST_BIN_DIR=DIR` uses prebuilt
//!   binaries from `DIR` instead (no cargo at all).
//! - [`Replica`]: one `switch serve` with its listen and admin addresses, data directory and extra
//!   arguments or environment; start, wait for `/readyz` 200, SIGTERM (drain) and wait for its
//!   exit status, SIGKILL, start again on the same data.
//! - [`Loadgen`]: one `loadgen` run with its JSON report parsed into [`LoadReport`].
//! - [`Haproxy`]: HAProxy on `deploy/haproxy/haproxy.cfg`, unchanged, with the values of
//!   `deploy/haproxy/loopback.env` (or the same keys on free ports: [`loopback_env_free_ports`]),
//!   and its servers' states from the stats page.
//! - [`Cluster`]: three replicas behind HAProxy as `deploy/` runs them, ready and UP;
//!   [`loadgen_back_to_back`] drives it with loadgen runs on fresh connections; [`metric`] and
//!   [`wait_metric`] read a replica's /metrics.
//!
//! Processes never outlive the test: every handle sends SIGKILL and reaps its child on drop,
//! and where util-linux's `setpriv` is installed each child is started through `setpriv
//! --pdeathsig KILL` (the kernel kills it when the thread that started it ends, even if the
//! test process is killed outright). That thread must live as long as the child: start
//! children from the test's own thread or a runtime worker, not from `spawn_blocking` or a
//! short-lived thread. Every child's output goes to a log file ([`Replica::log`],
//! [`Haproxy::log`]) for failure messages.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The workspace root (the parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `tool` on PATH, or in the sbin directories Debian installs daemons to (a non-root PATH often
/// lacks them).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`; 32768 by default).
fn ephemeral_port_low() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port nobody listens on right now, for a child process to bind later.
///
/// Picked below the kernel's ephemeral range (`ip_local_port_range`), not by binding port 0:
/// an ephemeral port, once released, is soon handed out again as the local end of some
/// outgoing connection (a replica's database link, a client) and the child's bind then fails
/// with "Address already in use" (seen on CI with HAProxy's front port). Below the range only
/// another explicit pick can take it: each process starts at its own point (process id and
/// clock) and its calls step through the range by a large prime, and each pick is checked by
/// binding it.
pub fn free_port() -> u16 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    const LOWEST: u64 = 10_000;
    const STRIDE: u64 = 7_919;
    let span = ephemeral_port_low().saturating_sub(LOWEST);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = u64::from(std::process::id()).wrapping_mul(1_000_003) ^ u64::from(nanos);
    for _ in 0..if span >= 1_000 { 100 } else { 0 } {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let port = (LOWEST + start.wrapping_add(call.wrapping_mul(STRIDE)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // A machine whose ephemeral range starts low, or a crowded one: any free port.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

// ===== Binaries =====

/// Paths of the workspace's binaries, current with the sources.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub switch: PathBuf,
    pub loadgen: PathBuf,
}

/// Builds `switch` and `loadgen` once per test process and returns their paths; panics with
/// cargo's output if the build fails.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SWITCH_TEST_BIN_DIR") {
            let dir = PathBuf::from(dir);
            let b = Binaries {
                switch: dir.join("switch"),
                loadgen: dir.join("loadgen"),
            };
            assert!(
                b.switch.is_file() && b.loadgen.is_file(),
                "SWITCH_TEST_BIN_DIR={} lacks switch or loadgen",
                dir.display()
            );
            return b;
        }
        build_binaries()
    })
}

fn build_binaries() -> Binaries {
    // `CARGO` is set by cargo for the processes it runs (`cargo test`).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // What `cargo test --workspace` builds (see the module doc for why not `cargo build -p`).
    cmd.current_dir(workspace_root()).args([
        "test",
        "--workspace",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    // The test's own profile: `cargo test --release` built the release binaries.
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run cargo to build the switch and loadgen binaries");
    assert!(
        out.status.success(),
        "cargo test --workspace --no-run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // The binaries themselves, not their unit-test harnesses (`profile.test`).
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if msg["reason"] != "compiler-artifact" || !is_bin || msg["profile"]["test"] != false {
            continue;
        }
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        found.insert(name.to_owned(), PathBuf::from(exe));
    }
    let get = |name: &str| {
        found
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("cargo did not report the {name} binary"))
    };
    let b = Binaries {
        switch: get("switch"),
        loadgen: get("loadgen"),
    };
    eprintln!(
        "binaries: {} and {} (cargo test --workspace --no-run took {:.1} s)",
        b.switch.display(),
        b.loadgen.display(),
        started.elapsed().as_secs_f64()
    );
    b
}

// ===== Child processes =====

/// A command for `program` that dies with the thread starting it (see the module doc).
fn command(program: &Path) -> Command {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    let setpriv = SETPRIV.get_or_init(|| {
        let p = which("setpriv")?;
        // Old util-linux versions lack --pdeathsig.
        let ok = Command::new(&p)
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(p)
    });
    match setpriv {
        Some(sp) => {
            let mut c = Command::new(sp);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Appends a child's standard output and error to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let err = out.try_clone().expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()))
}

fn signal(child: &Child, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    // ESRCH: it exited already (not yet reaped); nothing to do.
    let _ = kill(pid, sig);
}

/// Waits for a child's exit without blocking the runtime; `None` after `timeout`.
async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// HTTP/1.0 GET: (status, whole answer), `None` when nothing answers within 2 s.
pub async fn http_get_raw(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

// ===== impl Replica =====

/// How to run one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Names its log file and failure messages.
    pub name: String,
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--admin-listen`.
    pub admin: SocketAddr,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// More arguments after `serve` and the three above (e.g. `--store URL`,
    /// `--proxy-protocol`, `--grace-period 8`).
    pub args: Vec<OsString>,
    /// Environment. `SWITCH_LOG=warn`, `SWITCH_SHARDS=2` and `SWITCH_DURABILITY=none` are set
    /// first, so entries here or flags in `args` override them.
    pub env: Vec<(OsString, OsString)>,
}

impl ReplicaConfig {
    /// A replica on free loopback ports with its data directory `data_dir`.
    pub fn new(name: &str, data_dir: impl Into<PathBuf>) -> ReplicaConfig {
        ReplicaConfig {
            name: name.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data_dir: data_dir.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> ReplicaConfig {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> ReplicaConfig {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A `switch serve` child process; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Replica {
    pub config: ReplicaConfig,
    child: Option<Child>,
    log: PathBuf,
    /// How many times it was started.
    pub starts: u32,
}

impl Replica {
    /// Starts the replica (without waiting for it to be ready); its output goes to
    /// `<log_dir>/<name>.log`, appended across restarts.
    pub fn spawn(config: ReplicaConfig, log_dir: &Path) -> Replica {
        let log = log_dir.join(format!("{}.log", config.name));
        let mut r = Replica {
            config,
            child: None,
            log,
            starts: 0,
        };
        r.start();
        r
    }

    /// Starts the replica and waits until `/readyz` answers 200.
    pub async fn start_ready(config: ReplicaConfig, log_dir: &Path) -> Replica {
        let mut r = Replica::spawn(config, log_dir);
        r.wait_ready(Duration::from_secs(30)).await;
        r
    }

    /// Starts the process (again); it must not be running.
    pub fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is running already",
            self.config.name
        );
        let c = &self.config;
        let mut cmd = command(&binaries().switch);
        cmd.env("SWITCH_LOG", "warn")
            .env("SWITCH_SHARDS", "2")
            .env("SWITCH_DURABILITY", "none")
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .arg("--listen")
            .arg(c.listen.to_string())
            .arg("--admin-listen")
            .arg(c.admin.to_string())
            .arg("--data-dir")
            .arg(&c.data_dir)
            .args(&c.args);
        self.starts += 1;
        let note = format!("\n===== {} start {} =====\n", c.name, self.starts);
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, note.as_bytes()));
        self.child = Some(spawn_logged(cmd, &self.log));
    }

    /// Waits until `/readyz` answers 200; panics (with the log) if the process exits first or
    /// `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = http_get_raw(self.config.admin, "/readyz").await {
                return;
            }
            if let Some(status) = self.child_mut().try_wait().expect("wait") {
                self.child = None;
                panic!(
                    "{} exited ({status}) before it was ready; log:\n{}",
                    self.config.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {timeout:?}; log:\n{}",
                self.config.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/readyz` answers 200 right now.
    pub async fn is_ready(&self) -> bool {
        matches!(
            http_get_raw(self.config.admin, "/readyz").await,
            Some((200, _))
        )
    }

    /// GET on the admin port: (status, whole answer).
    pub async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        http_get_raw(self.config.admin, path).await
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        let name = &self.config.name;
        self.child
            .as_mut()
            .unwrap_or_else(|| panic!("{name} is not running"))
    }

    /// Sends SIGTERM (the drain) and returns at once.
    pub fn sigterm(&mut self) {
        signal(self.child_mut(), Signal::SIGTERM);
    }

    /// Waits for the exit after a SIGTERM; panics (with the log) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_exit(self.child_mut(), timeout).await;
        match status {
            Some(s) => {
                self.child = None;
                s
            }
            None => panic!(
                "{} still running {timeout:?} after SIGTERM; log:\n{}",
                self.config.name,
                self.log()
            ),
        }
    }

    /// SIGTERM and wait for the exit (panics after `timeout`).
    pub async fn drain(&mut self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        self.wait_exit(timeout).await
    }

    /// SIGKILL (a crash) and reap.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Starts again on the same addresses and data, then waits for `/readyz` 200.
    pub async fn restart(&mut self) {
        self.start();
        self.wait_ready(Duration::from_secs(30)).await;
    }

    /// Everything the replica wrote to standard output and error, every start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            kill_and_reap(c);
        }
    }
}

// ===== impl Loadgen =====

/// One `loadgen` run; SIGKILLed when dropped before it finished.
#[derive(Debug)]
pub struct Loadgen {
    child: Option<Child>,
    report: PathBuf,
    log: PathBuf,
}

/// What a `loadgen` run reported: the JSON report's main figures, the whole JSON, the exit
/// status and the output.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub status: ExitStatus,
    pub sent: u64,
    pub received: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// Requests in flight on a link that was lost, and in flight when the run ended.
    pub abandoned: u64,
    pub in_flight_at_end: u64,
    pub tps: f64,
    pub response_codes: BTreeMap<String, u64>,
    pub json: serde_json::Value,
    pub output: String,
}

impl LoadReport {
    /// Zero errors, zero timeouts, nothing abandoned, every request sent answered, at least
    /// one answer, exit 0.
    pub fn is_clean(&self) -> bool {
        self.status.success()
            && self.errors == 0
            && self.timeouts == 0
            && self.abandoned == 0
            && self.in_flight_at_end == 0
            && self.received == self.sent
            && self.received > 0
    }
}

impl Loadgen {
    /// Starts `loadgen --target TARGET --data-dir DATA --report <log_dir>/<name>.json ARGS...`.
    pub fn spawn(
        name: &str,
        target: SocketAddr,
        data_dir: &Path,
        args: &[&str],
        log_dir: &Path,
    ) -> Loadgen {
        let report = log_dir.join(format!("{name}.json"));
        let log = log_dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&report);
        let mut cmd = command(&binaries().loadgen);
        cmd.arg("--target")
            .arg(target.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--report")
            .arg(&report)
            .args(args);
        let child = spawn_logged(cmd, &log);
        Loadgen {
            child: Some(child),
            report,
            log,
        }
    }

    /// Asks loadgen to stop early (SIGINT: nothing new is sent, answers in flight are awaited,
    /// the report is written).
    pub fn interrupt(&self) {
        if let Some(c) = &self.child {
            signal(c, Signal::SIGINT);
        }
    }

    /// Waits for the run to end (panics after `timeout`) and reads its report.
    pub async fn finish(mut self, timeout: Duration) -> LoadReport {
        let mut child = self.child.take().expect("running");
        let Some(status) = wait_exit(&mut child, timeout).await else {
            kill_and_reap(&mut child);
            panic!(
                "loadgen still running after {timeout:?}; output:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        };
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        let text = std::fs::read_to_string(&self.report).unwrap_or_else(|e| {
            panic!(
                "loadgen ({status}) wrote no report {}: {e}; output:\n{output}",
                self.report.display()
            )
        });
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("loadgen report is not JSON: {e}\n{text}"));
        let n = |k: &str| {
            json[k]
                .as_u64()
                .unwrap_or_else(|| panic!("loadgen report lacks {k}: {text}"))
        };
        let response_codes = json["response_codes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        LoadReport {
            status,
            sent: n("sent"),
            received: n("received"),
            timeouts: n("timeouts"),
            errors: n("errors"),
            abandoned: json["abandoned"].as_u64().unwrap_or(0),
            in_flight_at_end: json["in_flight_at_end"].as_u64().unwrap_or(0),
            tps: json["tps"].as_f64().unwrap_or(0.0),
            response_codes,
            json,
            output,
        }
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            kill_and_reap(c);
        }
    }
}

// ===== impl Haproxy =====

/// `deploy/haproxy/loopback.env`: the values of haproxy.cfg's `"${VAR}"`s for three replicas on
/// fixed 127.0.0.1 ports.
pub fn loopback_env() -> BTreeMap<String, String> {
    let path = workspace_root().join("deploy/haproxy/loopback.env");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// [`loopback_env`] with every port replaced by a free one, so that two test binaries (or
/// nextest's parallel tests) never meet on a port.
pub fn loopback_env_free_ports() -> BTreeMap<String, String> {
    let mut env = loopback_env();
    for (k, v) in env.iter_mut() {
        if k == "HAPROXY_DNS" {
            continue;
        }
        if k.ends_with("_PORT") {
            *v = free_port().to_string();
        } else if let Some((host, port)) = v.rsplit_once(':') {
            if port.parse::<u16>().is_ok() {
                *v = format!("{host}:{}", free_port());
            }
        }
    }
    env
}

/// HAProxy in the foreground (`-db`) on `deploy/haproxy/haproxy.cfg`; SIGKILLed when dropped.
#[derive(Debug)]
pub struct Haproxy {
    child: Child,
    log: PathBuf,
    /// `HAPROXY_STATS_BIND`.
    pub stats: SocketAddr,
    /// `HAPROXY_BIND`: where clients connect.
    pub front: SocketAddr,
}

impl Haproxy {
    /// The haproxy binary, or `None` after [`crate::skip`] (naming `test`) said why.
    pub fn binary(test: &str) -> Option<PathBuf> {
        let found = which("haproxy");
        if found.is_none() {
            crate::skip(format_args!(
                "{test}: haproxy not installed (apt-get install haproxy; .ci/run does)"
            ));
        }
        found
    }

    /// Starts HAProxy with `env` (see [`loopback_env`]), logging to `<log_dir>/haproxy.log`.
    pub fn start(binary: &Path, env: &BTreeMap<String, String>, log_dir: &Path) -> Haproxy {
        let addr = |k: &str| -> SocketAddr {
            env.get(k)
                .unwrap_or_else(|| panic!("HAProxy environment lacks {k}"))
                .parse()
                .unwrap_or_else(|e| panic!("{k}: {e}"))
        };
        let log = log_dir.join("haproxy.log");
        let mut cmd = command(binary);
        cmd.arg("-db")
            .arg("-f")
            .arg(workspace_root().join("deploy/haproxy/haproxy.cfg"))
            .envs(env);
        let child = spawn_logged(cmd, &log);
        Haproxy {
            child,
            log,
            stats: addr("HAPROXY_STATS_BIND"),
            front: addr("HAPROXY_BIND"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Each `switch-N` server's status in HAProxy's CSV statistics ("UP", "DOWN", "UP 1/2",
    /// "MAINT", ...); empty while the stats page does not answer.
    pub async fn server_states(&self) -> BTreeMap<String, String> {
        let Some((200, page)) = http_get_raw(self.stats, "/stats;csv").await else {
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

    /// Waits until `ok(states)` holds; panics with HAProxy's log after `timeout`, or if
    /// HAProxy exited.
    pub async fn wait_states(
        &mut self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&BTreeMap<String, String>) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.server_states().await;
            if ok(&states) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("haproxy exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (states {states:?}); haproxy log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until server `name` is in a state starting with `state` ("UP", "DOWN").
    pub async fn wait_server(&mut self, name: &str, state: &str, timeout: Duration) {
        let what = format!("{name} {state} in HAProxy");
        self.wait_states(&what, timeout, |s| {
            s.get(name).is_some_and(|v| {
                if state == "UP" {
                    v == "UP"
                } else {
                    v.starts_with(state)
                }
            })
        })
        .await;
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

// ===== impl Cluster =====

/// Three replicas behind HAProxy on loopback, as `deploy/` runs them: `switch-1..3` on the
/// free ports of [`loopback_env_free_ports`], each with `--proxy-protocol` (HAProxy sends PROXY
/// v2) and its data directory `<dir>/switch-N`, HAProxy on `haproxy.cfg` unchanged.
#[derive(Debug)]
pub struct Cluster {
    pub replicas: Vec<Replica>,
    pub haproxy: Haproxy,
    /// The values of haproxy.cfg's variables.
    pub env: BTreeMap<String, String>,
}

impl Cluster {
    /// Starts the replicas, each configured further by `configure(n, config)` (n = 1..=3: add
    /// `--store URL`, copy data files into `config.data_dir`, ...), waits for each `/readyz`,
    /// then starts HAProxy and waits until it sees all three UP. Logs go to `dir`.
    pub async fn start(
        haproxy_bin: &Path,
        dir: &Path,
        mut configure: impl FnMut(usize, ReplicaConfig) -> ReplicaConfig,
    ) -> Cluster {
        let env = loopback_env_free_ports();
        let var = |k: &str| {
            env.get(k)
                .unwrap_or_else(|| panic!("loopback.env lacks {k}"))
                .clone()
        };
        let mut replicas = Vec::new();
        for n in 1..=3 {
            let name = format!("switch-{n}");
            let data_dir = dir.join(&name);
            std::fs::create_dir_all(&data_dir).expect("data dir");
            let mut config = ReplicaConfig::new(&name, data_dir).arg("--proxy-protocol");
            config.listen = var(&format!("SWITCH_{n}_ISO"))
                .parse()
                .expect("ISO address");
            config.admin = SocketAddr::from((
                [127, 0, 0, 1],
                var(&format!("SWITCH_{n}_ADMIN_PORT"))
                    .parse()
                    .expect("admin port"),
            ));
            replicas.push(Replica::spawn(configure(n, config), dir));
        }
        for r in &mut replicas {
            r.wait_ready(Duration::from_secs(30)).await;
        }
        let mut haproxy = Haproxy::start(haproxy_bin, &env, dir);
        haproxy
            .wait_states("three replicas UP", Duration::from_secs(15), |s| {
                s.len() == 3 && s.values().all(|v| v == "UP")
            })
            .await;
        Cluster {
            replicas,
            haproxy,
            env,
        }
    }

    /// Where clients connect (HAProxy's frontend).
    pub fn front(&self) -> SocketAddr {
        self.haproxy.front
    }
}

/// A metric's value on a replica's /metrics: the first sample named exactly `name` (no labels).
pub async fn metric(replica: &Replica, name: &str) -> Option<f64> {
    let (status, page) = replica.admin_get("/metrics").await?;
    if status != 200 {
        return None;
    }
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `ok(value)` holds for a metric of `replica`; panics with its log after 15 s.
pub async fn wait_metric(replica: &Replica, name: &str, what: &str, ok: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if metric(replica, name).await.is_some_and(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: timed out waiting for {what}; log:\n{}",
            replica.config.name,
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One run of [`loadgen_back_to_back`].
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub name: String,
    pub started: Instant,
    pub ended: Instant,
    pub report: LoadReport,
}

/// `loadgen` runs one after another, each on fresh connections, until `stop` is set (the
/// current run is finished). `args` are loadgen's load arguments; every run gets its own
/// `--seed` and `--terminal-base` from the shared counter `runs`, so no two runs (in any lane)
/// share a key. `check` sees each run as it ends (assert there to fail early).
#[allow(clippy::too_many_arguments)]
pub async fn loadgen_back_to_back(
    target: SocketAddr,
    data_dir: &Path,
    args: &[&str],
    log_dir: &Path,
    runs: &std::sync::atomic::AtomicU32,
    stop: &std::sync::atomic::AtomicBool,
    run_timeout: Duration,
    check: impl Fn(&LoadRun),
) -> Vec<LoadRun> {
    use std::sync::atomic::Ordering;
    let mut done = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let run = runs.fetch_add(1, Ordering::Relaxed);
        let name = format!("loadgen-{run:03}");
        // Terminal ids are LG + (base + connection index): 100 connections per run at most.
        let base = (run * 100).to_string();
        let seed = (run + 1).to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--seed", &seed, "--terminal-base", &base]);
        let started = Instant::now();
        let report = Loadgen::spawn(&name, target, data_dir, &all, log_dir)
            .finish(run_timeout)
            .await;
        let r = LoadRun {
            name,
            started,
            ended: Instant::now(),
            report,
        };
        check(&r);
        done.push(r);
    }
    done
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"), "helloabc");
        assert_eq!(dechunk("zz\r\n"), "");
    }

    #[test]
    fn free_ports_are_bindable_and_below_the_ephemeral_range() {
        let low = ephemeral_port_low();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        for &p in &ports {
            TcpListener::bind(("127.0.0.1", p)).expect("bindable");
            if low >= 11_000 {
                assert!((10_000..low).contains(&u64::from(p)), "{p} below {low}");
            }
        }
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert!(distinct.len() > 40, "spread out: {ports:?}");
    }

    #[test]
    fn free_ports_keep_keys_and_hosts() {
        let fixed = loopback_env();
        let free = loopback_env_free_ports();
        assert_eq!(
            fixed.keys().collect::<Vec<_>>(),
            free.keys().collect::<Vec<_>>()
        );
        assert_eq!(free["HAPROXY_DNS"], fixed["HAPROXY_DNS"]);
        assert!(free["SWITCH_1_ISO"].starts_with("127.0.0.1:"));
        assert!(free["SWITCH_1_ADMIN_PORT"].parse::<u16>().is_ok());
    }
}
