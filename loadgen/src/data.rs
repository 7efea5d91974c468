//! Cards and orders to send, read from the data directory's `accounts.csv` and `orders.csv`
//! (PROTOCOL.md section 3). A minimal reader of its own, on purpose: loadgen depends on the
//! wire format only, never on the switch's engine.
//!
//! - `accounts.csv`: `pan,expiry,status,currency,balance,daily_limit`. A card is usable when
//!   its status is `active` and its expiry month (`YYMM`, 20YY) is not before the current one.
//! - `orders.csv`: `order_id,merchant_id,amount,currency,status`. An order is usable when it is
//!   `open` and some usable card has its currency.
//!
//! Columns are found by their header name. Rows that do not parse are skipped and counted
//! (never printed: they may hold card numbers).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context};
use arrayvec::ArrayString;

/// One usable card, stored inline (no pointer to chase when a card is picked at random). Its
/// text is kept as `str` (checked once, when loaded): a request reads its PAN twice (encode
/// and check) and its expiry once.
#[derive(Clone)]
pub struct Card {
    pan: ArrayString<19>,
    /// DE 14, `YYMM`.
    expiry: ArrayString<4>,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// Balance in minor units, when it parsed.
    pub balance_minor: Option<u64>,
}

impl Card {
    /// `pan` must be 12-19 ASCII digits and `expiry` 4 (checked by the caller; longer text is
    /// cut).
    fn new(pan: &str, expiry: &str, currency: u16, balance_minor: Option<u64>) -> Card {
        Card {
            pan: ArrayString::from(pan.get(..19).unwrap_or(pan)).unwrap_or_default(),
            expiry: ArrayString::from(expiry.get(..4).unwrap_or(expiry)).unwrap_or_default(),
            currency,
            balance_minor,
        }
    }

    pub fn pan(&self) -> &str {
        &self.pan
    }

    pub fn expiry(&self) -> &str {
        &self.expiry
    }

    /// Whether the card's expiry month (`YYMM`, 20YY) is before the month of `now` (Unix
    /// seconds): usable when the data was loaded, a run across the month's end expires it.
    pub fn expired_at(&self, now: i64) -> bool {
        expiry_month(self.expiry.as_bytes()).is_some_and(|m| m < crate::clock::year_month(now))
    }
}

/// A `YYMM` expiry as (year 20YY, month); `None` unless four digits with a month 01-12.
fn expiry_month(expiry: &[u8]) -> Option<(i64, u32)> {
    let [y1, y2, m1, m2] = *expiry else {
        return None;
    };
    if !expiry.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digit = |b: u8| u32::from(b - b'0');
    let month = digit(m1) * 10 + digit(m2);
    (1..=12)
        .contains(&month)
        .then(|| (2000 + i64::from(digit(y1) * 10 + digit(y2)), month))
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the full PAN.
        let pan = self.pan();
        let last4 = pan.get(pan.len().saturating_sub(4)..).unwrap_or("");
        f.debug_struct("Card")
            .field("pan", &format_args!("****{last4}"))
            .field("currency", &self.currency)
            .finish_non_exhaustive()
    }
}

/// One open order.
#[derive(Clone, Debug)]
pub struct OrderRow {
    /// DE 48.
    pub order_id: String,
    /// DE 42, right-padded with spaces to its fixed 15 characters.
    pub merchant_padded: String,
    /// DE 4, minor units.
    pub amount_minor: u64,
    pub currency: u16,
}

/// Everything loadgen sends from.
#[derive(Debug, Default)]
pub struct Data {
    pub cards: Vec<Card>,
    pub orders: Vec<OrderRow>,
    /// Indices into `cards` by currency.
    pub cards_by_currency: HashMap<u16, Vec<u32>>,
    /// Luhn-valid PANs that are in no row of `accounts.csv`: deliberate 14s.
    pub unknown_pans: Vec<String>,
    /// Rows read and rows skipped, for the log line.
    pub stats: LoadStats,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    pub account_rows: usize,
    pub unusable_cards: usize,
    pub bad_account_rows: usize,
    pub order_rows: usize,
    pub unusable_orders: usize,
    pub bad_order_rows: usize,
}

/// ISO 4217 minor-unit exponent: 0 and 3 for the currencies that have them, else 2.
pub fn exponent(currency: u16) -> u32 {
    match currency {
        // BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF
        108 | 152 | 262 | 324 | 352 | 392 | 174 | 410 | 600 | 646 | 800 | 940 | 704 | 548 | 950
        | 952 | 953 => 0,
        // BHD IQD JOD KWD LYD OMR TND
        48 | 368 | 400 | 414 | 434 | 512 | 788 => 3,
        _ => 2,
    }
}

/// A decimal in major units (`1500.00`, `150000`, `12.5`) as minor units; `None` when it is
/// not a plain non-negative decimal or has more decimals than `exp`.
pub fn parse_minor(text: &str, exp: u32) -> Option<u64> {
    let (int, frac, dot) = match text.split_once('.') {
        Some((i, f)) => (i, f, true),
        None => (text, "", false),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (dot && !digits(frac)) || frac.len() > exp as usize {
        return None;
    }
    let scale = 10u64.checked_pow(exp)?;
    let int: u64 = int.parse().ok()?;
    let frac_val: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()? * 10u64.checked_pow(exp - frac.len() as u32)?
    };
    int.checked_mul(scale)?.checked_add(frac_val)
}

/// Luhn check over ASCII digits.
pub fn luhn_ok(digits: &[u8]) -> bool {
    luhn_sum(digits).is_some_and(|s| s % 10 == 0)
}

fn luhn_sum(digits: &[u8]) -> Option<u32> {
    let mut sum = 0;
    for (i, &c) in digits.iter().rev().enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = u32::from(c - b'0');
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    Some(sum)
}

/// Appends the Luhn check digit to a payload of digits.
fn with_check_digit(payload: &str) -> String {
    let mut s = format!("{payload}0");
    let sum = luhn_sum(s.as_bytes()).unwrap_or(0);
    let check = (10 - sum % 10) % 10;
    s.pop();
    s.push(char::from(b'0' + check as u8));
    s
}

struct Columns(HashMap<String, usize>);

impl Columns {
    fn new(header: &str, file: &str, needed: &[&str]) -> anyhow::Result<Columns> {
        let map: HashMap<String, usize> = header
            .split(',')
            .enumerate()
            .map(|(i, h)| (h.trim().to_ascii_lowercase(), i))
            .collect();
        for n in needed {
            if !map.contains_key(*n) {
                bail!("{file}: header has no column {n:?}");
            }
        }
        Ok(Columns(map))
    }

    fn get<'a>(&self, row: &[&'a str], name: &str) -> Option<&'a str> {
        self.0.get(name).and_then(|&i| row.get(i)).map(|s| s.trim())
    }
}

impl Data {
    /// Reads `accounts.csv` (required) and `orders.csv` (optional) from `dir`; `now` is the
    /// Unix time that decides expiry.
    pub fn load(dir: &Path, now: i64) -> anyhow::Result<Data> {
        let accounts_path = dir.join("accounts.csv");
        let accounts = std::fs::read_to_string(&accounts_path)
            .with_context(|| format!("reading {}", accounts_path.display()))?;
        let orders_path = dir.join("orders.csv");
        let orders = if orders_path.exists() {
            std::fs::read_to_string(&orders_path)
                .with_context(|| format!("reading {}", orders_path.display()))?
        } else {
            String::new()
        };
        Data::parse(&accounts, &orders, now)
    }

    /// As [`Data::load`], from the files' text.
    pub fn parse(accounts_csv: &str, orders_csv: &str, now: i64) -> anyhow::Result<Data> {
        let mut data = Data::default();
        let (year, month) = crate::clock::year_month(now);
        let mut lines = accounts_csv.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            bail!("accounts.csv is empty");
        };
        let cols = Columns::new(
            header,
            "accounts.csv",
            &["pan", "expiry", "status", "currency"],
        )?;
        let mut all_pans = HashSet::new();
        for line in lines {
            data.stats.account_rows += 1;
            let row: Vec<&str> = line.split(',').collect();
            let parsed = (|| {
                let pan = cols.get(&row, "pan")?;
                let expiry = cols.get(&row, "expiry")?;
                let status = cols.get(&row, "status")?;
                let currency: u16 = cols.get(&row, "currency")?.parse().ok()?;
                if !(12..=19).contains(&pan.len()) || !luhn_ok(pan.as_bytes()) {
                    return None;
                }
                let expires = expiry_month(expiry.as_bytes())?;
                let balance = cols
                    .get(&row, "balance")
                    .and_then(|b| parse_minor(b, exponent(currency)));
                let usable = status.eq_ignore_ascii_case("active") && expires >= (year, month);
                Some((pan, expiry, currency, balance, usable))
            })();
            let Some((pan, expiry, currency, balance_minor, usable)) = parsed else {
                data.stats.bad_account_rows += 1;
                continue;
            };
            all_pans.insert(pan.to_owned());
            if !usable {
                data.stats.unusable_cards += 1;
                continue;
            }
            let index = data.cards.len() as u32;
            data.cards_by_currency
                .entry(currency)
                .or_default()
                .push(index);
            data.cards
                .push(Card::new(pan, expiry, currency, balance_minor));
        }

        let mut lines = orders_csv.lines().filter(|l| !l.trim().is_empty());
        if let Some(header) = lines.next() {
            let cols = Columns::new(
                header,
                "orders.csv",
                &["order_id", "merchant_id", "amount", "currency", "status"],
            )?;
            for line in lines {
                data.stats.order_rows += 1;
                let row: Vec<&str> = line.split(',').collect();
                let parsed = (|| {
                    let order_id = cols.get(&row, "order_id")?;
                    let merchant = cols.get(&row, "merchant_id")?;
                    let currency: u16 = cols.get(&row, "currency")?.parse().ok()?;
                    let amount = parse_minor(cols.get(&row, "amount")?, exponent(currency))?;
                    let status = cols.get(&row, "status")?;
                    if order_id.is_empty() || order_id.len() > 999 || merchant.len() > 15 {
                        return None;
                    }
                    if !order_id
                        .bytes()
                        .chain(merchant.bytes())
                        .all(|b| (0x20..0x7f).contains(&b))
                    {
                        return None;
                    }
                    Some((order_id, merchant, currency, amount, status))
                })();
                let Some((order_id, merchant, currency, amount_minor, status)) = parsed else {
                    data.stats.bad_order_rows += 1;
                    continue;
                };
                let payable = status.eq_ignore_ascii_case("open")
                    && amount_minor > 0
                    && data.cards_by_currency.contains_key(&currency);
                if !payable {
                    data.stats.unusable_orders += 1;
                    continue;
                }
                data.orders.push(OrderRow {
                    order_id: order_id.to_owned(),
                    merchant_padded: format!("{merchant:<15}"),
                    amount_minor,
                    currency,
                });
            }
        }

        // Deliberate "unknown card": Luhn-valid PANs in a BIN no demo set uses, checked against
        // every row of the file.
        let mut n = 0u64;
        while data.unknown_pans.len() < 16 && n < 1000 {
            let pan = with_check_digit(&format!("999999{:09}", 123_456_789 + n * 7919));
            if !all_pans.contains(&pan) {
                data.unknown_pans.push(pan);
            }
            n += 1;
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2025-11-26
    const NOW: i64 = 1_764_153_900;

    #[test]
    fn minor_units() {
        assert_eq!(parse_minor("1500.00", 2), Some(150_000));
        assert_eq!(parse_minor("12.5", 2), Some(1250));
        assert_eq!(parse_minor("150000", 0), Some(150_000));
        assert_eq!(parse_minor("12.345", 3), Some(12_345));
        assert_eq!(parse_minor("1.234", 2), None);
        assert_eq!(parse_minor("-1", 2), None);
        assert_eq!(parse_minor("1.", 2), None);
        assert_eq!(parse_minor("", 2), None);
        assert_eq!(parse_minor("1e3", 2), None);
    }

    #[test]
    fn luhn() {
        assert!(luhn_ok(b"4532015112830366"));
        assert!(!luhn_ok(b"4532015112830367"));
        assert!(luhn_ok(with_check_digit("999999123456789").as_bytes()));
    }

    #[test]
    fn a_card_expires_when_its_month_is_over() {
        let accounts = "pan,expiry,status,currency,balance,daily_limit\n\
            5555555555554444,2511,active,978,5.00,5.00\n";
        let d = Data::parse(accounts, "", NOW).unwrap();
        let card = &d.cards[0];
        // NOW is in November 2025: usable through its last second, expired in December.
        assert!(!card.expired_at(NOW));
        assert!(!card.expired_at(1_764_547_199)); // 2025-11-30T23:59:59Z
        assert!(card.expired_at(1_764_547_200)); // 2025-12-01T00:00:00Z
    }

    #[test]
    fn usable_cards_and_orders() {
        let accounts = "pan,expiry,status,currency,balance,daily_limit\n\
            4532015112830366,3012,active,840,1000.00,500.00\n\
            4532015112830367,3012,active,840,1000.00,500.00\n\
            4556737586899855,2510,active,840,1000.00,500.00\n\
            4556737586899855x,3012,active,840,1000.00,500.00\n\
            5555555555554444,2511,active,978,5.00,5.00\n\
            4111111111111111,3001,blocked,840,1.00,1.00\n\
            378282246310005,3001,active,392,150000,150000\n";
        let orders = "order_id,merchant_id,amount,currency,status\n\
            ORD1,SHOP1,10.00,840,open\n\
            ORD2,SHOP1,10.00,840,paid\n\
            ORD3,SHOP2,10.00,036,open\n\
            ORD4,SHOP2,1500,392,open\n\
            ORD5,SHOP2,1x,392,open\n";
        let d = Data::parse(accounts, orders, NOW).unwrap();
        // Active, Luhn-valid, not expired: the first (3012), the EUR card (2511 is this
        // month, still valid) and the JPY Amex.
        assert_eq!(d.cards.len(), 3);
        assert_eq!(d.cards[0].balance_minor, Some(100_000));
        assert_eq!(d.cards[2].balance_minor, Some(150_000));
        assert_eq!(d.stats.bad_account_rows, 2);
        assert_eq!(d.stats.unusable_cards, 2);
        assert_eq!(d.cards_by_currency[&840], vec![0]);
        // ORD1 (USD) and ORD4 (JPY) are payable; ORD2 paid; ORD3 in a currency no card has.
        assert_eq!(d.orders.len(), 2);
        assert_eq!(d.orders[0].merchant_padded, "SHOP1          ");
        assert_eq!(d.orders[1].amount_minor, 1500);
        assert_eq!(d.stats.bad_order_rows, 1);
        assert_eq!(d.unknown_pans.len(), 16);
        assert!(d.unknown_pans.iter().all(|p| luhn_ok(p.as_bytes())));
        // Debug never shows the PAN.
        assert!(!format!("{:?}", d.cards[0]).contains("453201511283"));
    }

    #[test]
    fn missing_column_is_an_error() {
        assert!(Data::parse("pan,status\n", "", NOW).is_err());
        assert!(Data::parse("", "", NOW).is_err());
    }
}
