//! Which shard owns what: a stable, documented hash, so every replica, restart and language
//! places the same card, transaction and order on the same shard index for a given shard
//! count. (`std`'s `RandomState` is seeded per process and would scatter state on restart.)
//!
//! The hash is FNV-1a 64 over a byte string, then the SplitMix64 finalizer, whose avalanche
//! fixes FNV's weak low bits before the reduction modulo the shard count. Inputs:
//!
//! | function | bytes hashed |
//! |---|---|
//! | [`shard_for_pan`] | `P` 0x00, the PAN's ASCII digits |
//! | [`shard_for_transaction`] | `T` 0x00, DE 41 without trailing spaces, 0x00, DE 11 as 6 ASCII digits, DE 7 as 10 ASCII digits |
//! | [`shard_for_order`] | `O` 0x00, DE 42 without trailing spaces, 0x00, DE 48 bytes |
//!
//! The leading tag keeps the three spaces apart. Changing any of this moves state between
//! shards: it is a data-format change, not a refactoring.

use crate::message::trim_trailing_spaces;
use crate::rng::mix64;

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// "00" to "99", two ASCII digits each.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Incremental FNV-1a 64.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Fnv {
    const fn new() -> Self {
        Self(FNV_OFFSET)
    }

    fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// `value` as exactly `width` ASCII decimal digits (the low digits if it is wider).
    /// Two digits per division: every request hashes its DE 11 and DE 7 this way, twice.
    fn write_decimal(self, mut value: u64, width: usize) -> Self {
        let mut buf = [b'0'; 20];
        let width = width.min(buf.len());
        let mut end = width;
        while end >= 2 && value > 0 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            buf[end - 2..end].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
            end -= 2;
        }
        if end == 1 {
            buf[0] = b'0' + (value % 10) as u8;
        }
        self.write(&buf[..width])
    }

    fn shard(self, shard_count: usize) -> usize {
        let n = shard_count.max(1) as u64;
        // The remainder is below `shard_count`, so it fits a usize.
        (mix64(self.0) % n) as usize
    }
}

/// FNV-1a 64 of `bytes` (exposed for its test vectors and for tools that must agree).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    Fnv::new().write(bytes).0
}

/// The shard owning the account of `pan` (ASCII digits). `shard_count` 0 counts as 1.
pub fn shard_for_pan(pan: &[u8], shard_count: usize) -> usize {
    Fnv::new().write(b"P\0").write(pan).shard(shard_count)
}

/// The shard owning the transaction `(terminal, stan, transmission)` = (DE 41, DE 11, DE 7):
/// its idempotency records, its hold or purchase record, and late-original markers.
pub fn shard_for_transaction(
    terminal: &[u8],
    stan: u32,
    transmission: u64,
    shard_count: usize,
) -> usize {
    Fnv::new()
        .write(b"T\0")
        .write(trim_trailing_spaces(terminal))
        .write(b"\0")
        .write_decimal(u64::from(stan), 6)
        .write_decimal(transmission, 10)
        .shard(shard_count)
}

/// The shard owning the order `(merchant, order_id)` = (DE 42, DE 48).
pub fn shard_for_order(merchant: &[u8], order_id: &[u8], shard_count: usize) -> usize {
    Fnv::new()
        .write(b"O\0")
        .write(trim_trailing_spaces(merchant))
        .write(b"\0")
        .write(order_id)
        .shard(shard_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_F739_67E8);
    }

    #[test]
    fn placement_is_stable() {
        // Golden values: a change here moves state between shards (see module docs).
        assert_eq!(shard_for_pan(b"4111111111111111", 1024), GOLDEN[0]);
        assert_eq!(
            shard_for_transaction(b"TERM0001", 123, 615_120_000, 1024),
            GOLDEN[1]
        );
        assert_eq!(
            shard_for_order(b"MERCHANT0000001", b"ORD-1", 1024),
            GOLDEN[2]
        );
    }

    // Cross-checked with an independent Python FNV-1a + SplitMix64 finalizer.
    const GOLDEN: [usize; 3] = [73, 502, 383];

    #[test]
    fn trailing_spaces_and_degenerate_counts() {
        assert_eq!(
            shard_for_transaction(b"T1      ", 1, 2, 97),
            shard_for_transaction(b"T1", 1, 2, 97)
        );
        assert_eq!(
            shard_for_order(b"M1             ", b"o", 97),
            shard_for_order(b"M1", b"o", 97)
        );
        assert_eq!(shard_for_pan(b"4111111111111111", 0), 0);
        assert_eq!(shard_for_pan(b"4111111111111111", 1), 0);
    }

    #[test]
    fn decimals_are_the_low_digits_zero_padded() {
        // The reference: one digit at a time, as the format is defined.
        fn reference(mut value: u64, width: usize) -> Vec<u8> {
            let mut digits = vec![b'0'; width];
            for d in digits.iter_mut().rev() {
                *d = b'0' + (value % 10) as u8;
                value /= 10;
            }
            digits
        }
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut values = vec![
            0,
            1,
            9,
            10,
            99,
            100,
            999_999,
            1_000_000,
            9_999_999_999,
            u64::MAX,
        ];
        for _ in 0..2000 {
            x = crate::rng::mix64(x);
            values.push(x >> (x % 64));
        }
        for &v in &values {
            for width in [1, 2, 5, 6, 10, 19, 20] {
                assert_eq!(
                    Fnv::new().write_decimal(v, width).0,
                    fnv1a64(&reference(v, width)),
                    "{v} in {width} digits"
                );
            }
        }
    }

    #[test]
    fn spreads_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4000u32 {
            counts[shard_for_transaction(b"TERM0001", i, 615_120_000, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
