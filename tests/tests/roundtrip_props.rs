//! Property tests of the codec in the three built-in layouts:
//!
//! - any valid message (random MTI, random subset of the defined fields 2..=192, each value
//!   valid for its field definition) encodes, decodes to the same texts, and encodes again to
//!   the same bytes;
//! - no input makes `Message::decode_partial` panic, and whatever decodes fully re-encodes
//!   (`copy_from` of every field) to the frame it came from;
//! - a content error in one field leaves the other fields readable.
//!
//! Case counts are bounded (256 per property); `PROPTEST_RNG_SEED=<u64>` replays a run.

use bytes::{Bytes, BytesMut};
use codec::spec::{BitmapEncoding, ContentClass, FieldDef, LengthType};
use codec::{builtin, DecodeError, Message, MessageBuilder, Mti, Spec, BUILTIN_NAMES};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use serde_json::Value as Json;

// ===== generated messages =====

/// One generated field: the text given to `MessageBuilder::set`, the raw bytes given to
/// `set_bytes` instead (class `b` only), and the text decoding must give back.
#[derive(Clone, Debug)]
struct GenField {
    n: usize,
    input: String,
    raw: Option<Vec<u8>>,
    expected: String,
}

#[derive(Clone, Debug)]
struct GenMessage {
    mti: String,
    fields: Vec<GenField>,
}

fn spec(name: &str) -> &'static Spec {
    builtin(name).expect("builtin spec")
}

fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Variable fields are mostly short (up to 60 units, to keep cases fast) and sometimes as long
/// as the definition allows (999 for the private LLL fields).
fn length(def: &FieldDef, min: usize) -> BoxedStrategy<usize> {
    let max = def.max as usize;
    if def.length == LengthType::Fixed {
        return Just(max).boxed();
    }
    let short = max.min(60).max(min);
    prop_oneof![9 => min..=short, 1 => min..=max].boxed()
}

fn chars_of(class: ContentClass) -> Vec<char> {
    let digits = '0'..='9';
    let letters = ('A'..='Z').chain('a'..='z');
    match class {
        ContentClass::A => letters.chain([' ']).collect(),
        ContentClass::An => letters.chain(digits).chain([' ']).collect(),
        ContentClass::Ans => (0x20u8..=0x7e).map(char::from).collect(),
        _ => digits.collect(),
    }
}

/// A value valid for `def`: (input text, raw bytes for `set_bytes`, expected decoded text).
fn value(def: &FieldDef) -> BoxedStrategy<(String, Option<Vec<u8>>, String)> {
    match def.class {
        ContentClass::B => (length(def, 0), any::<bool>(), any::<bool>())
            .prop_flat_map(|(len, as_bytes, lower)| {
                (vec(any::<u8>(), len), Just((as_bytes, lower)))
            })
            .prop_map(|(bytes, (as_bytes, lower))| {
                let hex = upper_hex(&bytes);
                // Hex input is case-insensitive; the decoded text is always upper case.
                let input = if lower {
                    hex.to_ascii_lowercase()
                } else {
                    hex.clone()
                };
                (input, as_bytes.then_some(bytes), hex)
            })
            .boxed(),
        ContentClass::XN => length(def, 2)
            .prop_flat_map(|len| {
                (
                    select(vec!['C', 'D']),
                    vec(select(chars_of(ContentClass::N)), len - 1),
                )
            })
            .prop_map(|(sign, digits)| {
                let text: String = std::iter::once(sign).chain(digits).collect();
                (text.clone(), None, text)
            })
            .boxed(),
        ContentClass::Z => length(def, 0)
            .prop_flat_map(|len| {
                (
                    vec(select(chars_of(ContentClass::N)), len),
                    any::<Option<Index>>(),
                )
            })
            .prop_map(|(mut digits, separator)| {
                // Track 2: digits with at most one field separator.
                if let Some(at) = separator.filter(|_| !digits.is_empty()) {
                    let i = at.index(digits.len());
                    digits[i] = '=';
                }
                let text: String = digits.into_iter().collect();
                (text.clone(), None, text)
            })
            .boxed(),
        class => {
            let chars = chars_of(class);
            length(def, 0)
                .prop_flat_map(move |len| vec(select(chars.clone()), len))
                .prop_map(|chars| {
                    let text: String = chars.into_iter().collect();
                    (text.clone(), None, text)
                })
                .boxed()
        }
    }
}

/// A random valid message for `spec`: random MTI, up to 40 of its fields, valid values.
fn message(spec: &'static Spec) -> impl Strategy<Value = GenMessage> {
    let numbers: Vec<usize> = spec.fields().map(|(n, _)| n).collect();
    ("[0-9]{4}", subsequence(numbers, 0..=40))
        .prop_flat_map(move |(mti, numbers)| {
            let fields: Vec<_> = numbers
                .into_iter()
                .map(|n| {
                    let def = spec.field(n).expect("defined");
                    value(def).prop_map(move |(input, raw, expected)| GenField {
                        n,
                        input,
                        raw,
                        expected,
                    })
                })
                .collect();
            (Just(mti), fields)
        })
        .prop_map(|(mti, fields)| GenMessage { mti, fields })
}

fn encode(spec: &Spec, m: &GenMessage) -> Result<Bytes, TestCaseError> {
    let mti = Mti::parse(&m.mti).ok_or_else(|| TestCaseError::fail("MTI"))?;
    let mut b = MessageBuilder::new(spec, mti);
    for f in &m.fields {
        let set = match &f.raw {
            Some(bytes) => b.set_bytes(f.n, bytes),
            None => b.set(f.n, &f.input),
        };
        set.map_err(|e| TestCaseError::fail(format!("set {}: {e}", f.n)))?;
    }
    let mut out = BytesMut::new();
    b.encode_into(&mut out)
        .map_err(|e| TestCaseError::fail(format!("{}: encode: {e}", spec.name())))?;
    Ok(out.freeze())
}

/// Re-encodes a decoded message with `copy_from` of every field it has.
fn reencode(msg: &Message<'_>) -> Bytes {
    let mut b = MessageBuilder::new(msg.spec(), msg.mti());
    for f in msg.fields() {
        b.copy_from(msg, f.number()).expect("same spec");
    }
    let mut out = BytesMut::new();
    b.encode_into(&mut out)
        .expect("a decoded message re-encodes");
    out.freeze()
}

fn round_trip(spec: &'static Spec, m: &GenMessage) -> Result<(), TestCaseError> {
    let frame = encode(spec, m)?;
    let msg = Message::decode(spec, frame.clone())
        .map_err(|e| TestCaseError::fail(format!("{}: decode: {e}", spec.name())))?;
    prop_assert_eq!(msg.mti(), Mti::parse(&m.mti).expect("MTI"));
    prop_assert_eq!(msg.fields().count(), m.fields.len());
    let mut buf = vec![0u8; 2048];
    for f in &m.fields {
        let got = msg.field(f.n);
        prop_assert!(got.is_some(), "field {} missing", f.n);
        let got = got.expect("checked");
        prop_assert_eq!(got.to_string(), f.expected.as_str(), "field {}", f.n);
        prop_assert!(got.eq_text(&f.expected), "field {} eq_text", f.n);
        prop_assert_eq!(got.text_into(&mut buf), Some(f.expected.as_str()));
    }

    // Again from what was decoded: copied wire bytes, and the decoded texts.
    prop_assert_eq!(&reencode(&msg)[..], &frame[..], "copy_from re-encode");
    let texts: Vec<(usize, String)> = msg.fields().map(|f| (f.number(), f.to_string())).collect();
    let mut b = MessageBuilder::new(spec, msg.mti());
    for (n, text) in &texts {
        b.set(*n, text)
            .map_err(|e| TestCaseError::fail(format!("set {n}: {e}")))?;
    }
    let mut again = BytesMut::new();
    b.encode_into(&mut again)
        .map_err(|e| TestCaseError::fail(format!("text re-encode: {e}")))?;
    prop_assert_eq!(&again[..], &frame[..], "text re-encode");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_iso87_binary(m in message(spec("iso87-binary"))) {
        round_trip(spec("iso87-binary"), &m)?;
    }

    #[test]
    fn round_trip_iso87_ascii(m in message(spec("iso87-ascii"))) {
        round_trip(spec("iso87-ascii"), &m)?;
    }

    #[test]
    fn round_trip_iso87_bcd(m in message(spec("iso87-bcd"))) {
        round_trip(spec("iso87-bcd"), &m)?;
    }
}

#[test]
fn every_field_at_its_longest_round_trips() {
    // What the strategies reach only rarely: all 190 fields (tertiary bitmap included), each at
    // its maximum length.
    for name in BUILTIN_NAMES {
        let spec = spec(name);
        let fields = spec
            .fields()
            .map(|(n, def)| {
                let max = def.max as usize;
                let (input, expected) = match def.class {
                    ContentClass::B => ("ab".repeat(max), "AB".repeat(max)),
                    ContentClass::XN => {
                        let t = format!("D{}", "7".repeat(max - 1));
                        (t.clone(), t)
                    }
                    ContentClass::Z => {
                        let t = format!("4={}", "9".repeat(max - 2));
                        (t.clone(), t)
                    }
                    class => {
                        // Every character the class allows, over and over.
                        let t: String = chars_of(class).into_iter().cycle().take(max).collect();
                        (t.clone(), t)
                    }
                };
                GenField {
                    n,
                    input,
                    raw: None,
                    expected,
                }
            })
            .collect();
        let m = GenMessage {
            mti: "0200".to_owned(),
            fields,
        };
        if let Err(e) = round_trip(spec, &m) {
            panic!("{name}: {e}");
        }
    }
}

// ===== malformed input =====

/// A frame to feed the decoder: one layout's encoding of a valid message with some bytes
/// overwritten and maybe cut short, or plain random bytes after a plausible MTI.
fn hostile_frame() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (0usize..3)
        .prop_flat_map(|i| (Just(i), message(spec(BUILTIN_NAMES[i]))))
        .prop_filter_map("encodes", |(i, m)| encode(spec(BUILTIN_NAMES[i]), &m).ok())
        .prop_flat_map(|frame| {
            (
                Just(frame),
                // Mostly bytes a field could hold, so that many edited frames still decode
                // fully and the re-encoding property is tested on something.
                vec(
                    (
                        any::<Index>(),
                        prop_oneof![b'0'..=b'9', 0x20u8..=0x7e, any::<u8>()],
                    ),
                    1..4,
                ),
                prop_oneof![4 => Just(None), 1 => any::<Index>().prop_map(Some)],
            )
        })
        .prop_map(|(frame, edits, cut)| {
            let mut f = frame.to_vec();
            for (at, byte) in edits {
                let i = at.index(f.len());
                f[i] = byte;
            }
            if let Some(at) = cut {
                f.truncate(at.index(f.len() + 1));
            }
            f
        });
    let random = (
        select(vec![&b"0200"[..], b"0800", b"\x02\x00"]),
        vec(any::<u8>(), 0..600),
    )
        .prop_map(|(mti, rest)| [mti, &rest[..]].concat());
    prop_oneof![
        1 => vec(any::<u8>(), 0..600),
        2 => random,
        5 => mutated,
    ]
}

/// Exercises every read of a (possibly partly) decoded message; none may panic.
fn read_everything(msg: &Message<'_>) {
    let mut buf = [0u8; 2048];
    for f in msg.fields() {
        let _ = (f.to_string(), f.to_u64(), f.as_str(), f.eq_text("0"));
        let _ = f.text_into(&mut buf).map(str::len);
        let _ = f.text_into(&mut buf[..3]).map(str::len);
        let _ = (
            format!("{:?}", f.masked()),
            f.wire_bytes(),
            f.value().char_len(),
        );
    }
    let _ = (
        format!("{msg}"),
        format!("{msg:?}"),
        msg.header(),
        msg.bitmaps(),
    );
    for n in 0..=200 {
        let _ = (msg.has(n), msg.in_bitmap(n), msg.field(n));
    }
}

/// `copy_from` re-encoding writes canonical bitmaps: a secondary (tertiary) bitmap only when a
/// field needs it, and hex bitmaps in upper case. A decoded frame that says otherwise is valid
/// but re-encodes differently.
fn canonical_bitmaps(msg: &Message<'_>) -> bool {
    let [primary, secondary, tertiary] = msg.bitmaps();
    let secondary_used = primary & (1 << 63) == 0 || secondary != 0;
    let tertiary_used = secondary & (1 << 63) == 0 || tertiary != 0;
    secondary_used && tertiary_used
}

fn check_hostile(frame: &[u8]) -> Result<(), TestCaseError> {
    let frame = Bytes::copy_from_slice(frame);
    for name in BUILTIN_NAMES {
        let spec = spec(name);
        let Ok(msg) = Message::decode_partial(spec, frame.clone()) else {
            prop_assert!(Message::decode(spec, frame.clone()).is_err());
            continue;
        };
        read_everything(&msg);
        if msg.error().is_some() {
            prop_assert!(Message::decode(spec, frame.clone()).is_err());
            continue;
        }
        prop_assert!(Message::decode(spec, frame.clone()).is_ok());
        let again = reencode(&msg);
        if canonical_bitmaps(&msg) {
            prop_assert_eq!(again.len(), frame.len(), "{}: re-encoded length", name);
            for (i, (&want, &got)) in frame.iter().zip(again.iter()).enumerate() {
                // Lower-case hex in a bitmap reads as upper case and is written so.
                let case_only = spec.bitmap_encoding() == BitmapEncoding::Hex
                    && want.is_ascii_hexdigit()
                    && want.to_ascii_uppercase() == got;
                prop_assert!(want == got || case_only, "{}: byte {} differs", name, i);
            }
        } else {
            // Same message, leaner bitmaps.
            let re = Message::decode(spec, again.clone());
            prop_assert!(re.is_ok(), "{}: re-encoding does not decode", name);
            let re = re.expect("checked");
            prop_assert_eq!(re.mti(), msg.mti());
            let a: Vec<_> = msg.fields().map(|f| (f.number(), f.wire())).collect();
            let b: Vec<_> = re.fields().map(|f| (f.number(), f.wire())).collect();
            prop_assert_eq!(a, b);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decode_partial_never_panics_and_full_decodes_reencode(frame in hostile_frame()) {
        check_hostile(&frame)?;
    }
}

#[test]
fn hostile_examples() {
    // Cases the strategy may miss: empty, bitmaps announcing everything, huge prefixes.
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"0200".to_vec(),
        [&b"0200"[..], &[0xff; 24]].concat(),
        [&b"0200"[..], &[0xff; 24], &b"99"[..]].concat(),
        [
            &b"0200"[..],
            b"FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        ]
        .concat(),
        [&b"0200"[..], b"ffffffffffffffff"].concat(),
        [&b"0200"[..], &[0x80, 0, 0, 0, 0, 0, 0, 0], &[0; 8]].concat(),
        [
            &b"0200"[..],
            &[0x80, 0, 0, 0, 0, 0, 0, 0],
            &[0x80, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat(),
        [
            &[0x02, 0x00][..],
            &[0x40, 0, 0, 0, 0, 0, 0, 0],
            &[0x99, 0x99],
        ]
        .concat(),
        [&b"0200"[..], &[0x40, 0, 0, 0, 0, 0, 0, 0], b"99"].concat(),
    ];
    for c in &cases {
        if let Err(e) = check_hostile(c) {
            panic!("{e}");
        }
    }
}

#[test]
fn an_empty_secondary_bitmap_decodes_and_reencodes_without_it() {
    // DE 1 set, secondary bitmap all zeros, no fields: valid, and the one frame shape where a
    // full decode does not re-encode byte for byte (the encoder writes bitmaps from the fields).
    let spec = spec("iso87-binary");
    let frame = Bytes::from([&b"0800"[..], &[0x80, 0, 0, 0, 0, 0, 0, 0], &[0; 8]].concat());
    let msg = Message::decode(spec, frame).expect("decodes");
    assert!(!canonical_bitmaps(&msg));
    assert_eq!(msg.fields().count(), 0);
    assert_eq!(&reencode(&msg)[..], &[&b"0800"[..], &[0; 8]].concat()[..]);
}

// ===== a content error in one field =====

const VECTORS: &str = include_str!("../data/pyiso8583-vectors.json");

fn golden_0200() -> Vec<(&'static Spec, Bytes)> {
    let all: Json = serde_json::from_str(VECTORS).expect("vectors file is JSON");
    let v = all["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["name"] == "0200_chip_purchase")
        .expect("golden 0200");
    [
        ("iso87-binary", "default"),
        ("iso87-ascii", "default_ascii"),
        ("iso87-bcd", "bcd87"),
    ]
    .iter()
    .map(|(ours, py)| {
        let hex = v["encoded"][py]["hex"].as_str().expect("hex");
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>();
        (spec(ours), Bytes::from(bytes))
    })
    .collect()
}

#[test]
fn letters_in_field_4_leave_the_other_fields_readable() {
    for (spec, frame) in golden_0200() {
        let name = spec.name();
        let good = Message::decode(spec, frame.clone()).expect("golden decodes");
        let amount = good.field(4).expect("field 4");
        let start = amount.wire().as_ptr() as usize - frame.as_ptr() as usize;
        let len = amount.wire().len();
        let mut bad = frame.to_vec();
        // Letters: ASCII in the text layouts, nibbles A-F in BCD.
        let letters: &[u8] = if name == "iso87-bcd" {
            &[0xAB; 6]
        } else {
            b"TWELVEDOLLAR"
        };
        bad[start..start + len].copy_from_slice(&letters[..len]);
        let bad = Bytes::from(bad);

        let err = Message::decode(spec, bad.clone()).expect_err("field 4 is not numeric");
        assert_eq!(err.field(), Some(4), "{name}");
        assert!(matches!(err, DecodeError::Field { field: 4, .. }), "{name}");
        // Names the field and the class, never the bytes.
        let text = err.to_string();
        assert!(
            !text.contains("TWELVE") && !text.contains("AB"),
            "{name}: {text}"
        );

        let msg = Message::decode_partial(spec, bad).expect("header, MTI, bitmap are fine");
        assert_eq!(msg.error().and_then(DecodeError::field), Some(4), "{name}");
        assert!(
            msg.in_bitmap(4) && !msg.has(4) && msg.field(4).is_none(),
            "{name}"
        );
        assert!(msg.field(11).is_some_and(|f| f.eq_text("000123")), "{name}");
        assert!(
            msg.field(41).is_some_and(|f| f.eq_text("TERM0001")),
            "{name}"
        );
        assert_eq!(msg.field(11).and_then(|f| f.to_u64()), Some(123), "{name}");
        // Every field but 4 reads as in the good frame.
        let others: Vec<(usize, String)> = good
            .fields()
            .filter(|f| f.number() != 4)
            .map(|f| (f.number(), f.to_string()))
            .collect();
        let got: Vec<(usize, String)> = msg.fields().map(|f| (f.number(), f.to_string())).collect();
        assert_eq!(got, others, "{name}");
    }
}
