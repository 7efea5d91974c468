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
//! The tables are hashbrown's `HashTable`s rather than `std`'s `HashMap`s so that the map can
//! also say where a key's probe starts ([`SplitMap::prefetch`]): the shard prefetches the
//! lines of a whole batch's keys before deciding any, and the batch's cache misses overlap
//! (closed loop, interleaved runs against `std`'s maps with a full look-up as the warm-up:
//! median x1.24 answers/s with `--durability none`, x1.08 with `fsync`; benches/RESULTS.md,
//! "Prefetching the maps").
//!
//! Only the operations the engine uses are here. Iteration order is unspecified, as with a
//! plain `HashMap` (the engine never depends on it).

use std::hash::Hash;

use hashbrown::hash_table::{Entry, HashTable};

use crate::message::{IdemKey, TxnId};

type Part<K, V> = HashTable<(K, V)>;

/// How many tables one map is split into.
pub(super) const PARTS: usize = 256;

pub(super) struct SplitMap<K, V> {
    parts: Box<[Part<K, V>]>,
    /// Where each part keeps its buckets, for [`SplitMap::prefetch`].
    layouts: Box<[Layout]>,
    hasher: ahash::RandomState,
    len: usize,
}

/// Where a part's table is in memory: its bucket count and the address just past bucket 0.
/// hashbrown lays a table out as buckets `n-1 .. 0`, then the control bytes `0 .. n`, and a
/// key's probe starts at bucket `hash & (n - 1)`. Only [`SplitMap::prefetch`] uses this, and a
/// prefetch is a hint: were the layout ever different, the hint would fetch useless lines,
/// and every answer would stay the same.
#[derive(Clone, Copy, Default)]
struct Layout {
    buckets: usize,
    end: usize,
}

impl Layout {
    fn of<T>(table: &HashTable<T>) -> Self {
        // A full bucket's address and index give the end of bucket 0.
        let end = table
            .iter_buckets()
            .next()
            .and_then(|i| {
                let at = std::ptr::from_ref(table.get_bucket(i)?).addr();
                Some(at + (i + 1) * std::mem::size_of::<T>())
            })
            .unwrap_or(0);
        Self {
            buckets: table.num_buckets(),
            end,
        }
    }
}

/// Asks the CPU for the cache line holding `addr`, without waiting for it. The address is
/// never dereferenced: a prefetch of any address is allowed and cannot fault.
#[inline(always)]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: PREFETCHT0 reads nothing into a register and cannot fault, whatever the
    // address (Intel SDM, "PREFETCHh"); `sse` is part of every x86_64 target.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::without_provenance::<i8>(addr),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
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
        Self {
            parts: (0..parts).map(|_| HashTable::new()).collect(),
            layouts: vec![Layout::default(); parts].into_boxed_slice(),
            hasher: ahash::RandomState::new(),
            len: 0,
        }
    }
}

/// Part `i`'s planned share of `n` entries, rounded up: (2i + 1) / parts^2 of them
/// ([`SplitMap::index`]; all of them with one part).
fn share(n: usize, i: usize, parts: usize) -> usize {
    (n as u128 * (2 * i + 1) as u128).div_ceil((parts * parts) as u128) as usize
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
        let hash = self.hasher.hash_one(key);
        self.parts[self.index(key)]
            .find(hash, |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let hash = self.hasher.hash_one(key);
        let i = self.index(key);
        self.parts[i]
            .find_mut(hash, |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        let i = self.index(&key);
        let hasher = &self.hasher;
        let part = &mut self.parts[i];
        match part.entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            Entry::Vacant(e) => {
                e.insert((key, value));
                self.len += 1;
                let layout = self.layouts[i];
                if layout.end == 0 || part.num_buckets() != layout.buckets {
                    // The first entry of this allocation, or the table grew into a new one.
                    self.layouts[i] = Layout::of(part);
                }
                None
            }
        }
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let i = self.index(key);
        let (_, v) = self.parts[i]
            .find_entry(hash, |(k, _)| k == key)
            .ok()?
            .remove()
            .0;
        self.len -= 1;
        Some(v)
    }

    /// Starts loading the cache lines a look-up or insert of `key` will touch first (the
    /// control bytes and the bucket where its probe starts), without waiting for them: the
    /// misses of a whole batch then overlap instead of stalling one after the other.
    pub(super) fn prefetch(&self, key: &K) {
        if let Some((control, bucket)) = self.probe_start(key) {
            prefetch_line(control);
            prefetch_line(bucket);
            prefetch_line(bucket.wrapping_add(std::mem::size_of::<(K, V)>() - 1));
        }
    }

    /// The addresses of the control byte and the bucket where the probe for `key` starts;
    /// `None` while its part has no entry to learn the layout from.
    fn probe_start(&self, key: &K) -> Option<(usize, usize)> {
        let layout = self.layouts[self.index(key)];
        if layout.end == 0 {
            return None;
        }
        let at = (self.hasher.hash_one(key) as usize) & (layout.buckets - 1);
        let bucket = layout
            .end
            .wrapping_sub((at + 1) * std::mem::size_of::<(K, V)>());
        Some((layout.end + at, bucket))
    }

    /// Room for `additional` more entries, each part for its planned share of them
    /// ([`SplitMap::index`]): an even spread would leave the parts with the larger shares to
    /// grow anyway (part 255 takes twice the average).
    pub(super) fn reserve(&mut self, additional: usize) {
        let parts = self.parts.len();
        let hasher = &self.hasher;
        for (i, (part, layout)) in self
            .parts
            .iter_mut()
            .zip(self.layouts.iter_mut())
            .enumerate()
        {
            part.reserve(share(additional, i, parts), |(k, _)| hasher.hash_one(k));
            *layout = Layout::of(part);
        }
    }

    /// How many entries the map can take, spread over its parts as planned, before one of
    /// them must grow.
    pub(super) fn capacity(&self) -> usize {
        let parts = self.parts.len();
        (0..parts)
            .map(|i| {
                // Part i takes (2i + 1) / parts^2 of the entries: it is full when the map
                // holds its room times parts^2 / (2i + 1).
                let room = self.parts[i].capacity();
                room * parts * parts / (2 * i + 1)
            })
            .min()
            .unwrap_or(0)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut len = 0;
        for part in self.parts.iter_mut() {
            part.retain(|(k, v)| keep(k, v));
            len += part.len();
        }
        self.len = len;
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts
            .iter()
            .flat_map(|p| p.iter().map(|(k, v)| (k, v)))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(|p| p.iter().map(|(_, v)| v))
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

    /// The prefetch aims where hashbrown puts a key: a key alone in a large table sits in
    /// the bucket its probe starts at. Fails if hashbrown's layout or probe start changed
    /// (the prefetch would then fetch lines no look-up uses).
    #[test]
    fn prefetch_aims_at_the_bucket_a_lone_key_is_in() {
        for n in 0..500_u64 {
            let key = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut map: SplitMap<u64, [u64; 5]> = SplitMap::with_parts(1);
            map.reserve(4096 * PARTS);
            map.insert(key, [n; 5]);
            let (_, bucket) = map
                .probe_start(&key)
                .expect("a part with an entry has a layout");
            let entry = map.parts[0]
                .find(map.hasher.hash_one(key), |(k, _)| *k == key)
                .unwrap();
            assert_eq!(bucket, std::ptr::from_ref(entry).addr(), "key {key}");
        }
    }

    /// After any growth, each part's recorded layout is its table's current one.
    #[test]
    fn layouts_follow_the_tables_as_they_grow() {
        let mut map: SplitMap<u64, u64> = SplitMap::default();
        for key in 0..200_000_u64 {
            map.insert(key.wrapping_mul(0x2545_f491_4f6c_dd1d), key);
            if key % 10_007 == 0 || key == 199_999 {
                for (part, layout) in map.parts.iter().zip(map.layouts.iter()) {
                    if part.is_empty() {
                        continue;
                    }
                    let now = Layout::of(part);
                    assert_eq!((layout.buckets, layout.end), (now.buckets, now.end));
                }
            }
        }
    }

    /// The transactions of one terminal with STANs 1 to `keys`, at one date-time.
    fn one_terminals_stans(keys: usize) -> impl Iterator<Item = TxnId> {
        let terminal = TerminalId::new(b"TERM0001").unwrap();
        (1..=keys as u32).map(move |stan| TxnId {
            terminal,
            stan,
            transmission: 1_126_104_500,
        })
    }

    /// `reserve` sizes each part for its planned share, not an even one: with an even
    /// spread, the parts with the larger shares (up to twice the average) still grow.
    #[test]
    fn reserve_gives_each_part_room_for_its_planned_share() {
        let n = 1_000_000;
        let mut map: SplitMap<u64, u64> = SplitMap::default();
        map.reserve(n);
        for (i, part) in map.parts.iter().enumerate() {
            assert!(
                part.capacity() >= share(n, i, PARTS),
                "part {i}: room for {}, share {}",
                part.capacity(),
                share(n, i, PARTS)
            );
        }
        assert!(map.capacity() >= n, "{}", map.capacity());
        let mut one: SplitMap<u64, u64> = SplitMap::with_parts(1);
        one.reserve(n);
        assert!(one.capacity() >= n && one.parts[0].capacity() >= n);
    }

    /// Filled with as many keys as it was reserved for, a map's tables do not grow. (The keys
    /// are fixed and the part a key goes to does not depend on the hasher's random seed, so
    /// this holds on every run; with an even reserve 109 of the 256 grew.)
    #[test]
    fn a_reserved_map_takes_its_keys_without_growing() {
        let keys = 400_000;
        let mut split: SplitMap<TxnId, ()> = SplitMap::default();
        split.reserve(keys);
        let before: Vec<usize> = split.parts.iter().map(|p| p.num_buckets()).collect();
        for txn in one_terminals_stans(keys) {
            split.insert(txn, ());
        }
        let grew = split
            .parts
            .iter()
            .zip(&before)
            .filter(|(p, &b)| p.num_buckets() != b)
            .count();
        assert_eq!(grew, 0, "{grew} of {PARTS} tables grew");
    }

    #[test]
    fn parts_take_their_planned_shares_of_one_terminals_stans() {
        // Part i is planned to take (2i + 1) / 65536 of the keys: 64 keys on average, from
        // about none (part 0) to about 128 (part 255), so no two neighbours fill alike.
        let mut split: SplitMap<TxnId, ()> = SplitMap::default();
        let keys = PARTS * 64;
        for txn in one_terminals_stans(keys) {
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
