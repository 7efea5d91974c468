//! Time as the engine sees it: the switch's wall clock passed in as an argument (never read
//! here), the UTC calendar day that daily limits count in, and card expiry dates.

use std::fmt;

/// The switch's wall clock at the moment an input is handled, in Unix seconds (UTC).
///
/// The engine never reads a clock: tests and a journal replay hand it any instant, so every
/// rule that depends on time (daily limits, expiry, the idempotency window) is reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    unix_secs: i64,
}

impl Now {
    /// The instant `unix_secs` seconds after 1970-01-01T00:00:00Z.
    pub const fn from_unix_secs(unix_secs: i64) -> Self {
        Self { unix_secs }
    }

    /// Seconds since the Unix epoch.
    pub const fn unix_secs(self) -> i64 {
        self.unix_secs
    }

    /// The UTC calendar day, as days since 1970-01-01 (daily limits reset when it changes).
    pub const fn utc_day(self) -> i64 {
        self.unix_secs.div_euclid(86_400)
    }

    /// `(year, month 1-12, day 1-31)` of the UTC date.
    pub fn utc_date(self) -> (i64, u8, u8) {
        civil_from_days(self.utc_day())
    }

    /// This instant plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: u64) -> Self {
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        Self {
            unix_secs: self.unix_secs.saturating_add(secs),
        }
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`), so no date crate is needed for two lookups per request.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction; the fallbacks are never taken.
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// A card expiry date, YYMM (ISO 8583 DE 14 and the data files' `expiry`), years 2000-2099.
/// A card is valid through the last day of its expiry month.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Yymm {
    // Field order makes the derived `Ord` chronological.
    yy: u8,
    mm: u8,
}

impl Yymm {
    /// January 2000, the earliest date a `Yymm` can hold.
    pub const EARLIEST: Self = Self { yy: 0, mm: 1 };

    /// `None` unless `yy` is 0-99 and `mm` 1-12.
    pub const fn new(yy: u8, mm: u8) -> Option<Self> {
        if yy <= 99 && mm >= 1 && mm <= 12 {
            Some(Self { yy, mm })
        } else {
            None
        }
    }

    /// From four ASCII digits `YYMM`; `None` for anything else or a month outside 01-12.
    pub fn from_digits(d: &[u8]) -> Option<Self> {
        match *d {
            [y1, y2, m1, m2] if d.iter().all(u8::is_ascii_digit) => Self::new(
                (y1 - b'0') * 10 + (y2 - b'0'),
                (m1 - b'0') * 10 + (m2 - b'0'),
            ),
            _ => None,
        }
    }

    /// The four-digit year.
    pub fn year(self) -> i64 {
        2000 + i64::from(self.yy)
    }

    /// The month, 1-12.
    pub fn month(self) -> u8 {
        self.mm
    }

    /// Whether the card has expired at `now`: its expiry month is before the current UTC
    /// month.
    pub fn is_expired_at(self, now: Now) -> bool {
        let (year, month, _) = now.utc_date();
        (self.year(), self.mm) < (year, month)
    }
}

impl fmt::Display for Yymm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}{:02}", self.yy, self.mm)
    }
}

impl fmt::Debug for Yymm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Yymm({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(Now::from_unix_secs(0).utc_date(), (1970, 1, 1));
        assert_eq!(Now::from_unix_secs(951_782_400).utc_date(), (2000, 2, 29));
        assert_eq!(Now::from_unix_secs(1_749_988_800).utc_date(), (2025, 6, 15));
        assert_eq!(Now::from_unix_secs(-1).utc_date(), (1969, 12, 31));
        assert_eq!(Now::from_unix_secs(-1).utc_day(), -1);
        assert_eq!(
            Now::from_unix_secs(1_767_225_599).utc_date(),
            (2025, 12, 31)
        );
        assert_eq!(Now::from_unix_secs(1_767_225_600).utc_date(), (2026, 1, 1));
    }

    #[test]
    fn expiry() {
        let now = Now::from_unix_secs(1_749_988_800); // 2025-06-15
        assert!(Yymm::from_digits(b"2505").unwrap().is_expired_at(now));
        assert!(!Yymm::from_digits(b"2506").unwrap().is_expired_at(now));
        assert!(!Yymm::from_digits(b"3001").unwrap().is_expired_at(now));
        assert!(Yymm::from_digits(b"2412").unwrap().is_expired_at(now));
        assert_eq!(Yymm::from_digits(b"2513"), None);
        assert_eq!(Yymm::from_digits(b"2500"), None);
        assert_eq!(Yymm::from_digits(b"251"), None);
        assert_eq!(Yymm::from_digits(b"25a1"), None);
        assert_eq!(Yymm::from_digits(b"0912").unwrap().to_string(), "0912");
    }
}
