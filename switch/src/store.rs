//! The store's state at start: recovered from `<data_dir>/state/` (snapshot + journal of each
//! shard, [`crate::journal`]) or, on a first start, loaded from `accounts.csv` and `orders.csv`
//! in the data directory (PROTOCOL.md section 3), parsed by `routing::data` and dealt out to the
//! shards that own each card and order. With neither file present, a demo set is generated first
//! and the log says so. The CSV load is written at once as every shard's first snapshot, so
//! later starts never read the CSVs again.
//!
//! Recovery: each shard is restored from its newest snapshot and replays its journal through
//! [`Shard::apply`]; replies are dropped (their connections are gone), messages to other shards
//! are kept, and once every shard is replayed those a receiver never applied (sequence number
//! above its `received_seq` of the sender) are handed to the shard threads for delivery before
//! any connection is accepted. Segments are read streaming through one buffer
//! ([`journal::read_segment`]), shards in parallel, one thread each.
//!
//! Periodic snapshots reuse the replay ([`rebuild`]): a shard's state at the start of a journal
//! segment is its newest snapshot plus the closed segments before it, so a builder thread can
//! make the next snapshot from the files alone while the shard runs (`crate::shards`).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use routing::{EngineConfig, Input, Output, PeerMsg, Shard};

use crate::config::{BinRule, Config, Durability};
use crate::journal::{self, Journal};

/// The engine settings a journal is written under (`state/settings.toml`). A replay must run
/// under them: a BIN rule changed in between would re-decide differently. New settings take
/// effect at a start whose journals are empty (after a clean shutdown); after a crash the
/// recovered state keeps the stored ones until the next clean restart, and the log says so.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    idempotency_window_secs: u64,
    #[serde(default)]
    bins: Vec<BinRule>,
}

impl Settings {
    fn of(config: &Config) -> Settings {
        Settings {
            idempotency_window_secs: config.idempotency_window_secs,
            bins: config.bins.clone(),
        }
    }

    fn engine(&self) -> anyhow::Result<EngineConfig> {
        let config = Config {
            idempotency_window_secs: self.idempotency_window_secs,
            bins: self.bins.clone(),
            ..Config::default()
        };
        Ok(EngineConfig {
            idempotency_window_secs: self.idempotency_window_secs,
            bins: config.bin_table()?,
        })
    }

    fn path(state: &Path) -> std::path::PathBuf {
        state.join("settings.toml")
    }

    fn write(&self, state: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("encoding the engine settings")?;
        journal::write_atomic(&Settings::path(state), text.as_bytes())
    }

    /// The stored settings; `None` for a state written before they were stored.
    fn read(state: &Path) -> anyhow::Result<Option<Settings>> {
        let path = Settings::path(state);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// The shards' state and journals, ready for [`crate::shards::start`].
#[derive(Debug)]
pub struct Loaded {
    pub shards: Vec<Shard>,
    /// One open journal per shard, positioned after its last valid record.
    pub journals: Vec<Journal>,
    /// This start's boot number (tokens carry it).
    pub boot: u64,
    /// Messages between shards a replay produced that their receiver never applied, in order:
    /// (destination shard, message).
    pub redeliver: Vec<(usize, PeerMsg)>,
    /// Journal records a shard takes between two periodic snapshots (0: only at shutdown):
    /// [`SNAPSHOT_EVERY_RECORDS`] from [`recover`], `SWITCH_SNAPSHOT_EVERY_RECORDS` from [`load`].
    pub snapshot_every: u64,
    /// The engine settings the shards run under (a periodic snapshot replays with them).
    pub engine: EngineConfig,
}

/// Default of [`Loaded::snapshot_every`]; the environment variable
/// `SWITCH_SNAPSHOT_EVERY_RECORDS` overrides it (0 turns periodic snapshots off). A snapshot is
/// built off the shard thread (`crate::shards`) by replaying the segment it closes, so the
/// shard never stalls for it; a recovery replays at most the segment being built and the one
/// after it, about twice this many records per shard (shards in parallel, roughly 500,000
/// records a second each on the development machine): a few seconds.
pub const SNAPSHOT_EVERY_RECORDS: u64 = 2_000_000;

/// `SWITCH_SNAPSHOT_EVERY_RECORDS`, or the default when unset or empty.
fn snapshot_every() -> anyhow::Result<u64> {
    parse_snapshot_every(
        std::env::var("SWITCH_SNAPSHOT_EVERY_RECORDS")
            .ok()
            .as_deref(),
    )
}

/// A value that is not a whole number is refused, naming the variable (never a silent default:
/// a mistyped `2e6` would otherwise snapshot at a rate nobody chose).
fn parse_snapshot_every(value: Option<&str>) -> anyhow::Result<u64> {
    match value.map(str::trim) {
        None | Some("") => Ok(SNAPSHOT_EVERY_RECORDS),
        Some(v) => v.parse().map_err(|_| {
            anyhow::anyhow!(
                "SWITCH_SNAPSHOT_EVERY_RECORDS must be a whole number of journal records per shard (0: snapshots at shutdown only)"
            )
        }),
    }
}

/// Replayed messages kept per (sender, receiver) for re-delivery: those in flight at a crash
/// are a few per request in flight, far fewer than this.
const REDELIVER_WINDOW: usize = 1 << 20;

/// Demo set written on a first start with an empty data directory.
const DEMO_ACCOUNTS: usize = 10_000;
const DEMO_ORDERS: usize = 10_000;
const DEMO_SEED: u64 = 1;

/// Writes a demo `accounts.csv` and `orders.csv` into `dir`.
pub fn write_demo_data(
    dir: &Path,
    accounts: usize,
    orders: usize,
    seed: u64,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (accounts_csv, orders_csv) = routing::demo::demo_data(accounts, orders, seed)?;
    write_new(&dir.join("accounts.csv"), &accounts_csv)?;
    write_new(&dir.join("orders.csv"), &orders_csv)?;
    Ok(())
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

/// Loads the shards: recovers `<data_dir>/state/`, or creates it from the CSVs.
pub fn load(config: &Config, shard_count: usize) -> anyhow::Result<Loaded> {
    // A bad setting is refused before the data directory is touched.
    let snapshot_every = snapshot_every()?;
    if config.sizes_engine_maps() {
        check_map_memory(config.expected_transactions, memory_limit())?;
    }
    let settings = Settings::of(config);
    let engine = settings.engine()?;
    let state = journal::state_dir(&config.data_dir);
    if !state.exists() {
        let shards = load_csv(config, shard_count, &engine)?;
        let started = Instant::now();
        journal::init_state_from(&state, &shards)?;
        settings.write(&state)?;
        tracing::info!(dir = %state.display(), elapsed = ?started.elapsed(), "initial snapshots of the CSV load written");
    }
    let stored = Settings::read(&state)?.unwrap_or_else(|| settings.clone());
    let fsync = config.durability == Durability::Fsync;
    let reserve = map_reserve(config.expected_transactions, shard_count);
    let (mut loaded, records) = recover(&state, shard_count, &stored.engine()?, fsync, reserve)?;
    loaded.snapshot_every = snapshot_every;
    if stored != settings {
        if records == 0 {
            // Nothing to replay: the snapshots are the state, and take today's settings.
            let mut bytes = Vec::new();
            for shard in &mut loaded.shards {
                bytes.clear();
                shard.snapshot(&mut bytes);
                *shard = Shard::restore(shard.id(), shard_count, engine.clone(), &bytes)
                    .context("re-reading a snapshot under the new engine settings")?;
                shard.reserve_transactions(reserve);
            }
            settings.write(&state)?;
            loaded.engine = engine.clone();
            tracing::info!("engine settings (BIN rules, idempotency window) changed: in effect");
        } else {
            tracing::warn!(
                "engine settings (BIN rules, idempotency window) changed, but the journals were written under the stored ones and are replayed with them: the new settings take effect at the next start after a clean shutdown"
            );
        }
    } else if !Settings::path(&state).exists() {
        settings.write(&state)?;
    }
    if reserve > 0 {
        tracing::info!(
            expected = config.expected_transactions,
            per_shard = reserve,
            "idempotency and transaction maps sized for the expected transactions"
        );
    }
    Ok(loaded)
}

/// Entries each shard's idempotency and transaction maps are sized for: its share of
/// `expected` transactions (`expected_transactions`; transactions spread evenly over the
/// shards), 0 for none. A map that grows moves every entry of a table into one twice as large:
/// on a fresh switch at saturation that was about a tenth of each shard's CPU
/// (benches/RESULTS.md, "Sizing the maps"); sized before the journal is replayed, a recovery
/// does not grow them either.
fn map_reserve(expected: u64, shard_count: usize) -> usize {
    let shards = shard_count.max(1) as u64;
    usize::try_from(expected.div_ceil(shards)).unwrap_or(usize::MAX)
}

/// Refuses an `expected_transactions` whose maps alone would not fit in `limit` bytes (this
/// machine's or container's memory): a slip of a digit would otherwise abort the start on a
/// failed allocation, or get the switch killed for memory as the maps fill.
fn check_map_memory(expected: u64, limit: Option<u64>) -> anyhow::Result<()> {
    let needed = expected.saturating_mul(Shard::map_bytes_per_transaction() as u64);
    match limit {
        Some(limit) if needed > limit => {
            const GIB: f64 = (1u64 << 30) as f64;
            anyhow::bail!(
                "expected_transactions = {expected}: the engine's maps alone would take at least {:.1} GiB, more than the {:.1} GiB of memory this process may use",
                needed as f64 / GIB,
                limit as f64 / GIB
            )
        }
        _ => Ok(()),
    }
}

/// The memory this process may use: the machine's (`MemTotal`), or its cgroup's limit when
/// lower (a container's). `None` when neither can be read.
fn memory_limit() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    // cgroup v2, else v1; "max" (no limit) does not parse, and v1's "no limit" is a number
    // far above the machine's memory.
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|v| v.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// Restores every shard from its newest snapshot and replays its journal (module docs), under
/// `engine` (the settings the journal was written with), each shard's maps sized for `reserve`
/// entries before the replay (0: as the snapshot needs). Also returns how many records were
/// replayed.
pub fn recover(
    state: &Path,
    shard_count: usize,
    engine: &EngineConfig,
    fsync: bool,
    reserve: usize,
) -> anyhow::Result<(Loaded, u64)> {
    let found = journal::shard_dirs(state)?;
    if found != shard_count {
        anyhow::bail!(
            "{} holds the state of {found} shards and this start has {shard_count}: start with --shards {found} (the state is partitioned by shard count)",
            state.display()
        );
    }
    let boot = journal::next_boot(state)?;
    let started = Instant::now();
    // Shards replay independently (their messages to each other are only collected): one
    // thread each. [receiver * n + sender]: the receiver's received_seq of the sender so far in
    // its replay (a lower bound of its final one: messages at or below it need no re-delivery,
    // so senders drop them as they go instead of keeping a window of them).
    let progress: Vec<std::sync::atomic::AtomicU64> = (0..shard_count * shard_count)
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    let replayed: Vec<anyhow::Result<Replayed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..shard_count)
            .map(|i| {
                let progress = &progress;
                scope.spawn(move || {
                    replay_shard(state, i, shard_count, engine, fsync, reserve, progress)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a replay thread panicked")))
            })
            .collect()
    });
    let mut shards = Vec::with_capacity(shard_count);
    let mut journals = Vec::with_capacity(shard_count);
    let mut sent = Vec::with_capacity(shard_count);
    let mut records = 0u64;
    for r in replayed {
        let r = r?;
        shards.push(r.shard);
        journals.push(r.journal);
        sent.push(r.sent);
        records += r.records;
    }
    let mut redeliver = Vec::new();
    for (from, queues) in sent.into_iter().enumerate() {
        for (to, queue) in queues.into_iter().enumerate() {
            let Some(receiver) = shards.get(to) else {
                continue;
            };
            let taken = receiver.received_seq(from);
            if let Some(first) = queue.front() {
                if first.seq() > taken + 1 {
                    tracing::error!(
                        from,
                        to,
                        taken,
                        first = first.seq(),
                        "messages between shards lost before recovery"
                    );
                }
            }
            redeliver.extend(
                queue
                    .into_iter()
                    .filter(|m| m.seq() > taken)
                    .map(|m| (to, m)),
            );
        }
    }
    tracing::info!(
        shards = shard_count,
        records,
        redeliver = redeliver.len(),
        boot,
        elapsed = ?started.elapsed(),
        "state recovered from snapshots and journals"
    );
    Ok((
        Loaded {
            shards,
            journals,
            boot,
            redeliver,
            snapshot_every: SNAPSHOT_EVERY_RECORDS,
            engine: engine.clone(),
        },
        records,
    ))
}

/// One shard after its replay.
struct Replayed {
    shard: Shard,
    journal: Journal,
    /// By receiver: the newest messages the replay produced.
    sent: Vec<VecDeque<PeerMsg>>,
    records: u64,
}

/// Restores shard `i` from its newest snapshot and replays its journal segments.
fn replay_shard(
    state: &Path,
    i: usize,
    shard_count: usize,
    engine: &EngineConfig,
    fsync: bool,
    reserve: usize,
    progress: &[std::sync::atomic::AtomicU64],
) -> anyhow::Result<Replayed> {
    let files = journal::shard_files(&journal::shard_dir(state, i))?;
    let bytes = std::fs::read(&files.snapshot)
        .with_context(|| format!("reading {}", files.snapshot.display()))?;
    let mut shard = Shard::restore(i, shard_count, engine.clone(), &bytes)
        .with_context(|| format!("restoring {}", files.snapshot.display()))?;
    drop(bytes);
    shard.reserve_transactions(reserve);
    let mut sent = vec![VecDeque::new(); shard_count];
    let mut records = 0u64;
    let mut out = Vec::new();
    let mut run = Vec::with_capacity(REPLAY_RUN);
    let mut generation = files.generation;
    let mut len = 0;
    let last = files.segments.len().saturating_sub(1);
    // After each input is applied: keep what it sent (for re-delivery), publish progress.
    let mut applied = |shard: &Shard, out: &mut Vec<Output>| {
        records += 1;
        for o in out.drain(..) {
            // Replies go to connections of the previous process: dropped.
            if let Output::ToShard { shard: to, msg } = o {
                if let Some(q) = sent.get_mut(to) {
                    if q.len() == REDELIVER_WINDOW {
                        q.pop_front();
                    }
                    q.push_back(msg);
                }
            }
        }
        if records.is_multiple_of(1024) {
            publish_and_prune(shard, i, progress, &mut sent);
        }
        Ok(())
    };
    for (k, (g, path)) in files.segments.iter().enumerate() {
        generation = *g;
        len = journal::read_segment(path, k == last, |input| {
            run.push(input);
            if run.len() < REPLAY_RUN {
                return Ok(());
            }
            apply_run(&mut shard, &mut run, &mut out, &mut applied)
        })?;
        apply_run(&mut shard, &mut run, &mut out, &mut applied)?;
    }
    publish_and_prune(&shard, i, progress, &mut sent);
    let journal = Journal::open(&files.dir, generation, len, fsync)?;
    Ok(Replayed {
        shard,
        journal,
        sent,
        records,
    })
}

/// Journal records a replay reads ahead and warms before applying them.
const REPLAY_RUN: usize = 64;

/// Applies `run`'s inputs in order, calling `applied` after each, once all of them are warmed
/// ([`Shard::warm_input`]): their map lines are prefetched together, so a replay's cache
/// misses overlap as the shard thread's do when it decides a batch. Leaves `run` empty.
fn apply_run(
    shard: &mut Shard,
    run: &mut Vec<Input>,
    out: &mut Vec<Output>,
    applied: &mut impl FnMut(&Shard, &mut Vec<Output>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for input in run.iter() {
        shard.warm_input(input);
    }
    for input in run.drain(..) {
        shard.apply(input, out);
        applied(shard, out)?;
    }
    Ok(())
}

/// During a replay: publishes shard `i`'s `received_seq` of every shard, and drops from `sent`
/// the messages their receiver has already taken in its own replay (see [`recover`]).
fn publish_and_prune(
    shard: &Shard,
    i: usize,
    progress: &[std::sync::atomic::AtomicU64],
    sent: &mut [VecDeque<PeerMsg>],
) {
    use std::sync::atomic::Ordering;
    let n = sent.len();
    for from in 0..n {
        if let Some(p) = progress.get(i * n + from) {
            p.store(shard.received_seq(from), Ordering::Release);
        }
    }
    for (to, q) in sent.iter_mut().enumerate() {
        let taken = progress
            .get(to * n + i)
            .map_or(0, |p| p.load(Ordering::Acquire));
        while q.front().is_some_and(|m| m.seq() <= taken) {
            q.pop_front();
        }
    }
}

/// How long [`rebuild`] replays before resting as long (it runs beside the shard threads).
const REBUILD_SLICE: std::time::Duration = std::time::Duration::from_millis(5);

/// Shard `i`'s state at the start of journal segment `generation`, rebuilt from files alone:
/// the newest snapshot before it and the closed segments since, replayed as recovery does
/// ([`Shard::apply`], outputs dropped), but one record at a time: warming runs of records as
/// recovery does ([`apply_run`]) made the builder faster and the shards beside it slower
/// (benches/RESULTS.md, "Prefetching the maps"). A periodic snapshot is built this way off the
/// shard thread (`crate::shards`); with `rest` it uses at most half a core (it rests as long as
/// it works). Gives up with an error once `cancel` is raised.
pub fn rebuild(
    dir: &Path,
    i: usize,
    shard_count: usize,
    engine: &EngineConfig,
    generation: u64,
    cancel: &std::sync::atomic::AtomicBool,
    rest: bool,
) -> anyhow::Result<(Shard, u64)> {
    use std::sync::atomic::Ordering;
    let files = journal::snapshot_sources(dir, generation)?;
    let bytes = std::fs::read(&files.snapshot)
        .with_context(|| format!("reading {}", files.snapshot.display()))?;
    let mut shard = Shard::restore(i, shard_count, engine.clone(), &bytes)
        .with_context(|| format!("restoring {}", files.snapshot.display()))?;
    drop(bytes);
    if files.segments.last().map(|&(g, _)| g + 1) != Some(generation) {
        anyhow::bail!(
            "{}: no journal segment {} to build snapshot {generation} from",
            dir.display(),
            generation.saturating_sub(1)
        );
    }
    let mut out = Vec::new();
    let mut records = 0u64;
    let mut working = std::time::Instant::now();
    for (_, path) in &files.segments {
        journal::read_segment(path, false, |input| {
            shard.apply(input, &mut out);
            out.clear();
            records += 1;
            if records.is_multiple_of(4096) {
                if cancel.load(Ordering::Relaxed) {
                    anyhow::bail!("cancelled");
                }
                // Half the time at most: the shard threads need the cores more.
                let worked = working.elapsed();
                if rest && worked >= REBUILD_SLICE {
                    std::thread::sleep(worked);
                    working = std::time::Instant::now();
                }
            }
            Ok(())
        })?;
    }
    Ok((shard, records))
}

/// Loads the CSVs of the data directory into `shard_count` shards (a first start).
fn load_csv(
    config: &Config,
    shard_count: usize,
    engine: &EngineConfig,
) -> anyhow::Result<Vec<Shard>> {
    let dir = &config.data_dir;
    let accounts_path = dir.join("accounts.csv");
    let orders_path = dir.join("orders.csv");
    if !accounts_path.exists() && !orders_path.exists() {
        write_demo_data(dir, DEMO_ACCOUNTS, DEMO_ORDERS, DEMO_SEED)?;
        tracing::info!(
            dir = %dir.display(),
            accounts = DEMO_ACCOUNTS,
            orders = DEMO_ORDERS,
            "no accounts.csv or orders.csv: generated a demo data set"
        );
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let accounts_name = accounts_path.display().to_string();
    let accounts = routing::data::parse_accounts(&accounts_name, &read(&accounts_path)?)?;
    let orders = if orders_path.exists() {
        let name = orders_path.display().to_string();
        routing::data::parse_orders(&name, &read(&orders_path)?)?
    } else {
        tracing::warn!(path = %orders_path.display(), "no orders file: no merchant orders loaded");
        Vec::new()
    };
    let (n_accounts, n_orders) = (accounts.len(), orders.len());
    let shards = routing::build_shards(shard_count, engine, accounts, orders)?;
    tracing::info!(
        accounts = n_accounts,
        orders = n_orders,
        shards = shard_count,
        "store loaded"
    );
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SWITCH_SNAPSHOT_EVERY_RECORDS`: unset or blank is the default, a whole number is taken,
    /// anything else refused without echoing the value.
    #[test]
    fn the_snapshot_interval_is_a_whole_number_or_refused() {
        assert_eq!(parse_snapshot_every(None).unwrap(), SNAPSHOT_EVERY_RECORDS);
        assert_eq!(
            parse_snapshot_every(Some(" ")).unwrap(),
            SNAPSHOT_EVERY_RECORDS
        );
        assert_eq!(parse_snapshot_every(Some("0")).unwrap(), 0);
        assert_eq!(parse_snapshot_every(Some(" 300000 ")).unwrap(), 300_000);
        for bad in ["2e6", "-1", "lots", "1_000"] {
            let e = parse_snapshot_every(Some(bad)).expect_err(bad).to_string();
            assert!(
                e.starts_with("SWITCH_SNAPSHOT_EVERY_RECORDS must be"),
                "{e}"
            );
            assert!(!e.contains(bad), "the value is not echoed: {e}");
        }
    }

    /// An `expected_transactions` whose maps cannot fit in memory is refused, naming the key.
    #[test]
    fn expected_transactions_beyond_memory_are_refused() {
        let gib = 1 << 30;
        let per = Shard::map_bytes_per_transaction() as u64;
        assert!(check_map_memory(gib / per, Some(gib)).is_ok());
        let e = check_map_memory(gib / per + 1, Some(gib)).expect_err("too big");
        assert!(e.to_string().starts_with("expected_transactions = "), "{e}");
        assert!(check_map_memory(u64::MAX, None).is_ok(), "no limit known");
        // This machine: some memory, and not a terabyte of it.
        let limit = memory_limit().expect("meminfo");
        assert!((1 << 26..1 << 40).contains(&limit), "{limit}");
    }

    /// `expected_transactions` reaches every shard's maps, split over the shards, on a first
    /// start (recovered from the snapshots made from the CSVs) and on a start whose engine
    /// settings changed (the snapshots read again under them); 0 leaves the maps to grow.
    #[test]
    fn expected_transactions_size_every_shards_maps() {
        let check = |loaded: &Loaded, expected: u64, shards: usize| {
            assert_eq!(loaded.shards.len(), shards);
            for shard in &loaded.shards {
                let capacity = shard.transaction_capacity();
                if expected == 0 {
                    assert!(capacity < 1_000, "{capacity}");
                } else {
                    let share = expected as usize / shards;
                    // Rounded up to whole tables: at most about twice the share.
                    assert!(
                        (share..=3 * share).contains(&capacity),
                        "{capacity} for {share}"
                    );
                }
            }
        };
        for (expected, shards) in [(0, 2), (300_000, 2), (300_000, 3)] {
            let dir = tempfile::tempdir().expect("tmp");
            let config = Config {
                data_dir: dir.path().to_owned(),
                durability: Durability::None,
                expected_transactions: expected,
                ..Config::default()
            };
            check(&load(&config, shards).expect("loads"), expected, shards);
            let config = Config {
                idempotency_window_secs: 2 * 86_400,
                ..config
            };
            check(
                &load(&config, shards).expect("loads again"),
                expected,
                shards,
            );
        }
    }
}
