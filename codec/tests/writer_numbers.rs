//! `MessageWriter::set_u64` has a fast path for ASCII digits in the primary bitmap: it must
//! write exactly what the general path (`MessageBuilder::set_u64`) writes, and refuse what it
//! refuses, in every built-in layout.

use bytes::BytesMut;
use codec::{builtin, MessageBuilder, MessageWriter, Mti};

/// Field numbers of the built-in layouts: 4 (n 12), 2 (n ..19, LLVAR), 7 (n 10), 11 (n 6),
/// 70 (n 3, above 64: general path).
const VALUES: [u64; 9] = [
    0,
    7,
    123_456,
    999_999,
    1_000_000,
    1_126_104_500,
    999_999_999_999,
    1_000_000_000_000,
    u64::MAX,
];

#[test]
fn set_u64_writes_what_the_builder_writes() {
    let mti = Mti::parse("0200").expect("mti");
    let (mut encoded, mut refused) = (0, 0);
    for name in codec::BUILTIN_NAMES {
        let spec = builtin(name).expect("spec");
        for n in [2usize, 4, 7, 11, 70] {
            for v in VALUES {
                let mut b = MessageBuilder::new(spec, mti);
                let built = b.set_u64(n, v).map(|_| ()).and_then(|()| {
                    let mut out = BytesMut::new();
                    b.encode_into(&mut out).map(|()| out)
                });
                let mut out = BytesMut::new();
                let written = MessageWriter::new(spec, mti, &mut out)
                    .and_then(|mut w| w.set_u64(n, v).map(|_| ()).and_then(|()| w.finish()))
                    .map(|()| out.clone());
                match (built, written) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "{name} field {n} value {v}");
                        encoded += 1;
                    }
                    (Err(_), Err(_)) => refused += 1,
                    (a, b) => panic!("{name} field {n} value {v}: builder {a:?}, writer {b:?}"),
                }
            }
        }
    }
    // Both outcomes are exercised: values that fit their field and values that do not.
    assert!(
        encoded > 0 && refused > 0,
        "{encoded} encoded, {refused} refused"
    );
}
