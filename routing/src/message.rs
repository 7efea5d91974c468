//! The typed plain data the engine takes in ([`Request`]) and gives back ([`Response`]).
//!
//! The switch decodes ISO 8583 and builds a `Request` from the fields it found; format errors
//! (answer 30) are its business and happen before routing is called, so the constructors
//! here only guarantee the shape of each value (digits where the standard says `n`, fixed
//! widths), not the presence of mandatory fields.

use std::fmt;

use crate::kind::{classify, TxnKind};
use crate::pan::Pan;
use crate::placement;
use crate::time::Yymm;

/// Parses 1 to 19 ASCII digits into a number (DE 11, DE 7, DE 70 values); `None` for
/// anything else.
pub fn parse_numeric(d: &[u8]) -> Option<u64> {
    if d.is_empty() || d.len() > 19 {
        return None;
    }
    d.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

// ===== Mti =====

/// ISO 8583 message type indicator, held as its four-digit decimal value (`0200` is 200).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti(u16);

impl Mti {
    /// An MTI from its value, `None` above 9999.
    pub const fn new(value: u16) -> Option<Self> {
        if value <= 9999 {
            Some(Self(value))
        } else {
            None
        }
    }

    /// From exactly four ASCII digits.
    pub fn from_digits(d: &[u8]) -> Option<Self> {
        if d.len() != 4 {
            return None;
        }
        parse_numeric(d)
            .and_then(|v| u16::try_from(v).ok())
            .and_then(Self::new)
    }

    /// The four-digit value (`0200` is 200).
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The four ASCII digits.
    pub fn to_digits(self) -> [u8; 4] {
        let v = self.0;
        // Each quotient is below 10, so the casts cannot truncate.
        [
            b'0' + (v / 1000 % 10) as u8,
            b'0' + (v / 100 % 10) as u8,
            b'0' + (v / 10 % 10) as u8,
            b'0' + (v % 10) as u8,
        ]
    }

    /// Whether the origin digit (the fourth) marks a repeat: 1, 3 or 5 (ISO 8583:1987), also
    /// 7 and 9 which the standard reserves.
    pub const fn is_repeat(self) -> bool {
        self.0 % 2 == 1
    }

    /// The MTI with its repeat digit cleared (`0201` -> `0200`, `0421` -> `0420`): repeats are
    /// handled, and keyed for idempotency, as their base message.
    pub const fn base(self) -> Self {
        Self(self.0 & !1)
    }

    /// The response MTI: repeat digit cleared, plus 10 (`0200`/`0201` -> `0210`, `0421` ->
    /// `0430`). Wraps modulo 10000 rather than overflow for the (invalid anyway) `999x`.
    pub const fn response(self) -> Self {
        Self((self.base().0 + 10) % 10_000)
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({:04})", self.0)
    }
}

// ===== ProcessingCode =====

/// ISO 8583 DE 3, six digits: transaction type (1-2), from account (3-4), to account (5-6).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessingCode([u8; 6]);

impl ProcessingCode {
    /// From exactly six ASCII digits.
    pub fn from_digits(d: &[u8]) -> Option<Self> {
        let arr: [u8; 6] = d.try_into().ok()?;
        arr.iter().all(u8::is_ascii_digit).then_some(Self(arr))
    }

    /// Digits 1-2: `00` goods and services, `31` balance inquiry, ...
    pub fn transaction_type(self) -> [u8; 2] {
        [self.0[0], self.0[1]]
    }

    /// Digits 3-4, the "from account" type, echoed in field 54 of a balance inquiry.
    pub fn from_account(self) -> [u8; 2] {
        [self.0[2], self.0[3]]
    }

    /// The six digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Debug for ProcessingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessingCode({})", self.as_str())
    }
}

// ===== FixedId =====

/// A fixed-width `ans` identifier (DE 41 terminal id, DE 42 merchant id) stored inline,
/// without its trailing spaces: the wire right-pads with spaces and the data files do not,
/// so every comparison, hash and lookup ignores them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FixedId<const N: usize> {
    // Bytes past `len` stay zero, so derived equality and hashing see only the id.
    bytes: [u8; N],
    len: u8,
}

/// DE 41, card acceptor terminal identification (`ans 8`).
pub type TerminalId = FixedId<8>;
/// DE 42, card acceptor identification code (`ans 15`), the merchant id of orders.
pub type MerchantId = FixedId<15>;

/// An identifier longer than its field once trailing spaces are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("identifier has {len} characters after trimming trailing spaces, at most {max} allowed")]
pub struct IdTooLong {
    /// Length after trimming.
    pub len: usize,
    /// The field's width.
    pub max: usize,
}

impl<const N: usize> FixedId<N> {
    /// The empty identifier (a message without the field).
    pub const EMPTY: Self = Self {
        bytes: [0; N],
        len: 0,
    };

    /// From raw field bytes; trailing spaces are dropped.
    pub fn new(raw: &[u8]) -> Result<Self, IdTooLong> {
        let trimmed = trim_trailing_spaces(raw);
        let too_long = IdTooLong {
            len: trimmed.len(),
            max: N,
        };
        if trimmed.len() > N {
            return Err(too_long);
        }
        let len = u8::try_from(trimmed.len()).map_err(|_| too_long)?;
        let mut bytes = [0u8; N];
        bytes[..trimmed.len()].copy_from_slice(trimmed);
        Ok(Self { bytes, len })
    }

    /// The identifier without trailing spaces.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether the identifier is empty (or was all spaces).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> fmt::Display for FixedId<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl<const N: usize> fmt::Debug for FixedId<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// `raw` without its trailing ASCII spaces.
pub(crate) fn trim_trailing_spaces(raw: &[u8]) -> &[u8] {
    let end = raw.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &raw[..end]
}

// ===== identities =====

/// DE 90, original data elements (ISO 8583:1987, n 42): the original's MTI, STAN and
/// transmission date-time. The acquirer and forwarding institution ids (digits 21-42) are
/// not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OriginalData {
    /// Original MTI (informational: the original is found by 41 + STAN + date-time).
    pub mti: Mti,
    /// Original DE 11.
    pub stan: u32,
    /// Original DE 7, `MMDDhhmmss` as a number.
    pub transmission: u64,
}

impl OriginalData {
    /// Parses the 42 digits of DE 90.
    pub fn from_field90(v: &[u8]) -> Option<Self> {
        if v.len() != 42 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(Self {
            mti: Mti::from_digits(&v[0..4])?,
            stan: u32::try_from(parse_numeric(&v[4..10])?).ok()?,
            transmission: parse_numeric(&v[10..20])?,
        })
    }
}

/// The identity of a transaction on the wire: DE 41 (trimmed), DE 11 and DE 7. A reversal or
/// completion names its original by this identity (from DE 90, or its own fields).
///
/// Ordered field by field (terminal, STAN, date-time): snapshots list records in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId {
    /// DE 41 without trailing spaces.
    pub terminal: TerminalId,
    /// DE 11.
    pub stan: u32,
    /// DE 7 as a number.
    pub transmission: u64,
}

impl TxnId {
    /// The shard that owns this identity's records.
    pub fn shard(&self, shard_count: usize) -> usize {
        placement::shard_for_transaction(
            self.terminal.as_bytes(),
            self.stan,
            self.transmission,
            shard_count,
        )
    }
}

/// The idempotency key of a request (PROTOCOL.md section 2): MTI without its repeat digit,
/// DE 41, DE 11, DE 7. `0200` and `0201` share a key; `0200` and `0220` do not.
///
/// Ordered field by field (MTI, terminal, STAN, date-time): snapshots list keys in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdemKey {
    /// MTI with the repeat digit cleared.
    pub mti: Mti,
    /// DE 41 without trailing spaces.
    pub terminal: TerminalId,
    /// DE 11.
    pub stan: u32,
    /// DE 7 as a number.
    pub transmission: u64,
}

// ===== Request =====

/// One decoded request, as the switch hands it to the engine.
///
/// Optional fields are `None` when the message did not carry them. The switch has already
/// answered 30 for missing mandatory fields, so the engine treats an absent mandatory field
/// defensively (e.g. an absent amount counts as zero) rather than trusting it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// MTI as received (repeats included).
    pub mti: Mti,
    /// DE 3.
    pub processing_code: Option<ProcessingCode>,
    /// DE 2.
    pub pan: Option<Pan>,
    /// DE 4 in minor units of `currency`.
    pub amount: Option<u64>,
    /// DE 49, ISO 4217 numeric.
    pub currency: Option<u16>,
    /// DE 11, systems trace audit number.
    pub stan: u32,
    /// DE 7, transmission date and time `MMDDhhmmss`, as its 10-digit number.
    pub transmission: u64,
    /// DE 41 ([`TerminalId::EMPTY`] when absent, which only 08xx may do).
    pub terminal: TerminalId,
    /// DE 14, expiry date as given by the terminal.
    pub expiry: Option<Yymm>,
    /// DE 42.
    pub merchant: Option<MerchantId>,
    /// DE 48, the merchant's order reference (order payments only).
    pub order_ref: Option<String>,
    /// DE 90, parsed.
    pub original: Option<OriginalData>,
    /// DE 70, network management information code (08xx).
    pub network_code: Option<u16>,
}

impl Request {
    /// A request with only the fields every message has; the rest `None`.
    pub fn new(mti: Mti, stan: u32, transmission: u64, terminal: TerminalId) -> Self {
        Self {
            mti,
            processing_code: None,
            pan: None,
            amount: None,
            currency: None,
            stan,
            transmission,
            terminal,
            expiry: None,
            merchant: None,
            order_ref: None,
            original: None,
            network_code: None,
        }
    }

    /// What the request asks for.
    pub fn kind(&self) -> TxnKind {
        classify(self.mti, self.processing_code, self.network_code)
    }

    /// Its idempotency key.
    pub fn key(&self) -> IdemKey {
        IdemKey {
            mti: self.mti.base(),
            terminal: self.terminal,
            stan: self.stan,
            transmission: self.transmission,
        }
    }

    /// Its own identity (41, 11, 7).
    pub fn own_txn(&self) -> TxnId {
        TxnId {
            terminal: self.terminal,
            stan: self.stan,
            transmission: self.transmission,
        }
    }

    /// Whether the MTI refers to an earlier original (0220 completion, 0400/0420 reversal,
    /// and their repeats), whatever its processing code.
    pub fn refers_to_original(&self) -> bool {
        matches!(self.mti.base().value(), 220 | 400 | 420)
    }

    /// The identity whose records this request reads or writes: for completions and
    /// reversals the original's (41 + DE 90's STAN and date-time, or its own 41 + 11 + 7
    /// without DE 90), otherwise its own.
    pub fn target_txn(&self) -> TxnId {
        match self.original {
            Some(o) if self.refers_to_original() => TxnId {
                terminal: self.terminal,
                stan: o.stan,
                transmission: o.transmission,
            },
            _ => self.own_txn(),
        }
    }

    /// The shard a request must be delivered to first: the owner of [`Request::target_txn`],
    /// where its idempotency record and the original's records live.
    pub fn home_shard(&self, shard_count: usize) -> usize {
        self.target_txn().shard(shard_count)
    }
}

// ===== ResponseCode =====

/// ISO 8583 DE 39 values the switch answers (PROTOCOL.md section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseCode {
    /// 00 approved.
    Approved,
    /// 05 do not honour: account blocked, or a late original of a reversal already received.
    DoNotHonour,
    /// 12 invalid transaction: unsupported MTI, processing code or network code.
    InvalidTransaction,
    /// 13 invalid amount: zero, above the hold, or not the order's.
    InvalidAmount,
    /// 14 invalid card number: unknown, or fails Luhn.
    InvalidCardNumber,
    /// 25 unable to locate: original, hold or order not found (or order cancelled).
    UnableToLocate,
    /// 30 format error (answered by the switch, never by the engine).
    FormatError,
    /// 41 lost card.
    LostCard,
    /// 43 stolen card.
    StolenCard,
    /// 51 insufficient funds.
    InsufficientFunds,
    /// 54 expired card.
    ExpiredCard,
    /// 57 transaction not permitted to cardholder: currency differs from the account's.
    NotPermitted,
    /// 61 exceeds withdrawal amount limit: the daily limit.
    ExceedsLimit,
    /// 94 duplicate transmission.
    Duplicate,
    /// 96 system malfunction (answered by the switch, never by the engine).
    SystemMalfunction,
}

impl ResponseCode {
    /// Every code, in wire order.
    pub const ALL: [Self; 15] = [
        Self::Approved,
        Self::DoNotHonour,
        Self::InvalidTransaction,
        Self::InvalidAmount,
        Self::InvalidCardNumber,
        Self::UnableToLocate,
        Self::FormatError,
        Self::LostCard,
        Self::StolenCard,
        Self::InsufficientFunds,
        Self::ExpiredCard,
        Self::NotPermitted,
        Self::ExceedsLimit,
        Self::Duplicate,
        Self::SystemMalfunction,
    ];

    /// The two characters of DE 39.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "00",
            Self::DoNotHonour => "05",
            Self::InvalidTransaction => "12",
            Self::InvalidAmount => "13",
            Self::InvalidCardNumber => "14",
            Self::UnableToLocate => "25",
            Self::FormatError => "30",
            Self::LostCard => "41",
            Self::StolenCard => "43",
            Self::InsufficientFunds => "51",
            Self::ExpiredCard => "54",
            Self::NotPermitted => "57",
            Self::ExceedsLimit => "61",
            Self::Duplicate => "94",
            Self::SystemMalfunction => "96",
        }
    }

    /// From the two characters of DE 39.
    pub fn from_wire(v: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str().as_bytes() == v)
    }

    /// Whether this is 00.
    pub const fn is_approved(self) -> bool {
        matches!(self, Self::Approved)
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ===== Response =====

/// DE 38, a six-character approval code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApprovalCode([u8; 6]);

impl ApprovalCode {
    const ALPHABET: &'static [u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    /// The code for `n` written in base 36, six digits (modulo 36^6).
    pub(crate) fn from_number(mut n: u64) -> Self {
        let mut out = [b'0'; 6];
        for slot in out.iter_mut().rev() {
            *slot = Self::ALPHABET[(n % 36) as usize];
            n /= 36;
        }
        Self(out)
    }

    /// From six characters of the code's alphabet (`0-9`, `A-Z`), as the journal stores it;
    /// `None` for anything else.
    pub(crate) fn from_bytes(b: [u8; 6]) -> Option<Self> {
        b.iter()
            .all(|c| Self::ALPHABET.contains(c))
            .then_some(Self(b))
    }

    /// The six characters as bytes.
    pub(crate) fn to_bytes(self) -> [u8; 6] {
        self.0
    }

    /// The six characters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Debug for ApprovalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApprovalCode({})", self.as_str())
    }
}

impl fmt::Display for ApprovalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DE 54 of a balance inquiry answer, 20 characters: account type (2, DE 3 digits 3-4),
/// amount type `02` (available balance), currency (3), `C`/`D` (1), minor units (12).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdditionalAmounts([u8; 20]);

impl AdditionalAmounts {
    /// Largest amount the 12 digits hold; larger values are written as this.
    pub const MAX_AMOUNT: u64 = 999_999_999_999;

    /// The available-balance entry. A zero amount is written with `C`.
    pub fn available(account_type: [u8; 2], currency: u16, amount: i64) -> Self {
        let sign = if amount < 0 { 'D' } else { 'C' };
        let magnitude = amount.unsigned_abs().min(Self::MAX_AMOUNT);
        let text = format!(
            "{}{}02{:03}{}{:012}",
            char::from(account_type[0]),
            char::from(account_type[1]),
            currency % 1000,
            sign,
            magnitude
        );
        let mut out = [b'0'; 20];
        for (slot, b) in out.iter_mut().zip(text.bytes()) {
            *slot = b;
        }
        Self(out)
    }

    /// From 20 ASCII letters and digits, as the journal stores them; `None` for anything
    /// else.
    pub(crate) fn from_bytes(b: [u8; 20]) -> Option<Self> {
        b.iter().all(u8::is_ascii_alphanumeric).then_some(Self(b))
    }

    /// The 20 characters as bytes.
    pub(crate) fn to_bytes(self) -> [u8; 20] {
        self.0
    }

    /// The 20 characters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Debug for AdditionalAmounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdditionalAmounts({})", self.as_str())
    }
}

/// The engine's answer to one request. The switch echoes the request's fields (2, 3, 4, 7,
/// 11, 12, 13, 37, 41, 42, 49) itself and adds these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The response MTI (request MTI, repeat digit cleared, + 10).
    pub mti: Mti,
    /// DE 39.
    pub code: ResponseCode,
    /// DE 38, only on approved 0110 holds and 0210 purchases.
    pub approval_code: Option<ApprovalCode>,
    /// DE 54, only on approved balance inquiries.
    pub additional_amounts: Option<AdditionalAmounts>,
}

impl Response {
    /// A response carrying only DE 39.
    pub fn plain(mti: Mti, code: ResponseCode) -> Self {
        Self {
            mti,
            code,
            approval_code: None,
            additional_amounts: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mti(v: u16) -> Mti {
        Mti::new(v).unwrap()
    }

    #[test]
    fn response_mti() {
        for (req, resp) in [
            (200, 210),
            (201, 210),
            (100, 110),
            (101, 110),
            (400, 410),
            (401, 410),
            (420, 430),
            (421, 430),
            (220, 230),
            (221, 230),
            (800, 810),
            (801, 810),
            (300, 310),
        ] {
            assert_eq!(mti(req).response(), mti(resp), "{req:04}");
        }
        assert!(mti(201).is_repeat());
        assert!(!mti(200).is_repeat());
        assert_eq!(mti(421).base(), mti(420));
        assert_eq!(Mti::from_digits(b"0200"), Some(mti(200)));
        assert_eq!(Mti::from_digits(b"200"), None);
        assert_eq!(Mti::from_digits(b"02a0"), None);
        assert_eq!(mti(210).to_digits(), *b"0210");
        assert_eq!(mti(210).to_string(), "0210");
    }

    #[test]
    fn fixed_ids_ignore_trailing_spaces() {
        let a = TerminalId::new(b"TERM01  ").unwrap();
        let b = TerminalId::new(b"TERM01").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_bytes(), b"TERM01");
        assert_ne!(TerminalId::new(b" TERM01").unwrap(), b);
        assert!(TerminalId::new(b"        ").unwrap().is_empty());
        assert_eq!(
            TerminalId::new(b"123456789"),
            Err(IdTooLong { len: 9, max: 8 })
        );
        assert!(MerchantId::new(b"123456789012345").is_ok());
    }

    #[test]
    fn field_90() {
        let v = b"020000012306151200000000000000000000000000";
        let o = OriginalData::from_field90(v).unwrap();
        assert_eq!(o.mti, mti(200));
        assert_eq!(o.stan, 123);
        assert_eq!(o.transmission, 615_120_000);
        assert_eq!(OriginalData::from_field90(&v[..41]), None);
    }

    #[test]
    fn approval_codes_and_field_54() {
        assert_eq!(ApprovalCode::from_number(0).as_str(), "000000");
        assert_eq!(ApprovalCode::from_number(35).as_str(), "00000Z");
        assert_eq!(ApprovalCode::from_number(36).as_str(), "000010");
        let f = AdditionalAmounts::available(*b"10", 840, 123_456);
        assert_eq!(f.as_str(), "1002840C000000123456");
        assert_eq!(
            AdditionalAmounts::available(*b"00", 392, 0).as_str(),
            "0002392C000000000000"
        );
        assert_eq!(
            AdditionalAmounts::available(*b"00", 48, -5).as_str(),
            "0002048D000000000005"
        );
    }

    #[test]
    fn response_codes_round_trip() {
        for c in ResponseCode::ALL {
            assert_eq!(ResponseCode::from_wire(c.as_str().as_bytes()), Some(c));
        }
        assert_eq!(ResponseCode::from_wire(b"99"), None);
    }
}
