//! Encoding: a builder that borrows its values and writes the message into a caller's
//! `BytesMut`, so a connection can reuse one buffer and encode without allocating.
//!
//! Bitmaps are never set by hand: they follow from the fields present (DE 1 when any field above
//! 64 is present, DE 65 when any above 128 is).

use bytes::{BufMut, BytesMut};

use crate::chars;
use crate::error::{ClassName, EncodeError, FieldErrorKind};
use crate::message::{Message, Mti};
use crate::spec::{
    BitmapEncoding, ContentClass, Encoding, FieldDef, MtiEncoding, Pad, PrefixEncoding, Spec,
    MAX_FIELD,
};

/// A value waiting to be written.
#[derive(Clone, Copy, Default)]
enum Slot<'v> {
    #[default]
    Empty,
    /// The text form: characters, digits (`=` or `D` for track 2's separator), hex for `b`.
    Text(&'v [u8]),
    /// Raw bytes of a `b` field.
    Bytes(&'v [u8]),
    /// A number, zero-padded to a fixed field's length.
    Number(u64),
    /// Wire bytes of a field decoded with the same spec: copied as they are.
    Wire { wire: &'v [u8], units: u16 },
}

impl<'v> Slot<'v> {
    /// Field `n` of `msg` as wire bytes to copy; `None` when the message lacks it. Only between
    /// messages of one spec: the bytes are not re-encoded.
    fn copied(
        spec: &Spec,
        msg: &'v Message<'_>,
        n: usize,
    ) -> Result<Option<Slot<'v>>, EncodeError> {
        let Some(field) = msg.field(n) else {
            return Ok(None);
        };
        if !std::ptr::eq(msg.spec(), spec) && msg.spec() != spec {
            return Err(EncodeError::Field {
                field: n as u8,
                kind: FieldErrorKind::SpecMismatch,
            });
        }
        Ok(Some(Slot::Wire {
            wire: field.wire(),
            units: field.len() as u16,
        }))
    }
}

/// Builds one message. Values are borrowed until [`MessageBuilder::encode_into`].
pub struct MessageBuilder<'s, 'v> {
    spec: &'s Spec,
    mti: Mti,
    header: &'v [u8],
    present: [u64; 3],
    slots: [Slot<'v>; MAX_FIELD + 1],
}

impl std::fmt::Debug for MessageBuilder<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be card data: show which fields are set, not what they hold.
        let set: Vec<usize> = (2..=MAX_FIELD).filter(|&n| self.is_set(n)).collect();
        f.debug_struct("MessageBuilder")
            .field("spec", &self.spec.name())
            .field("mti", &self.mti)
            .field("fields", &set)
            .finish()
    }
}

#[inline]
fn bit(n: usize) -> (usize, u64) {
    let i = n - 1;
    (i / 64, 1u64 << (63 - (i % 64)))
}

impl<'s, 'v> MessageBuilder<'s, 'v> {
    pub fn new(spec: &'s Spec, mti: Mti) -> Self {
        MessageBuilder {
            spec,
            mti,
            header: &[],
            present: [0; 3],
            slots: [Slot::Empty; MAX_FIELD + 1],
        }
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    pub fn set_mti(&mut self, mti: Mti) -> &mut Self {
        self.mti = mti;
        self
    }

    /// The fixed header written before the MTI; must be the spec's header length.
    pub fn header(&mut self, header: &'v [u8]) -> &mut Self {
        self.header = header;
        self
    }

    fn put(&mut self, n: usize, slot: Slot<'v>) -> Result<&mut Self, EncodeError> {
        if !(2..=MAX_FIELD).contains(&n) || n == 65 {
            return Err(EncodeError::FieldNumber(n));
        }
        if self.spec.field(n).is_none() {
            return Err(EncodeError::Field {
                field: n as u8,
                kind: FieldErrorKind::Undefined,
            });
        }
        let (w, b) = bit(n);
        self.present[w] |= b;
        self.slots[n] = slot;
        Ok(self)
    }

    /// Sets a field from its text form, as `iso8583 decode` prints it: characters or digits,
    /// track 2 with `=`, `C`/`D` then digits for `x+n`, upper- or lower-case hex for `b`.
    /// Content is checked when the message is encoded.
    pub fn set(&mut self, n: usize, text: &'v str) -> Result<&mut Self, EncodeError> {
        self.put(n, Slot::Text(text.as_bytes()))
    }

    /// Sets a binary (`b`) field from raw bytes.
    pub fn set_bytes(&mut self, n: usize, bytes: &'v [u8]) -> Result<&mut Self, EncodeError> {
        self.put(n, Slot::Bytes(bytes))
    }

    /// Sets a numeric field; fixed fields are zero-padded to their length.
    pub fn set_u64(&mut self, n: usize, value: u64) -> Result<&mut Self, EncodeError> {
        self.put(n, Slot::Number(value))
    }

    /// Copies field `n` from a message decoded with the same spec, byte for byte. Does nothing
    /// when the message lacks the field.
    pub fn copy_from(&mut self, msg: &'v Message<'_>, n: usize) -> Result<&mut Self, EncodeError> {
        match Slot::copied(self.spec, msg, n)? {
            Some(slot) => self.put(n, slot),
            None => Ok(self),
        }
    }

    /// Removes a field.
    pub fn clear(&mut self, n: usize) -> &mut Self {
        if (1..=MAX_FIELD).contains(&n) {
            let (w, b) = bit(n);
            self.present[w] &= !b;
        }
        self
    }

    pub fn is_set(&self, n: usize) -> bool {
        if !(1..=MAX_FIELD).contains(&n) {
            return false;
        }
        let (w, b) = bit(n);
        self.present[w] & b != 0
    }

    /// Appends the encoded message to `dst`. On error `dst` is left as it was.
    pub fn encode_into(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let mut w = MessageWriter::with_header(self.spec, self.header, self.mti, dst)?;
        for (word, &bits) in self.present.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let lz = bits.leading_zeros() as usize;
                bits &= !(1u64 << (63 - lz));
                let n = word * 64 + lz + 1;
                if let Some(slot) = self.slots.get(n) {
                    w.put(n, *slot)?;
                }
            }
        }
        w.finish()
    }
}

// ===== MessageWriter =====

/// Writes a message straight into the caller's buffer as fields are given, in ascending field
/// order; the bitmaps are patched in by [`MessageWriter::finish`]. This is the encoder's fast
/// path (a response is written without building a table of values first);
/// [`MessageBuilder`] takes fields in any order and uses it.
///
/// On any error, and if the writer is dropped without `finish`, the buffer is truncated back
/// to where the message began.
pub struct MessageWriter<'s, 'd> {
    spec: &'s Spec,
    dst: &'d mut BytesMut,
    /// Where the message begins in `dst`.
    start: usize,
    /// Where the primary bitmap is (the secondary follows it when present).
    bitmap_at: usize,
    /// Where the first field above 64 begins: DE 65, the tertiary bitmap, goes there.
    above_64_at: Option<usize>,
    bits: [u64; 3],
    last: usize,
    done: bool,
}

impl std::fmt::Debug for MessageWriter<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("spec", &self.spec.name())
            .field("last_field", &self.last)
            .finish_non_exhaustive()
    }
}

impl<'s, 'd> MessageWriter<'s, 'd> {
    /// Starts a message (for specs without a header).
    pub fn new(spec: &'s Spec, mti: Mti, dst: &'d mut BytesMut) -> Result<Self, EncodeError> {
        MessageWriter::with_header(spec, &[], mti, dst)
    }

    /// Starts a message with the spec's fixed header.
    pub fn with_header(
        spec: &'s Spec,
        header: &[u8],
        mti: Mti,
        dst: &'d mut BytesMut,
    ) -> Result<Self, EncodeError> {
        if header.len() != spec.header_len() {
            return Err(EncodeError::Header {
                len: header.len(),
                expected: spec.header_len(),
            });
        }
        let start = dst.len();
        dst.reserve(spec.header_len() + spec.mti_len() + 3 * spec.bitmap_len() + 256);
        dst.put_slice(header);
        write_mti(spec.mti_encoding(), mti, dst);
        let bitmap_at = dst.len();
        dst.put_bytes(0, spec.bitmap_len());
        Ok(MessageWriter {
            spec,
            dst,
            start,
            bitmap_at,
            above_64_at: None,
            bits: [0; 3],
            last: 1,
            done: false,
        })
    }

    /// Sets a field from its text form (see [`MessageBuilder::set`]).
    pub fn set(&mut self, n: usize, text: &str) -> Result<&mut Self, EncodeError> {
        let t = text.as_bytes();
        // Most of a message: ASCII text among DE 2..=64, given in order. Written with the same
        // checks as the general path, minus its dispatch; anything else goes through it.
        if self.in_order_primary(n) {
            if let Some(def) = self.spec.field(n) {
                if def.encoding == Encoding::Ascii
                    && chars::text_ok(def.class, t)
                    && self.put_raw(def, t.len(), t)
                {
                    return Ok(self.mark(n));
                }
            }
        }
        self.put(n, Slot::Text(t))
    }

    /// Sets a binary (`b`) field from raw bytes.
    pub fn set_bytes(&mut self, n: usize, bytes: &[u8]) -> Result<&mut Self, EncodeError> {
        if self.in_order_primary(n) {
            if let Some(def) = self.spec.field(n) {
                if def.encoding == Encoding::Binary && self.put_raw(def, bytes.len(), bytes) {
                    return Ok(self.mark(n));
                }
            }
        }
        self.put(n, Slot::Bytes(bytes))
    }

    /// Whether `n` can take the fast path: in order, in the primary bitmap.
    #[inline(always)]
    fn in_order_primary(&self, n: usize) -> bool {
        !self.done && n > self.last && n <= 64
    }

    /// Writes a value whose wire bytes are `wire` (`units` long) when its length fits the
    /// field; `false` (nothing written) otherwise.
    #[inline(always)]
    fn put_raw(&mut self, def: &FieldDef, units: usize, wire: &[u8]) -> bool {
        check_len(def, units).is_ok() && write_prefix(def, units, self.dst).is_ok() && {
            self.dst.extend_from_slice(wire);
            true
        }
    }

    /// Records field `n` (of the primary bitmap) as written.
    #[inline(always)]
    fn mark(&mut self, n: usize) -> &mut Self {
        self.bits[0] |= 1 << (64 - n);
        self.last = n;
        self
    }

    /// Sets a numeric field; fixed fields are zero-padded to their length.
    pub fn set_u64(&mut self, n: usize, value: u64) -> Result<&mut Self, EncodeError> {
        // ASCII digits among DE 2..=64, in order: the same bytes as the general path writes.
        if self.in_order_primary(n) {
            if let Some(def) = self.spec.field(n) {
                if def.encoding == Encoding::Ascii && def.class == ContentClass::N {
                    let (buf, start) = digits(value);
                    let width = def.max as usize;
                    let text = if !def.is_fixed() {
                        buf.get(start..)
                    } else if 20 - start <= width {
                        buf.get(20usize.saturating_sub(width)..)
                    } else {
                        None
                    };
                    if let Some(text) = text {
                        if self.put_raw(def, text.len(), text) {
                            return Ok(self.mark(n));
                        }
                    }
                }
            }
        }
        self.put(n, Slot::Number(value))
    }

    /// Copies field `n` byte for byte from a message decoded with the same spec; nothing when
    /// the message lacks it.
    pub fn copy_from(&mut self, msg: &Message<'_>, n: usize) -> Result<&mut Self, EncodeError> {
        if self.in_order_primary(n) && std::ptr::eq(msg.spec(), self.spec) {
            let Some(field) = msg.field(n) else {
                return Ok(self);
            };
            if self.put_raw(field.def(), field.len(), field.wire()) {
                return Ok(self.mark(n));
            }
        }
        match Slot::copied(self.spec, msg, n) {
            Ok(Some(slot)) => self.put(n, slot),
            Ok(None) => Ok(self),
            Err(e) => self.fail(e),
        }
    }

    fn fail<T>(&mut self, e: EncodeError) -> Result<T, EncodeError> {
        self.done = true;
        self.dst.truncate(self.start);
        Err(e)
    }

    /// Makes room for a bitmap at `at`, moving what follows.
    fn insert_bitmap(&mut self, at: usize) {
        let k = self.spec.bitmap_len();
        let end = self.dst.len();
        self.dst.put_bytes(0, k);
        self.dst.copy_within(at..end, at + k);
    }

    fn put(&mut self, n: usize, slot: Slot<'_>) -> Result<&mut Self, EncodeError> {
        if self.done || n <= self.last || n == 65 || n > MAX_FIELD {
            // Out of order, repeated, a bitmap, or after an error.
            return self.fail(EncodeError::FieldNumber(n));
        }
        let Some(def) = self.spec.field(n) else {
            return self.fail(EncodeError::Field {
                field: n as u8,
                kind: FieldErrorKind::Undefined,
            });
        };
        if n > 64 && self.above_64_at.is_none() {
            // The secondary bitmap goes right after the primary.
            self.insert_bitmap(self.bitmap_at + self.spec.bitmap_len());
            self.above_64_at = Some(self.dst.len());
        }
        if n > 128 && self.bits[2] == 0 {
            // DE 65 (the tertiary bitmap) stands where fields above 64 begin.
            let at = self.above_64_at.unwrap_or(self.dst.len());
            self.insert_bitmap(at);
        }
        if let Err(kind) = write_field(def, slot, self.dst) {
            return self.fail(EncodeError::Field {
                field: n as u8,
                kind,
            });
        }
        let (w, b) = bit(n);
        self.bits[w] |= b;
        self.last = n;
        Ok(self)
    }

    /// Patches the bitmaps; the message is complete in the buffer.
    pub fn finish(mut self) -> Result<(), EncodeError> {
        if self.done {
            return Err(EncodeError::FieldNumber(self.last));
        }
        let mut bits = self.bits;
        if bits[2] != 0 {
            bits[1] |= 1 << 63;
        }
        if bits[1] != 0 {
            bits[0] |= 1 << 63;
        }
        let k = self.spec.bitmap_len();
        self.patch_bitmap(self.bitmap_at, bits[0]);
        if bits[1] != 0 {
            self.patch_bitmap(self.bitmap_at + k, bits[1]);
        }
        if let (true, Some(at)) = (bits[2] != 0, self.above_64_at) {
            self.patch_bitmap(at, bits[2]);
        }
        self.done = true;
        Ok(())
    }

    fn patch_bitmap(&mut self, at: usize, bits: u64) {
        let enc = self.spec.bitmap_encoding();
        let Some(slot) = self.dst.get_mut(at..at + self.spec.bitmap_len()) else {
            return;
        };
        match enc {
            BitmapEncoding::Binary => slot.copy_from_slice(&bits.to_be_bytes()),
            BitmapEncoding::Hex => {
                for (i, c) in slot.iter_mut().enumerate() {
                    *c = chars::HEX_UPPER[((bits >> ((15 - i) * 4)) & 0xf) as usize];
                }
            }
        }
    }
}

impl Drop for MessageWriter<'_, '_> {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned half-written: leave the buffer as it was.
            self.dst.truncate(self.start);
        }
    }
}

fn write_mti(enc: MtiEncoding, mti: Mti, dst: &mut BytesMut) {
    let d = mti.as_bytes();
    match enc {
        MtiEncoding::Ascii => dst.put_slice(d),
        MtiEncoding::Ebcdic => d.iter().for_each(|&c| dst.put_u8(chars::to_ebcdic(c))),
        MtiEncoding::Bcd => {
            dst.put_u8((d[0] - b'0') << 4 | (d[1] - b'0'));
            dst.put_u8((d[2] - b'0') << 4 | (d[3] - b'0'));
        }
    }
}

/// Decimal digits of `v`, right-aligned in a stack buffer; returns the buffer and the start.
fn digits(mut v: u64) -> ([u8; 20], usize) {
    /// "00" to "99": two digits per division halves the dependent chain of a DE 7's ten.
    const PAIRS: &[u8; 200] = b"\
        0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [b'0'; 20];
    let mut i = 20;
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    (buf, i)
}

#[inline(always)]
fn write_field(def: &FieldDef, slot: Slot<'_>, dst: &mut BytesMut) -> Result<(), FieldErrorKind> {
    match slot {
        Slot::Empty => Err(FieldErrorKind::Undefined),
        Slot::Wire { wire, units } => {
            let units = units as usize;
            check_len(def, units)?;
            write_prefix(def, units, dst)?;
            dst.put_slice(wire);
            Ok(())
        }
        Slot::Number(v) => {
            if def.class != ContentClass::N {
                return Err(FieldErrorKind::Content(ClassName(def.class)));
            }
            let (buf, start) = digits(v);
            let natural = &buf[start..];
            if def.is_fixed() {
                let width = def.max as usize;
                if natural.len() > width {
                    return Err(FieldErrorKind::WrongLength {
                        len: natural.len(),
                        expected: width,
                    });
                }
                if width <= 20 {
                    write_text(def, &buf[20 - width..], dst)
                } else {
                    // Wider than any u64: pad with zeros first, then the 20 digits.
                    check_len(def, width)?;
                    write_prefix(def, width, dst)?;
                    write_padded_number(def, natural, width, dst)
                }
            } else {
                write_text(def, natural, dst)
            }
        }
        Slot::Bytes(bytes) => {
            if def.class != ContentClass::B {
                return Err(FieldErrorKind::NotBinary);
            }
            check_len(def, bytes.len())?;
            write_prefix(def, bytes.len(), dst)?;
            match def.encoding {
                Encoding::Hex => {
                    // Through a stack buffer: one capacity check per 32 bytes, not per digit.
                    for chunk in bytes.chunks(32) {
                        let mut tmp = [0u8; 64];
                        for (pair, &b) in tmp.chunks_exact_mut(2).zip(chunk) {
                            pair[0] = chars::HEX_UPPER[(b >> 4) as usize];
                            pair[1] = chars::HEX_UPPER[(b & 0xf) as usize];
                        }
                        dst.put_slice(&tmp[..2 * chunk.len()]);
                    }
                }
                _ => dst.put_slice(bytes),
            }
            Ok(())
        }
        Slot::Text(text) => write_text(def, text, dst),
    }
}

/// Numeric fields wider than 20 digits (DE 90 is 42): zeros, then the number's digits.
fn write_padded_number(
    def: &FieldDef,
    natural: &[u8],
    width: usize,
    dst: &mut BytesMut,
) -> Result<(), FieldErrorKind> {
    let mut chars = std::iter::repeat_n(b'0', width - natural.len()).chain(natural.iter().copied());
    match def.encoding {
        Encoding::Ascii => chars.for_each(|c| dst.put_u8(c)),
        Encoding::Ebcdic => chars.for_each(|c| dst.put_u8(chars::to_ebcdic(c))),
        Encoding::Bcd => {
            if width % 2 == 1 && def.pad == Pad::Left {
                let lo = chars.next().map_or(0, |c| c - b'0');
                dst.put_u8(lo);
            }
            while let Some(hi) = chars.next() {
                let lo = chars.next().map_or(0, |c| c - b'0');
                dst.put_u8((hi - b'0') << 4 | lo);
            }
        }
        Encoding::Binary | Encoding::Hex => return Err(FieldErrorKind::NotBinary),
    }
    Ok(())
}

#[inline]
fn check_len(def: &FieldDef, units: usize) -> Result<(), FieldErrorKind> {
    let max = def.max as usize;
    if def.is_fixed() && units != max {
        return Err(FieldErrorKind::WrongLength {
            len: units,
            expected: max,
        });
    }
    if units > max {
        return Err(FieldErrorKind::TooLong { len: units, max });
    }
    Ok(())
}

#[inline(always)]
fn write_prefix(def: &FieldDef, units: usize, dst: &mut BytesMut) -> Result<(), FieldErrorKind> {
    if def.is_fixed() {
        return Ok(());
    }
    write_variable_prefix(def, units, dst)
}

fn write_variable_prefix(
    def: &FieldDef,
    units: usize,
    dst: &mut BytesMut,
) -> Result<(), FieldErrorKind> {
    let digits_n = def.prefix_digits();
    let n = def.prefix_value(units);
    // At most four digits (LLLL): constant divisors, no loop.
    let m = (n % 10_000) as u32;
    let buf = [
        b'0' + (m / 1000) as u8,
        b'0' + (m / 100 % 10) as u8,
        b'0' + (m / 10 % 10) as u8,
        b'0' + (m % 10) as u8,
    ];
    let ds = &buf[4 - digits_n..];
    match def.prefix {
        PrefixEncoding::Ascii => dst.put_slice(ds),
        PrefixEncoding::Ebcdic => ds.iter().for_each(|&c| dst.put_u8(chars::to_ebcdic(c))),
        PrefixEncoding::Bcd => {
            // LL: 1 byte; LLL and LLLL: 2 bytes (LLL's first nibble is 0).
            let bytes = def.prefix_len();
            let ds = &buf[4 - 2 * bytes..];
            for pair in ds.chunks_exact(2) {
                dst.put_u8((pair[0] - b'0') << 4 | (pair[1] - b'0'));
            }
        }
        PrefixEncoding::Binary => {
            if def.prefix_len() == 1 {
                dst.put_u8(
                    u8::try_from(n).map_err(|_| FieldErrorKind::TooLong { len: n, max: 255 })?,
                );
            } else {
                dst.put_u16(
                    u16::try_from(n).map_err(|_| FieldErrorKind::TooLong { len: n, max: 65535 })?,
                );
            }
        }
    }
    Ok(())
}

/// Writes a value given in text form, checking its class and length.
#[inline(always)]
fn write_text(def: &FieldDef, text: &[u8], dst: &mut BytesMut) -> Result<(), FieldErrorKind> {
    let bad = FieldErrorKind::Content(ClassName(def.class));
    if def.class == ContentClass::B {
        if text.len() % 2 == 1 || !text.iter().all(|&c| chars::is_hex(c)) {
            return Err(FieldErrorKind::Hex);
        }
        let units = text.len() / 2;
        check_len(def, units)?;
        write_prefix(def, units, dst)?;
        match def.encoding {
            Encoding::Hex => text
                .iter()
                .for_each(|&c| dst.put_u8(c.to_ascii_uppercase())),
            _ => {
                for pair in text.chunks_exact(2) {
                    let hi = chars::hex_val(pair[0]).unwrap_or(0);
                    let lo = chars::hex_val(pair[1]).unwrap_or(0);
                    dst.put_u8(hi << 4 | lo);
                }
            }
        }
        return Ok(());
    }
    let units = text.len();
    check_len(def, units)?;
    if !chars::text_ok(def.class, text) {
        return Err(bad);
    }
    write_prefix(def, units, dst)?;
    match def.encoding {
        Encoding::Ascii => dst.put_slice(text),
        Encoding::Ebcdic => text.iter().for_each(|&c| dst.put_u8(chars::to_ebcdic(c))),
        Encoding::Bcd => {
            let (digits, body) = match def.class {
                ContentClass::XN => match text.split_first() {
                    Some((&sign, rest)) => {
                        dst.put_u8(sign);
                        (rest.len(), rest)
                    }
                    None => return Err(bad),
                },
                _ => (units, text),
            };
            let mut nibbles = body.iter().map(|&c| chars::bcd_nibble(def.class, c));
            if digits % 2 == 1 && def.pad == Pad::Left {
                dst.put_u8(nibbles.next().flatten().ok_or(bad)?);
            }
            while let Some(hi) = nibbles.next() {
                let hi = hi.ok_or(bad)?;
                let lo = match nibbles.next() {
                    Some(lo) => lo.ok_or(bad)?,
                    None => 0, // odd length, right pad
                };
                dst.put_u8(hi << 4 | lo);
            }
        }
        Encoding::Binary | Encoding::Hex => return Err(bad),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin;

    fn mti(s: &str) -> Mti {
        Mti::parse(s).expect("mti")
    }

    fn digits_text(v: u64) -> String {
        let (buf, start) = digits(v);
        // The fixed-width paths take their leading zeros from before `start`.
        assert!(buf[..start].iter().all(|&b| b == b'0'), "{v}: padding");
        String::from_utf8(buf[start..].to_vec()).expect("ascii")
    }

    #[test]
    fn digits_are_the_decimal_form() {
        let mut edges = vec![0, u64::MAX];
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            edges.extend([p - 1, p, p + 1]);
            p = next;
        }
        edges.extend([p - 1, p, p + 1]);
        for v in edges {
            assert_eq!(digits_text(v), v.to_string());
        }
    }

    proptest::proptest! {
        #[test]
        fn digits_of_any_number_are_its_decimal_form(v in proptest::prelude::any::<u64>(), small in 0u64..100_000) {
            proptest::prop_assert_eq!(digits_text(v), v.to_string());
            proptest::prop_assert_eq!(digits_text(small), small.to_string());
        }
    }

    #[test]
    fn writer_places_secondary_and_tertiary_bitmaps_where_iso_8583_puts_them() {
        for name in crate::BUILTIN_NAMES {
            let spec = builtin(name).expect("spec");
            let mut out = BytesMut::from(&b"keep"[..]);
            let mut w = MessageWriter::new(spec, mti("0200"), &mut out).expect("start");
            w.set(2, "4761739001010010").expect("2");
            w.set(11, "000001").expect("11");
            w.set(70, "301").expect("70");
            w.set(130, "tertiary").expect("130");
            w.finish().expect("finish");
            assert_eq!(&out[..4], b"keep", "what was in the buffer stays");
            let frame = out.split_off(4).freeze();
            let msg = Message::decode(spec, frame).expect("decodes");
            let got: Vec<(usize, String)> =
                msg.fields().map(|f| (f.number(), f.to_string())).collect();
            assert_eq!(
                got,
                vec![
                    (2, "4761739001010010".into()),
                    (11, "000001".into()),
                    (70, "301".into()),
                    (130, "tertiary".into())
                ],
                "{name}"
            );
            let [p, s, t] = msg.bitmaps();
            assert_eq!(p >> 63, 1, "DE 1 set");
            assert_eq!(s >> 63, 1, "DE 65 set");
            assert_eq!(t, 1u64 << (63 - 1), "only DE 130 in the tertiary bitmap");
        }
    }

    #[test]
    fn writer_refuses_out_of_order_fields_and_leaves_the_buffer_as_it_was() {
        let spec = builtin("iso87-binary").expect("spec");
        let mut out = BytesMut::from(&b"prior frame"[..]);
        let mut w = MessageWriter::new(spec, mti("0210"), &mut out).expect("start");
        w.set(11, "000001").expect("11");
        assert_eq!(
            w.set(4, "000000000100").err(),
            Some(EncodeError::FieldNumber(4))
        );
        assert!(w.set(39, "00").is_err(), "a failed writer stays failed");
        assert!(w.finish().is_err());
        assert_eq!(&out[..], b"prior frame");
    }

    #[test]
    fn writer_dropped_unfinished_or_failing_content_leaves_the_buffer_as_it_was() {
        let spec = builtin("iso87-bcd").expect("spec");
        let mut out = BytesMut::from(&b"x"[..]);
        {
            let mut w = MessageWriter::new(spec, mti("0210"), &mut out).expect("start");
            w.set(11, "000001").expect("11");
        }
        assert_eq!(&out[..], b"x");
        let mut w = MessageWriter::new(spec, mti("0210"), &mut out).expect("start");
        assert!(matches!(
            w.set(4, "12AB"),
            Err(EncodeError::Field { field: 4, .. })
        ));
        drop(w);
        assert_eq!(&out[..], b"x");
    }

    #[test]
    fn writer_fast_path_still_refuses_bad_length_and_content() {
        let spec = builtin("iso87-binary").expect("spec");
        for (n, bad) in [
            (4, "12"),
            (4, "0000000000AB"),
            (2, "41111111111111111111"),
            (41, "TERM\u{1}001"),
        ] {
            let mut out = BytesMut::from(&b"x"[..]);
            let mut w = MessageWriter::new(spec, mti("0200"), &mut out).expect("start");
            let e = w.set(n, bad).expect_err("refused");
            assert!(
                matches!(e, EncodeError::Field { field, .. } if field as usize == n),
                "{e}"
            );
            drop(w);
            assert_eq!(&out[..], b"x", "DE {n}: buffer restored");
        }
        let mut out = BytesMut::new();
        let mut w = MessageWriter::new(spec, mti("0200"), &mut out).expect("start");
        assert!(w.set_bytes(52, &[1, 2, 3]).is_err(), "DE 52 is 8 bytes");
    }

    #[test]
    fn builder_and_writer_agree_whatever_the_order_fields_were_given_in() {
        let spec = builtin("iso87-ascii").expect("spec");
        let mut b = MessageBuilder::new(spec, mti("0800"));
        b.set(70, "301")
            .expect("70")
            .set(7, "1126104500")
            .expect("7")
            .set(11, "000009")
            .expect("11");
        let mut from_builder = BytesMut::new();
        b.encode_into(&mut from_builder).expect("builder");
        let mut from_writer = BytesMut::new();
        let mut w = MessageWriter::new(spec, mti("0800"), &mut from_writer).expect("start");
        w.set(7, "1126104500")
            .expect("7")
            .set(11, "000009")
            .expect("11")
            .set_u64(70, 301)
            .expect("70");
        w.finish().expect("finish");
        assert_eq!(from_builder, from_writer);
    }
}
