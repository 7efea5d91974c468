//! Inputs that once crashed a fuzz target (fuzz/fuzz_targets/*), kept as byte literals so the
//! fix stays fixed without a nightly toolchain. Each test names the target and the fix.

use bytes::Bytes;
use codec::error::{ClassName, FieldErrorKind};
use codec::spec::ContentClass;
use codec::{DecodeError, Message, MessageBuilder, Spec};

/// A layout reaching what the built-ins do not (a subset of fuzz_targets/decode.rs's
/// `fuzz-exotic`): EBCDIC MTI, hex bitmaps, a 2-byte header, a variable-length BCD `x+n` field
/// with a binary LL prefix counting value units.
fn exotic() -> Spec {
    Spec::from_json(
        r#"{
          "name": "fuzz-exotic",
          "mti": "ebcdic",
          "bitmap": "hex",
          "header_len": 2,
          "fields": {
            "11": {"name": "STAN", "class": "n", "encoding": "ascii", "length": "fixed", "max": 6},
            "28": {"name": "Signed fee", "class": "x+n", "encoding": "bcd", "length": "LL",
                   "prefix": "binary", "max": 17}
          }
        }"#,
    )
    .expect("valid spec")
}

/// decode target: a variable `x+n` BCD field whose prefix says 0. The sign byte is still read
/// (its wire length is 1) and content checking computed `units - 1` on 0: "attempt to subtract
/// with overflow" in message.rs `check_content`. Fixed there: zero units is a content error.
#[test]
fn decode_xn_bcd_with_zero_length_prefix() {
    let spec = exotic();
    // header 00 00, MTI "0200" in EBCDIC, bitmap with DE 28, LL prefix 0, sign 'C'.
    let input: &[u8] = b"\x00\x00\xf0\xf2\xf0\xf00000001000000000\x00C";
    let msg = Message::decode_partial(&spec, Bytes::from_static(input)).expect("MTI and bitmap");
    assert_eq!(msg.mti().as_str(), "0200");
    assert!(msg.in_bitmap(28));
    assert!(!msg.has(28));
    assert_eq!(
        msg.error(),
        Some(&DecodeError::Field {
            field: 28,
            kind: FieldErrorKind::Content(ClassName(ContentClass::XN)),
        })
    );
    assert!(Message::decode(&spec, Bytes::from_static(input)).is_err());
    // Display and Debug of the partial message do not panic either.
    assert!(msg.to_string().starts_with("0200 {"));

    // One sign and one digit is the shortest valid value; it round-trips.
    let input: &[u8] = b"\x00\x00\xf0\xf2\xf0\xf00000001000000000\x02D\x05";
    let msg = Message::decode(&spec, Bytes::from_static(input)).expect("valid x+n");
    assert_eq!(msg.field(28).unwrap().to_string(), "D5");
    let mut b = MessageBuilder::new(&spec, msg.mti());
    b.header(msg.header()).copy_from(&msg, 28).unwrap();
    let mut out = bytes::BytesMut::new();
    b.encode_into(&mut out).unwrap();
    assert_eq!(&out[..], input);
}
