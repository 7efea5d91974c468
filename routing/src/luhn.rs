//! The Luhn (mod 10) check digit of ISO/IEC 7812-1, which every card number carries in its
//! last position.

/// Whether `digits` (ASCII) ends with a correct Luhn check digit.
///
/// Anything that is not an ASCII digit, or fewer than two digits, is not valid: a lone check
/// digit protects nothing.
pub fn is_valid(digits: &[u8]) -> bool {
    if digits.len() < 2 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    weighted_sum(digits, false).is_multiple_of(10)
}

/// The ASCII check digit to append to `payload` (ASCII digits) so that the result passes
/// [`is_valid`]; `None` when `payload` is empty or holds a non-digit.
pub fn check_digit(payload: &[u8]) -> Option<u8> {
    if payload.is_empty() || !payload.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // The check digit will sit at the right, so the payload's rightmost digit is doubled.
    let sum = weighted_sum(payload, true);
    let digit = u8::try_from((10 - sum % 10) % 10).ok()?;
    Some(b'0' + digit)
}

/// Sum of the digits from the right, every second one doubled (minus 9 when above 9).
/// `double_first` says whether the rightmost digit is doubled.
fn weighted_sum(digits: &[u8], double_first: bool) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let d = u32::from(b - b'0');
            let doubled = (i % 2 == 0) == double_first;
            if doubled {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_card_numbers() {
        for pan in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "79927398713",
        ] {
            assert!(is_valid(pan.as_bytes()), "{pan}");
        }
        for pan in ["4111111111111112", "79927398710", "0", "", "4111-1111"] {
            assert!(!is_valid(pan.as_bytes()), "{pan}");
        }
    }

    #[test]
    fn check_digit_completes_a_payload() {
        assert_eq!(check_digit(b"7992739871"), Some(b'3'));
        assert_eq!(check_digit(b"411111111111111"), Some(b'1'));
        assert_eq!(check_digit(b""), None);
        assert_eq!(check_digit(b"12a"), None);
        for payload in ["1", "12", "40000000000000", "3714496353984"] {
            let mut full = payload.as_bytes().to_vec();
            full.push(check_digit(payload.as_bytes()).unwrap());
            assert!(is_valid(&full), "{payload}");
        }
    }
}
