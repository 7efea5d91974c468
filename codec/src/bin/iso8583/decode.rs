//! `decode` (JSON Lines) and `describe` (a readable table): one decoded message in, text out.
//!
//! Values are `Field`'s text form, the way they stand on the wire (zero padding kept, BCD without
//! its pad nibble, track 2's separator as `=`, binary as upper-case hex); unless the user asks to
//! reveal, they go through `Field::masked` (PAN and extended PAN: BIN + last 4; 35, 36, 45, 52,
//! 55 wiped).

use std::fmt::Write as _;

use bytes::Bytes;
use codec::{DecodeError, Field, Message, Spec};

use crate::input::push_hex;

/// Decodes one whole frame; a message that decodes only partially is an error.
pub fn decode<'s>(spec: &'s Spec, frame: Vec<u8>) -> Result<Message<'s>, DecodeError> {
    Message::decode(spec, Bytes::from(frame))
}

/// `{"mti": "0200", "fields": {"2": "...", ...}}`, keys in ascending numeric order. A spec with a
/// message header adds `"header"` (upper-case hex) first.
pub fn message_json(msg: &Message<'_>, reveal: bool) -> String {
    let mut s = String::with_capacity(msg.frame().len() * 2 + 64);
    s.push('{');
    if !msg.header().is_empty() {
        s.push_str("\"header\": \"");
        push_hex(&mut s, msg.header());
        s.push_str("\", ");
    }
    s.push_str("\"mti\": \"");
    s.push_str(msg.mti().as_str());
    s.push_str("\", \"fields\": {");
    let mut text = String::new();
    for (i, field) in msg.fields().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "\"{}\": ", field.number());
        text.clear();
        push_value(&mut text, &field, reveal);
        push_json_string(&mut s, &text);
    }
    s.push_str("}}");
    s
}

/// `{"error": "..."}`; the text is a codec or hex error's Display, which never holds field bytes.
pub fn error_json(message: &str) -> String {
    let mut s = String::with_capacity(message.len() + 16);
    s.push_str("{\"error\": ");
    push_json_string(&mut s, message);
    s.push('}');
    s
}

fn push_value(out: &mut String, field: &Field<'_>, reveal: bool) {
    let _ = if reveal {
        write!(out, "{field}")
    } else {
        write!(out, "{}", field.masked())
    };
}

/// Appends `text` as a JSON string literal.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A readable table of one message: an MTI line, then one row per field (number, name from the
/// spec, length in value units, value), then the decode error if the frame did not decode
/// completely (`describe` shows how far it got).
pub fn describe(msg: &Message<'_>, reveal: bool, line: Option<usize>) -> String {
    let spec = msg.spec();
    let mut s = String::new();
    let _ = write!(s, "MTI {}  (", msg.mti());
    if let Some(n) = line {
        let _ = write!(s, "line {n}, ");
    }
    let _ = writeln!(s, "{}, {} bytes)", spec.name(), msg.frame().len());
    if !msg.header().is_empty() {
        s.push_str("header ");
        push_hex(&mut s, msg.header());
        s.push('\n');
    }
    let width = msg
        .fields()
        .map(|f| f.def().name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let _ = writeln!(s, "{:>5}  {:<width$}  {:>4}  Value", "Field", "Name", "Len");
    let mut text = String::new();
    for field in msg.fields() {
        text.clear();
        push_value(&mut text, &field, reveal);
        let _ = writeln!(
            s,
            "{:>5}  {:<width$}  {:>4}  {}",
            field.number(),
            field.def().name,
            field.len(),
            text
        );
    }
    if let Some(e) = msg.error() {
        let _ = writeln!(s, "error: {e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use codec::{builtin, MessageBuilder, Mti};

    const PAN: &str = "4761739001010010";
    const TRACK2: &str = "4761739001010010=28122011143844400000";

    /// Field 43 is fixed `ans` 40: quotes and a backslash to escape, trailing spaces kept.
    fn f43() -> String {
        format!("{:<40}", "ACME \"HW\" \\")
    }

    fn frame(spec: &Spec) -> Vec<u8> {
        let f43 = f43();
        let mut b = MessageBuilder::new(spec, Mti::parse("0200").expect("mti"));
        b.set(2, PAN).expect("2");
        b.set(3, "000000").expect("3");
        b.set(4, "000000012550").expect("4");
        b.set(11, "000101").expect("11");
        b.set(35, TRACK2).expect("35");
        b.set(43, &f43).expect("43");
        b.set(52, "1a2b3c4d5e6f7081").expect("52");
        let mut out = BytesMut::new();
        b.encode_into(&mut out).expect("encodes");
        out.to_vec()
    }

    #[test]
    fn json_is_ordered_and_escaped() {
        for name in codec::BUILTIN_NAMES {
            let spec = builtin(name).expect("builtin");
            let msg = decode(spec, frame(spec)).expect("decodes");
            let json = message_json(&msg, true);
            let pad = " ".repeat(40 - "ACME \"HW\" \\".len());
            assert_eq!(
                json,
                format!(
                    "{{\"mti\": \"0200\", \"fields\": {{\"2\": \"{PAN}\", \"3\": \"000000\", \
                     \"4\": \"000000012550\", \"11\": \"000101\", \"35\": \"{TRACK2}\", \
                     \"43\": \"ACME \\\"HW\\\" \\\\{pad}\", \"52\": \"1A2B3C4D5E6F7081\"}}}}"
                ),
                "{name}"
            );
            // Valid JSON with the same values.
            let v: serde_json::Value = serde_json::from_str(&json).expect("json");
            assert_eq!(v["fields"]["43"], f43());
        }
    }

    #[test]
    fn json_masks_unless_revealed() {
        let spec = builtin("iso87-bcd").expect("builtin");
        let msg = decode(spec, frame(spec)).expect("decodes");
        let json = message_json(&msg, false);
        assert!(!json.contains(PAN), "{json}");
        assert!(json.contains("\"2\": \"476173******0010\""), "{json}");
        assert!(json.contains(&format!("\"35\": \"{}\"", "*".repeat(TRACK2.len()))));
        assert!(json.contains(&format!("\"52\": \"{}\"", "*".repeat(16))));
        assert!(json.contains("\"4\": \"000000012550\""));
    }

    #[test]
    fn partial_decode_is_an_error() {
        let spec = builtin("iso87-binary").expect("builtin");
        let mut bytes = frame(spec);
        // Field 4 follows MTI, bitmap, LL PAN and field 3: a letter in it is a content error.
        let at = 4 + 8 + 2 + PAN.len() + 6;
        bytes[at] = b'X';
        let err = decode(spec, bytes.clone()).expect_err("content error");
        assert_eq!(err.field(), Some(4));
        let shown = error_json(&err.to_string());
        assert!(shown.starts_with("{\"error\": \"field 4:"), "{shown}");
        // describe shows what did decode, and the error.
        let msg = Message::decode_partial(spec, Bytes::from(bytes)).expect("partial");
        let table = describe(&msg, false, Some(7));
        assert!(
            table.starts_with("MTI 0200  (line 7, iso87-binary, "),
            "{table}"
        );
        assert!(table.contains("error: field 4:"), "{table}");
        assert!(!table.contains(PAN), "{table}");
    }

    #[test]
    fn describe_rows() {
        let spec = builtin("iso87-ascii").expect("builtin");
        let msg = decode(spec, frame(spec)).expect("decodes");
        let table = describe(&msg, false, None);
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with("2 "))
            .expect("row 2");
        assert!(row.contains("Primary Account Number"), "{table}");
        assert!(row.contains(" 16  476173******0010"), "{table}");
        assert!(!table.contains(PAN));
        assert!(describe(&msg, true, None).contains(PAN));
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\u{1}b\n");
        assert_eq!(s, "\"a\\u0001b\\n\"");
    }
}
