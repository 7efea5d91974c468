//! A deterministic demo data set, for first start and load tests.
//!
//! `demo_data(accounts, orders, seed)` (or the writer-based functions) produce `accounts.csv`
//! and `orders.csv` in the format of [`crate::data`]; the same arguments give the same bytes
//! on every platform. A load generator can rely on this shape:
//!
//! **Accounts.** Row `i` (0-based, file order; line `i + 2`) is [`demo_account`]`(i, seed)`:
//! - PAN: Luhn-valid and unique, over six BINs: Visa `453201`, `476173` (16 digits, 45%),
//!   Mastercard `510510`, `545454` (16 digits, 40%), Amex `371449`, `378282` (15 digits,
//!   15%). Unique for up to [`MAX_DEMO_ACCOUNTS`] rows.
//! - status by `i % 100`: 0-89 `active`, 90-93 `blocked`, 94-96 `lost`, 97-99 `stolen`.
//! - expiry: `i % 100` in 87-89 expired (years 2019-2023), every other row valid (years
//!   2030-2039). So a card is usable iff its status is `active` and its expiry is in the
//!   future, i.e. `i % 100 < 87`.
//! - currency by `i % 20`: 0-16 `840`, 17 `978`, 18 `392`, 19 `048`.
//! - balance and daily limit: 1,000,000 major units each (`1000000.00`, `1000000`,
//!   `1000000.000`), enough for long load tests.
//!
//! **Orders.** Row `j` is [`demo_order`]`(j, seed)`:
//! - order id `ORD` + 9 digits (`ORD000000001` for `j = 0`), merchant id
//!   `DEMOMERCHANT001`..`DEMOMERCHANT020` (15 characters) by `j % 20`.
//! - currency by `j % 20` as for accounts (so a usable card of the same currency exists when
//!   there are at least 20 accounts); amount between 1 and 500 major units.
//! - status by `j % 10`: 0-7 `open`, 8 `paid`, 9 `cancelled`.

use std::io::Write;

use crate::data::{format_amount, Account, CardStatus, Order, OrderStatus};
use crate::data::{ACCOUNTS_HEADER, ORDERS_HEADER};
use crate::message::MerchantId;
use crate::pan::Pan;
use crate::rng::{mix64, SplitMix64};
use crate::time::Yymm;
use crate::{currency, luhn};

/// Largest demo account count with unique PANs (the body digits of a 15-digit Amex PAN).
pub const MAX_DEMO_ACCOUNTS: usize = 100_000_000;
/// Number of distinct demo merchants.
pub const DEMO_MERCHANTS: usize = 20;

/// `(BIN, PAN length)` of the demo cards; index by the weights in the module docs.
pub const DEMO_BINS: [(&str, usize); 6] = [
    ("453201", 16),
    ("476173", 16),
    ("510510", 16),
    ("545454", 16),
    ("371449", 15),
    ("378282", 15),
];

/// Balance and daily limit of every demo card, in major units.
pub const DEMO_BALANCE_MAJOR: i64 = 1_000_000;

/// Why demo data could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// More accounts than unique PANs can be made for.
    #[error("{requested} demo accounts requested, at most {MAX_DEMO_ACCOUNTS} supported")]
    TooManyAccounts {
        /// The count asked for.
        requested: usize,
    },
    /// The writer failed.
    #[error("writing demo data: {0}")]
    Io(#[from] std::io::Error),
}

fn currency_by_index(i: usize) -> u16 {
    match i % 20 {
        17 => 978,
        18 => 392,
        19 => 48,
        _ => 840,
    }
}

fn scale(currency: u16) -> i64 {
    10i64.pow(u32::from(currency::exponent(currency).unwrap_or(2)))
}

/// Row `index` of the demo `accounts.csv` (see the module docs for its shape).
pub fn demo_account(index: usize, seed: u64) -> Account {
    let i = index as u64;
    let mut rng = SplitMix64::new(seed ^ mix64(i.wrapping_add(0xACC0)));
    let bin = match rng.below(20) {
        w @ 0..=8 => w % 2,
        w @ 9..=16 => 2 + w % 2,
        w => 4 + w % 2,
    };
    let (prefix, len) = DEMO_BINS[bin as usize];
    // A bijection of the row index modulo 10^k (the multiplier is coprime with 10), so the
    // bodies of distinct rows differ while looking scattered.
    let body_len = len - prefix.len() - 1;
    let modulus = 10u128.pow(body_len as u32);
    let offset = u128::from(mix64(seed)) % modulus;
    let body = (u128::from(i) * 7_654_321 + offset) % modulus;
    let mut digits = format!("{prefix}{body:0body_len$}").into_bytes();
    // The payload is all digits, so a check digit always exists.
    digits.push(luhn::check_digit(&digits).unwrap_or(b'0'));
    let pan = Pan::from_trusted_digits(&digits);

    let r = index % 100;
    let status = match r {
        0..=89 => CardStatus::Active,
        90..=93 => CardStatus::Blocked,
        94..=96 => CardStatus::Lost,
        _ => CardStatus::Stolen,
    };
    let yy = if (87..=89).contains(&r) {
        rng.between(19, 23)
    } else {
        rng.between(30, 39)
    };
    let mm = rng.between(1, 12);
    // yy is 19..=39 and mm 1..=12, so `new` always succeeds.
    let expiry = Yymm::new(yy as u8, mm as u8).unwrap_or(Yymm::EARLIEST);
    let currency = currency_by_index(index);
    let amount = DEMO_BALANCE_MAJOR * scale(currency);
    Account {
        pan,
        expiry,
        status,
        currency,
        balance: amount,
        daily_limit: amount,
    }
}

/// Row `index` of the demo `orders.csv` (see the module docs for its shape).
pub fn demo_order(index: usize, seed: u64) -> Order {
    let mut rng = SplitMix64::new(seed ^ mix64((index as u64).wrapping_add(0x0DE5)));
    let currency = currency_by_index(index);
    let s = scale(currency) as u64;
    let amount = rng.between(s, 500 * s) as i64;
    let merchant = format!("DEMOMERCHANT{:03}", index % DEMO_MERCHANTS + 1);
    let status = match index % 10 {
        0..=7 => OrderStatus::Open,
        8 => OrderStatus::Paid,
        _ => OrderStatus::Cancelled,
    };
    Order {
        order_id: format!("ORD{:09}", index + 1),
        merchant_id: MerchantId::new(merchant.as_bytes()).unwrap_or(MerchantId::EMPTY),
        amount,
        currency,
        status,
    }
}

/// Writes `count` demo accounts, header first.
pub fn write_demo_accounts<W: Write>(mut out: W, count: usize, seed: u64) -> Result<(), DemoError> {
    if count > MAX_DEMO_ACCOUNTS {
        return Err(DemoError::TooManyAccounts { requested: count });
    }
    writeln!(out, "{ACCOUNTS_HEADER}")?;
    for i in 0..count {
        let a = demo_account(i, seed);
        writeln!(
            out,
            "{},{},{},{:03},{},{}",
            a.pan.as_str(),
            a.expiry,
            a.status.as_str(),
            a.currency,
            format_amount(a.balance, a.currency),
            format_amount(a.daily_limit, a.currency)
        )?;
    }
    Ok(())
}

/// Writes `count` demo orders, header first.
pub fn write_demo_orders<W: Write>(mut out: W, count: usize, seed: u64) -> Result<(), DemoError> {
    writeln!(out, "{ORDERS_HEADER}")?;
    for j in 0..count {
        let o = demo_order(j, seed);
        writeln!(
            out,
            "{},{},{},{:03},{}",
            o.order_id,
            o.merchant_id,
            format_amount(o.amount, o.currency),
            o.currency,
            o.status.as_str()
        )?;
    }
    Ok(())
}

/// The two demo files as text: `(accounts.csv, orders.csv)`.
pub fn demo_data(accounts: usize, orders: usize, seed: u64) -> Result<(String, String), DemoError> {
    let mut a = Vec::new();
    write_demo_accounts(&mut a, accounts, seed)?;
    let mut o = Vec::new();
    write_demo_orders(&mut o, orders, seed)?;
    // Everything written above is ASCII.
    Ok((
        String::from_utf8_lossy(&a).into_owned(),
        String::from_utf8_lossy(&o).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{parse_accounts, parse_orders};
    use std::collections::HashSet;

    #[test]
    fn round_trips_through_the_parser() {
        let (a, o) = demo_data(2_000, 500, 42).unwrap();
        let accounts = parse_accounts("accounts.csv", &a).unwrap();
        let orders = parse_orders("orders.csv", &o).unwrap();
        assert_eq!(accounts.len(), 2_000);
        assert_eq!(orders.len(), 500);
        for (i, acc) in accounts.iter().enumerate() {
            assert_eq!(acc, &demo_account(i, 42));
        }
        for (j, ord) in orders.iter().enumerate() {
            assert_eq!(ord, &demo_order(j, 42));
        }
        let pans: HashSet<_> = accounts.iter().map(|a| a.pan).collect();
        assert_eq!(pans.len(), accounts.len());
    }

    #[test]
    fn deterministic_and_seeded() {
        assert_eq!(demo_data(50, 20, 7).unwrap(), demo_data(50, 20, 7).unwrap());
        assert_ne!(
            demo_data(50, 20, 7).unwrap().0,
            demo_data(50, 20, 8).unwrap().0
        );
    }

    #[test]
    fn shape_matches_the_documentation() {
        let now = crate::time::Now::from_unix_secs(1_749_988_800); // 2025-06-15
        let mut brands = [0usize; 3];
        for i in 0..1_000 {
            let a = demo_account(i, 1);
            let usable = a.status == CardStatus::Active && !a.expiry.is_expired_at(now);
            assert_eq!(usable, i % 100 < 87, "row {i}");
            assert_eq!(a.currency, currency_by_index(i));
            assert_eq!(a.balance, 1_000_000 * scale(a.currency));
            match a.pan.as_bytes()[0] {
                b'4' => brands[0] += 1,
                b'5' => brands[1] += 1,
                _ => {
                    brands[2] += 1;
                    assert_eq!(a.pan.len(), 15);
                }
            }
        }
        assert!(brands.iter().all(|&b| b > 50), "{brands:?}");
        for j in 0..100 {
            let o = demo_order(j, 1);
            assert_eq!(o.merchant_id.as_bytes().len(), 15);
            assert!(o.amount >= scale(o.currency) && o.amount <= 500 * scale(o.currency));
        }
        assert_eq!(demo_order(0, 1).order_id, "ORD000000001");
        assert!(matches!(
            write_demo_accounts(std::io::sink(), MAX_DEMO_ACCOUNTS + 1, 0),
            Err(DemoError::TooManyAccounts { .. })
        ));
    }
}
