//! `Message::decode_partial_into` reuses one message's storage for frame after frame: it must
//! give exactly what `Message::decode_partial` gives, whatever the message held before.

use bytes::{Bytes, BytesMut};
use codec::{builtin, Message, MessageBuilder, Mti, Spec};

fn encode(spec: &Spec, mti: &str, fields: &[(usize, &str)]) -> Bytes {
    let mut b = MessageBuilder::new(spec, Mti::parse(mti).expect("mti"));
    for &(n, v) in fields {
        b.set(n, v).expect("field");
    }
    let mut out = BytesMut::new();
    b.encode_into(&mut out).expect("encode");
    out.freeze()
}

/// Every observable part of a message: MTI, bitmaps, valid fields, error, frame.
type View = (
    String,
    [u64; 3],
    Vec<(usize, Vec<u8>)>,
    Option<String>,
    Bytes,
);

fn view(msg: &Message<'_>) -> View {
    (
        msg.mti().to_string(),
        msg.bitmaps(),
        (1..=192)
            .filter(|&n| msg.has(n))
            .map(|n| (n, msg.field(n).expect("has").wire().to_vec()))
            .collect(),
        msg.error().map(ToString::to_string),
        msg.frame().clone(),
    )
}

#[test]
fn decoding_into_a_used_message_equals_a_fresh_decode() {
    let spec = builtin("iso87-binary").expect("spec");
    let big = encode(
        spec,
        "0200",
        &[
            (2, "4761739001010010"),
            (3, "000000"),
            (4, "000000001000"),
            (7, "1126104500"),
            (11, "000001"),
            (41, "TERM0001"),
            (42, "MERCHANT0000001"),
            (48, "ORDER-1"),
            (49, "978"),
            (70, "301"),
        ],
    );
    let small = encode(
        spec,
        "0800",
        &[(7, "1126104500"), (11, "000002"), (70, "301")],
    );
    // A content error in DE 4 (letters in a numeric field): decoding goes on past it.
    let mut bad = big.to_vec();
    let at = bad
        .windows(12)
        .position(|w| w == b"000000001000")
        .expect("DE 4");
    bad[at] = b'X';
    let bad = Bytes::from(bad);
    // Cut in the middle of DE 41: decoding stops there.
    let truncated = big.slice(..big.len() - 30);
    let garbage = Bytes::from_static(b"02");

    // `clear` forgets the message and lets go of its frame.
    let mut cleared = Message::decode_partial(spec, big.clone()).expect("decodes");
    cleared.clear();
    assert_eq!(view(&cleared), view(&Message::empty(spec)));

    let mut reused = Message::empty(spec);
    assert_eq!(reused.mti().as_str(), "0000");
    assert!((1..=192).all(|n| !reused.has(n) && !reused.in_bitmap(n)));
    for frame in [&big, &small, &bad, &big, &truncated, &small, &garbage, &big] {
        let fresh = Message::decode_partial(spec, frame.clone());
        let into = reused.decode_partial_into(spec, frame.clone());
        match fresh {
            Ok(fresh) => {
                assert!(into.is_ok());
                assert_eq!(view(&reused), view(&fresh));
            }
            Err(e) => {
                assert_eq!(into, Err(e));
                // Left empty: nothing of the previous message shows through.
                assert_eq!(view(&reused), view(&Message::empty(spec)));
            }
        }
    }
}
