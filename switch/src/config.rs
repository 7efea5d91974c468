//! Configuration: one struct, read from (lowest to highest precedence) built-in defaults, a TOML
//! file (`--config`), `SWITCH_*` environment variables, and command-line flags. Unknown keys in
//! the file are errors: a misspelt key in a payment switch must fail loudly, not be ignored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How decisions reach the disk before their answer leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// An answer leaves only once its decision is on disk (group commit).
    Fsync,
    /// No fsync: fast, and a crash may lose recent decisions. For benchmarks.
    None,
}

/// Everything `switch serve` can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// ISO 8583 listener.
    pub listen: SocketAddr,
    /// Admin HTTP listener: /metrics, /healthz, /readyz.
    pub admin_listen: SocketAddr,
    /// State directory: accounts.csv, orders.csv (a demo set is generated when both are absent).
    pub data_dir: PathBuf,
    /// Message layout: a built-in name or a JSON / jPOS XML spec file.
    pub spec: String,
    /// TCP length header: len2, len4, ascii4 or bcd2.
    pub framing: String,
    /// Largest frame accepted (bytes after the length header); larger closes the connection.
    pub max_frame: usize,
    /// Authorization shard threads; 0 means one per core.
    pub shards: usize,
    /// Threads of the I/O runtime (connections, admin HTTP, the PostgreSQL store's client);
    /// 0 means one per two cores, at least one.
    pub io_threads: usize,
    pub durability: Durability,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests in flight on one connection before the switch stops reading from it.
    pub max_in_flight: usize,
    /// A connection silent this long is closed (0800 echoes keep a link alive). 0: never.
    pub idle_timeout_secs: u64,
    /// On SIGTERM, how long in-flight work may take before the remaining connections are closed.
    pub grace_period_secs: u64,
    /// How long an answered request's key is remembered for replays.
    pub idempotency_window_secs: u64,
    /// Transactions the switch is sized to remember at once (about one idempotency window of
    /// traffic), over all shards: each shard's idempotency and transaction maps are allocated
    /// for its share at start instead of growing while they fill. 0: grow as needed.
    pub expected_transactions: u64,
    /// Require a PROXY protocol v2 header on every ISO connection.
    pub proxy_protocol: bool,
    /// tracing filter, e.g. `info` or `switch=debug`.
    pub log: String,
    /// BIN ranges served here or declined with a code; a card no range covers is served.
    /// TOML: `[[bins]] low = "412345" high = "412399" action = "decline" code = "05"`.
    pub bins: Vec<BinRule>,
    /// Scale-out store: a PostgreSQL URL (`postgres://user:password@host:port/db`, or libpq
    /// `key=value` form). When set, accounts, orders, holds, idempotency records and the
    /// ledger live there, shared by every replica, and `data_dir` holds no state. Never
    /// logged (it may hold a password).
    pub store: Option<String>,
    /// With `store`: how long a request may wait for the database before it is answered 96.
    pub store_timeout_ms: u64,
}

/// One BIN range of the configuration (6 to 8 digit prefixes; the most specific range wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinRule {
    pub low: String,
    pub high: String,
    pub action: BinRuleAction,
    /// The DE 39 code for `decline` (for example `05` or `57`).
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BinRuleAction {
    Serve,
    Decline,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8583)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9583)),
            data_dir: PathBuf::from("./data"),
            spec: "iso87-binary".into(),
            framing: "len2".into(),
            max_frame: 8192,
            shards: 0,
            io_threads: 0,
            durability: Durability::Fsync,
            max_connections: 10_000,
            max_in_flight: 1024,
            idle_timeout_secs: 300,
            grace_period_secs: 15,
            idempotency_window_secs: 86_400,
            expected_transactions: 0,
            proxy_protocol: false,
            log: "info".into(),
            bins: Vec::new(),
            store: None,
            store_timeout_ms: DEFAULT_STORE_TIMEOUT_MS,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Where the file stops parsing and why, without toml's excerpt of the line: that line
    /// may be the store's URL with its password.
    #[error("config file {path}, line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |span| span.start).min(text.len());
            let before = &text.as_bytes()[..at];
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            ConfigError::Parse {
                path: path.to_owned(),
                line: before.iter().filter(|&&b| b == b'\n').count() + 1,
                column: at - line_start + 1,
                message: e.message().trim_end().to_owned(),
            }
        })
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.framing.parse::<codec::framing::Framing>().is_err() {
            return invalid("framing", "must be one of len2, len4, ascii4, bcd2");
        }
        let frames = codec::framing::MAX_FRAME_SETTING;
        if !frames.contains(&self.max_frame) {
            let reason = format!("must be {}..={} bytes", frames.start(), frames.end());
            return invalid("max_frame", &reason);
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return invalid("max_connections", "must be 1..=1000000");
        }
        // Upper bounds so that no deadline computed from a setting can overflow a clock.
        if self.idle_timeout_secs > MAX_TIMEOUT_SECS {
            return invalid(
                "idle_timeout_secs",
                "must be 0 (never) ..= 31536000 (a year)",
            );
        }
        if self.grace_period_secs > MAX_TIMEOUT_SECS {
            return invalid("grace_period_secs", "must be 0..=31536000 (a year)");
        }
        if self.idempotency_window_secs > MAX_TIMEOUT_SECS {
            return invalid("idempotency_window_secs", "must be 60..=31536000 (a year)");
        }
        if self.max_in_flight == 0 || self.max_in_flight > 65_536 {
            return invalid("max_in_flight", "must be 1..=65536");
        }
        if self.shards > 1024 {
            return invalid("shards", "must be 0 (one per core) ..= 1024");
        }
        if self.io_threads > 1024 {
            return invalid("io_threads", "must be 0 (one per two cores) ..= 1024");
        }
        if self.idempotency_window_secs < 60 {
            return invalid("idempotency_window_secs", "must be at least 60");
        }
        if self.expected_transactions > MAX_EXPECTED_TRANSACTIONS {
            let reason = format!(
                "must be at most {MAX_EXPECTED_TRANSACTIONS} (each takes at least {} bytes of memory)",
                routing::Shard::map_bytes_per_transaction()
            );
            return invalid("expected_transactions", &reason);
        }
        self.bin_table()?;
        if let Some(url) = &self.store {
            if let Err(e) = crate::pg::parse_url(url) {
                return Err(ConfigError::Invalid {
                    key: "store",
                    reason: e.to_string(),
                });
            }
            if self.store_timeout_ms == 0 || self.store_timeout_ms > MAX_STORE_TIMEOUT_MS {
                return invalid("store_timeout_ms", "must be 1..=600000 (ten minutes)");
            }
        }
        if let Err(e) = codec::load_spec(&self.spec) {
            return Err(ConfigError::Invalid {
                key: "spec",
                reason: e.to_string(),
            });
        }
        Ok(())
    }

    /// The engine's BIN table from `bins`.
    pub fn bin_table(&self) -> Result<routing::BinTable, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "bins",
            reason,
        };
        let entries = self
            .bins
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let action = match (rule.action, rule.code.as_deref()) {
                    (BinRuleAction::Serve, None) => routing::BinAction::Serve,
                    (BinRuleAction::Decline, Some(code)) => {
                        match routing::ResponseCode::from_wire(code.as_bytes()) {
                            Some(c) if !c.is_approved() => routing::BinAction::Decline(c),
                            _ => {
                                return Err(invalid(format!(
                                    "#{i}: {code:?} is not a decline code"
                                )))
                            }
                        }
                    }
                    (BinRuleAction::Decline, None) => {
                        return Err(invalid(format!("#{i}: decline needs a code")))
                    }
                    (BinRuleAction::Serve, Some(_)) => {
                        return Err(invalid(format!("#{i}: serve takes no code")))
                    }
                };
                Ok(routing::bins::BinRangeEntry {
                    low: rule.low.clone(),
                    high: rule.high.clone(),
                    action,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        routing::BinTable::from_entries(&entries).map_err(|e| invalid(e.to_string()))
    }

    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            cores()
        } else {
            self.shards
        }
    }

    /// Whether the engine's maps are sized at start: `expected_transactions` set, with the
    /// embedded store (the PostgreSQL store has no such maps).
    pub fn sizes_engine_maps(&self) -> bool {
        self.expected_transactions > 0 && self.store.is_none()
    }

    /// The I/O runtime's threads. Half the cores by default: at saturation the I/O side is
    /// about a third of the switch's CPU and the shards the rest, and a thread more than the
    /// cores can run costs a context switch per hand-off (benches/RESULTS.md, "Threads and
    /// pacing").
    pub fn io_thread_count(&self) -> usize {
        if self.io_threads == 0 {
            (cores() / 2).max(1)
        } else {
            self.io_threads
        }
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }

    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }
}

/// Most connections one switch serves at once (a file descriptor each).
const MAX_CONNECTIONS: usize = 1_000_000;

/// Longest timeout, grace period or idempotency window, in seconds: a year.
const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// `store_timeout_ms` unless set.
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 2_000;

/// Longest `store_timeout_ms`: ten minutes (a terminal gave up long before).
const MAX_STORE_TIMEOUT_MS: u64 = 600_000;

/// Largest `expected_transactions`: 2^32 entries would already take about a terabyte.
const MAX_EXPECTED_TRANSACTIONS: u64 = 1 << 32;

/// The cores this process may use (a container's CPU limit included), at least 1.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let c = Config::default();
        c.validate().expect("defaults valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8583");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9583");
        assert_eq!(c.framing, "len2");
        assert_eq!(c.max_frame, 8192);
        assert_eq!(c.grace_period_secs, 15);
        assert_eq!(c.durability, Durability::Fsync);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<Config>("listen = \"127.0.0.1:1\"\nlisten_port = 5\n")
            .expect_err("unknown key");
        assert!(e.to_string().contains("listen_port"), "{e}");
    }

    #[test]
    fn bin_rules_parse_and_validate() {
        let c: Config = toml::from_str(
            "[[bins]]\nlow = \"412345\"\nhigh = \"412399\"\naction = \"decline\"\ncode = \"57\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        let pan = routing::Pan::from_digits(b"4123450000000000").expect("pan");
        assert_eq!(
            c.bin_table().expect("table").action(&pan),
            routing::BinAction::Decline(routing::ResponseCode::NotPermitted)
        );
        let bad: Config = toml::from_str(
            "[[bins]]\nlow = \"412345\"\nhigh = \"412399\"\naction = \"decline\"\ncode = \"00\"\n",
        )
        .expect("parses");
        assert!(bad
            .validate()
            .expect_err("00 declines nothing")
            .to_string()
            .starts_with("bins:"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                Config {
                    framing: "len3".into(),
                    ..Config::default()
                },
                "framing:",
            ),
            (
                Config {
                    spec: "iso93".into(),
                    ..Config::default()
                },
                "spec:",
            ),
            (
                Config {
                    io_threads: 1025,
                    ..Config::default()
                },
                "io_threads:",
            ),
            (
                Config {
                    expected_transactions: (1 << 32) + 1,
                    ..Config::default()
                },
                "expected_transactions:",
            ),
            // Values whose deadlines would overflow a clock (a panic per connection) or a
            // semaphore's permits.
            (
                Config {
                    idle_timeout_secs: u64::MAX,
                    ..Config::default()
                },
                "idle_timeout_secs:",
            ),
            (
                Config {
                    grace_period_secs: u64::MAX,
                    ..Config::default()
                },
                "grace_period_secs:",
            ),
            (
                Config {
                    idempotency_window_secs: u64::MAX,
                    ..Config::default()
                },
                "idempotency_window_secs:",
            ),
            (
                Config {
                    max_connections: usize::MAX,
                    ..Config::default()
                },
                "max_connections:",
            ),
            (
                Config {
                    store: Some("postgres://switch@127.0.0.1/switch".into()),
                    store_timeout_ms: u64::MAX,
                    ..Config::default()
                },
                "store_timeout_ms:",
            ),
        ];
        for (config, key) in cases {
            let e = config.validate().expect_err(key);
            assert!(e.to_string().starts_with(key), "{e}");
        }
    }

    #[test]
    fn io_threads_default_to_half_the_cores() {
        let c: Config = toml::from_str("").expect("empty file");
        assert_eq!(c.io_thread_count(), (cores() / 2).max(1));
        let c: Config = toml::from_str("io_threads = 3").expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.io_thread_count(), 3);
    }
}
