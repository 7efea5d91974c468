//! `switch import`: the CSV data files into the store, all or nothing.

use std::path::Path;

use anyhow::Context;

/// Migrates, then loads `accounts.csv` and `orders.csv` from `data_dir` in one transaction.
/// A card or order already in the store is refused, naming it (the card masked), and nothing
/// is loaded. Each account gets an opening ledger row with its balance. Returns the numbers
/// of accounts and orders loaded.
pub async fn import(url: &str, data_dir: &Path) -> anyhow::Result<(usize, usize)> {
    import_inner(url, data_dir).await.map_err(super::scrub)
}

async fn import_inner(url: &str, data_dir: &Path) -> anyhow::Result<(usize, usize)> {
    let read = |name: &str| {
        let path = data_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let accounts_file = data_dir.join("accounts.csv").display().to_string();
    let orders_file = data_dir.join("orders.csv").display().to_string();
    let accounts = routing::data::parse_accounts(&accounts_file, &read("accounts.csv")?)?;
    let orders = routing::data::parse_orders(&orders_file, &read("orders.csv")?)?;

    let config = super::parse_url(url)?;
    let mut client = super::connect(&config).await?;
    super::migrate(&client).await?;
    let tx = client.transaction().await?;

    let pans: Vec<String> = accounts
        .iter()
        .map(|a| super::worker::pan_string(&a.pan))
        .collect();
    let taken = tx
        .query(
            "SELECT pan FROM accounts WHERE pan = ANY($1::text[]) ORDER BY pan LIMIT 1",
            &[&pans],
        )
        .await?;
    if let Some(row) = taken.first() {
        let pan: &str = row.get(0);
        let a = accounts
            .iter()
            .find(|a| a.pan.as_bytes() == pan.as_bytes())
            .map(|a| a.pan.masked().to_string())
            .unwrap_or_default();
        anyhow::bail!("{accounts_file}: card {a} is already in the store; nothing imported");
    }
    let merchants: Vec<String> = orders
        .iter()
        .map(|o| String::from_utf8_lossy(o.merchant_id.as_bytes()).into_owned())
        .collect();
    let ids: Vec<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    let taken = tx
        .query(
            "SELECT o.merchant_id, o.order_id FROM orders o
             JOIN unnest($1::text[], $2::text[]) AS r(m, i)
               ON o.merchant_id = r.m AND o.order_id = r.i
             LIMIT 1",
            &[&merchants, &ids],
        )
        .await?;
    if let Some(row) = taken.first() {
        let (m, i): (&str, &str) = (row.get(0), row.get(1));
        anyhow::bail!(
            "{orders_file}: order {i:?} of merchant {m:?} is already in the store; nothing imported"
        );
    }

    // New rows start with no holds and nothing counted towards the daily limit: the columns'
    // defaults (the same as `routing::AccountRow::from`).
    const CHUNK: usize = 10_000;
    for (chunk, pan) in accounts.chunks(CHUNK).zip(pans.chunks(CHUNK)) {
        let expiry: Vec<String> = chunk.iter().map(|a| a.expiry.to_string()).collect();
        let status: Vec<&str> = chunk.iter().map(|a| a.status.as_str()).collect();
        let currency: Vec<i16> = chunk.iter().map(|a| a.currency as i16).collect();
        let balance: Vec<i64> = chunk.iter().map(|a| a.balance).collect();
        let limit: Vec<i64> = chunk.iter().map(|a| a.daily_limit).collect();
        tx.execute(
            "INSERT INTO accounts (pan, expiry, status, currency, balance, daily_limit)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int8[], $6::int8[])",
            &[&pan, &expiry, &status, &currency, &balance, &limit],
        )
        .await
        .context("loading accounts (a card already there, imported concurrently?)")?;
        tx.execute(
            "INSERT INTO ledger (pan, at, balance_delta, held_delta, balance, held)
             SELECT u.pan, $2, u.b, 0, u.b, 0 FROM unnest($1::text[], $3::int8[]) AS u(pan, b)",
            &[&pan, &super::worker::now().unix_secs(), &balance],
        )
        .await?;
    }
    for (chunk, (merchants, ids)) in orders
        .chunks(CHUNK)
        .zip(merchants.chunks(CHUNK).zip(ids.chunks(CHUNK)))
    {
        let amount: Vec<i64> = chunk.iter().map(|o| o.amount).collect();
        let currency: Vec<i16> = chunk.iter().map(|o| o.currency as i16).collect();
        let status: Vec<&str> = chunk.iter().map(|o| o.status.as_str()).collect();
        tx.execute(
            "INSERT INTO orders (merchant_id, order_id, amount, currency, status)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int2[], $5::text[])",
            &[&merchants, &ids, &amount, &currency, &status],
        )
        .await
        .context("loading orders (an order already there, imported concurrently?)")?;
    }
    tx.commit().await.context("committing the import")?;
    Ok((accounts.len(), orders.len()))
}
