//! The engine's binary encoding, for the switch's journal and snapshots: compact, versioned,
//! hand-written (no serde), strict on decode.
//!
//! # Format (version 1)
//!
//! A top-level value ([`Request`], [`Response`], and in the engine `Input`, `PeerMsg`,
//! `Output`) starts with one byte, [`WIRE_VERSION`]; values nested inside one carry no version
//! of their own. Shard snapshots have their own header (see `Shard::snapshot`). Then:
//!
//! - unsigned integers are LEB128 varints (7 bits a byte, low group first), in their shortest
//!   form; signed ones (amounts, days, Unix seconds) are zigzag-mapped first;
//! - a PAN is its length (one byte, 0-19) and its digits as packed BCD, two a byte, high
//!   nibble first, a trailing `0` nibble when the length is odd; DE 3 is three bytes of BCD;
//! - DE 41 and DE 42 are a length byte and the identifier without its trailing spaces;
//!   strings (DE 48) are a varint length and UTF-8 bytes;
//! - optional fields are announced by a flags word (a varint bitmap) before them, and only
//!   the present ones follow, in bit order;
//! - DE 39 is its two digits as a number (`05` is 5), the MTI its four digits as a number.
//!
//! Changing any of this is a data-format change: bump [`WIRE_VERSION`] and keep reading the
//! old one for as long as journals written with it may exist.
//!
//! # What is stored, what is not
//!
//! Only what the engine holds: it never sees track data, CVV, PIN blocks or ICC data, so the
//! journal cannot contain them. PANs are stored **in clear** (as BCD digits): the engine keys
//! accounts by PAN and replays need them. The files holding these bytes must be protected
//! by their writer (mode 0600, a directory only the switch's user can read).
//!
//! # Decoding
//!
//! Decoding never panics and never trusts a length: every count is checked against the
//! bytes left before anything is allocated, every value against its type's range (digits
//! where the standard says `n`, an MTI up to 9999, known response codes), the encoding must
//! be the shortest one, and a value must use all the bytes it is given. A [`WireError`] says
//! what was wrong and at which offset, never the bytes themselves.

use crate::message::FixedId;
use crate::message::{
    AdditionalAmounts, ApprovalCode, IdemKey, MerchantId, Mti, OriginalData, ProcessingCode,
    Request, Response, ResponseCode, TerminalId, TxnId,
};
use crate::pan::Pan;
use crate::time::{Now, Yymm};

/// The format version written first in every top-level value.
pub const WIRE_VERSION: u8 = 1;
/// The first bytes of every shard snapshot (`Shard::snapshot`).
pub const SNAPSHOT_MAGIC: &[u8; 4] = b"RSNP";
/// The snapshot layout version, after [`SNAPSHOT_MAGIC`].
pub const SNAPSHOT_VERSION: u8 = 1;

/// Why bytes could not be decoded. Names the item and offset, never the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended inside `what`.
    #[error("truncated: input ends inside {what} (offset {offset})")]
    Truncated {
        /// The item being read.
        what: &'static str,
        /// Where it started.
        offset: usize,
    },
    /// A format version this build cannot read.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    Version {
        /// Version found.
        found: u8,
        /// Version this build writes and reads.
        supported: u8,
    },
    /// Not a shard snapshot at all.
    #[error("not a shard snapshot (bad magic)")]
    Magic,
    /// A tag naming no variant of `what`.
    #[error("unknown {what} tag at offset {offset}")]
    UnknownTag {
        /// The enum being read.
        what: &'static str,
        /// Where the tag is.
        offset: usize,
    },
    /// A value out of its type's range, not in its shortest form, or malformed.
    #[error("invalid {what} at offset {offset}")]
    Invalid {
        /// The item being read.
        what: &'static str,
        /// Where it started.
        offset: usize,
    },
    /// Bytes left over after a complete value.
    #[error("{count} unexpected bytes after the {what}")]
    Trailing {
        /// The value decoded.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A snapshot of another shard or shard count than asked for.
    #[error("snapshot of shard {found_id} of {found_count}, expected shard {id} of {count}")]
    WrongShard {
        /// Shard index in the snapshot.
        found_id: usize,
        /// Shard count in the snapshot.
        found_count: usize,
        /// Shard index asked for.
        id: usize,
        /// Shard count asked for.
        count: usize,
    },
    /// A snapshot entry that placement puts on another shard.
    #[error("{what} at offset {offset} belongs on shard {owner}")]
    Misplaced {
        /// The kind of entry.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// The shard that owns it.
        owner: usize,
    },
    /// Snapshot entries out of order, or a key twice.
    #[error("{what} at offset {offset} is not in ascending key order")]
    Unordered {
        /// The kind of entry.
        what: &'static str,
        /// Where it starts.
        offset: usize,
    },
}

// ===== writing =====

// Writing appends to the caller's buffer and cannot fail.

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    // Zigzag: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(crate) fn put_usize(out: &mut Vec<u8>, v: usize) {
    put_varint(out, v as u64);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_usize(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// ASCII digits as packed BCD, two a byte, a `0` low nibble after an odd last digit.
fn put_bcd(out: &mut Vec<u8>, digits: &[u8]) {
    for pair in digits.chunks(2) {
        let hi = pair[0].wrapping_sub(b'0') & 0x0F;
        let lo = pair.get(1).map_or(0, |d| d.wrapping_sub(b'0') & 0x0F);
        out.push(hi << 4 | lo);
    }
}

// ===== reading =====

/// A cursor over bytes being decoded.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let offset = self.pos;
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError::Truncated { what, offset })?;
        let s = &self.buf[offset..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], WireError> {
        let offset = self.pos;
        self.bytes(N, what)?
            .try_into()
            .map_err(|_| WireError::Truncated { what, offset })
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// A LEB128 varint in its shortest form.
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let offset = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self
                .u8(what)
                .map_err(|_| WireError::Truncated { what, offset })?;
            let bits = u64::from(b & 0x7F);
            // The tenth byte may only carry the 64th bit; a zero last group after the first
            // byte is a longer form of a shorter encoding.
            if (i == 9 && bits > 1) || (i > 0 && b == 0) {
                return Err(WireError::Invalid { what, offset });
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Invalid { what, offset })
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        let z = self.varint(what)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let offset = self.pos;
        u32::try_from(self.varint(what)?).map_err(|_| WireError::Invalid { what, offset })
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let offset = self.pos;
        u16::try_from(self.varint(what)?).map_err(|_| WireError::Invalid { what, offset })
    }

    pub(crate) fn usize(&mut self, what: &'static str) -> Result<usize, WireError> {
        let offset = self.pos;
        usize::try_from(self.varint(what)?).map_err(|_| WireError::Invalid { what, offset })
    }

    /// A count of items that each take at least one byte: never more than the bytes left, so
    /// a corrupt count cannot make the caller allocate much.
    pub(crate) fn count(&mut self, what: &'static str) -> Result<usize, WireError> {
        let offset = self.pos;
        let n = self.usize(what)?;
        if n > self.remaining() {
            return Err(WireError::Truncated { what, offset });
        }
        Ok(n)
    }

    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let offset = self.pos;
        let n = self.count(what)?;
        let b = self.bytes(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::Invalid { what, offset })
    }

    /// `n` digits of packed BCD into `dst[..n]` as ASCII.
    fn bcd(&mut self, n: usize, dst: &mut [u8], what: &'static str) -> Result<(), WireError> {
        let offset = self.pos;
        let packed = self.bytes(n.div_ceil(2), what)?;
        let bad = WireError::Invalid { what, offset };
        let dst = dst.get_mut(..n).ok_or(bad.clone())?;
        for (i, slot) in dst.iter_mut().enumerate() {
            let byte = packed[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
            if nibble > 9 {
                return Err(bad);
            }
            *slot = b'0' + nibble;
        }
        if n % 2 == 1 && packed.last().is_some_and(|b| b & 0x0F != 0) {
            return Err(bad);
        }
        Ok(())
    }

    /// Succeeds only if every byte was used.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::Trailing { what, count }),
        }
    }

    /// Reads the version byte of a top-level value.
    pub(crate) fn version(&mut self) -> Result<(), WireError> {
        let found = self.u8("format version")?;
        if found != WIRE_VERSION {
            return Err(WireError::Version {
                found,
                supported: WIRE_VERSION,
            });
        }
        Ok(())
    }
}

// ===== the values =====

/// A value with a fixed place in the format. `put` cannot fail; `get` accepts exactly what
/// `put` writes.
pub(crate) trait Wire: Sized {
    fn put(&self, out: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError>;
}

impl Wire for Now {
    fn put(&self, out: &mut Vec<u8>) {
        put_i64(out, self.unix_secs());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Now::from_unix_secs(r.i64("now")?))
    }
}

impl Wire for Mti {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.value()));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        Mti::new(r.u16("MTI")?).ok_or(WireError::Invalid {
            what: "MTI",
            offset,
        })
    }
}

impl Wire for Pan {
    fn put(&self, out: &mut Vec<u8>) {
        put_u8(out, self.len() as u8);
        put_bcd(out, self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        let n = usize::from(r.u8("PAN length")?);
        if n > Pan::MAX_LEN {
            return Err(WireError::Invalid {
                what: "PAN length",
                offset,
            });
        }
        let mut digits = [0u8; Pan::MAX_LEN];
        r.bcd(n, &mut digits, "PAN digits")?;
        Ok(Pan::from_trusted_digits(&digits[..n]))
    }
}

impl Wire for ProcessingCode {
    fn put(&self, out: &mut Vec<u8>) {
        put_bcd(out, self.as_str().as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        let mut d = [0u8; 6];
        r.bcd(6, &mut d, "processing code")?;
        ProcessingCode::from_digits(&d).ok_or(WireError::Invalid {
            what: "processing code",
            offset,
        })
    }
}

impl<const N: usize> Wire for FixedId<N> {
    fn put(&self, out: &mut Vec<u8>) {
        let b = self.as_bytes();
        put_u8(out, b.len() as u8);
        out.extend_from_slice(b);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let what = if N == 8 { "terminal id" } else { "merchant id" };
        let offset = r.offset();
        let n = usize::from(r.u8(what)?);
        let raw = r.bytes(n, what)?;
        // Stored trimmed: a trailing space (or an over-long id) was not written by `put`.
        match FixedId::new(raw) {
            Ok(id) if id.as_bytes().len() == n => Ok(id),
            _ => Err(WireError::Invalid { what, offset }),
        }
    }
}

impl Wire for Yymm {
    fn put(&self, out: &mut Vec<u8>) {
        put_u8(out, (self.year() - 2000) as u8);
        put_u8(out, self.month());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        let [yy, mm] = r.array::<2>("expiry")?;
        Yymm::new(yy, mm).ok_or(WireError::Invalid {
            what: "expiry",
            offset,
        })
    }
}

impl Wire for OriginalData {
    fn put(&self, out: &mut Vec<u8>) {
        self.mti.put(out);
        put_varint(out, u64::from(self.stan));
        put_varint(out, self.transmission);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            mti: Mti::get(r)?,
            stan: r.u32("original STAN")?,
            transmission: r.varint("original date-time")?,
        })
    }
}

/// A boxed value is encoded as the value: boxing is a choice of memory layout only.
impl<T: Wire> Wire for Box<T> {
    fn put(&self, out: &mut Vec<u8>) {
        (**self).put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        T::get(r).map(Box::new)
    }
}

impl Wire for TxnId {
    fn put(&self, out: &mut Vec<u8>) {
        self.terminal.put(out);
        put_varint(out, u64::from(self.stan));
        put_varint(out, self.transmission);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            terminal: TerminalId::get(r)?,
            stan: r.u32("STAN")?,
            transmission: r.varint("transmission date-time")?,
        })
    }
}

impl Wire for IdemKey {
    fn put(&self, out: &mut Vec<u8>) {
        self.mti.put(out);
        self.terminal.put(out);
        put_varint(out, u64::from(self.stan));
        put_varint(out, self.transmission);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            mti: Mti::get(r)?,
            terminal: TerminalId::get(r)?,
            stan: r.u32("STAN")?,
            transmission: r.varint("transmission date-time")?,
        })
    }
}

impl Wire for ResponseCode {
    fn put(&self, out: &mut Vec<u8>) {
        let d = self.as_str().as_bytes();
        put_u8(out, (d[0] - b'0') * 10 + (d[1] - b'0'));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        let n = r.u8("response code")?;
        let digits = [b'0' + n / 10 % 10, b'0' + n % 10];
        ResponseCode::from_wire(&digits)
            .filter(|_| n < 100)
            .ok_or(WireError::UnknownTag {
                what: "response code",
                offset,
            })
    }
}

impl Wire for String {
    fn put(&self, out: &mut Vec<u8>) {
        put_str(out, self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.string("order id")
    }
}

impl Wire for u16 {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.u16("currency")
    }
}

impl Wire for u64 {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, *self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.varint("amount")
    }
}

/// Optional fields: a bitmap announces which follow (`Flags::put` then the present values in
/// bit order; on reading, `Flags::get` then `take` per bit).
pub(crate) struct Flags(pub(crate) u64);

impl Flags {
    pub(crate) fn of(bits: &[bool]) -> Self {
        Self(
            bits.iter()
                .enumerate()
                .fold(0, |acc, (i, &b)| acc | (u64::from(b) << i)),
        )
    }

    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.0);
    }

    /// Reads a bitmap of `n` fields; bits above them are an error.
    pub(crate) fn get(r: &mut Reader<'_>, n: u32, what: &'static str) -> Result<Self, WireError> {
        let offset = r.offset();
        let v = r.varint(what)?;
        if v >> n != 0 {
            return Err(WireError::Invalid { what, offset });
        }
        Ok(Self(v))
    }

    pub(crate) fn has(&self, bit: u32) -> bool {
        self.0 >> bit & 1 == 1
    }

    /// The field of `bit`, read if its bit is set.
    pub(crate) fn take<T: Wire>(
        &self,
        bit: u32,
        r: &mut Reader<'_>,
    ) -> Result<Option<T>, WireError> {
        if self.has(bit) {
            T::get(r).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Writes `v` if present (its presence is in a [`Flags`] written before).
pub(crate) fn put_opt<T: Wire>(out: &mut Vec<u8>, v: &Option<T>) {
    if let Some(v) = v {
        v.put(out);
    }
}

impl Wire for Request {
    fn put(&self, out: &mut Vec<u8>) {
        self.mti.put(out);
        Flags::of(&[
            self.processing_code.is_some(),
            self.pan.is_some(),
            self.amount.is_some(),
            self.currency.is_some(),
            self.expiry.is_some(),
            self.merchant.is_some(),
            self.order_ref.is_some(),
            self.original.is_some(),
            self.network_code.is_some(),
        ])
        .put(out);
        put_varint(out, u64::from(self.stan));
        put_varint(out, self.transmission);
        self.terminal.put(out);
        put_opt(out, &self.processing_code);
        put_opt(out, &self.pan);
        put_opt(out, &self.amount);
        put_opt(out, &self.currency);
        put_opt(out, &self.expiry);
        put_opt(out, &self.merchant);
        put_opt(out, &self.order_ref);
        put_opt(out, &self.original);
        put_opt(out, &self.network_code);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let mti = Mti::get(r)?;
        let f = Flags::get(r, 9, "request flags")?;
        let stan = r.u32("STAN")?;
        let transmission = r.varint("transmission date-time")?;
        let terminal = TerminalId::get(r)?;
        Ok(Self {
            mti,
            stan,
            transmission,
            terminal,
            processing_code: f.take(0, r)?,
            pan: f.take(1, r)?,
            amount: f.take(2, r)?,
            currency: f.take(3, r)?,
            expiry: f.take(4, r)?,
            merchant: f.take::<MerchantId>(5, r)?,
            order_ref: f.take(6, r)?,
            original: f.take(7, r)?,
            network_code: if f.has(8) {
                Some(r.u16("network code")?)
            } else {
                None
            },
        })
    }
}

impl Wire for ApprovalCode {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        ApprovalCode::from_bytes(r.array("approval code")?).ok_or(WireError::Invalid {
            what: "approval code",
            offset,
        })
    }
}

impl Wire for AdditionalAmounts {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        AdditionalAmounts::from_bytes(r.array("additional amounts")?).ok_or(WireError::Invalid {
            what: "additional amounts",
            offset,
        })
    }
}

impl Wire for Response {
    fn put(&self, out: &mut Vec<u8>) {
        self.mti.put(out);
        self.code.put(out);
        Flags::of(&[
            self.approval_code.is_some(),
            self.additional_amounts.is_some(),
        ])
        .put(out);
        put_opt(out, &self.approval_code);
        put_opt(out, &self.additional_amounts);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let mti = Mti::get(r)?;
        let code = ResponseCode::get(r)?;
        let f = Flags::get(r, 2, "response flags")?;
        Ok(Self {
            mti,
            code,
            approval_code: f.take(0, r)?,
            additional_amounts: f.take(1, r)?,
        })
    }
}

/// Decodes one complete top-level value: version byte, the value, nothing after it.
pub(crate) fn decode_top<T: Wire>(bytes: &[u8], what: &'static str) -> Result<T, WireError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let v = T::get(&mut r)?;
    r.finish(what)?;
    Ok(v)
}

// ===== public entry points =====

impl Request {
    /// Appends this request's encoding (version byte first) to `out`. See [`crate::wire`]:
    /// the PAN is written in clear.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, WIRE_VERSION);
        self.put(out);
    }

    /// Decodes what [`Request::encode`] wrote, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_top(bytes, "request")
    }
}

impl Response {
    /// Appends this response's encoding (version byte first) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, WIRE_VERSION);
        self.put(out);
    }

    /// Decodes what [`Response::encode`] wrote, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_top(bytes, "response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_round_trip(v: u64) {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        let mut r = Reader::new(&out);
        assert_eq!(r.varint("v"), Ok(v));
        assert!(r.finish("v").is_ok());
    }

    #[test]
    fn varints() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            varint_round_trip(v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -86_400] {
            let mut out = Vec::new();
            put_i64(&mut out, v);
            assert_eq!(Reader::new(&out).i64("v"), Ok(v));
        }
        // Overlong forms, an eleventh byte, a 65th bit: refused.
        assert!(Reader::new(&[0x80, 0x00]).varint("v").is_err());
        assert!(Reader::new(&[0xFF; 11]).varint("v").is_err());
        let mut big = vec![0xFF; 9];
        big.push(0x02);
        assert!(Reader::new(&big).varint("v").is_err());
        assert_eq!(
            Reader::new(&[0x80]).varint("v"),
            Err(WireError::Truncated {
                what: "v",
                offset: 0
            })
        );
    }

    #[test]
    fn pan_is_packed_bcd() {
        let pan: Pan = "4111111111111111".parse().unwrap();
        let mut out = Vec::new();
        pan.put(&mut out);
        assert_eq!(out.len(), 1 + 8);
        assert_eq!(out[1], 0x41);
        let odd: Pan = "378282246310005".parse().unwrap();
        let mut out = Vec::new();
        odd.put(&mut out);
        assert_eq!(out.len(), 1 + 8);
        assert_eq!(out[8] & 0x0F, 0);
        assert_eq!(Pan::get(&mut Reader::new(&out)), Ok(odd));
        // A non-zero pad nibble, a nibble above 9, a length above 19.
        let mut bad = out.clone();
        bad[8] |= 1;
        assert!(Pan::get(&mut Reader::new(&bad)).is_err());
        let mut bad = out.clone();
        bad[2] = 0xA0;
        assert!(Pan::get(&mut Reader::new(&bad)).is_err());
        assert!(Pan::get(&mut Reader::new(&[20; 12])).is_err());
    }

    #[test]
    fn errors_never_show_the_bytes() {
        let mut r = Request::new(
            Mti::new(200).unwrap(),
            1,
            615_120_000,
            TerminalId::new(b"TERM0001").unwrap(),
        );
        r.pan = Some("4111111111111111".parse().unwrap());
        let mut out = Vec::new();
        r.encode(&mut out);
        for cut in 0..out.len() {
            let e = Request::decode(&out[..cut]).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("4111"), "{shown}");
            assert!(!shown.contains("TERM"), "{shown}");
        }
        assert_eq!(Request::decode(&out), Ok(r));
    }
}
