//! Masking of card data for logs and default CLI output (PCI DSS 3.3/3.4 style): the PAN (DE 2)
//! and the extended PAN (DE 34) keep their BIN (first 6) and last 4 characters; track 2 (DE
//! 35), track 3 (DE 36), track 1 (DE 45), the PIN block (DE 52) and ICC data (DE 55) are wiped
//! to `*` of the same length.

use std::fmt;

use crate::message::Value;

/// Data elements wiped entirely.
pub const WIPED_FIELDS: [usize; 5] = [35, 36, 45, 52, 55];

/// Data elements masked as a PAN.
pub const PAN_FIELDS: [usize; 2] = [2, 34];

/// How a field's value is shown in logs.
pub fn is_sensitive(field: usize) -> bool {
    WIPED_FIELDS.contains(&field) || PAN_FIELDS.contains(&field)
}

/// A field value that displays masked, in `Debug` as in `Display`: `?masked` in a log line
/// must not print what `%masked` hides.
#[derive(Clone, Copy)]
pub struct Masked<'m> {
    field: usize,
    value: Value<'m>,
}

impl<'m> Masked<'m> {
    pub fn new(field: usize, value: Value<'m>) -> Self {
        Masked { field, value }
    }
}

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if WIPED_FIELDS.contains(&self.field) {
            return write_stars(f, self.value.char_len());
        }
        if PAN_FIELDS.contains(&self.field) {
            let len = self.value.char_len();
            let mut i = 0;
            let mut result = Ok(());
            self.value.for_each_char(|c| {
                let shown = if pan_position_shown(i, len) { c } else { b'*' };
                if result.is_ok() {
                    result = fmt::Write::write_char(f, shown as char);
                }
                i += 1;
            });
            return result;
        }
        fmt::Display::fmt(&self.value, f)
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masked {{ field: {}, value: \"{self}\" }}", self.field)
    }
}

/// Whether character `i` of a PAN of `len` characters may be shown: the first 6 and the last 4,
/// and only when at least 6 stay hidden (a short number shows its last 4 at most).
pub fn pan_position_shown(i: usize, len: usize) -> bool {
    if len >= 16 {
        i < 6 || i + 4 >= len
    } else {
        len > 4 && i + 4 >= len && len >= 10
    }
}

/// Masks a PAN given as text: `4761739001010010` -> `476173******0010`.
pub fn mask_pan(pan: &str) -> String {
    let len = pan.chars().count();
    pan.chars()
        .enumerate()
        .map(|(i, c)| if pan_position_shown(i, len) { c } else { '*' })
        .collect()
}

fn write_stars(f: &mut fmt::Formatter<'_>, n: usize) -> fmt::Result {
    for _ in 0..n {
        f.write_str("*")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_keeps_bin_and_last_four_only() {
        assert_eq!(mask_pan("4761739001010010"), "476173******0010");
        assert_eq!(mask_pan("4761739001010010123"), "476173*********0123");
        // Shorter PANs: showing BIN + last 4 would reveal too much; last 4 only.
        assert_eq!(mask_pan("378282246310005"), "***********0005");
        assert_eq!(mask_pan("123456789012"), "********9012");
        assert_eq!(mask_pan("1234"), "****");
    }

    #[test]
    fn wiped_fields_show_no_content() {
        let v = Value::Text("4761739001010010=28122011143844400000");
        let shown = Masked::new(35, v).to_string();
        assert!(shown.chars().all(|c| c == '*'));
        assert_eq!(shown.len(), 37);
        let track3 = Masked::new(36, Value::Text("011234567890123=724")).to_string();
        assert_eq!(track3, "*".repeat(19));
        assert_eq!(
            Masked::new(41, Value::Text("TERM0001")).to_string(),
            "TERM0001"
        );
    }

    #[test]
    fn the_extended_pan_is_masked_as_a_pan() {
        let shown = Masked::new(34, Value::Text("4761739001010010")).to_string();
        assert_eq!(shown, "476173******0010");
    }

    #[test]
    fn debug_masks_as_display_does() {
        let pan = format!("{:?}", Masked::new(2, Value::Text("4761739001010010")));
        assert_eq!(pan, r#"Masked { field: 2, value: "476173******0010" }"#);
        let track = format!(
            "{:?}",
            Masked::new(35, Value::Text("4761739001010010=2812"))
        );
        assert!(
            !track.contains("4761") && !track.contains("2812"),
            "{track}"
        );
        let pin = format!(
            "{:?}",
            Masked::new(52, Value::Binary(&[0x1A, 0x2B, 0x3C, 0x4D]))
        );
        assert!(!pin.contains("1A") && !pin.contains("26"), "{pin}");
    }
}
