//! Versioned migrations, and the task that watches the database and purges expired rows.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::Client;

/// The migrations, in order; a version is applied once and never edited afterwards.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (
        2,
        include_str!("../../migrations/0002_c_collation_and_code_blocks.sql"),
    ),
    (3, include_str!("../../migrations/0003_records.sql")),
];

/// Applies the migrations not yet applied, in one transaction under an advisory lock, so that
/// replicas starting together neither race nor half-apply (lock key 85831: "8583" + "1").
/// Returns the versions applied.
pub async fn migrate(client: &Client) -> anyhow::Result<Vec<i32>> {
    migrate_inner(client).await.map_err(super::scrub)
}

async fn migrate_inner(client: &Client) -> anyhow::Result<Vec<i32>> {
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(85831);
             CREATE TABLE IF NOT EXISTS switch_schema_migrations (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await
        .context("migrating the store: taking the migration lock")?;
    let result = apply_pending(client).await;
    match result {
        Ok(applied) => {
            client
                .batch_execute("COMMIT")
                .await
                .context("migrating the store: commit")?;
            if !applied.is_empty() {
                tracing::info!(versions = ?applied, "store schema migrated");
            }
            Ok(applied)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn apply_pending(client: &Client) -> anyhow::Result<Vec<i32>> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM switch_schema_migrations",
            &[],
        )
        .await?;
    let current: i32 = row.get(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        anyhow::bail!(
            "the store's schema is version {current}, newer than this switch knows ({newest}): upgrade the switch"
        );
    }
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("applying store migration {version}"))?;
        client
            .execute(
                "INSERT INTO switch_schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await?;
        applied.push(version);
    }
    Ok(applied)
}

/// How often the probe checks the database, and how often it purges.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Checks the database every second (raising `unreachable` when it does not answer within a
/// second, lowering it once it does), and deletes the records whose every part is past its
/// window every minute (every replica does; the deletes are idempotent).
pub async fn probe(config: super::StoreConfig, client: Client, unreachable: Arc<AtomicBool>) {
    let mut client = Some(client);
    let mut last_purge = Instant::now();
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match tokio::time::timeout(PROBE_EVERY, super::connect(&config)).await {
                Ok(Ok(c)) => Some(c),
                _ => None,
            };
        }
        let Some(c) = client.as_ref() else {
            super::set_unreachable(&unreachable, true);
            continue;
        };
        let ok = matches!(
            tokio::time::timeout(PROBE_EVERY, c.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        );
        super::set_unreachable(&unreachable, !ok);
        if !ok {
            client = None;
            continue;
        }
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            if let Err(e) = purge(c).await {
                tracing::warn!(error = %e, "purging expired store entries failed");
            }
        }
    }
}

async fn purge(client: &Client) -> anyhow::Result<()> {
    let now = super::worker::now().unix_secs();
    let records = client
        .execute("DELETE FROM records WHERE expires_at <= $1", &[&now])
        .await?;
    if records > 0 {
        tracing::debug!(records, "purged expired store records");
    }
    Ok(())
}
