//! Split-packet tests for the TCP length framers (PROTOCOL.md section 1), in the style of
//! tokio-util's `tests/length_delimited.rs`: one frame a byte at a time, many frames in one
//! read, hostile headers, header patching, and `FramedRead`/`FramedWrite` over in-memory I/O.

#![cfg(feature = "framing")]

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use codec::framing::{
    encode_frame_with, FrameError, Framing, LengthFramer, UnknownFraming, DEFAULT_MAX_FRAME,
};
use codec::{builtin, EncodeError, Message, MessageBuilder, Mti};
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// `body` behind a header written by hand (not by the code under test).
fn framed(framing: Framing, body: &[u8]) -> Vec<u8> {
    let n = body.len();
    let mut out = match framing {
        Framing::Len2 => (n as u16).to_be_bytes().to_vec(),
        Framing::Len4 => (n as u32).to_be_bytes().to_vec(),
        Framing::Ascii4 => format!("{n:04}").into_bytes(),
        Framing::Bcd2 => {
            let d = format!("{n:04}").into_bytes();
            vec![
                (d[0] - b'0') << 4 | (d[1] - b'0'),
                (d[2] - b'0') << 4 | (d[3] - b'0'),
            ]
        }
    };
    out.extend_from_slice(body);
    out
}

fn bodies() -> Vec<Vec<u8>> {
    vec![
        b"0800 first".to_vec(),
        Vec::new(),
        vec![0xAB; 300],
        b"x".to_vec(),
        (0..=255u8).cycle().take(8192).collect(),
    ]
}

#[test]
fn framing_names() {
    let names: Vec<String> = Framing::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["len2", "len4", "ascii4", "bcd2"]);
    assert_eq!("bcd2".parse::<Framing>(), Ok(Framing::Bcd2));
    assert_eq!(
        "ascii".parse::<Framing>(),
        Err(UnknownFraming("ascii".into()))
    );
    let framer = LengthFramer::default();
    assert_eq!(framer.framing(), Framing::Len2);
    assert_eq!(framer.max_frame(), DEFAULT_MAX_FRAME);
    assert_eq!(DEFAULT_MAX_FRAME, 8192);
}

#[test]
fn one_frame_a_byte_at_a_time() {
    for framing in Framing::ALL {
        for body in bodies() {
            let wire = framed(framing, &body);
            let mut framer = LengthFramer::new(framing);
            let mut buf = BytesMut::new();
            let mut got = None;
            for (i, &b) in wire.iter().enumerate() {
                buf.extend_from_slice(&[b]);
                let out = framer.decode(&mut buf).unwrap();
                if i + 1 < wire.len() {
                    assert!(
                        out.is_none(),
                        "{framing}: frame yielded after {} bytes",
                        i + 1
                    );
                } else {
                    got = out;
                }
            }
            // A zero-length body completes with its header.
            let got = got.unwrap_or_else(|| panic!("{framing}: no frame for {} bytes", body.len()));
            assert_eq!(&got[..], &body[..], "{framing}");
            assert!(buf.is_empty());
            assert!(framer.decode(&mut buf).unwrap().is_none());
            assert!(framer.decode_eof(&mut buf).unwrap().is_none());
        }
    }
}

#[test]
fn many_frames_in_one_read() {
    for framing in Framing::ALL {
        let mut wire = Vec::new();
        for body in bodies() {
            wire.extend(framed(framing, &body));
        }
        // Half of a following header at the end.
        wire.extend(&framed(framing, b"next")[..1]);
        let mut framer = LengthFramer::new(framing);
        let mut buf = BytesMut::from(&wire[..]);
        for body in bodies() {
            let frame = framer.decode(&mut buf).unwrap().expect("complete frame");
            assert_eq!(&frame[..], &body[..], "{framing}");
        }
        assert!(framer.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 1);
        assert!(matches!(
            framer.decode_eof(&mut buf),
            Err(FrameError::Truncated { buffered: 1 })
        ));
    }
}

#[test]
fn frames_share_the_read_buffer() {
    let wire = framed(Framing::Len2, b"0800abcdef");
    let mut buf = BytesMut::from(&wire[..]);
    let base = buf.as_ptr() as usize;
    let frame = LengthFramer::default().decode(&mut buf).unwrap().unwrap();
    // split_to().freeze(): the frame points into the buffer it was read into, past the header.
    assert_eq!(frame.as_ptr() as usize, base + 2);
}

#[test]
fn oversize_header_is_rejected_before_reserving() {
    let cases: [(Framing, &[u8], usize); 4] = [
        (Framing::Len2, &[0xFF, 0xFF], 65_535),
        (Framing::Len4, &[0xFF, 0xFF, 0xFF, 0xFF], 4_294_967_295),
        (Framing::Ascii4, b"9999", 9999),
        (Framing::Bcd2, &[0x99, 0x99], 9999),
    ];
    for (framing, header, declared) in cases {
        let mut framer = LengthFramer::new(framing);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(header);
        buf.extend_from_slice(b"some body bytes");
        let err = framer.decode(&mut buf).unwrap_err();
        match err {
            FrameError::TooLarge { declared: d, max } => {
                assert_eq!((d, max), (declared, 8192), "{framing}");
            }
            other => panic!("{framing}: {other:?}"),
        }
        assert!(
            buf.capacity() < 1024,
            "{framing}: buffer grew to {} after a hostile header",
            buf.capacity()
        );
        // The offending header is left in place; nothing was consumed.
        assert_eq!(&buf[..header.len()], header);
    }
}

#[test]
fn configured_maximum_is_inclusive() {
    for framing in Framing::ALL {
        let mut framer = LengthFramer::new(framing).with_max_frame(100);
        let mut buf = BytesMut::from(&framed(framing, &[7; 100])[..]);
        assert_eq!(framer.decode(&mut buf).unwrap().unwrap().len(), 100);
        let mut buf = BytesMut::from(&framed(framing, &[7; 101])[..]);
        assert!(matches!(
            framer.decode(&mut buf),
            Err(FrameError::TooLarge {
                declared: 101,
                max: 100
            })
        ));
    }
}

#[test]
fn bad_ascii4_headers() {
    for header in [
        &b"00 5"[..],
        b" 005",
        b"-005",
        b"+005",
        b"0x05",
        b"\0\0\0\x05",
        b"12a4",
    ] {
        let mut framer = LengthFramer::new(Framing::Ascii4);
        let mut buf = BytesMut::from(header);
        buf.extend_from_slice(b"hello");
        assert!(
            matches!(framer.decode(&mut buf), Err(FrameError::BadHeader)),
            "{header:?}"
        );
    }
    // Three good digits are not a verdict yet.
    let mut buf = BytesMut::from(&b"000"[..]);
    assert!(LengthFramer::new(Framing::Ascii4)
        .decode(&mut buf)
        .unwrap()
        .is_none());
}

#[test]
fn bad_bcd2_headers() {
    for header in [
        [0x0A, 0x00],
        [0x00, 0x0F],
        [0xF0, 0x05],
        [0x00, 0xA0],
        [0xFF, 0xFF],
    ] {
        let mut framer = LengthFramer::new(Framing::Bcd2);
        let mut buf = BytesMut::from(&header[..]);
        assert!(
            matches!(framer.decode(&mut buf), Err(FrameError::BadHeader)),
            "{header:02X?}"
        );
    }
}

#[test]
fn encoder_writes_header_and_body() {
    for framing in Framing::ALL {
        for body in bodies() {
            let mut framer = LengthFramer::new(framing);
            let mut dst = BytesMut::new();
            framer.encode(Bytes::from(body.clone()), &mut dst).unwrap();
            framer.encode(&body[..], &mut dst).unwrap();
            let mut expected = framed(framing, &body);
            expected.extend(framed(framing, &body));
            assert_eq!(&dst[..], &expected[..], "{framing}");
        }
    }
}

#[test]
fn encoder_refuses_what_the_peer_would_refuse() {
    for framing in Framing::ALL {
        let mut framer = LengthFramer::new(framing);
        let mut dst = BytesMut::from(&b"kept"[..]);
        let err = framer.encode(&[0u8; 8193][..], &mut dst).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                declared: 8193,
                max: 8192
            }
        ));
        assert_eq!(&dst[..], b"kept");
    }
    // The header's own capacity caps a generous maximum.
    let mut framer = LengthFramer::new(Framing::Ascii4).with_max_frame(100_000);
    let mut dst = BytesMut::new();
    assert!(matches!(
        framer.encode(&[0u8; 10_000][..], &mut dst),
        Err(FrameError::TooLarge {
            declared: 10_000,
            max: 9999
        })
    ));
    framer.encode(&[0u8; 9999][..], &mut dst).unwrap();
    assert_eq!(&dst[..4], b"9999");
}

fn echo_builder(spec: &codec::Spec) -> MessageBuilder<'_, 'static> {
    let mut b = MessageBuilder::new(spec, Mti::parse("0810").unwrap());
    b.set(7, "1125103000")
        .unwrap()
        .set(11, "000001")
        .unwrap()
        .set(39, "00")
        .unwrap()
        .set_u64(70, 301)
        .unwrap();
    b
}

#[test]
fn header_patching_round_trip() {
    for name in codec::BUILTIN_NAMES {
        let spec = builtin(name).unwrap();
        let b = echo_builder(spec);
        let mut plain = BytesMut::new();
        b.encode_into(&mut plain).unwrap();
        for framing in Framing::ALL {
            // A batch of three responses in one buffer, written in place.
            let mut out = BytesMut::new();
            for _ in 0..2 {
                encode_frame_with(&mut out, framing, 8192, |body| b.encode_into(body)).unwrap();
            }
            let mut framer = LengthFramer::new(framing);
            framer.encode(&b, &mut out).unwrap();
            let one = framed(framing, &plain);
            assert_eq!(
                &out[..],
                [&one[..], &one[..], &one[..]].concat(),
                "{name} {framing}"
            );

            let mut buf = out;
            for _ in 0..3 {
                let frame = framer.decode(&mut buf).unwrap().unwrap();
                let msg = Message::decode(spec, frame).unwrap();
                assert_eq!(msg.mti().as_str(), "0810");
                assert_eq!(msg.field(70).unwrap().to_u64(), Some(301));
                assert_eq!(msg.field(11).unwrap().to_u64(), Some(1));
            }
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn header_patching_errors_leave_the_buffer_alone() {
    let spec = builtin("iso87-binary").unwrap();
    let mut bad = MessageBuilder::new(spec, Mti::parse("0810").unwrap());
    bad.set(11, "12").unwrap(); // DE 11 is fixed n6
    for framing in Framing::ALL {
        let mut out = BytesMut::from(&b"earlier frames"[..]);
        let err = encode_frame_with(&mut out, framing, 8192, |body| bad.encode_into(body));
        assert!(matches!(
            err,
            Err(FrameError::Encode(EncodeError::Field { field: 11, .. }))
        ));
        assert_eq!(&out[..], b"earlier frames", "{framing}");

        // Too long for the maximum.
        let err = encode_frame_with(&mut out, framing, 10, |body| {
            body.extend_from_slice(&[1; 11]);
            Ok::<(), FrameError>(())
        });
        assert!(matches!(
            err,
            Err(FrameError::TooLarge {
                declared: 11,
                max: 10
            })
        ));
        assert_eq!(&out[..], b"earlier frames", "{framing}");

        // A body writer that eats into what was there before.
        let err = encode_frame_with(&mut out, framing, 8192, |body| {
            body.truncate(3);
            Ok::<(), FrameError>(())
        });
        assert!(err.is_err());
    }
    // ascii4 and bcd2 cannot say 10000 whatever the maximum.
    for framing in [Framing::Ascii4, Framing::Bcd2] {
        let mut out = BytesMut::new();
        let err = encode_frame_with(&mut out, framing, usize::MAX, |body| {
            body.extend_from_slice(&[0; 10_000]);
            Ok::<(), FrameError>(())
        });
        assert!(matches!(
            err,
            Err(FrameError::TooLarge {
                declared: 10_000,
                max: 9999
            })
        ));
        assert!(out.is_empty());
    }
}

/// An in-memory reader that hands out its data in chunks of the given sizes, one per poll,
/// returning `Pending` (after waking itself) between chunks to mimic TCP segments.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
    pending: bool,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pending {
            this.pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.pending = true;
        let size = this.sizes[this.turn % this.sizes.len()].max(1);
        this.turn += 1;
        let end = (this.pos + size)
            .min(this.data.len())
            .min(this.pos + buf.remaining());
        buf.put_slice(&this.data[this.pos..end]);
        this.pos = end;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn framed_read_over_split_segments() {
    for framing in Framing::ALL {
        for sizes in [vec![1], vec![3, 1, 7], vec![1000], vec![5000, 2]] {
            let mut data = Vec::new();
            for body in bodies() {
                data.extend(framed(framing, &body));
            }
            let reader = Chunked {
                data,
                pos: 0,
                sizes,
                turn: 0,
                pending: false,
            };
            let frames: Vec<Bytes> = FramedRead::new(reader, LengthFramer::new(framing))
                .map(|r| r.expect("frame"))
                .collect()
                .await;
            let expected: Vec<Bytes> = bodies().into_iter().map(Bytes::from).collect();
            assert_eq!(frames, expected, "{framing}");
        }
    }
}

#[tokio::test]
async fn framed_read_stops_at_a_hostile_header() {
    let mut data = framed(Framing::Len2, b"ok");
    data.extend_from_slice(&[0xFF, 0xFF, 1, 2, 3]);
    let mut stream = FramedRead::new(&data[..], LengthFramer::default());
    assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"ok");
    assert!(matches!(
        stream.next().await,
        Some(Err(FrameError::TooLarge {
            declared: 65_535,
            ..
        }))
    ));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn framed_read_reports_a_truncated_stream() {
    let data = framed(Framing::Ascii4, b"0800 body");
    let mut stream = FramedRead::new(&data[..7], LengthFramer::new(Framing::Ascii4));
    assert!(matches!(
        stream.next().await,
        Some(Err(FrameError::Truncated { buffered: 3 }))
    ));
}

#[tokio::test]
async fn framed_write_then_read_through_a_pipe() {
    for framing in Framing::ALL {
        let (client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut sink = FramedWrite::new(client, LengthFramer::new(framing));
            for body in bodies() {
                sink.feed(Bytes::from(body)).await.unwrap();
            }
            // Several Encoder impls: flush needs to be told the item type.
            SinkExt::<Bytes>::flush(&mut sink).await.unwrap();
        });
        let frames: Vec<Bytes> = FramedRead::new(server, LengthFramer::new(framing))
            .map(|r| r.expect("frame"))
            .collect()
            .await;
        writer.await.unwrap();
        let expected: Vec<Bytes> = bodies().into_iter().map(Bytes::from).collect();
        assert_eq!(frames, expected, "{framing}");
    }
}

fn any_framing() -> impl Strategy<Value = Framing> {
    prop::sample::select(Framing::ALL.to_vec())
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics_and_respects_the_maximum(
        framing in any_framing(),
        max in 0usize..600,
        input in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(1usize..64, 1..16),
    ) {
        let mut framer = LengthFramer::new(framing).with_max_frame(max);
        let mut buf = BytesMut::new();
        let mut pos = 0;
        let mut turn = 0;
        'feed: while pos < input.len() {
            let end = (pos + cuts[turn % cuts.len()]).min(input.len());
            turn += 1;
            buf.extend_from_slice(&input[pos..end]);
            pos = end;
            loop {
                match framer.decode(&mut buf) {
                    Ok(Some(frame)) => prop_assert!(frame.len() <= max),
                    Ok(None) => break,
                    Err(FrameError::TooLarge { declared, max: m }) => {
                        prop_assert!(declared > max);
                        prop_assert_eq!(m, max);
                        break 'feed;
                    }
                    Err(FrameError::BadHeader) => {
                        prop_assert!(matches!(framing, Framing::Ascii4 | Framing::Bcd2));
                        break 'feed;
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            // Never more room than one frame of the maximum plus what is buffered.
            prop_assert!(buf.capacity() <= 2 * (max + 64).max(buf.len() + 64) + 4096);
        }
    }

    #[test]
    fn encode_then_decode_round_trips(
        framing in any_framing(),
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        cut in 1usize..50,
    ) {
        let mut framer = LengthFramer::new(framing);
        let mut wire = BytesMut::new();
        for f in &frames {
            framer.encode(&f[..], &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(cut) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = framer.decode(&mut buf).unwrap() {
                out.push(frame.to_vec());
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert!(buf.is_empty());
    }
}
