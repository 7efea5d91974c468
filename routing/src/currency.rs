//! ISO 4217 currencies the switch knows: numeric code -> alphabetic code and minor-unit
//! exponent.
//!
//! The exponent decides how a data file's major-unit decimal becomes the minor units that
//! ISO 8583 DE 4 carries (`1500.00` USD is 150000; `150000` JPY is 150000; `12.345` BHD is
//! 12345). A code missing here is refused when data files are loaded, so every account and
//! order the engine holds has a known exponent. Fund and precious-metal codes (XAU, CLF,
//! ...) are left out on purpose: no card account is kept in them.

/// `(numeric, alphabetic, exponent)`, sorted by numeric code for binary search.
const TABLE: &[(u16, &str, u8)] = &[
    (8, "ALL", 2),
    (12, "DZD", 2),
    (32, "ARS", 2),
    (36, "AUD", 2),
    (48, "BHD", 3),
    (50, "BDT", 2),
    (108, "BIF", 0),
    (124, "CAD", 2),
    (152, "CLP", 0),
    (156, "CNY", 2),
    (170, "COP", 2),
    (174, "KMF", 0),
    (188, "CRC", 2),
    (203, "CZK", 2),
    (208, "DKK", 2),
    (262, "DJF", 0),
    (324, "GNF", 0),
    (344, "HKD", 2),
    (348, "HUF", 2),
    (352, "ISK", 0),
    (356, "INR", 2),
    (360, "IDR", 2),
    (368, "IQD", 3),
    (376, "ILS", 2),
    (392, "JPY", 0),
    (398, "KZT", 2),
    (400, "JOD", 3),
    (404, "KES", 2),
    (410, "KRW", 0),
    (414, "KWD", 3),
    (434, "LYD", 3),
    (458, "MYR", 2),
    (484, "MXN", 2),
    (504, "MAD", 2),
    (512, "OMR", 3),
    (554, "NZD", 2),
    (566, "NGN", 2),
    (578, "NOK", 2),
    (586, "PKR", 2),
    (600, "PYG", 0),
    (604, "PEN", 2),
    (608, "PHP", 2),
    (634, "QAR", 2),
    (643, "RUB", 2),
    (646, "RWF", 0),
    (682, "SAR", 2),
    (702, "SGD", 2),
    (704, "VND", 0),
    (710, "ZAR", 2),
    (752, "SEK", 2),
    (756, "CHF", 2),
    (764, "THB", 2),
    (784, "AED", 2),
    (788, "TND", 3),
    (800, "UGX", 0),
    (818, "EGP", 2),
    (826, "GBP", 2),
    (840, "USD", 2),
    (858, "UYU", 2),
    (901, "TWD", 2),
    (941, "RSD", 2),
    (946, "RON", 2),
    (949, "TRY", 2),
    (950, "XAF", 0),
    (952, "XOF", 0),
    (953, "XPF", 0),
    (978, "EUR", 2),
    (980, "UAH", 2),
    (985, "PLN", 2),
    (986, "BRL", 2),
];

fn find(code: u16) -> Option<&'static (u16, &'static str, u8)> {
    TABLE
        .binary_search_by_key(&code, |&(n, _, _)| n)
        .ok()
        .and_then(|i| TABLE.get(i))
}

/// Number of decimals of the currency's minor unit (`840` -> 2, `392` -> 0, `48` -> 3);
/// `None` for a code the switch does not know.
pub fn exponent(code: u16) -> Option<u8> {
    find(code).map(|&(_, _, e)| e)
}

/// The alphabetic code (`840` -> `"USD"`), for logs and documentation.
pub fn alpha(code: u16) -> Option<&'static str> {
    find(code).map(|&(_, a, _)| a)
}

/// Whether the switch knows `code`.
pub fn is_known(code: u16) -> bool {
    find(code).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn exponents_from_iso_4217() {
        let expected = [
            (840, 2),
            (978, 2),
            (826, 2),
            (124, 2),
            (36, 2),
            (756, 2),
            (392, 0),
            (410, 0),
            (48, 3),
            (414, 3),
            (512, 3),
            (788, 3),
            (400, 3),
            (356, 2),
            (986, 2),
            (484, 2),
            (156, 2),
            (752, 2),
            (578, 2),
            (208, 2),
            (985, 2),
            (949, 2),
            (710, 2),
            (702, 2),
            (344, 2),
            (554, 2),
        ];
        for (code, exp) in expected {
            assert_eq!(exponent(code), Some(exp), "{code:03}");
        }
        assert_eq!(alpha(840), Some("USD"));
        assert_eq!(alpha(48), Some("BHD"));
        assert_eq!(exponent(999), None);
        assert_eq!(exponent(0), None);
        assert!(!is_known(1));
    }
}
