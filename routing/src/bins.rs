//! The BIN table: what the switch does with a card by its leading digits (the issuer
//! identification number, "BIN"), before looking at the account's own status.
//!
//! A table is a list of ranges of PAN prefixes of 6 to 8 digits (`low..=high`, both of the
//! same length). The most specific range wins: an 8-digit range inside a 6-digit one
//! overrides it. Ranges of the same length must not overlap. A PAN no range covers is
//! served, so the default, empty table serves every card.
//!
//! [`BinAction`] is `#[non_exhaustive]` because a production switch routes some BINs to an
//! upstream issuer host instead of deciding locally: a future `Forward(upstream)` variant
//! would make the account shard hand the request to an upstream link, its answer coming back
//! as an input like any other. v1 decides everything locally.

use crate::message::ResponseCode;
use crate::pan::Pan;

/// What to do with cards of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BinAction {
    /// Decide locally from the card's account (the default).
    Serve,
    /// Decline every request of the range with this code (e.g. 05 or 57), right after the
    /// unknown-card check (14).
    Decline(ResponseCode),
}

/// One range as it comes from configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinRangeEntry {
    /// Lowest prefix, 6 to 8 digits.
    pub low: String,
    /// Highest prefix, as many digits as `low`.
    pub high: String,
    /// What to do with cards in the range.
    pub action: BinAction,
}

/// Why a BIN table was refused; `index` is the entry's position in the list (0-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("BIN range #{index}: {reason}")]
pub struct BinTableError {
    /// Position of the offending entry.
    pub index: usize,
    /// What is wrong with it.
    pub reason: BinTableErrorReason,
}

/// What is wrong with a BIN range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BinTableErrorReason {
    /// A bound holds a character other than a digit.
    #[error("bounds must be digits only")]
    NotDigits,
    /// A bound is not 6 to 8 digits long.
    #[error("bounds must be 6 to 8 digits, found {0}")]
    Length(usize),
    /// `low` and `high` differ in length.
    #[error("low and high must have the same number of digits")]
    LengthMismatch,
    /// `low` is above `high`.
    #[error("low is above high")]
    LowAboveHigh,
    /// The range overlaps an earlier one of the same length.
    #[error("overlaps range #{0}")]
    Overlap(usize),
    /// `Decline(00)` would approve without looking at the account.
    #[error("a decline needs a decline code, not 00")]
    ApprovalAsDecline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BinRange {
    low: u32,
    high: u32,
    action: BinAction,
    index: usize,
}

/// A validated BIN table. The default is empty: every card is served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinTable {
    /// `by_len[0]` holds 6-digit ranges, `[1]` 7-digit, `[2]` 8-digit, each sorted by `low`.
    by_len: [Vec<BinRange>; 3],
}

impl BinTable {
    /// The table that serves every card.
    pub fn serve_all() -> Self {
        Self::default()
    }

    /// Validates and builds a table.
    pub fn from_entries(entries: &[BinRangeEntry]) -> Result<Self, BinTableError> {
        let mut table = Self::default();
        for (index, e) in entries.iter().enumerate() {
            let err = |reason| BinTableError { index, reason };
            let (low, len) = parse_bound(&e.low).map_err(err)?;
            let (high, high_len) = parse_bound(&e.high).map_err(err)?;
            if len != high_len {
                return Err(err(BinTableErrorReason::LengthMismatch));
            }
            if low > high {
                return Err(err(BinTableErrorReason::LowAboveHigh));
            }
            if e.action == BinAction::Decline(ResponseCode::Approved) {
                return Err(err(BinTableErrorReason::ApprovalAsDecline));
            }
            let ranges = &mut table.by_len[len - 6];
            if let Some(other) = ranges.iter().find(|r| r.low <= high && low <= r.high) {
                return Err(err(BinTableErrorReason::Overlap(other.index)));
            }
            ranges.push(BinRange {
                low,
                high,
                action: e.action,
                index,
            });
        }
        for ranges in &mut table.by_len {
            ranges.sort_by_key(|r| r.low);
        }
        Ok(table)
    }

    /// The action for `pan`: the most specific range covering it, else [`BinAction::Serve`].
    pub fn action(&self, pan: &Pan) -> BinAction {
        let digits = pan.as_bytes();
        for len in (6..=8).rev() {
            let (Some(prefix), Some(ranges)) = (digits.get(..len), self.by_len.get(len - 6)) else {
                continue;
            };
            let Some(p) = prefix_value(prefix) else {
                continue;
            };
            let i = ranges.partition_point(|r| r.low <= p);
            if let Some(r) = i.checked_sub(1).and_then(|j| ranges.get(j)) {
                if p <= r.high {
                    return r.action;
                }
            }
        }
        BinAction::Serve
    }

    /// Whether the table has no range.
    pub fn is_empty(&self) -> bool {
        self.by_len.iter().all(Vec::is_empty)
    }
}

fn prefix_value(d: &[u8]) -> Option<u32> {
    d.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn parse_bound(s: &str) -> Result<(u32, usize), BinTableErrorReason> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BinTableErrorReason::NotDigits);
    }
    if !(6..=8).contains(&s.len()) {
        return Err(BinTableErrorReason::Length(s.len()));
    }
    let v = prefix_value(s.as_bytes()).ok_or(BinTableErrorReason::NotDigits)?;
    Ok((v, s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(low: &str, high: &str, action: BinAction) -> BinRangeEntry {
        BinRangeEntry {
            low: low.into(),
            high: high.into(),
            action,
        }
    }

    fn pan(s: &str) -> Pan {
        s.parse().unwrap()
    }

    #[test]
    fn default_serves_everything() {
        let t = BinTable::default();
        assert!(t.is_empty());
        assert_eq!(t.action(&pan("4111111111111111")), BinAction::Serve);
    }

    #[test]
    fn most_specific_range_wins() {
        let t = BinTable::from_entries(&[
            entry(
                "411100",
                "411199",
                BinAction::Decline(ResponseCode::DoNotHonour),
            ),
            entry("41111100", "41111199", BinAction::Serve),
            entry("5", "5", BinAction::Serve),
        ]);
        // The third entry is too short.
        assert_eq!(
            t.unwrap_err(),
            BinTableError {
                index: 2,
                reason: BinTableErrorReason::Length(1)
            }
        );
        let t = BinTable::from_entries(&[
            entry(
                "411100",
                "411199",
                BinAction::Decline(ResponseCode::DoNotHonour),
            ),
            entry("41111100", "41111199", BinAction::Serve),
            entry(
                "510000",
                "519999",
                BinAction::Decline(ResponseCode::NotPermitted),
            ),
        ])
        .unwrap();
        assert_eq!(t.action(&pan("4111111111111111")), BinAction::Serve);
        assert_eq!(
            t.action(&pan("4111201111111111")),
            BinAction::Decline(ResponseCode::DoNotHonour)
        );
        assert_eq!(
            t.action(&pan("5105105105105100")),
            BinAction::Decline(ResponseCode::NotPermitted)
        );
        assert_eq!(t.action(&pan("5200000000000007")), BinAction::Serve);
        assert_eq!(t.action(&pan("4000000000000002")), BinAction::Serve);
    }

    #[test]
    fn validation() {
        let serve = BinAction::Serve;
        let bad = |entries: &[BinRangeEntry]| BinTable::from_entries(entries).unwrap_err().reason;
        assert_eq!(
            bad(&[entry("41a100", "411199", serve)]),
            BinTableErrorReason::NotDigits
        );
        assert_eq!(
            bad(&[entry("411100", "4111999", serve)]),
            BinTableErrorReason::LengthMismatch
        );
        assert_eq!(
            bad(&[entry("411199", "411100", serve)]),
            BinTableErrorReason::LowAboveHigh
        );
        assert_eq!(
            bad(&[entry("123456789", "123456789", serve)]),
            BinTableErrorReason::Length(9)
        );
        assert_eq!(
            bad(&[
                entry("411100", "411199", serve),
                entry("411150", "411250", serve)
            ]),
            BinTableErrorReason::Overlap(0)
        );
        assert_eq!(
            bad(&[entry(
                "411100",
                "411199",
                BinAction::Decline(ResponseCode::Approved)
            )]),
            BinTableErrorReason::ApprovalAsDecline
        );
    }
}
