//! `switch`: serve ISO 8583 (the default), write demo data, or check a running switch's health.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switch::config::{Config, Durability};
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser, Debug)]
#[command(
    name = "switch",
    version,
    about = "High-throughput ISO 8583 payment switch"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve ISO 8583 (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Write a demo accounts.csv and orders.csv.
    DemoData {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Number of cards.
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Number of merchant orders.
        #[arg(long, default_value_t = 1000)]
        orders: usize,
        /// Seed: the same seed writes the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Apply the PostgreSQL store's schema migrations, then exit.
    Migrate {
        /// The store: postgres://USER:PASSWORD@HOST:PORT/DB (PGPASSWORD honoured).
        #[arg(long, env = "SWITCH_STORE")]
        store: String,
    },
    /// Migrate, then load DIR/accounts.csv and DIR/orders.csv into the PostgreSQL store in one
    /// transaction (refused, loading nothing, if a card or order is already there).
    Import {
        /// The store: postgres://USER:PASSWORD@HOST:PORT/DB (PGPASSWORD honoured).
        #[arg(long, env = "SWITCH_STORE")]
        store: String,
        /// Directory holding accounts.csv and orders.csv.
        #[arg(long, env = "SWITCH_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Exit 0 when the switch whose admin endpoint is ADDR answers 200 on /readyz.
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:9583")]
        admin: String,
    },
}

/// Flags of `switch serve`; each also reads `SWITCH_<FLAG>` and overrides the config file.
#[derive(Args, Debug, Default)]
struct ServeArgs {
    /// TOML configuration file (flags and SWITCH_* variables override it).
    #[arg(long, env = "SWITCH_CONFIG")]
    config: Option<PathBuf>,
    /// ISO 8583 listen address [default: 127.0.0.1:8583].
    #[arg(long, env = "SWITCH_LISTEN")]
    listen: Option<SocketAddr>,
    /// Admin HTTP listen address for /metrics, /healthz, /readyz [default: 127.0.0.1:9583].
    #[arg(long, env = "SWITCH_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// State directory with accounts.csv and orders.csv [default: ./data].
    #[arg(long, env = "SWITCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Message layout: iso87-binary, iso87-ascii, iso87-bcd, or a JSON / jPOS XML spec file.
    #[arg(long, env = "SWITCH_SPEC")]
    spec: Option<String>,
    /// TCP length header: len2, len4, ascii4, bcd2 [default: len2].
    #[arg(long, env = "SWITCH_FRAMING")]
    framing: Option<String>,
    /// Largest frame in bytes [default: 8192].
    #[arg(long, env = "SWITCH_MAX_FRAME")]
    max_frame: Option<usize>,
    /// Authorization shard threads [default: one per core].
    #[arg(long, env = "SWITCH_SHARDS")]
    shards: Option<usize>,
    /// I/O runtime threads [default: one per two cores, at least one].
    #[arg(long, env = "SWITCH_IO_THREADS")]
    io_threads: Option<usize>,
    /// fsync: answer only once the decision is on disk; none: faster, may lose data on a crash.
    #[arg(long, env = "SWITCH_DURABILITY", value_enum)]
    durability: Option<Durability>,
    /// Requests in flight per connection before reading pauses [default: 1024].
    #[arg(long, env = "SWITCH_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Maximum connections served at once [default: 10000].
    #[arg(long, env = "SWITCH_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds of silence before a connection is closed, 0 for never [default: 300].
    #[arg(long, env = "SWITCH_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// Seconds the drain may take after SIGTERM [default: 15].
    #[arg(long, env = "SWITCH_GRACE_PERIOD")]
    grace_period: Option<u64>,
    /// Require a PROXY protocol v2 header on every ISO connection (behind HAProxy or an NLB)
    /// [default: false]; `--proxy-protocol` alone means true.
    #[arg(
        long,
        env = "SWITCH_PROXY_PROTOCOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    proxy_protocol: Option<bool>,
    /// Transactions to size the engine's maps for at start, over all shards (about one
    /// idempotency window of traffic); 0: they grow as they fill [default: 0].
    #[arg(long, env = "SWITCH_EXPECTED_TRANSACTIONS")]
    expected_transactions: Option<u64>,
    /// Log filter, e.g. info or switch=debug [default: info].
    #[arg(long, env = "SWITCH_LOG")]
    log: Option<String>,
    /// Scale-out store: postgres://USER:PASSWORD@HOST:PORT/DB keeps accounts, orders, holds,
    /// idempotency records and the ledger in PostgreSQL, shared by every replica [default:
    /// the embedded store in --data-dir].
    #[arg(long, env = "SWITCH_STORE")]
    store: Option<String>,
    /// With --store: milliseconds a request may wait for the database before it is answered
    /// 96 [default: 2000].
    #[arg(long, env = "SWITCH_STORE_TIMEOUT_MS")]
    store_timeout_ms: Option<u64>,
}

impl ServeArgs {
    /// Defaults, then the file, then flags and environment (clap gives flags precedence over
    /// the environment).
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:ident),* $(,)?) => {
                $( if let Some(v) = self.$field { c.$target = v; } )*
            };
        }
        set!(
            listen => listen,
            admin_listen => admin_listen,
            data_dir => data_dir,
            spec => spec,
            framing => framing,
            max_frame => max_frame,
            shards => shards,
            io_threads => io_threads,
            durability => durability,
            max_in_flight => max_in_flight,
            max_connections => max_connections,
            idle_timeout => idle_timeout_secs,
            grace_period => grace_period_secs,
            proxy_protocol => proxy_protocol,
            expected_transactions => expected_transactions,
            log => log,
            store_timeout_ms => store_timeout_ms,
        );
        if self.store.is_some() {
            c.store = self.store;
        }
        c.validate()?;
        Ok(c)
    }
}

/// mimalloc instead of glibc's malloc: the hot path still allocates small objects per request
/// (working-set entries, store rows, keys), and glibc's free lists and consolidation cost more
/// of them (measured in the README, "Dependencies and why").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::DemoData {
            out,
            accounts,
            orders,
            seed,
        }) => switch::store::write_demo_data(&out, accounts, orders, seed).map(|()| {
            eprintln!(
                "wrote {}/accounts.csv and {}/orders.csv",
                out.display(),
                out.display()
            )
        }),
        Some(Command::Migrate { store }) => migrate(&store),
        Some(Command::Import { store, data_dir }) => import(&store, &data_dir),
        Some(Command::Healthcheck { admin }) => healthcheck(&admin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(io_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .enable_all()
        .thread_name("switch-io")
        .build()?)
}

/// Transparent huge pages off for this process, before recovery fills the engine's maps,
/// unless the maps are sized at start (`expected_transactions`, embedded store). Growing
/// maps allocate fresh tables again and again, and mimalloc asks for huge pages: every first
/// touch then made the kernel zero 2 MiB, a sixth of the switch's CPU at saturation (`perf`);
/// without them, x1.15 answers/s with `--durability none`. Maps sized at start are allocated
/// once, and there huge pages save TLB misses instead: about +10% answers/s in both modes
/// (benches/RESULTS.md, "Sizing the maps"). A kernel that refuses the flag leaves things as
/// they were.
fn transparent_huge_pages(config: &Config) {
    if config.sizes_engine_maps() {
        tracing::info!(
            "engine maps sized at start: transparent huge pages left as the system sets them"
        );
        return;
    }
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %e, "could not turn transparent huge pages off");
    }
}

fn migrate(store: &str) -> anyhow::Result<()> {
    runtime(1)?.block_on(async {
        let config = switch::pg::parse_url(store)?;
        let client = switch::pg::connect(&config).await?;
        let applied = switch::pg::migrate(&client).await?;
        if applied.is_empty() {
            eprintln!("store schema is up to date");
        } else {
            eprintln!("applied store migrations {applied:?}");
        }
        Ok(())
    })
}

fn import(store: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let (accounts, orders) = runtime(1)?.block_on(switch::pg::import(store, data_dir))?;
    eprintln!("imported {accounts} accounts and {orders} orders");
    Ok(())
}

fn healthcheck(admin: &str) -> anyhow::Result<()> {
    if runtime(1)?.block_on(switch::admin::check_ready(admin))? {
        Ok(())
    } else {
        anyhow::bail!("{admin}: /readyz did not answer 200")
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    switch::logging::subscriber(&config.log, std::io::stderr, ansi)?.init();
    transparent_huge_pages(&config);
    runtime(config.io_thread_count())?.block_on(async move {
        let running = switch::start(config).await?;
        wait_for_signal().await?;
        tracing::info!("draining: /readyz now 503, answering what is in flight");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
