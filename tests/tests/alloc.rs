//! The codec's hot path does not allocate: decoding a frame, reading fields, and encoding into
//! a warmed-up `BytesMut` (a fresh request and a response built with `copy_from`).
//!
//! A counting global allocator wraps the system one. It counts only on a thread that has opened
//! a measuring window, in a thread-local counter, so the test harness (other test threads, its
//! output capture) cannot add to or race with a measurement. Frames, expected texts and buffers
//! are all prepared before a window opens; assertion messages are built after it closes.

// `unsafe impl GlobalAlloc` is the only unsafe code in the workspace; tests/Cargo.toml lowers
// the workspace's `forbid(unsafe_code)` to `deny` for this reason alone.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use codec::spec::ContentClass;
use codec::{builtin, Message, MessageBuilder, Mti, Spec};
use serde_json::Value as Json;

// ===== counting allocator =====

struct Counting;

thread_local! {
    /// Whether this thread is inside a measuring window.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread inside windows.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator can be called while thread-locals are being torn down. Both
    // are `const`-initialised `Cell`s without destructors, so reaching them never allocates.
    let measuring = MEASURING.try_with(Cell::get).unwrap_or(false);
    if measuring {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counting
// touches only thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded as received; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` inside a measuring window; returns its result and the allocations it made.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    MEASURING.with(|m| m.set(true));
    let out = f();
    MEASURING.with(|m| m.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

// ===== golden vectors =====

const VECTORS: &str = include_str!("../data/pyiso8583-vectors.json");

/// Our layouts and pyiso8583's names for them in the vectors file.
const LAYOUTS: [(&str, &str); 3] = [
    ("iso87-binary", "default"),
    ("iso87-ascii", "default_ascii"),
    ("iso87-bcd", "bcd87"),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

struct Vector {
    name: String,
    mti: Mti,
    /// (field number, text as `iso8583 decode` prints it).
    fields: Vec<(usize, String)>,
    /// (spec, frame) per layout.
    frames: Vec<(&'static Spec, Bytes)>,
}

fn vectors() -> Vec<Vector> {
    let all: Json = serde_json::from_str(VECTORS).expect("vectors file is JSON");
    all["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| {
            let mut fields: Vec<(usize, String)> = v["fields"]
                .as_object()
                .expect("fields")
                .iter()
                .filter(|(k, _)| k.as_str() != "t")
                .map(|(k, val)| {
                    let n = k.parse().expect("field number");
                    (n, val.as_str().expect("text").to_owned())
                })
                .collect();
            fields.sort();
            let frames = LAYOUTS
                .iter()
                .map(|(ours, py)| {
                    let hex = v["encoded"][py]["hex"].as_str().expect("hex");
                    (builtin(ours).expect("builtin"), Bytes::from(unhex(hex)))
                })
                .collect();
            Vector {
                name: v["name"].as_str().expect("name").to_owned(),
                mti: Mti::parse(v["mti"].as_str().expect("mti")).expect("mti"),
                fields,
                frames,
            }
        })
        .collect()
}

// ===== tests =====

#[test]
fn the_counter_counts() {
    // Without this the other tests could pass with a counter that never moves.
    let (v, n) = allocations(|| std::hint::black_box(vec![1u8; 64]));
    assert_eq!(v.len(), 64);
    assert!(n >= 1, "a Vec allocation was not counted");
    let (_, n) = allocations(|| std::hint::black_box(1 + 1));
    assert_eq!(n, 0);
}

#[test]
fn decoding_every_vector_in_every_layout_allocates_nothing() {
    let vectors = vectors();
    let mut checked = 0;
    for v in &vectors {
        for (spec, frame) in &v.frames {
            // The clone is made outside the window: it is a refcount, except the first clone of
            // a `Bytes` made from a `Vec`, which allocates its shared header once.
            let input = frame.clone();
            let (msg, n) = allocations(|| Message::decode(spec, input));
            let msg = msg.unwrap_or_else(|e| panic!("{} in {}: {e}", v.name, spec.name()));
            assert_eq!(n, 0, "{} in {}: decode allocated", v.name, spec.name());
            assert_eq!(msg.fields().count(), v.fields.len());

            // Inside the window this time: once shared, a `Bytes` clone is a refcount.
            let (partial, n) = allocations(|| Message::decode_partial(spec, frame.clone()));
            assert!(partial.is_ok_and(|m| m.error().is_none()));
            assert_eq!(
                n,
                0,
                "{} in {}: decode_partial allocated",
                v.name,
                spec.name()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn reading_fields_allocates_nothing() {
    let vectors = vectors();
    for v in &vectors {
        for (spec, frame) in &v.frames {
            let msg = Message::decode(spec, frame.clone()).expect("decodes");
            let (seen, n) = allocations(|| {
                let mut buf = [0u8; 1024];
                let mut seen = 0usize;
                for (number, text) in &v.fields {
                    let Some(f) = msg.field(*number) else {
                        continue;
                    };
                    // Every way of reading a value on the hot path.
                    let same = f.eq_text(text)
                        && f.text_into(&mut buf) == Some(text.as_str())
                        && !matches!(f.as_str(), Some(s) if s != text)
                        && (f.def().class != ContentClass::N
                            || text.len() > 19
                            || f.to_u64() == text.parse().ok());
                    let _ = std::hint::black_box((f.value(), f.wire(), f.len(), f.masked()));
                    seen += usize::from(same);
                }
                seen += usize::from(msg.mti() == v.mti);
                seen
            });
            assert_eq!(n, 0, "{} in {}: reading allocated", v.name, spec.name());
            assert_eq!(
                seen,
                v.fields.len() + 1,
                "{} in {}: a field read differently from the golden text",
                v.name,
                spec.name()
            );
        }
    }
}

/// The golden `0200_chip_purchase`, built as a terminal would: text fields as text, binary
/// fields (52, 55) as raw bytes.
fn build_0200<'s, 'v>(
    spec: &'s Spec,
    v: &'v Vector,
    raw: &'v [(usize, Vec<u8>)],
) -> MessageBuilder<'s, 'v> {
    let mut b = MessageBuilder::new(spec, v.mti);
    for (n, text) in &v.fields {
        match raw.iter().find(|(m, _)| m == n) {
            Some((_, bytes)) => b.set_bytes(*n, bytes).expect("binary field"),
            None => b.set(*n, text).expect("text field"),
        };
    }
    b
}

#[test]
fn encoding_into_a_warm_buffer_allocates_nothing() {
    let vectors = vectors();
    let v = vectors
        .iter()
        .find(|v| v.name == "0200_chip_purchase")
        .expect("golden 0200");
    let binary = builtin("iso87-binary").expect("builtin");
    let raw: Vec<(usize, Vec<u8>)> = v
        .fields
        .iter()
        .filter(|(n, _)| binary.field(*n).expect("defined").class == ContentClass::B)
        .map(|(n, text)| (*n, unhex(text)))
        .collect();
    assert_eq!(raw.len(), 2, "52 and 55 are binary");

    for (spec, frame) in &v.frames {
        let mut out = BytesMut::new();
        // Warm-up: the buffer grows to the message's size once.
        build_0200(spec, v, &raw)
            .encode_into(&mut out)
            .expect("encodes");
        assert_eq!(
            &out[..],
            &frame[..],
            "{}: not the golden frame",
            spec.name()
        );

        for round in 0..3 {
            let (result, n) = allocations(|| {
                out.clear();
                build_0200(spec, v, &raw).encode_into(&mut out)
            });
            assert!(result.is_ok());
            assert_eq!(n, 0, "{} round {round}: 0200 encode allocated", spec.name());
            assert_eq!(&out[..], &frame[..]);
        }

        // The switch's reply: decode the request, echo its fields, add 38 and 39.
        let req = Message::decode(spec, frame.clone()).expect("decodes");
        let respond = |out: &mut BytesMut| {
            out.clear();
            let mti = req.mti().response().ok_or("no response MTI")?;
            let mut b = MessageBuilder::new(spec, mti);
            for n in [2, 3, 4, 7, 11, 12, 13, 37, 41, 42, 49] {
                b.copy_from(&req, n).map_err(|_| "copy_from")?;
            }
            b.set(38, "A1B2C3")
                .and_then(|b| b.set(39, "00"))
                .map_err(|_| "set")?;
            b.encode_into(out).map_err(|_| "encode")
        };
        let mut out = BytesMut::new();
        respond(&mut out).expect("warm-up response");
        for round in 0..3 {
            let (result, n) = allocations(|| respond(&mut out));
            assert_eq!(result, Ok(()));
            assert_eq!(n, 0, "{} round {round}: 0210 encode allocated", spec.name());
        }
        let resp = Message::decode(spec, out.clone().freeze()).expect("0210 decodes");
        assert_eq!(resp.mti().as_str(), "0210");
        for n in [2, 3, 4, 7, 11, 12, 13, 37, 41, 42, 49] {
            let (a, b) = (req.field(n), resp.field(n));
            assert_eq!(a.map(|f| f.wire()), b.map(|f| f.wire()), "field {n}");
        }
        assert!(resp.field(39).is_some_and(|f| f.eq_text("00")));
        assert!(resp.field(38).is_some_and(|f| f.eq_text("A1B2C3")));
        assert_eq!(resp.fields().count(), 13);
    }
}
