//! The embedded store's starting state: `accounts.csv` and `orders.csv` in the data directory
//! (PROTOCOL.md section 3), parsed by `routing::data` and dealt out to the shards that own each
//! card and order. With neither file present, a demo set is generated first and the log says so.

use std::path::Path;

use anyhow::Context;
use routing::{EngineConfig, Shard};

use crate::config::Config;

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

/// Loads the data directory into `shard_count` shards.
pub fn load(config: &Config, shard_count: usize) -> anyhow::Result<Vec<Shard>> {
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
    let engine = EngineConfig {
        idempotency_window_secs: config.idempotency_window_secs,
        bins: config.bin_table()?,
    };
    let (n_accounts, n_orders) = (accounts.len(), orders.len());
    let shards = routing::build_shards(shard_count, &engine, accounts, orders)?;
    tracing::info!(
        accounts = n_accounts,
        orders = n_orders,
        shards = shard_count,
        "store loaded"
    );
    Ok(shards)
}
