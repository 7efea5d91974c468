//! The switch's log: the operator's filter (`--log`, tracing's `EnvFilter` syntax restricted
//! to levels and `target=level` pairs, so that a misspelt level is an error rather than a
//! silent log), with one limit no filter lifts.
//!
//! Some libraries log the values they are given below `info`: tokio-postgres prints every
//! statement's parameters at `debug`, and the scale-out store passes PANs as parameters. A
//! filter such as `debug` (or `tokio_postgres=trace`) would then write full card numbers to
//! the log. So events from those libraries' targets below `info` are dropped whatever the
//! filter says; their warnings and errors still show.

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{fmt, Layer, Registry};

/// Targets (and their submodules) that log values, card data among them, below `info`.
const VALUE_LOGGING_TARGETS: [&str; 1] = ["tokio_postgres"];

/// The log: `filter` (an error names what it could not parse), events written to `writer`,
/// in colour when `ansi`.
pub fn subscriber<W>(
    filter: &str,
    writer: W,
    ansi: bool,
) -> anyhow::Result<impl Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    check_directives(filter)?;
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("log: {e}"))?;
    let layer = fmt::layer()
        .with_target(false)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_filter(filter)
        .with_filter(FilterFn::new(may_show));
    Ok(Registry::default().with(layer))
}

/// Refuses a filter that would quietly log nothing: an empty one, or a directive that is
/// neither a level nor `target=level` (`inof` would otherwise read as "everything from the
/// target `inof`", and hide every other line, errors included).
fn check_directives(filter: &str) -> anyhow::Result<()> {
    let mut directives = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .peekable();
    if directives.peek().is_none() {
        anyhow::bail!("log: empty filter (give a level such as `info`, or `target=level` pairs)");
    }
    for d in directives {
        if !d.contains('=') && d.parse::<tracing::level_filters::LevelFilter>().is_err() {
            anyhow::bail!(
                "log: `{d}` is neither a level (error, warn, info, debug, trace, off) nor `target=level`"
            );
        }
    }
    Ok(())
}

/// Whether an event may be written at all (module docs).
fn may_show(meta: &Metadata<'_>) -> bool {
    // More verbose levels compare greater.
    *meta.level() <= Level::INFO || !logs_values(meta.target())
}

fn logs_values(target: &str) -> bool {
    VALUE_LOGGING_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn logged(filter: &str) -> String {
        let out = Captured::default();
        let subscriber = subscriber(filter, out.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            // What tokio-postgres logs before each statement (forwarded from the `log` crate
            // under its module path).
            tracing::debug!(target: "tokio_postgres::query", "executing statement s1 with parameters: [\"4761739001010010\"]");
            tracing::warn!(target: "tokio_postgres::connection", "connection warning");
            tracing::debug!(target: "tokio_postgres_like", "another crate");
            tracing::debug!(target: "switch::pg", "switch debug line");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn no_filter_shows_the_values_tokio_postgres_logs() {
        for filter in [
            "debug",
            "trace",
            "tokio_postgres=trace",
            "tokio_postgres::query=debug",
        ] {
            let log = logged(filter);
            assert!(!log.contains("4761739001010010"), "{filter}: {log}");
        }
        let log = logged("debug");
        assert!(log.contains("connection warning"), "{log}");
        assert!(log.contains("another crate"), "{log}");
        assert!(log.contains("switch debug line"), "{log}");
    }

    #[test]
    fn a_bad_filter_is_an_error_naming_the_setting() {
        for bad in ["switch=loud", "inof", "", " , ", "warn,switch"] {
            let e = subscriber(bad, std::io::sink, false)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} refused"));
            assert!(e.to_string().starts_with("log: "), "{e}");
        }
        for good in [
            "info",
            "WARN",
            "off",
            "switch=debug",
            "info,tokio_postgres=warn",
            "3",
        ] {
            subscriber(good, std::io::sink, false).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }
}
