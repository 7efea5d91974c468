//! A hash map split into many smaller ones, so that growing it never stalls its shard.
//!
//! A hash table grows all at once: when it is full it allocates one twice as large and moves
//! every entry. The idempotency and transaction maps reach millions of entries (they keep a
//! day of traffic), and one doubling then allocated and touched hundreds of MB while the
//! shard answered nothing: open loop at 80,000/s right after a saturation run showed p99 of
//! 2.4-3.2 s, with periodic snapshots on or off. Here the map is [`PARTS`] tables chosen by
//! the key's STAN and date-time ([`Spread`]: one multiply, where a second keyed hash of the
//! whole key cost 8% more instructions per request), and the tables take unequal shares of
//! the keys (from none to twice the average), so each grows on its own and at its own moment:
//! a resize moves at most about a 128th of the entries (p99 47 ms in the same test). With
//! equal shares all the tables filled alike and resized within the same few milliseconds
//! (p99 1.3 s). Keys come from the wire, but each table is itself a keyed hash map: a sender
//! that crowds one table only makes that table grow as a single map would.
//!
//! Only the operations the engine uses are here. Iteration order is unspecified, as with a
//! plain `HashMap` (the engine never depends on it).

use std::hash::Hash;

use crate::message::{IdemKey, TxnId};

type Part<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// How many tables one map is split into.
pub(super) const PARTS: usize = 256;

pub(super) struct SplitMap<K, V> {
    parts: Box<[Part<K, V>]>,
    len: usize,
}

/// 16 bits of a key, uniform over the keys terminals send; [`SplitMap`] picks the part.
pub(super) trait Spread {
    fn spread(&self) -> u16;
}

/// STAN and date-time, multiplied by a 64-bit odd constant (Fibonacci hashing): consecutive
/// STANs of one terminal land far apart.
fn spread(stan: u32, transmission: u64) -> u16 {
    let x = (u64::from(stan) ^ transmission.rotate_left(20)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 48) as u16
}

impl Spread for TxnId {
    fn spread(&self) -> u16 {
        spread(self.stan, self.transmission)
    }
}

impl Spread for IdemKey {
    fn spread(&self) -> u16 {
        spread(self.stan, self.transmission)
    }
}

impl<K: Hash + Eq, V> Default for SplitMap<K, V> {
    fn default() -> Self {
        Self::with_parts(PARTS)
    }
}

impl<K: Hash + Eq, V> SplitMap<K, V> {
    /// `parts`: [`PARTS`], or 1 for a map that stays small (a store's working set holds one
    /// batch), where 256 tables would allocate one each for a handful of entries.
    pub(super) fn with_parts(parts: usize) -> Self {
        let hasher = ahash::RandomState::new();
        Self {
            parts: (0..parts)
                .map(|_| Part::with_hasher(hasher.clone()))
                .collect(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Spread, V> SplitMap<K, V> {
    fn index(&self, key: &K) -> usize {
        if self.parts.len() == 1 {
            return 0;
        }
        // Unequal shares on purpose: part i takes (2i + 1) / 65536 of the keys (the integer
        // square root of 16 uniform bits), so the parts fill at different rates and reach
        // their resize points at different moments. With equal shares all 256 resized within
        // the same few milliseconds, a stall as long as one big table's.
        // In f64 (one instruction; `u32::isqrt` is a loop): exact for every 16-bit value
        // (a unit test checks all of them), so the same part as the integer square root.
        f64::from(key.spread()).sqrt() as usize
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.parts[self.index(key)].get(key)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.parts[self.index(key)].get_mut(key)
    }

    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.parts[self.index(&key)].insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let old = self.parts[self.index(key)].remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Room for `additional` more entries, spread evenly over the parts (as the hash spreads
    /// keys).
    pub(super) fn reserve(&mut self, additional: usize) {
        let each = additional.div_ceil(PARTS);
        for part in self.parts.iter_mut() {
            part.reserve(each);
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut len = 0;
        for part in self.parts.iter_mut() {
            part.retain(&mut keep);
            len += part.len();
        }
        self.len = len;
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|p| p.iter())
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(|p| p.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::TerminalId;

    impl Spread for u64 {
        fn spread(&self) -> u16 {
            spread(*self as u32, *self >> 32)
        }
    }

    #[test]
    fn the_part_is_the_integer_square_root_of_the_spread() {
        for v in 0..=u16::MAX {
            assert_eq!(
                f64::from(v).sqrt() as usize,
                u32::from(v).isqrt() as usize,
                "{v}"
            );
        }
    }

    #[test]
    fn behaves_like_one_map() {
        let mut split: SplitMap<u64, u64> = SplitMap::default();
        let mut one = std::collections::HashMap::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 5_000;
            match x % 4 {
                0 | 1 => assert_eq!(split.insert(key, x), one.insert(key, x)),
                2 => assert_eq!(split.remove(&key), one.remove(&key)),
                _ => {
                    if let Some(v) = split.get_mut(&key) {
                        *v += 1;
                    }
                    if let Some(v) = one.get_mut(&key) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(split.len(), one.len());
            assert_eq!(split.get(&key), one.get(&key));
        }
        split.retain(|k, _| k % 3 != 0);
        one.retain(|k, _| k % 3 != 0);
        assert_eq!(split.len(), one.len());
        let mut a: Vec<_> = split.iter().map(|(k, v)| (*k, *v)).collect();
        let mut b: Vec<_> = one.iter().map(|(k, v)| (*k, *v)).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn parts_take_their_planned_shares_of_one_terminals_stans() {
        // Part i is planned to take (2i + 1) / 65536 of the keys: 64 keys on average, from
        // about none (part 0) to about 128 (part 255), so no two neighbours fill alike.
        let terminal = TerminalId::new(b"TERM0001").unwrap();
        let mut split: SplitMap<TxnId, ()> = SplitMap::default();
        let keys = PARTS * 64;
        for stan in 1..=keys as u32 {
            let txn = TxnId {
                terminal,
                stan,
                transmission: 1_126_104_500,
            };
            split.insert(txn, ());
        }
        for (i, part) in split.parts.iter().enumerate() {
            let planned = (2 * i + 1) as f64 * keys as f64 / 65_536.0;
            let got = part.len() as f64;
            assert!(
                (got - planned).abs() <= 4.0 * planned.sqrt() + 3.0,
                "part {i}: {got} keys, planned {planned:.1}"
            );
        }
    }
}
