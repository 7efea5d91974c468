//! The primary account number (ISO 8583 DE 2), stored inline so a request carries no heap
//! allocation for it, and masked in every `Debug` and `Display` so no log line can leak it.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::luhn;

/// A primary account number: 1 to 19 ASCII digits, stored inline.
///
/// `Debug` and `Display` show at most the BIN (first 6) and the last 4 digits (PCI DSS
/// 3.4); [`Pan::as_str`] gives the full number for the few places that need it (lookups,
/// data files), never for logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pan {
    // Bytes past `len` stay zero, so derived equality and hashing see only the digits.
    digits: [u8; Pan::MAX_LEN],
    len: u8,
}

/// Why a byte string is not a [`Pan`]. Carries no digits of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PanError {
    /// No digits at all.
    #[error("PAN is empty")]
    Empty,
    /// More than 19 digits (ISO 8583 DE 2 is n..19).
    #[error("PAN has {0} characters, at most 19 allowed")]
    TooLong(usize),
    /// A character other than `0`-`9`.
    #[error("PAN contains a character that is not a digit")]
    NotDigits,
}

impl Pan {
    /// Longest PAN ISO 8583 DE 2 (n..19) can carry.
    pub const MAX_LEN: usize = 19;
    /// Shortest card number the switch serves (ISO/IEC 7812: 12 to 19 digits incl. check).
    pub const MIN_CARD_LEN: usize = 12;

    /// A PAN from ASCII digits.
    pub fn from_digits(digits: &[u8]) -> Result<Self, PanError> {
        if digits.is_empty() {
            return Err(PanError::Empty);
        }
        if digits.len() > Self::MAX_LEN {
            return Err(PanError::TooLong(digits.len()));
        }
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(PanError::NotDigits);
        }
        let mut buf = [0u8; Self::MAX_LEN];
        buf[..digits.len()].copy_from_slice(digits);
        let len = u8::try_from(digits.len()).map_err(|_| PanError::TooLong(digits.len()))?;
        Ok(Self { digits: buf, len })
    }

    /// For generators whose output is digits by construction: keeps at most 19 bytes and
    /// does not validate, so it cannot fail.
    pub(crate) fn from_trusted_digits(digits: &[u8]) -> Self {
        let n = digits.len().min(Self::MAX_LEN);
        let mut buf = [0u8; Self::MAX_LEN];
        buf[..n].copy_from_slice(&digits[..n]);
        Self {
            digits: buf,
            len: n as u8,
        }
    }

    /// The digits as ASCII bytes. Full card number: never log it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }

    /// The digits as text. Full card number: never log it.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// Number of digits.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a `Pan` holds at least one digit. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the last digit is a correct Luhn check digit.
    pub fn luhn_valid(&self) -> bool {
        luhn::is_valid(self.as_bytes())
    }

    /// Whether this can be a card number the switch serves: 12 to 19 digits passing Luhn.
    /// A PAN failing this answers 14 without any account lookup.
    pub fn is_card_number(&self) -> bool {
        (Self::MIN_CARD_LEN..=Self::MAX_LEN).contains(&self.len()) && self.luhn_valid()
    }

    /// The masked form, for logs and error messages.
    pub fn masked(&self) -> MaskedPan<'_> {
        MaskedPan(self)
    }
}

impl FromStr for Pan {
    type Err = PanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_digits(s.as_bytes())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.masked().fmt(f)
    }
}

/// A PAN shown as BIN + `*` + last 4 (`411111******1111`) when that hides at least six
/// digits (16 and more), the last 4 only when it would not (`***********0005`: a 15-digit
/// number would otherwise keep only five digits hidden, a 12-digit one two): for card numbers
/// the rule of the codec's masking (`codec::mask::pan_position_shown`; this crate does not
/// depend on the codec). Numbers shorter than 12 digits, which are not card numbers anyway,
/// are shown as `*` only (the codec still shows the last 4 of a 10- or 11-digit field).
#[derive(Clone, Copy)]
pub struct MaskedPan<'a>(&'a Pan);

impl fmt::Display for MaskedPan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.as_bytes();
        let n = d.len();
        for (i, &b) in d.iter().enumerate() {
            let shown = n >= Pan::MIN_CARD_LEN && ((n >= 16 && i < 6) || i >= n - 4);
            f.write_char(if shown { char::from(b) } else { '*' })?;
        }
        Ok(())
    }
}

impl fmt::Debug for MaskedPan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let pan: Pan = "4111111111111111".parse().unwrap();
        assert_eq!(pan.as_str(), "4111111111111111");
        assert_eq!(pan.len(), 16);
        assert!(pan.is_card_number());
        assert_eq!(pan.to_string(), "411111******1111");
        assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
        let amex: Pan = "378282246310005".parse().unwrap();
        assert_eq!(amex.to_string(), "***********0005");
        let twelve: Pan = "411111111116".parse().unwrap();
        assert_eq!(twelve.to_string(), "********1116");
        let nineteen: Pan = "4111111111111111113".parse().unwrap();
        assert_eq!(nineteen.to_string(), "411111*********1113");
        let short: Pan = "12345678".parse().unwrap();
        assert_eq!(short.to_string(), "********");
        assert!(!short.is_card_number());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Pan::from_digits(b""), Err(PanError::Empty));
        assert_eq!(
            Pan::from_digits(b"41111111111111111111"),
            Err(PanError::TooLong(20))
        );
        assert_eq!(Pan::from_digits(b"4111 1111"), Err(PanError::NotDigits));
        // Equality sees digits only, never stale buffer bytes.
        assert_eq!(
            Pan::from_digits(b"12").unwrap(),
            "12".parse::<Pan>().unwrap()
        );
        assert_ne!(
            Pan::from_digits(b"12").unwrap(),
            Pan::from_digits(b"120").unwrap()
        );
    }

    #[test]
    fn luhn_failure_is_not_a_card_number() {
        let pan: Pan = "4111111111111112".parse().unwrap();
        assert!(!pan.is_card_number());
    }
}
