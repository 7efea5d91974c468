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
        let Some(field) = msg.field(n) else {
            return Ok(self);
        };
        if !std::ptr::eq(msg.spec(), self.spec) && msg.spec() != self.spec {
            return Err(EncodeError::Field {
                field: n as u8,
                kind: FieldErrorKind::SpecMismatch,
            });
        }
        self.put(
            n,
            Slot::Wire {
                wire: field.wire(),
                units: field.len() as u16,
            },
        )
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
        let start = dst.len();
        let result = self.write(dst);
        if result.is_err() {
            dst.truncate(start);
        }
        result
    }

    fn write(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let spec = self.spec;
        if self.header.len() != spec.header_len() {
            return Err(EncodeError::Header {
                len: self.header.len(),
                expected: spec.header_len(),
            });
        }
        let mut bitmap = self.present;
        if bitmap[2] != 0 {
            bitmap[1] |= 1 << 63; // DE 65: tertiary bitmap follows
        }
        if bitmap[1] != 0 {
            bitmap[0] |= 1 << 63; // DE 1: secondary bitmap follows
        }
        dst.reserve(spec.header_len() + spec.mti_len() + 3 * spec.bitmap_len() + 256);
        dst.put_slice(self.header);
        write_mti(spec.mti_encoding(), self.mti, dst);
        write_bitmap(spec.bitmap_encoding(), bitmap[0], dst);
        if bitmap[0] & (1 << 63) != 0 {
            write_bitmap(spec.bitmap_encoding(), bitmap[1], dst);
        }
        for (word, &bits) in bitmap.iter().enumerate() {
            let mut bits = bits;
            if word == 0 {
                bits &= !(1 << 63);
            }
            while bits != 0 {
                let lz = bits.leading_zeros() as usize;
                bits &= !(1u64 << (63 - lz));
                let n = word * 64 + lz + 1;
                if n == 65 {
                    write_bitmap(spec.bitmap_encoding(), bitmap[2], dst);
                    continue;
                }
                let (Some(def), Some(slot)) = (spec.field(n), self.slots.get(n)) else {
                    return Err(EncodeError::Field {
                        field: n as u8,
                        kind: FieldErrorKind::Undefined,
                    });
                };
                write_field(def, *slot, dst).map_err(|kind| EncodeError::Field {
                    field: n as u8,
                    kind,
                })?;
            }
        }
        Ok(())
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

fn write_bitmap(enc: BitmapEncoding, bits: u64, dst: &mut BytesMut) {
    match enc {
        BitmapEncoding::Binary => dst.put_u64(bits),
        BitmapEncoding::Hex => {
            for i in (0..16).rev() {
                dst.put_u8(chars::HEX_UPPER[((bits >> (i * 4)) & 0xf) as usize]);
            }
        }
    }
}

/// Decimal digits of `v`, right-aligned in a stack buffer; returns the buffer and the start.
fn digits(mut v: u64) -> ([u8; 20], usize) {
    let mut buf = [b'0'; 20];
    let mut i = 20;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    (buf, i)
}

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
                Encoding::Hex => bytes.iter().for_each(|&b| {
                    dst.put_u8(chars::HEX_UPPER[(b >> 4) as usize]);
                    dst.put_u8(chars::HEX_UPPER[(b & 0xf) as usize]);
                }),
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

fn write_prefix(def: &FieldDef, units: usize, dst: &mut BytesMut) -> Result<(), FieldErrorKind> {
    let digits_n = def.prefix_digits();
    if digits_n == 0 {
        return Ok(());
    }
    let n = def.prefix_value(units);
    let (buf, _) = digits(n as u64);
    let ds = &buf[20 - digits_n..];
    match def.prefix {
        PrefixEncoding::Ascii => dst.put_slice(ds),
        PrefixEncoding::Ebcdic => ds.iter().for_each(|&c| dst.put_u8(chars::to_ebcdic(c))),
        PrefixEncoding::Bcd => {
            // LL: 1 byte; LLL and LLLL: 2 bytes (LLL's first nibble is 0).
            let bytes = def.prefix_len();
            let ds = &buf[20 - 2 * bytes..];
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
