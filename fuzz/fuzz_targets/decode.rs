//! Arbitrary bytes as one frame, decoded with each built-in layout (and one custom layout that
//! reaches the encodings the built-ins do not use: EBCDIC, binary and EBCDIC prefixes, variable
//! `x+n`, right-padded BCD, wire-counted prefixes, a message header, the tertiary bitmap).
//!
//! Invariants checked:
//! - `Message::decode_partial` never panics, whatever the bytes;
//! - every readable field prints, masks and converts without panicking; masking hides what it
//!   must (wiped fields are all `*`, a PAN keeps at least 6 digits hidden);
//! - a message that decodes without error re-encodes field by field with
//!   `MessageBuilder::copy_from` and decodes again to the same MTI, header and fields;
//! - `MessageWriter` (the streaming encoder) writes the same bytes as `MessageBuilder`, and
//!   refuses fields out of order without leaving anything in the buffer.

#![no_main]

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use codec::mask::{PAN_FIELDS, WIPED_FIELDS};
use codec::{builtin, Field, Message, MessageBuilder, MessageWriter, Spec, BUILTIN_NAMES};
use libfuzzer_sys::fuzz_target;

const EXOTIC: &str = r#"{
  "name": "fuzz-exotic",
  "mti": "ebcdic",
  "bitmap": "hex",
  "header_len": 2,
  "fields": {
    "2":   {"name": "PAN", "class": "n", "encoding": "bcd", "length": "LL", "prefix": "bcd", "max": 19, "pad": "right"},
    "3":   {"name": "Processing Code", "class": "n", "encoding": "ebcdic", "length": "fixed", "max": 6},
    "4":   {"name": "Amount", "class": "n", "encoding": "bcd", "length": "fixed", "max": 12},
    "11":  {"name": "STAN", "class": "n", "encoding": "ascii", "length": "fixed", "max": 6},
    "14":  {"name": "Expiry", "class": "n", "encoding": "bcd", "length": "fixed", "max": 3},
    "28":  {"name": "Signed fee", "class": "x+n", "encoding": "bcd", "length": "LL", "prefix": "binary", "max": 17},
    "29":  {"name": "Signed fee, wire counted", "class": "x+n", "encoding": "bcd", "length": "LL", "prefix": "bcd", "max": 17, "prefix_counts": "wire"},
    "30":  {"name": "Signed fee, fixed", "class": "x+n", "encoding": "bcd", "length": "fixed", "max": 9},
    "31":  {"name": "Signed fee, EBCDIC", "class": "x+n", "encoding": "ebcdic", "length": "LL", "prefix": "ebcdic", "max": 13},
    "35":  {"name": "Track 2", "class": "z", "encoding": "bcd", "length": "LL", "prefix": "bcd", "max": 37, "pad": "right", "prefix_counts": "wire"},
    "41":  {"name": "Terminal", "class": "ans", "encoding": "ebcdic", "length": "fixed", "max": 8},
    "43":  {"name": "Name", "class": "a", "encoding": "ascii", "length": "LL", "max": 40},
    "44":  {"name": "Response data", "class": "an", "encoding": "ebcdic", "length": "LLL", "prefix": "ebcdic", "max": 99},
    "48":  {"name": "Private", "class": "ans", "encoding": "ascii", "length": "LLLL", "prefix": "binary", "max": 9999},
    "52":  {"name": "PIN block", "class": "b", "encoding": "binary", "length": "fixed", "max": 8},
    "55":  {"name": "ICC", "class": "b", "encoding": "hex", "length": "LLL", "prefix": "ascii", "max": 255, "prefix_counts": "wire"},
    "62":  {"name": "Binary prefixed", "class": "b", "encoding": "binary", "length": "LL", "prefix": "binary", "max": 255},
    "63":  {"name": "Hex fixed", "class": "b", "encoding": "hex", "length": "fixed", "max": 4},
    "70":  {"name": "Network code", "class": "n", "encoding": "bcd", "length": "fixed", "max": 3},
    "90":  {"name": "Original data", "class": "n", "encoding": "ascii", "length": "fixed", "max": 42},
    "100": {"name": "Receiving institution", "class": "n", "encoding": "bcd", "length": "LLLL", "prefix": "bcd", "max": 9999},
    "128": {"name": "MAC", "class": "b", "encoding": "binary", "length": "fixed", "max": 8},
    "130": {"name": "Tertiary text", "class": "ans", "encoding": "ascii", "length": "LLL", "max": 999},
    "192": {"name": "Last", "class": "z", "encoding": "ascii", "length": "LL", "max": 37}
  }
}"#;

fn specs() -> &'static [Spec] {
    static SPECS: OnceLock<Vec<Spec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut specs: Vec<Spec> = BUILTIN_NAMES
            .iter()
            .map(|n| builtin(n).expect("built-in spec").clone())
            .collect();
        specs.push(Spec::from_json(EXOTIC).expect("exotic spec is valid"));
        specs
    })
}

fuzz_target!(|data: &[u8]| {
    for spec in specs() {
        check(spec, data);
    }
});

fn check(spec: &Spec, data: &[u8]) {
    let Ok(msg) = Message::decode_partial(spec, Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = msg.to_string();
    let _ = format!("{msg:?}");
    if let Some(e) = msg.error() {
        let _ = e.to_string();
    }
    for field in msg.fields() {
        exercise(&field);
    }
    for n in [0, 1, 65, 193, 1000, usize::MAX] {
        assert!(msg.field(n).is_none(), "field {n} is never data");
    }
    if msg.error().is_some() {
        return;
    }

    // Complete: every announced data element is readable.
    for n in (2..=192).filter(|&n| n != 65) {
        assert_eq!(msg.in_bitmap(n), msg.has(n), "field {n}");
    }

    // Re-encode field by field and decode again.
    let mut b = MessageBuilder::new(spec, msg.mti());
    b.header(msg.header());
    for field in msg.fields() {
        b.copy_from(&msg, field.number())
            .unwrap_or_else(|e| panic!("copy_from field {}: {e}", field.number()));
    }
    let mut out = BytesMut::new();
    b.encode_into(&mut out)
        .unwrap_or_else(|e| panic!("re-encoding a decoded message: {e}"));
    // The streaming writer (fields in ascending order) writes the same bytes as the builder.
    let mut direct = BytesMut::from(&b"kept"[..]);
    let mut w = MessageWriter::with_header(spec, msg.header(), msg.mti(), &mut direct)
        .unwrap_or_else(|e| panic!("MessageWriter::with_header: {e}"));
    for field in msg.fields() {
        w.copy_from(&msg, field.number())
            .unwrap_or_else(|e| panic!("MessageWriter::copy_from field {}: {e}", field.number()));
    }
    w.finish()
        .unwrap_or_else(|e| panic!("MessageWriter::finish: {e}"));
    assert_eq!(&direct[..4], b"kept");
    assert_eq!(
        &direct[4..],
        &out[..],
        "MessageWriter and MessageBuilder differ"
    );

    // Fields out of order are refused and leave the buffer as it was.
    let numbers: Vec<usize> = msg.fields().map(|f| f.number()).collect();
    if let [.., a, b] = numbers[..] {
        let mut dst = BytesMut::from(&b"kept"[..]);
        let mut w = MessageWriter::with_header(spec, msg.header(), msg.mti(), &mut dst)
            .unwrap_or_else(|e| panic!("MessageWriter::with_header: {e}"));
        let _ = w.copy_from(&msg, b);
        assert!(
            w.copy_from(&msg, a).is_err(),
            "field {a} after {b} accepted"
        );
        assert!(w.finish().is_err());
        assert_eq!(&dst[..], b"kept");
    }

    let again = Message::decode(spec, out.freeze())
        .unwrap_or_else(|e| panic!("decoding a re-encoded message: {e}"));
    assert_eq!(again.mti(), msg.mti());
    assert_eq!(again.header(), msg.header());
    let fields = |m: &Message<'_>| -> Vec<(usize, usize, Vec<u8>)> {
        m.fields()
            .map(|f| (f.number(), f.len(), f.wire().to_vec()))
            .collect()
    };
    assert_eq!(
        fields(&again),
        fields(&msg),
        "fields differ after re-encoding"
    );
}

fn exercise(field: &Field<'_>) {
    let value = field.value();
    let chars = value.char_len();

    let masked = field.masked().to_string();
    assert_eq!(masked.chars().count(), chars, "masking keeps the length");
    let stars = masked.chars().filter(|&c| c == '*').count();
    if WIPED_FIELDS.contains(&field.number()) {
        assert_eq!(stars, chars, "field {} must be wiped", field.number());
    }
    if PAN_FIELDS.contains(&field.number()) {
        assert!(
            stars >= chars.min(6),
            "a PAN keeps at least 6 digits hidden"
        );
    }
    let _ = format!("{field:?}");

    let mut buf = [0u8; 20_000];
    let text = field
        .text_into(&mut buf)
        .expect("a valid field's text fits and is ASCII")
        .to_owned();
    assert_eq!(text.len(), chars);
    assert_eq!(field.to_string(), text);
    assert!(field.eq_text(&text));
    if let Some(v) = field.to_u64() {
        let trimmed = text.trim_start_matches('0');
        let expected = if trimmed.is_empty() { "0" } else { trimmed };
        assert_eq!(v.to_string(), expected);
    }
    if chars > 0 {
        let mut short = vec![0u8; chars - 1];
        assert!(field.text_into(&mut short).is_none());
        assert!(!field.eq_text(&text[..chars - 1]));
    }
    if let Some(s) = field.as_str() {
        assert_eq!(s, text);
    }
    assert_eq!(field.wire_bytes(), field.wire());
}
