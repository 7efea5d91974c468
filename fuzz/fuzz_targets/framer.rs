//! Arbitrary bytes through the TCP length framer, for every framing, fed in pieces.
//!
//! Input layout: byte 0 picks the maximum frame size, byte 1 seeds the sizes of the pieces the
//! stream is cut into (as TCP might deliver it); the rest is the stream. `fuzz/seed.sh` writes
//! seeds in this layout.
//!
//! Invariants checked:
//! - the decoder never panics;
//! - every frame it yields is at most the maximum;
//! - fed in pieces, it yields exactly the frames (and the same error) as fed all at once;
//! - a too-large header never makes the buffer grow to the declared size;
//! - frames re-encoded with the same framer give back the consumed bytes.

#![no_main]

use bytes::{Bytes, BytesMut};
use codec::framing::{FrameError, Framing, LengthFramer, DEFAULT_MAX_FRAME};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// What a run ended with, comparable between the two ways of feeding.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Input exhausted; this many bytes left over.
    Done(usize),
    TooLarge(usize),
    BadHeader,
}

fn max_for(control: u8) -> usize {
    match control % 8 {
        0 => DEFAULT_MAX_FRAME,
        1 => 0,
        2 => 1,
        3 => 9999,
        4 => 65_535,
        _ => usize::from(control) * 4,
    }
}

/// A small deterministic generator (xorshift) for the cut sizes.
struct Cuts(u32);

impl Cuts {
    fn next(&mut self) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        // Mostly small pieces, sometimes large ones.
        match x % 8 {
            0 => (x >> 8) as usize % 4096 + 1,
            _ => (x >> 8) as usize % 8 + 1,
        }
    }
}

fn run(framing: Framing, max: usize, stream: &[u8], cuts: Option<u8>) -> (Vec<Bytes>, End) {
    let mut framer = LengthFramer::new(framing).with_max_frame(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rng = cuts.map(|c| Cuts(u32::from(c).wrapping_mul(2_654_435_761) | 1));
    let mut pos = 0;
    while pos < stream.len() {
        let piece = rng.as_mut().map_or(stream.len(), Cuts::next);
        let end = stream.len().min(pos + piece);
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max, "frame of {} > max {max}", frame.len());
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { declared, max: m }) => {
                    assert_eq!(m, max);
                    assert!(declared > max);
                    // Never reserved what the header declared (when that is far beyond anything
                    // this stream could have needed).
                    if declared > 4 * (max + stream.len() + 64) {
                        assert!(buf.capacity() < declared, "reserved the declared size");
                    }
                    return (frames, End::TooLarge(declared));
                }
                Err(FrameError::BadHeader) => {
                    assert!(matches!(framing, Framing::Ascii4 | Framing::Bcd2));
                    return (frames, End::BadHeader);
                }
                Err(e) => panic!("unexpected decode error: {e}"),
            }
        }
    }
    match framer.decode_eof(&mut buf) {
        Ok(Some(frame)) => panic!(
            "decode_eof found a frame decode missed ({} bytes)",
            frame.len()
        ),
        Ok(None) => assert!(buf.is_empty()),
        Err(FrameError::Truncated { buffered }) => assert_eq!(buffered, buf.len()),
        Err(e) => panic!("unexpected decode_eof error: {e}"),
    }
    (frames, End::Done(buf.len()))
}

fuzz_target!(|data: &[u8]| {
    let (control, seed, stream) = match data {
        [c, s, rest @ ..] => (*c, *s, rest),
        _ => return,
    };
    let max = max_for(control);
    for framing in Framing::ALL {
        let (whole, whole_end) = run(framing, max, stream, None);
        let (pieces, pieces_end) = run(framing, max, stream, Some(seed));
        assert_eq!(
            whole, pieces,
            "{framing}: frames depend on how the stream is cut"
        );
        assert_eq!(whole_end, pieces_end, "{framing}");

        // The frames re-encoded are the bytes they were read from.
        let mut framer = LengthFramer::new(framing).with_max_frame(max);
        let mut out = BytesMut::new();
        for frame in &whole {
            framer
                .encode(frame.clone(), &mut out)
                .unwrap_or_else(|e| panic!("{framing}: re-encoding a decoded frame: {e}"));
        }
        // ascii4 and bcd2 read any valid digits (say "0001" or 00 01) and write them the same
        // way, so the bytes match exactly.
        assert_eq!(&out[..], &stream[..out.len()], "{framing}");
    }
});
