//! Golden vectors: 12 messages encoded by pyiso8583 4.0.1 in the three built-in layouts and
//! cross-checked against jPOS's packagers (a copy of ../shared/vectors/pyiso8583-vectors.json).
//! Every one must decode to its fields and encode back byte for byte, and our built-in specs
//! must agree with the field definitions the file documents.

use bytes::{Bytes, BytesMut};
use codec::spec::{
    BitmapEncoding, ContentClass, Encoding, LengthType, LengthUnit, Pad, PrefixEncoding,
};
use codec::{builtin, Message, MessageBuilder, Mti, Spec};
use serde_json::Value as Json;

const VECTORS: &str = include_str!("../data/pyiso8583-vectors.json");

/// pyiso8583's spec names for our layouts.
const LAYOUTS: [(&str, &str); 3] = [
    ("default", "iso87-binary"),
    ("default_ascii", "iso87-ascii"),
    ("bcd87", "iso87-bcd"),
];

fn vectors() -> Json {
    serde_json::from_str(VECTORS).expect("vectors file is JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The field dict of a vector with our conventions (track 2 separator `=`), bitmaps and MTI
/// left out.
fn expected_fields(v: &Json) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = v["fields"]
        .as_object()
        .expect("fields")
        .iter()
        .filter(|(k, _)| k.as_str() != "t")
        .map(|(k, val)| {
            (
                k.parse().expect("number"),
                val.as_str().expect("str").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn shared_copy_is_current() {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/pyiso8583-vectors.json"
    );
    match std::fs::read_to_string(shared) {
        Ok(text) => assert_eq!(text, VECTORS, "tests/data copy differs from {shared}"),
        Err(_) => eprintln!("skipping: {shared} not present (fresh clone without ../shared)"),
    }
}

#[test]
fn every_vector_decodes_to_its_fields_in_every_layout() {
    let all = vectors();
    let mut checked = 0;
    for v in all["vectors"].as_array().expect("vectors") {
        let name = v["name"].as_str().expect("name");
        for (py, ours) in LAYOUTS {
            let spec = builtin(ours).expect("builtin");
            let enc = &v["encoded"][py];
            let frame = Bytes::from(unhex(enc["hex"].as_str().expect("hex")));
            assert_eq!(
                frame.len() as u64,
                enc["len"].as_u64().expect("len"),
                "{name} {ours}"
            );
            let msg =
                Message::decode(spec, frame).unwrap_or_else(|e| panic!("{name} in {ours}: {e}"));
            assert_eq!(
                msg.mti().as_str(),
                v["mti"].as_str().expect("mti"),
                "{name} {ours}"
            );
            let got: Vec<(usize, String)> =
                msg.fields().map(|f| (f.number(), f.to_string())).collect();
            assert_eq!(got, expected_fields(v), "{name} in {ours}");
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn every_vector_encodes_byte_for_byte_in_every_layout() {
    let all = vectors();
    for v in all["vectors"].as_array().expect("vectors") {
        let name = v["name"].as_str().expect("name");
        let fields = expected_fields(v);
        for (py, ours) in LAYOUTS {
            let spec = builtin(ours).expect("builtin");
            let mut b = MessageBuilder::new(
                spec,
                Mti::parse(v["mti"].as_str().expect("mti")).expect("mti"),
            );
            for (n, value) in &fields {
                b.set(*n, value).expect("known field");
            }
            let mut out = BytesMut::new();
            b.encode_into(&mut out)
                .unwrap_or_else(|e| panic!("{name} in {ours}: {e}"));
            assert_eq!(
                hex(&out),
                v["encoded"][py]["hex"].as_str().expect("hex"),
                "{name} in {ours}"
            );
        }
    }
}

#[test]
fn bcd_track2_accepts_pyiso8583_separator() {
    // pyiso8583 writes the BCD track-2 separator as `D`; both spellings encode the same.
    let spec = builtin("iso87-bcd").expect("builtin");
    let encode = |t2: &str| {
        let mut b = MessageBuilder::new(spec, Mti::parse("0200").expect("mti"));
        b.set(35, t2).expect("35");
        let mut out = BytesMut::new();
        b.encode_into(&mut out).expect("encodes");
        out
    };
    assert_eq!(
        encode("4761739001010010=2812201"),
        encode("4761739001010010D2812201")
    );
}

/// Our definition of a field, in pyiso8583's vocabulary, for comparison with the file's specs.
fn as_pyiso(spec: &Spec, n: usize) -> Option<(String, String, u64, u64, Option<String>)> {
    let d = spec.field(n)?;
    let nibbles = d.encoding == Encoding::Bcd;
    let data_enc = match d.encoding {
        Encoding::Ascii | Encoding::Hex => "ascii",
        Encoding::Binary | Encoding::Bcd => "b",
        Encoding::Ebcdic => "cp500",
    };
    let len_type = match (d.length, d.prefix) {
        (LengthType::Fixed, _) => 0,
        (l, PrefixEncoding::Ascii | PrefixEncoding::Ebcdic) => {
            d.prefix_digits() as u64 * u64::from(l != LengthType::Fixed)
        }
        (_, _) => d.prefix_len() as u64,
    };
    let len_enc = match (d.length, d.prefix) {
        (LengthType::Fixed, _) if nibbles => "b",
        (LengthType::Fixed, _) => "ascii",
        (_, PrefixEncoding::Bcd) => "bcd",
        (_, PrefixEncoding::Binary) => "b",
        _ => "ascii",
    };
    // pyiso8583 counts hex characters where our value unit is the byte.
    let max = match (d.encoding, d.prefix_counts, d.length) {
        (Encoding::Hex, _, LengthType::Fixed) | (Encoding::Hex, LengthUnit::Wire, _) => {
            u64::from(d.max) * 2
        }
        _ => u64::from(d.max),
    };
    let pad = nibbles.then(|| match d.pad {
        Pad::Left => "left".to_owned(),
        Pad::Right => "right".to_owned(),
    });
    Some((data_enc.into(), len_enc.into(), len_type, max, pad))
}

#[test]
fn builtin_specs_match_the_documented_field_definitions() {
    let all = vectors();
    for (py, ours) in LAYOUTS {
        let spec = builtin(ours).expect("builtin");
        let py_spec = all["specs"][py].as_object().expect("spec");
        for n in 2..=128usize {
            if n == 65 {
                continue; // our tertiary bitmap, see below
            }
            let Some(f) = py_spec.get(&n.to_string()) else {
                // Absent from pyiso8583's bcd87: 28-31 and 97 follow jPOS IFB_AMOUNT.
                let d = spec.field(n).expect("defined");
                assert_eq!(
                    (ours, d.class, d.encoding),
                    ("iso87-bcd", ContentClass::XN, Encoding::Bcd),
                    "{n}"
                );
                continue;
            };
            let pad = match (f.get("left_pad"), f.get("right_pad")) {
                (Some(_), _) => Some("left".to_owned()),
                (_, Some(_)) => Some("right".to_owned()),
                _ => None,
            };
            let want = (
                f["data_enc"].as_str().expect("data_enc").to_owned(),
                f["len_enc"].as_str().expect("len_enc").to_owned(),
                f["len_type"].as_u64().expect("len_type"),
                f["max_len"].as_u64().expect("max_len"),
                pad,
            );
            assert_eq!(as_pyiso(spec, n), Some(want), "field {n} of {ours}");
        }
        // DE 65 carries the tertiary bitmap, in the layout's bitmap encoding.
        let bitmap_len = match spec.bitmap_encoding() {
            BitmapEncoding::Binary => 8,
            BitmapEncoding::Hex => 16,
        };
        if let Some(f65) = py_spec.get("65") {
            assert_eq!(f65["max_len"].as_u64(), Some(bitmap_len), "{ours}");
        }
    }
}
