//! Codec hot path on the golden `0200_chip_purchase` (20 fields; 324 bytes in iso87-binary,
//! 436 in iso87-ascii, 259 in iso87-bcd), one bench per layout:
//!
//! - `codec/decode/<layout>/...`: `Message::decode` of a frame (the `Bytes` clone is a refcount).
//! - `codec/decode_read/<layout>/...`: decode plus the reads a switch makes (PAN, processing
//!   code, amount, transmission time, STAN, terminal, currency).
//! - `codec/encode/<layout>/...`: build the 0200 from borrowed text and raw bytes and encode it
//!   into a reused `BytesMut`.
//! - `codec/response/iso87-binary/0210_from_0200`: decode the 0200, build the 0210 by copying
//!   the echoed fields, encode: what the switch does for every request.
//!
//! Run: `cargo bench -p benches --bench codec -- --warm-up-time 1 --measurement-time 3`.
//! Record the machine (`nproc`, `lscpu` model name) with every figure.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use codec::{builtin, Message, MessageBuilder, MessageWriter, Mti, Spec, BUILTIN_NAMES};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value as Json;

const VECTORS: &str = include_str!("../../tests/data/pyiso8583-vectors.json");
const VECTOR: &str = "0200_chip_purchase";

/// pyiso8583's name for each of our layouts in the vectors file.
fn py_name(layout: &str) -> &'static str {
    match layout {
        "iso87-binary" => "default",
        "iso87-ascii" => "default_ascii",
        _ => "bcd87",
    }
}

fn unhex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).expect("hex digit") as u8;
            d(p[0]) << 4 | d(p[1])
        })
        .collect()
}

/// The golden vector: its fields (binary ones as raw bytes) and its frame in every layout.
struct Golden {
    mti: Mti,
    /// (field number, text, raw bytes for class `b`).
    fields: Vec<(usize, String, Option<Vec<u8>>)>,
    frames: Vec<(&'static str, &'static Spec, Bytes)>,
}

fn golden() -> Golden {
    let all: Json = serde_json::from_str(VECTORS).expect("vectors file is JSON");
    let v = all["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["name"] == VECTOR)
        .expect("golden vector present");
    let binary = builtin("iso87-binary").expect("builtin");
    let mut fields: Vec<(usize, String, Option<Vec<u8>>)> = v["fields"]
        .as_object()
        .expect("fields")
        .iter()
        .filter(|(k, _)| k.as_str() != "t")
        .map(|(k, val)| {
            let n: usize = k.parse().expect("field number");
            let text = val.as_str().expect("text").to_owned();
            let is_b = binary.field(n).expect("defined").class == codec::spec::ContentClass::B;
            let raw = is_b.then(|| unhex(&text));
            (n, text, raw)
        })
        .collect();
    fields.sort_by_key(|f| f.0);
    assert_eq!(fields.len(), 20);
    let frames = BUILTIN_NAMES
        .iter()
        .map(|&layout| {
            let hex = v["encoded"][py_name(layout)]["hex"].as_str().expect("hex");
            let spec = builtin(layout).expect("builtin");
            (layout, spec, Bytes::from(unhex(hex)))
        })
        .collect();
    Golden {
        mti: Mti::parse(v["mti"].as_str().expect("mti")).expect("mti"),
        fields,
        frames,
    }
}

/// The fields a switch reads from a 0200 to route and authorise it. Returns something that
/// depends on every read so none can be optimised away.
#[inline]
fn read_switch_fields(msg: &Message<'_>) -> u64 {
    let mut pan = [0u8; 19];
    let pan_len = msg
        .field(2)
        .and_then(|f| f.text_into(&mut pan))
        .map_or(0, str::len);
    let num = |n| msg.field(n).and_then(|f| f.to_u64()).unwrap_or(0);
    let text_len = |n| msg.field(n).and_then(|f| f.as_str()).map_or(0, str::len);
    let processing = num(3);
    let amount = num(4);
    let transmitted = num(7);
    let stan = num(11);
    let terminal = text_len(41);
    let currency = text_len(49);
    black_box(&pan);
    (pan_len + terminal + currency) as u64 ^ processing ^ amount ^ transmitted ^ stan
}

/// Sets the 0200's fields as a terminal gateway would: text as text, binary fields (52, 55) as
/// raw bytes. Fills a builder made by the caller, so the bench measures no move of the builder
/// that a switch's handler would not make either.
fn fill_0200<'v>(b: &mut MessageBuilder<'_, 'v>, g: &'v Golden) {
    for (n, text, raw) in &g.fields {
        match raw {
            Some(bytes) => b.set_bytes(*n, bytes).expect("binary field"),
            None => b.set(*n, text).expect("text field"),
        };
    }
}

fn bench_codec(c: &mut Criterion) {
    let g = golden();
    let mut group = c.benchmark_group("codec");

    for (layout, spec, frame) in &g.frames {
        // Every bench must work on a message that really decodes.
        let msg = Message::decode(spec, frame.clone()).expect("golden decodes");
        assert_eq!(msg.fields().count(), 20);
        assert_ne!(read_switch_fields(&msg), 0);

        group.bench_function(format!("decode/{layout}/{VECTOR}"), |b| {
            b.iter(|| {
                let msg = Message::decode(spec, black_box(frame).clone());
                black_box(&msg);
            })
        });

        group.bench_function(format!("decode_read/{layout}/{VECTOR}"), |b| {
            b.iter(|| {
                let msg = Message::decode(spec, black_box(frame).clone()).expect("decodes");
                black_box(read_switch_fields(&msg))
            })
        });

        let mut out = BytesMut::with_capacity(1024);
        let mut builder = MessageBuilder::new(spec, g.mti);
        fill_0200(&mut builder, &g);
        builder.encode_into(&mut out).expect("encodes");
        assert_eq!(&out[..], &frame[..], "{layout}: encode differs from golden");
        // The fast path: fields in order, straight into the reused buffer.
        let write = |out: &mut BytesMut, g: &Golden| {
            out.clear();
            let mut w = MessageWriter::new(spec, g.mti, out).expect("starts");
            for (n, text, raw) in &g.fields {
                match raw {
                    Some(bytes) => w.set_bytes(*n, bytes).expect("binary field"),
                    None => w.set(*n, text).expect("text field"),
                };
            }
            w.finish().expect("encodes");
        };
        write(&mut out, &g);
        assert_eq!(&out[..], &frame[..], "{layout}: writer differs from golden");
        group.bench_function(format!("encode/{layout}/{VECTOR}"), |b| {
            b.iter(|| {
                write(&mut out, black_box(&g));
                black_box(&out);
            })
        });
        // Fields in any order: a table of borrowed values, then the same writer.
        group.bench_function(format!("encode_builder/{layout}/{VECTOR}"), |b| {
            b.iter(|| {
                out.clear();
                let mut builder = MessageBuilder::new(spec, g.mti);
                fill_0200(&mut builder, black_box(&g));
                builder.encode_into(&mut out).expect("encodes");
                black_box(&out);
            })
        });
    }

    let (_, spec, frame) = &g.frames[0];
    let respond = |frame: &Bytes, out: &mut BytesMut| {
        out.clear();
        let req = Message::decode(spec, frame.clone()).expect("decodes");
        let mti = req.mti().response().expect("0200 has a response");
        // As the switch answers: echoed fields copied, 38 and 39 added, in field order.
        let mut w = MessageWriter::new(spec, mti, out).expect("starts");
        for n in [2, 3, 4, 7, 11, 12, 13, 37] {
            w.copy_from(&req, n).expect("same spec");
        }
        w.set(38, "A1B2C3").expect("38").set(39, "00").expect("39");
        for n in [41, 42, 49] {
            w.copy_from(&req, n).expect("same spec");
        }
        w.finish().expect("encodes");
    };
    let mut out = BytesMut::with_capacity(1024);
    respond(frame, &mut out);
    let resp = Message::decode(spec, out.clone().freeze()).expect("0210 decodes");
    assert_eq!(resp.mti().as_str(), "0210");
    assert_eq!(resp.fields().count(), 13);
    group.bench_function("response/iso87-binary/0210_from_0200", |b| {
        b.iter(|| {
            respond(black_box(frame), &mut out);
            black_box(&out);
        })
    });

    // Numbers as loadgen sends them: amount, date-time, STAN (`set_u64`'s digit conversion).
    let numbers = |out: &mut BytesMut, values: &[u64; 3]| {
        out.clear();
        let mut w =
            MessageWriter::new(spec, Mti::parse("0200").expect("mti"), out).expect("starts");
        w.set_u64(4, values[0]).expect("4");
        w.set_u64(7, values[1]).expect("7");
        w.set_u64(11, values[2]).expect("11");
        w.finish().expect("encodes");
    };
    let values = [123_456, 1_128_042_015, 654_321];
    numbers(&mut out, &values);
    let msg = Message::decode(spec, out.clone().freeze()).expect("decodes");
    let read = |n| msg.field(n).and_then(|f| f.to_u64());
    assert_eq!([read(4), read(7), read(11)], values.map(Some));
    group.bench_function("encode_numbers/iso87-binary/4_7_11", |b| {
        b.iter(|| {
            numbers(&mut out, black_box(&values));
            black_box(&out);
        })
    });

    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
