//! `encode`: one JSON object (`{"mti": "0200", "fields": {"2": "...", ...}}`, the shape `decode
//! --reveal` prints) in, the message's upper-case hex out.
//!
//! Errors name the member or field and the reason and never quote a value: the input is card
//! data. serde_json's own type errors would quote it, so the input is read as a generic
//! `serde_json::Value` and checked by hand.

use std::fmt;

use bytes::BytesMut;
use codec::{EncodeError, MessageBuilder, Mti, Spec};
use serde_json::Value;

use crate::input::{parse_hex, push_hex, HexError};

/// Why a JSON line could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not JSON; the category and column only (serde_json's text could hold a value).
    Json {
        what: &'static str,
        column: usize,
    },
    NotObject,
    /// A `{"error": ...}` line, as `decode` prints for a message it could not read.
    ErrorRecord,
    UnknownMember,
    MissingMti,
    BadMti,
    MissingFields,
    FieldsNotObject,
    /// A key of `fields` that is not a decimal number.
    BadKey,
    /// The same data element twice (`"2"` and `"02"`).
    Duplicate(usize),
    NotString {
        field: usize,
        found: &'static str,
    },
    Header(HexError),
    HeaderNotString,
    Encode(EncodeError),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Json { what, column } => {
                write!(f, "not valid JSON ({what} error at column {column})")
            }
            LineError::NotObject => f.write_str("not a JSON object"),
            LineError::ErrorRecord => {
                f.write_str("an error record (a message `decode` could not read), not a message")
            }
            LineError::UnknownMember => f.write_str(
                "unknown member: expected \"mti\", \"fields\" and optionally \"header\"",
            ),
            LineError::MissingMti => f.write_str("\"mti\" is missing"),
            LineError::BadMti => f.write_str("\"mti\" must be a string of four decimal digits"),
            LineError::MissingFields => f.write_str("\"fields\" is missing"),
            LineError::FieldsNotObject => f.write_str("\"fields\" must be a JSON object"),
            LineError::BadKey => {
                f.write_str("a key of \"fields\" is not a data element number (2..=192)")
            }
            LineError::Duplicate(n) => write!(f, "field {n} is given twice"),
            LineError::NotString { field, found } => write!(
                f,
                "field {field}: value must be a JSON string (as `decode` prints it), not {found}"
            ),
            LineError::Header(e) => write!(f, "\"header\": {e}"),
            LineError::HeaderNotString => f.write_str("\"header\" must be a string of hex digits"),
            LineError::Encode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LineError {}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Encodes one JSON line and returns the message's upper-case hex.
pub fn encode_line(spec: &Spec, line: &[u8]) -> Result<String, LineError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| LineError::Json {
        what: match e.classify() {
            serde_json::error::Category::Io => "read",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "end of input",
        },
        column: e.column(),
    })?;
    let Value::Object(obj) = &value else {
        return Err(LineError::NotObject);
    };
    if obj.contains_key("error") {
        return Err(LineError::ErrorRecord);
    }
    if obj
        .keys()
        .any(|k| !matches!(k.as_str(), "mti" | "fields" | "header"))
    {
        return Err(LineError::UnknownMember);
    }
    let mti = match obj.get("mti") {
        None => return Err(LineError::MissingMti),
        Some(Value::String(s)) => Mti::parse(s).ok_or(LineError::BadMti)?,
        Some(_) => return Err(LineError::BadMti),
    };
    let header = match obj.get("header") {
        None => Vec::new(),
        Some(Value::String(h)) => parse_hex(h.as_bytes()).map_err(LineError::Header)?,
        Some(_) => return Err(LineError::HeaderNotString),
    };
    let fields = match obj.get("fields") {
        None => return Err(LineError::MissingFields),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(LineError::FieldsNotObject),
    };
    let mut b = MessageBuilder::new(spec, mti);
    b.header(&header);
    for (key, v) in fields {
        let n = field_number(key).ok_or(LineError::BadKey)?;
        if b.is_set(n) {
            return Err(LineError::Duplicate(n));
        }
        let Value::String(text) = v else {
            return Err(LineError::NotString {
                field: n,
                found: kind(v),
            });
        };
        b.set(n, text).map_err(LineError::Encode)?;
    }
    let mut out = BytesMut::new();
    b.encode_into(&mut out).map_err(LineError::Encode)?;
    let mut hex = String::with_capacity(out.len() * 2);
    push_hex(&mut hex, &out);
    Ok(hex)
}

/// `"2"` -> 2. Up to three decimal digits; whether the number is a data element is the
/// builder's call (1 and 65 are bitmaps, 0 and 193.. do not exist).
fn field_number(key: &str) -> Option<usize> {
    if key.is_empty() || key.len() > 3 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::builtin;

    const PAN: &str = "4761739001010010";

    fn binary() -> &'static Spec {
        builtin("iso87-binary").expect("builtin")
    }

    fn err(line: &str) -> String {
        let e = encode_line(binary(), line.as_bytes()).expect_err("fails");
        let shown = e.to_string();
        assert!(!shown.contains(PAN), "{shown}");
        assert!(!shown.contains("476173"), "{shown}");
        shown
    }

    #[test]
    fn encodes_an_echo_request() {
        let hex = encode_line(
            binary(),
            br#"{"mti": "0800", "fields": {"7": "1125103000", "11": "000001", "70": "301"}}"#,
        )
        .expect("encodes");
        // MTI, primary bitmap (1, 7, 11), secondary bitmap (70), then the fields.
        let mut expected = String::from("30383030");
        expected.push_str("8220000000000000");
        expected.push_str("0400000000000000");
        push_hex(&mut expected, b"1125103000000001301");
        assert_eq!(hex, expected);
    }

    #[test]
    fn rejects_numbers_bitmaps_and_bad_shapes_without_echoing() {
        let e = err(&format!(r#"{{"mti": "0200", "fields": {{"2": {PAN}}}}}"#));
        assert_eq!(
            e,
            "field 2: value must be a JSON string (as `decode` prints it), not a number"
        );
        assert!(err(r#"{"mti": "0200", "fields": {"65": "0000000000000000"}}"#).contains("65"));
        assert!(err(r#"{"mti": "0200", "fields": {"1": "0000000000000000"}}"#).contains(" 1 "));
        assert!(err(r#"{"mti": "0200", "fields": {"193": "1"}}"#).contains("193"));
        assert_eq!(
            err(&format!(
                r#"{{"mti": "0200", "fields": {{"x{PAN}": "1"}}}}"#
            )),
            LineError::BadKey.to_string()
        );
        assert_eq!(
            err(&format!(
                r#"{{"mti": "0200", "fields": {{"2": "{PAN}", "02": "{PAN}"}}}}"#
            )),
            "field 2 is given twice"
        );
        assert_eq!(err(r#"{"fields": {}}"#), "\"mti\" is missing");
        assert_eq!(
            err(r#"{"mti": 200, "fields": {}}"#),
            LineError::BadMti.to_string()
        );
        assert_eq!(err(r#"{"mti": "0200"}"#), "\"fields\" is missing");
        assert_eq!(err(r#"[1]"#), "not a JSON object");
        assert_eq!(
            err(r#"{"error": "field 4: content is not valid n (digits)"}"#),
            LineError::ErrorRecord.to_string()
        );
        assert_eq!(
            err(r#"{"mti": "0200", "fields": {}, "pan": "1"}"#),
            LineError::UnknownMember.to_string()
        );
        let e = err(&format!(r#"{{"mti": "0200", "fields": {{"2": "{PAN}"#));
        assert!(e.starts_with("not valid JSON"), "{e}");
    }

    #[test]
    fn codec_errors_name_the_field() {
        // Masked PAN from `decode` without --reveal: not digits.
        let e = err(r#"{"mti": "0200", "fields": {"2": "476173******0010"}}"#);
        assert_eq!(e, "field 2: content is not valid n (digits)");
        let e = err(r#"{"mti": "0200", "fields": {"3": "0000"}}"#);
        assert!(e.starts_with("field 3: length 4 differs"), "{e}");
    }
}
