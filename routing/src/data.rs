//! The embedded store's data files (PROTOCOL.md section 3): `accounts.csv` and `orders.csv`.
//!
//! Amounts are decimals in major units at this edge (parsed with `rust_decimal`, at most the
//! currency's ISO 4217 decimals) and become exact `i64` minor units for the engine: no
//! floating point anywhere. Every refusal names the file, the 1-based line and the reason;
//! none prints a full card number (at most BIN + last 4) or a cell that looks like one.
//!
//! The format is plain comma-separated values without quoting: no field of these files can
//! contain a comma. Surrounding spaces of a cell, a UTF-8 byte-order mark, CRLF line ends and
//! blank lines are tolerated.

use std::collections::HashMap;
use std::fmt;

use rust_decimal::Decimal;

use crate::currency;
use crate::message::MerchantId;
use crate::pan::Pan;
use crate::time::Yymm;

/// The header line `accounts.csv` must start with.
pub const ACCOUNTS_HEADER: &str = "pan,expiry,status,currency,balance,daily_limit";
/// The header line `orders.csv` must start with.
pub const ORDERS_HEADER: &str = "order_id,merchant_id,amount,currency,status";
/// Largest amount in minor units a file may hold: DE 4 and the amount of DE 54 are 12 digits,
/// so a larger balance could be neither debited in one message nor reported.
pub const MAX_MINOR_UNITS: i64 = 999_999_999_999;
/// Longest order id: DE 48 is LLLVAR, at most 999 characters.
pub const MAX_ORDER_ID_LEN: usize = 999;

/// A card's status in `accounts.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CardStatus {
    /// Usable.
    Active,
    /// Declined 05.
    Blocked,
    /// Declined 41.
    Lost,
    /// Declined 43.
    Stolen,
}

impl CardStatus {
    /// The word used in the file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Blocked => "blocked",
            Self::Lost => "lost",
            Self::Stolen => "stolen",
        }
    }

    /// The status named by its word (`active`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Blocked, Self::Lost, Self::Stolen]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// An order's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Payable.
    Open,
    /// Paid (or reserved by a payment whose decision is in flight); another payment: 94.
    Paid,
    /// Cancelled by the merchant; a payment: 25.
    Cancelled,
}

impl OrderStatus {
    /// The word used in the file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status named by its word (`open`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Open, Self::Paid, Self::Cancelled]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One row of `accounts.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Card number, 12-19 digits, Luhn-valid.
    pub pan: Pan,
    /// Card expiry.
    pub expiry: Yymm,
    /// Card status.
    pub status: CardStatus,
    /// ISO 4217 numeric code of the account, known to [`currency`].
    pub currency: u16,
    /// Ledger balance in minor units, `0..=MAX_MINOR_UNITS`.
    pub balance: i64,
    /// Daily debit limit in minor units, `1..=MAX_MINOR_UNITS`.
    pub daily_limit: i64,
}

/// One row of `orders.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The merchant's order reference (DE 48 of the payment).
    pub order_id: String,
    /// The merchant (DE 42 of the payment), without trailing spaces.
    pub merchant_id: MerchantId,
    /// Amount due in minor units, `1..=MAX_MINOR_UNITS`.
    pub amount: i64,
    /// ISO 4217 numeric code, known to [`currency`].
    pub currency: u16,
    /// Status at load time.
    pub status: OrderStatus,
}

/// A refused data file: file, 1-based line, reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {reason}")]
pub struct DataError {
    /// The file name as given by the caller.
    pub file: String,
    /// 1-based line number (the header is line 1).
    pub line: usize,
    /// What is wrong.
    pub reason: DataErrorReason,
}

/// What is wrong with a line. Never holds a full PAN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataErrorReason {
    /// The file has no header line.
    #[error("empty file: the header line `{expected}` is required")]
    MissingHeader {
        /// The required header.
        expected: &'static str,
    },
    /// The first line is not the header.
    #[error("the first line must be the header `{expected}`")]
    BadHeader {
        /// The required header.
        expected: &'static str,
    },
    /// Wrong number of cells.
    #[error("expected {expected} comma-separated fields, found {found}")]
    FieldCount {
        /// Fields the file has.
        expected: usize,
        /// Fields found on the line.
        found: usize,
    },
    /// The PAN holds a non-digit (not echoed).
    #[error("pan: not all digits")]
    PanNotDigits,
    /// The PAN is not 12-19 digits (not echoed).
    #[error("pan: {len} digits, 12 to 19 required")]
    PanLength {
        /// Its length.
        len: usize,
    },
    /// The PAN fails Luhn (shown masked).
    #[error("pan {pan}: fails the Luhn check")]
    PanLuhn {
        /// The PAN; its `Display` is masked.
        pan: Pan,
    },
    /// A PAN already on an earlier line (shown masked).
    #[error("pan {pan}: duplicate of line {first_line}")]
    DuplicatePan {
        /// The PAN; its `Display` is masked.
        pan: Pan,
        /// Line of its first occurrence.
        first_line: usize,
    },
    /// Expiry is not YYMM with a month 01-12 (not echoed: card data).
    #[error("expiry: not YYMM with a month 01-12")]
    Expiry,
    /// Unknown card status.
    #[error("status: `{0}` is not one of active, blocked, lost, stolen")]
    CardStatus(Shown),
    /// Unknown order status.
    #[error("status: `{0}` is not one of open, paid, cancelled")]
    OrderStatus(Shown),
    /// Currency is not three digits.
    #[error("currency: `{0}` is not a 3-digit ISO 4217 numeric code")]
    CurrencyFormat(Shown),
    /// Currency unknown to the switch.
    #[error("currency: {0:03} is not an ISO 4217 currency the switch knows")]
    UnknownCurrency(u16),
    /// Not a plain decimal number.
    #[error("{field}: `{value}` is not a decimal amount in major units")]
    Amount {
        /// Column name.
        field: &'static str,
        /// The cell.
        value: Shown,
    },
    /// More decimals than the currency has.
    #[error("{field}: more than {max} decimals, the exponent of currency {currency:03}")]
    TooManyDecimals {
        /// Column name.
        field: &'static str,
        /// The currency's exponent.
        max: u8,
        /// The currency.
        currency: u16,
    },
    /// Negative amount.
    #[error("{field}: must not be negative")]
    Negative {
        /// Column name.
        field: &'static str,
    },
    /// Zero where a positive amount is required.
    #[error("{field}: must be greater than zero")]
    NotPositive {
        /// Column name.
        field: &'static str,
    },
    /// Above [`MAX_MINOR_UNITS`].
    #[error("{field}: above 999999999999 minor units, the most DE 4 and DE 54 can carry")]
    TooLarge {
        /// Column name.
        field: &'static str,
    },
    /// Empty order id.
    #[error("order_id: empty")]
    EmptyOrderId,
    /// Order id longer than DE 48 can carry.
    #[error("order_id: {0} characters, at most 999 (DE 48)")]
    OrderIdTooLong(usize),
    /// Empty merchant id.
    #[error("merchant_id: empty")]
    EmptyMerchantId,
    /// Merchant id longer than DE 42.
    #[error("merchant_id: {0} characters, at most 15 (DE 42)")]
    MerchantIdTooLong(usize),
    /// An order already on an earlier line.
    #[error("order {order_id} of merchant {merchant}: duplicate of line {first_line}")]
    DuplicateOrder {
        /// The order id.
        order_id: Shown,
        /// The merchant.
        merchant: MerchantId,
        /// Line of its first occurrence.
        first_line: usize,
    },
}

/// A cell echoed in an error: cut to 40 characters, and withheld entirely when it holds 12 or
/// more digits, since a shifted column could put a card number anywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    fn new(cell: &str) -> Self {
        if cell.bytes().filter(u8::is_ascii_digit).count() >= 12 {
            return Self("<withheld: looks like a card number>".to_owned());
        }
        Self(cell.chars().take(40).collect())
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Parses a decimal amount in major units of `currency` into minor units.
///
/// Accepts plain decimals (`1500`, `1500.00`, `0.5`) with at most the currency's decimals;
/// refuses signs, exponents, spaces, an unknown currency, and values above
/// [`MAX_MINOR_UNITS`].
pub fn parse_amount(
    field: &'static str,
    value: &str,
    currency: u16,
) -> Result<i64, DataErrorReason> {
    let exp = currency::exponent(currency).ok_or(DataErrorReason::UnknownCurrency(currency))?;
    if let Some(rest) = value.strip_prefix('-') {
        if is_plain_decimal(rest) {
            return Err(DataErrorReason::Negative { field });
        }
    }
    let bad = || DataErrorReason::Amount {
        field,
        value: Shown::new(value),
    };
    if !is_plain_decimal(value) {
        return Err(bad());
    }
    let d = Decimal::from_str_exact(value).map_err(|_| bad())?;
    if d.scale() > u32::from(exp) {
        return Err(DataErrorReason::TooManyDecimals {
            field,
            max: exp,
            currency,
        });
    }
    // mantissa * 10^(exp - scale) is the exact minor-unit value.
    let factor = 10i128.pow(u32::from(exp) - d.scale());
    d.mantissa()
        .checked_mul(factor)
        .filter(|&minor| minor <= i128::from(MAX_MINOR_UNITS))
        .and_then(|minor| i64::try_from(minor).ok())
        .ok_or(DataErrorReason::TooLarge { field })
}

/// Writes `minor` units of `currency` as a major-unit decimal with exactly the currency's
/// decimals (`150000` USD -> `1500.00`); the inverse of [`parse_amount`]. Unknown currencies
/// are written with two decimals.
pub fn format_amount(minor: i64, currency: u16) -> String {
    let exp = u32::from(currency::exponent(currency).unwrap_or(2));
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    if exp == 0 {
        return format!("{sign}{m}");
    }
    let scale = 10u64.pow(exp);
    format!(
        "{sign}{}.{:0width$}",
        m / scale,
        m % scale,
        width = exp as usize
    )
}

fn is_plain_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && match frac {
            Some(f) => !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()),
            None => true,
        }
}

fn parse_currency(cell: &str) -> Result<u16, DataErrorReason> {
    if cell.len() != 3 || !cell.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DataErrorReason::CurrencyFormat(Shown::new(cell)));
    }
    let code: u16 = cell
        .parse()
        .map_err(|_| DataErrorReason::CurrencyFormat(Shown::new(cell)))?;
    if !currency::is_known(code) {
        return Err(DataErrorReason::UnknownCurrency(code));
    }
    Ok(code)
}

/// Iterates the data lines of a file after checking its header: `(line number, cells)`.
fn rows<'a>(
    file: &'a str,
    text: &'a str,
    header: &'static str,
) -> Result<impl Iterator<Item = (usize, Vec<&'a str>)> + 'a, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let err = |line, reason| DataError {
        file: file.to_owned(),
        line,
        reason,
    };
    let Some((_, first)) = lines.next() else {
        return Err(err(1, DataErrorReason::MissingHeader { expected: header }));
    };
    if !first.split(',').map(str::trim).eq(header.split(',')) {
        return Err(err(1, DataErrorReason::BadHeader { expected: header }));
    }
    Ok(lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n, l.split(',').map(str::trim).collect())))
}

/// Parses `accounts.csv`. `file` names it in errors.
pub fn parse_accounts(file: &str, text: &str) -> Result<Vec<Account>, DataError> {
    let mut out = Vec::new();
    let mut seen: HashMap<Pan, usize> = HashMap::new();
    for (line, cells) in rows(file, text, ACCOUNTS_HEADER)? {
        let err = |reason| DataError {
            file: file.to_owned(),
            line,
            reason,
        };
        let account = parse_account(&cells).map_err(err)?;
        if let Some(&first_line) = seen.get(&account.pan) {
            return Err(err(DataErrorReason::DuplicatePan {
                pan: account.pan,
                first_line,
            }));
        }
        seen.insert(account.pan, line);
        out.push(account);
    }
    Ok(out)
}

fn parse_account(cells: &[&str]) -> Result<Account, DataErrorReason> {
    let &[pan, expiry, status, cur, balance, limit] = cells else {
        return Err(DataErrorReason::FieldCount {
            expected: 6,
            found: cells.len(),
        });
    };
    if !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DataErrorReason::PanNotDigits);
    }
    if !(Pan::MIN_CARD_LEN..=Pan::MAX_LEN).contains(&pan.len()) {
        return Err(DataErrorReason::PanLength { len: pan.len() });
    }
    let pan = Pan::from_digits(pan.as_bytes()).map_err(|_| DataErrorReason::PanNotDigits)?;
    if !pan.luhn_valid() {
        return Err(DataErrorReason::PanLuhn { pan });
    }
    let expiry = Yymm::from_digits(expiry.as_bytes()).ok_or(DataErrorReason::Expiry)?;
    let status =
        CardStatus::parse(status).ok_or_else(|| DataErrorReason::CardStatus(Shown::new(status)))?;
    let currency = parse_currency(cur)?;
    let balance = parse_amount("balance", balance, currency)?;
    let daily_limit = parse_amount("daily_limit", limit, currency)?;
    if daily_limit == 0 {
        return Err(DataErrorReason::NotPositive {
            field: "daily_limit",
        });
    }
    Ok(Account {
        pan,
        expiry,
        status,
        currency,
        balance,
        daily_limit,
    })
}

/// Parses `orders.csv`. `file` names it in errors.
pub fn parse_orders(file: &str, text: &str) -> Result<Vec<Order>, DataError> {
    let mut out = Vec::new();
    let mut seen: HashMap<(MerchantId, String), usize> = HashMap::new();
    for (line, cells) in rows(file, text, ORDERS_HEADER)? {
        let err = |reason| DataError {
            file: file.to_owned(),
            line,
            reason,
        };
        let order = parse_order(&cells).map_err(err)?;
        let key = (order.merchant_id, order.order_id.clone());
        if let Some(&first_line) = seen.get(&key) {
            return Err(err(DataErrorReason::DuplicateOrder {
                order_id: Shown::new(&order.order_id),
                merchant: order.merchant_id,
                first_line,
            }));
        }
        seen.insert(key, line);
        out.push(order);
    }
    Ok(out)
}

fn parse_order(cells: &[&str]) -> Result<Order, DataErrorReason> {
    let &[order_id, merchant, amount, cur, status] = cells else {
        return Err(DataErrorReason::FieldCount {
            expected: 5,
            found: cells.len(),
        });
    };
    if order_id.is_empty() {
        return Err(DataErrorReason::EmptyOrderId);
    }
    if order_id.len() > MAX_ORDER_ID_LEN {
        return Err(DataErrorReason::OrderIdTooLong(order_id.len()));
    }
    if merchant.is_empty() {
        return Err(DataErrorReason::EmptyMerchantId);
    }
    let merchant_id = MerchantId::new(merchant.as_bytes())
        .map_err(|e| DataErrorReason::MerchantIdTooLong(e.len))?;
    let currency = parse_currency(cur)?;
    let amount = parse_amount("amount", amount, currency)?;
    if amount == 0 {
        return Err(DataErrorReason::NotPositive { field: "amount" });
    }
    let status = OrderStatus::parse(status)
        .ok_or_else(|| DataErrorReason::OrderStatus(Shown::new(status)))?;
    Ok(Order {
        order_id: order_id.to_owned(),
        merchant_id,
        amount,
        currency,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "pan,expiry,status,currency,balance,daily_limit\n\
        4111111111111111,3012,active,840,1500.00,500.00\n\
        5555555555554444,2901,blocked,392,150000,100000\n\
        378282246310005,2812,lost,048,12.345,1\n\
        4012888888881881,2812,stolen,978,0,0.01\n";

    fn accounts_err(text: &str) -> DataError {
        parse_accounts("data/accounts.csv", text).unwrap_err()
    }

    fn orders_err(text: &str) -> DataError {
        parse_orders("data/orders.csv", text).unwrap_err()
    }

    #[test]
    fn parses_accounts() {
        let a = parse_accounts("accounts.csv", GOOD).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].pan.as_str(), "4111111111111111");
        assert_eq!(a[0].balance, 150_000);
        assert_eq!(a[0].daily_limit, 50_000);
        assert_eq!(a[0].status, CardStatus::Active);
        assert_eq!(a[1].balance, 150_000);
        assert_eq!(a[1].currency, 392);
        assert_eq!(a[2].balance, 12_345);
        assert_eq!(a[2].daily_limit, 1_000);
        assert_eq!(a[2].currency, 48);
        assert_eq!(a[3].balance, 0);
        assert_eq!(a[3].daily_limit, 1);
        // CRLF, BOM, blank lines and spaces around cells are tolerated.
        let crlf = format!(
            "\u{feff}{}",
            GOOD.replace('\n', "\r\n").replace(",3012,", " , 3012 ,")
        );
        assert_eq!(parse_accounts("a", &(crlf + "\r\n\r\n")).unwrap(), a);
        assert!(parse_accounts("a", ACCOUNTS_HEADER).unwrap().is_empty());
    }

    #[test]
    fn account_errors_name_file_line_and_reason() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "empty file"),
            ("pan,expiry\n", 1, "header"),
            ("4111111111111111,3012,active,840,1.00,1.00\n", 1, "header"),
            ("4111111111111111,3012,active,840,1.00\n", 2, "expected 6 comma-separated fields, found 5"),
            ("4111111111111112,3012,active,840,1.00,1.00\n", 2, "fails the Luhn check"),
            ("41111111111,3012,active,840,1.00,1.00\n", 2, "11 digits, 12 to 19 required"),
            ("41111111111111111111,3012,active,840,1.00,1.00\n", 2, "20 digits"),
            ("4111x11111111111,3012,active,840,1.00,1.00\n", 2, "pan: not all digits"),
            ("4111111111111111,3013,active,840,1.00,1.00\n", 2, "expiry: not YYMM"),
            ("4111111111111111,301,active,840,1.00,1.00\n", 2, "expiry: not YYMM"),
            ("4111111111111111,3012,closed,840,1.00,1.00\n", 2, "`closed` is not one of active"),
            ("4111111111111111,3012,active,999,1.00,1.00\n", 2, "999 is not an ISO 4217"),
            ("4111111111111111,3012,active,84,1.00,1.00\n", 2, "`84` is not a 3-digit"),
            ("4111111111111111,3012,active,840,1.001,1.00\n", 2, "balance: more than 2 decimals"),
            ("4111111111111111,3012,active,392,1.5,100\n", 2, "balance: more than 0 decimals"),
            ("4111111111111111,3012,active,048,1.0001,1\n", 2, "more than 3 decimals"),
            ("4111111111111111,3012,active,840,-1.00,1.00\n", 2, "balance: must not be negative"),
            ("4111111111111111,3012,active,840,1e3,1.00\n", 2, "`1e3` is not a decimal"),
            ("4111111111111111,3012,active,840,+1,1.00\n", 2, "is not a decimal"),
            ("4111111111111111,3012,active,840,.5,1.00\n", 2, "is not a decimal"),
            ("4111111111111111,3012,active,840,1.00,0.00\n", 2, "daily_limit: must be greater than zero"),
            ("4111111111111111,3012,active,840,10000000000.00,1\n", 2, "balance: above 999999999999"),
            (
                "4111111111111111,3012,active,840,1.00,1.00\n\n4111111111111111,3101,active,840,2.00,1.00\n",
                4,
                "pan 411111******1111: duplicate of line 2",
            ),
        ];
        for &(rows, line, reason) in cases {
            let text = if rows.is_empty() || rows.starts_with("pan,expiry\n") || line == 1 {
                rows.to_owned()
            } else {
                format!("{ACCOUNTS_HEADER}\n{rows}")
            };
            let e = accounts_err(&text);
            let shown = e.to_string();
            assert_eq!(e.line, line, "{shown}");
            assert!(
                shown.starts_with(&format!("data/accounts.csv: line {line}: ")),
                "{shown}"
            );
            assert!(shown.contains(reason), "{shown} should contain {reason}");
            assert!(!shown.contains("4111111111111111"), "full PAN in {shown}");
            assert!(
                !shown.contains("41111111111111111111"),
                "full PAN in {shown}"
            );
        }
    }

    #[test]
    fn errors_never_echo_a_card_number_in_another_column() {
        // Columns shifted: the PAN lands in the status and currency cells.
        let text = format!("{ACCOUNTS_HEADER}\n4111111111111111,3012,4111111111111111,840,1,1\n");
        let shown = accounts_err(&text).to_string();
        assert!(!shown.contains("4111111111111111"), "{shown}");
        assert!(shown.contains("withheld"), "{shown}");
        let text = format!("{ORDERS_HEADER}\nO1,M1,1.00,840,5555555555554444\n");
        let shown = orders_err(&text).to_string();
        assert!(!shown.contains("5555555555554444"), "{shown}");
    }

    #[test]
    fn parses_orders() {
        let text = format!(
            "{ORDERS_HEADER}\nORD-1,MERCHANT0000001,25.00,840,open\nORD-1,MERCHANT0000002,2500,392,paid\n\
             ORD-2,MERCHANT0000001,0.005,048,cancelled\n"
        );
        let o = parse_orders("orders.csv", &text).unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].amount, 2_500);
        assert_eq!(o[0].merchant_id.as_bytes(), b"MERCHANT0000001");
        assert_eq!(o[1].amount, 2_500);
        assert_eq!(o[1].status, OrderStatus::Paid);
        assert_eq!(o[2].amount, 5);
        assert_eq!(o[2].status, OrderStatus::Cancelled);
    }

    #[test]
    fn order_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "O1,M1,1.00,840\n",
                "expected 5 comma-separated fields, found 4",
            ),
            (",M1,1.00,840,open\n", "order_id: empty"),
            ("O1,,1.00,840,open\n", "merchant_id: empty"),
            (
                "O1,MERCHANT00000001,1.00,840,open\n",
                "merchant_id: 16 characters",
            ),
            ("O1,M1,0.00,840,open\n", "amount: must be greater than zero"),
            ("O1,M1,1.000,840,open\n", "amount: more than 2 decimals"),
            (
                "O1,M1,1.00,840,shipped\n",
                "`shipped` is not one of open, paid, cancelled",
            ),
            ("O1,M1,1.00,123,open\n", "123 is not an ISO 4217"),
        ];
        for &(row, reason) in cases {
            let e = orders_err(&format!("{ORDERS_HEADER}\n{row}"));
            assert_eq!(e.line, 2);
            let shown = e.to_string();
            assert!(shown.starts_with("data/orders.csv: line 2: "), "{shown}");
            assert!(shown.contains(reason), "{shown} should contain {reason}");
        }
        let dup = format!("{ORDERS_HEADER}\nO1,M1,1.00,840,open\nO1,M1   ,2.00,840,paid\n");
        let e = orders_err(&dup);
        assert_eq!(e.line, 3);
        assert!(
            e.to_string()
                .contains("order O1 of merchant M1: duplicate of line 2"),
            "{e}"
        );
        assert!(orders_err(&format!("{ORDERS_HEADER}x\n"))
            .to_string()
            .contains("header"));
    }

    #[test]
    fn amounts_round_trip() {
        for (text, cur, minor) in [
            ("1500.00", 840, 150_000),
            ("150000", 392, 150_000),
            ("12.345", 48, 12_345),
            ("0", 840, 0),
        ] {
            assert_eq!(parse_amount("amount", text, cur), Ok(minor));
            assert_eq!(
                parse_amount("amount", &format_amount(minor, cur), cur),
                Ok(minor)
            );
        }
        assert_eq!(format_amount(150_000, 840), "1500.00");
        assert_eq!(format_amount(5, 48), "0.005");
        assert_eq!(format_amount(7, 392), "7");
        assert_eq!(parse_amount("amount", "1.5", 840), Ok(150));
    }
}
