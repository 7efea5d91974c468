//! Wall-clock helpers: DE 7 (transmission date and time, `MMDDhhmmss` in UTC) and the current
//! `YYMM` for card expiry checks. No date crate: two conversions are all loadgen needs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `(year, month 1-12, day 1-31)` of a day count since 1970-01-01 (proleptic Gregorian,
/// H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// DE 7 for an instant: `MMDDhhmmss` (UTC) as a number (the leading zero of the month is
/// restored by the fixed-width encoding).
pub fn de7(unix: i64) -> u64 {
    let (_, month, day) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400) as u64;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    u64::from(month) * 100_000_000 + u64::from(day) * 1_000_000 + h * 10_000 + m * 100 + s
}

/// The current month as `(year, month)`, to tell expired cards (expiry `YYMM` before it).
pub fn year_month(unix: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(unix.div_euclid(86_400));
    (y, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn de7_formats_utc() {
        // 2025-11-26T10:45:00Z
        assert_eq!(de7(1_764_153_900), 1_126_104_500);
        // 1970-01-01T00:00:00Z
        assert_eq!(de7(0), 101_000_000);
        // 2024-02-29T23:59:59Z
        assert_eq!(de7(1_709_251_199), 229_235_959);
    }

    #[test]
    fn year_month_of_instants() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(1_764_153_900), (2025, 11));
    }
}
