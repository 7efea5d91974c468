//! PostgreSQL for the scale-out tests: is a server there, and a fresh database per test run.
//!
//! `.ci/run` starts the Debian cluster and creates the login role `switch` (password `switch`,
//! CREATEDB); on a machine without it the tests that need PostgreSQL skip with a message:
//!
//! ```no_run
//! let Some(url) = tests::pg::pg_test_url("my_test") else {
//!     return; // skipped, with the reason printed (or failed under SWITCH_TEST_REQUIRE_EXTERNAL=1)
//! };
//! let db = tests::pg::TestDatabase::create(&url); // dropped at the end of the test
//! // ... switch serve --store db.url ...
//! ```
//!
//! The functions here are synchronous (each runs its own small runtime on a helper thread), so
//! they can be called from plain and `#[tokio::test]` tests alike.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the tests look for PostgreSQL unless `SWITCH_TEST_PG_URL` says otherwise.
pub const DEFAULT_PG_URL: &str = "postgres://switch:switch@127.0.0.1:5432/postgres";

/// Names of the databases made here start with this, then the creating process id.
const PREFIX: &str = "switch_test_";

/// `SWITCH_TEST_PG_URL`, or [`DEFAULT_PG_URL`].
pub fn pg_url_setting() -> String {
    std::env::var("SWITCH_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
}

/// The URL of a PostgreSQL server that answers `SELECT 1` within 3 s with these credentials
/// ([`pg_url_setting`]), or `None` after [`crate::skip`] (naming `test`) said why.
pub fn pg_test_url(test: &str) -> Option<String> {
    match probe() {
        Ok(url) => Some(url),
        Err(why) => {
            crate::skip(format_args!(
                "{test}: no PostgreSQL ({why}; set SWITCH_TEST_PG_URL; .ci/run starts one)"
            ));
            None
        }
    }
}

/// Like [`pg_test_url`], with the reason when there is none.
pub fn probe() -> Result<String, String> {
    let url = pg_url_setting();
    let u = url.clone();
    block_on(async move {
        let client = connect(&u).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| format!("{}: SELECT 1: {e}", redact(&u)))?;
        Ok(())
    })?;
    Ok(url)
}

/// Creates a uniquely named, empty database on the server of `url` and returns the URL that
/// names it (same credentials and parameters). Nothing drops it: prefer [`TestDatabase`],
/// which does; databases of test processes no longer running are dropped by the next call.
pub fn fresh_database(url: &str) -> String {
    TestDatabase::create(url).keep()
}

/// A database made for one test, dropped (best effort, `WITH (FORCE)`) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL naming the database.
    pub url: String,
    /// The database's name.
    pub name: String,
    /// The URL it was made through (the maintenance database).
    admin_url: String,
    keep: bool,
}

impl TestDatabase {
    /// Creates a fresh database on the server of `url` (panics with the reason if it cannot).
    pub fn create(url: &str) -> TestDatabase {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "{PREFIX}{pid}_{}_{:x}",
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos & 0xff_ffff
        );
        let admin = url.to_owned();
        let n = name.clone();
        block_on(async move {
            let client = connect(&admin).await?;
            drop_stale(&client).await;
            client
                .simple_query(&format!("CREATE DATABASE \"{n}\""))
                .await
                .map_err(|e| format!("CREATE DATABASE {n}: {e}"))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        TestDatabase {
            url: with_database(url, &name),
            name,
            admin_url: url.to_owned(),
            keep: false,
        }
    }

    /// Leaves the database in place and returns its URL.
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.url.clone()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let r = block_on(async move {
            let client = connect(&admin).await?;
            client
                .simple_query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        });
        if let Err(e) = r {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Drops `switch_test_<pid>_...` databases whose process is gone (a test that was killed).
async fn drop_stale(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'switch\\_test\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = client
                .simple_query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// `url` with its database replaced by `db`: the path of a `postgres://` URL, or `dbname=` of a
/// key=value connection string.
pub fn with_database(url: &str, db: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &url[rest_start..];
        let (before_query, query) = match rest.find('?') {
            Some(q) => (&rest[..q], &rest[q..]),
            None => (rest, ""),
        };
        let authority = match before_query.find('/') {
            Some(slash) => &before_query[..slash],
            None => before_query,
        };
        format!("{}{authority}/{db}{query}", &url[..rest_start])
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|kv| !kv.starts_with("dbname="))
            .collect();
        format!("{} dbname={db}", kept.join(" "))
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let rest = &url[scheme_end + 3..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            )
        }
        _ => url.to_owned(),
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let what = redact(url);
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(3),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| format!("{what}: no answer within 3 s"))?
    .map_err(|e| format!("{what}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Runs `f` to completion on a current-thread runtime of its own thread (callable inside or
/// outside a runtime).
fn block_on<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(f)
    })
    .join()
    .map_err(|_| "the PostgreSQL helper thread panicked".to_owned())?
}

/// A switch on the PostgreSQL store: a fresh database on the server of `url` with these data
/// files (CSV text, header included) imported by `switch import`'s own code, one store worker.
/// Keep the database as long as the switch runs.
pub async fn start_switch(
    url: &str,
    accounts_csv: &str,
    orders_csv: &str,
) -> (crate::TestSwitch, TestDatabase) {
    let db = TestDatabase::create(url);
    let data = tempfile::tempdir().expect("temp dir");
    std::fs::write(data.path().join("accounts.csv"), accounts_csv).expect("write accounts");
    std::fs::write(data.path().join("orders.csv"), orders_csv).expect("write orders");
    switch::pg::import(&db.url, data.path())
        .await
        .unwrap_or_else(|e| panic!("import into the test database: {e:#}"));
    let store = db.url.clone();
    let sw = crate::TestSwitch::start_with(accounts_csv, orders_csv, |c| {
        c.store = Some(store);
        c.shards = 1;
    })
    .await;
    (sw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u@h/db?sslmode=disable", "x"),
            "postgresql://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("host=h user=u dbname=postgres", "x"),
            "host=h user=u dbname=x"
        );
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://switch:secret@127.0.0.1:5432/db"),
            "postgres://switch:***@127.0.0.1:5432/db"
        );
        assert_eq!(redact("postgres://h:5432/db"), "postgres://h:5432/db");
        assert_eq!(redact("host=h password=secret"), "host=h password=***");
    }

    /// Against the real server when there is one (skips otherwise): a fresh database exists,
    /// is empty and writable, and is gone once dropped.
    #[test]
    fn fresh_database_is_made_and_dropped() {
        let Some(url) = pg_test_url("fresh_database_is_made_and_dropped") else {
            return;
        };
        let db = TestDatabase::create(&url);
        let u = db.url.clone();
        let tables = block_on(async move {
            let c = connect(&u).await?;
            c.simple_query("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
                .await
                .map_err(|e| e.to_string())?;
            let row = c
                .query_one(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get::<_, i64>(0))
        })
        .expect("use the fresh database");
        assert_eq!(tables, 1);
        let name = db.name.clone();
        drop(db);
        let exists = block_on(async move {
            let c = connect(&url).await?;
            let row = c
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname = $1",
                    &[&name],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get::<_, i64>(0))
        })
        .expect("query");
        assert_eq!(exists, 0, "dropped");
    }
}
