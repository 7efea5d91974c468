//! Zero-copy decoded messages.
//!
//! [`Message::decode`] walks the bitmaps once and records where each field's value sits in the
//! frame; nothing is copied and nothing is allocated. Fields are read on demand as borrowed
//! slices ([`Field::value`], [`Field::as_str`]) or typed values ([`Field::to_u64`]).
//!
//! [`Message::decode_partial`] keeps going past a field whose content is malformed (its length is
//! known) and stops only where lengths are lost; the MTI and every field decoded before the stop
//! stay readable, so a switch can still answer 30 with DE 11 echoed.

use std::fmt;

use bytes::Bytes;

use crate::chars;
use crate::error::{ClassName, DecodeError, FieldErrorKind, Part};
use crate::mask;
use crate::spec::{
    BitmapEncoding, ContentClass, Encoding, FieldDef, MtiEncoding, Pad, PrefixEncoding, Spec,
    MAX_FIELD,
};

// ===== Mti =====

/// A message type indicator: four ASCII digits (version, class, function, origin).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

impl Mti {
    /// From four ASCII digits; `None` if they are not.
    pub fn new(digits: [u8; 4]) -> Option<Mti> {
        digits.iter().all(u8::is_ascii_digit).then_some(Mti(digits))
    }

    /// Parses `"0200"`.
    pub fn parse(s: &str) -> Option<Mti> {
        let b: [u8; 4] = s.as_bytes().try_into().ok()?;
        Mti::new(b)
    }

    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Four ASCII digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("????")
    }

    /// The MTI as a number (0200 -> 200).
    pub fn as_u16(&self) -> u16 {
        self.0
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'))
    }

    /// The same MTI with its repeat digit cleared (0201 -> 0200, 0421 -> 0420).
    pub fn without_repeat(&self) -> Mti {
        let mut d = self.0;
        if d[3] == b'1' || d[3] == b'3' || d[3] == b'5' {
            d[3] -= 1;
        }
        Mti(d)
    }

    /// Whether this is a repeat (xxx1, xxx3, xxx5).
    pub fn is_repeat(&self) -> bool {
        matches!(self.0[3], b'1' | b'3' | b'5')
    }

    /// The response MTI: repeat digit cleared, plus 10 (0200 -> 0210, 0401 -> 0410). `None`
    /// when the function digit has no response (a response itself, say 0210).
    pub fn response(&self) -> Option<Mti> {
        let mut d = self.without_repeat().0;
        match d[2] {
            b'0' | b'2' | b'4' | b'6' | b'8' => {
                d[2] += 1;
                Some(Mti(d))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

// ===== Message =====

/// Where one field's value sits in the frame.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// Offset of the value (after its prefix) in the frame.
    start: u32,
    /// Bytes of the value on the wire.
    wire: u16,
    /// Length in value units (characters, digits, bytes for `b`).
    units: u16,
}

/// A decoded message: its frame plus a table of field positions.
#[derive(Clone)]
pub struct Message<'s> {
    spec: &'s Spec,
    frame: Bytes,
    mti: Mti,
    /// Bits of the primary, secondary and tertiary bitmaps, field 1 as the MSB of word 0.
    bitmap: [u64; 3],
    /// Fields whose slot is filled and whose content is valid.
    valid: [u64; 3],
    slots: [Slot; MAX_FIELD + 1],
    error: Option<DecodeError>,
}

#[inline]
fn bit(n: usize) -> (usize, u64) {
    let i = n - 1;
    (i / 64, 1u64 << (63 - (i % 64)))
}

impl<'s> Message<'s> {
    /// Decodes a whole frame; any error in any field fails it.
    pub fn decode(spec: &'s Spec, frame: Bytes) -> Result<Message<'s>, DecodeError> {
        let msg = Message::decode_partial(spec, frame)?;
        match msg.error {
            Some(e) => Err(e),
            None => Ok(msg),
        }
    }

    /// Decodes as far as the frame allows. Fails only when the header, MTI or primary bitmap
    /// cannot be read; otherwise [`Message::error`] tells the first problem, and every field
    /// decoded before it (and every well-formed fixed-position field after a content error)
    /// can be read.
    pub fn decode_partial(spec: &'s Spec, frame: Bytes) -> Result<Message<'s>, DecodeError> {
        let mut msg = Message::empty(spec);
        msg.decode_partial_into(spec, frame)?;
        Ok(msg)
    }

    /// A message with no fields and MTI 0000: storage for [`Message::decode_partial_into`].
    pub fn empty(spec: &'s Spec) -> Message<'s> {
        Message {
            spec,
            frame: Bytes::new(),
            mti: Mti(*b"0000"),
            bitmap: [0; 3],
            valid: [0; 3],
            slots: [Slot::default(); MAX_FIELD + 1],
            error: None,
        }
    }

    /// Drops the frame (its buffer is no longer held) and every field: as [`Message::empty`],
    /// keeping the storage for the next [`Message::decode_partial_into`].
    pub fn clear(&mut self) {
        self.frame = Bytes::new();
        self.mti = Mti(*b"0000");
        self.bitmap = [0; 3];
        self.valid = [0; 3];
        self.error = None;
    }

    /// [`Message::decode_partial`] into this message, reusing its storage: the same result as
    /// `*self = Message::decode_partial(spec, frame)?`, without building a new message (about
    /// 1.6 KB, mostly the field table) and moving it. A server can keep one message per
    /// request slot and decode each frame where it will stay. On `Err` the message is left
    /// empty (as [`Message::empty`]).
    pub fn decode_partial_into(&mut self, spec: &'s Spec, frame: Bytes) -> Result<(), DecodeError> {
        self.spec = spec;
        // Slots are read only where `valid` says so: stale ones need no clearing.
        self.clear();
        let mut d = Decoder {
            spec,
            buf: &frame,
            pos: spec.header_len(),
        };
        if frame.len() < d.pos {
            return Err(DecodeError::Truncated(Part::Header));
        }
        let mti = d.mti()?;
        let primary = d.bitmap(Part::PrimaryBitmap)?;
        self.mti = mti;
        self.bitmap[0] = primary;
        if let Err(e) = d.fields(self) {
            self.error.get_or_insert(e);
        } else if d.pos < frame.len() && self.error.is_none() {
            self.error = Some(DecodeError::TrailingBytes(frame.len() - d.pos));
        }
        self.frame = frame;
        Ok(())
    }

    pub fn spec(&self) -> &'s Spec {
        self.spec
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    /// The whole frame the message was decoded from.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The fixed header before the MTI (empty in the built-in layouts).
    pub fn header(&self) -> &[u8] {
        self.frame.get(..self.spec.header_len()).unwrap_or_default()
    }

    /// The first problem met while decoding, if any.
    pub fn error(&self) -> Option<&DecodeError> {
        self.error.as_ref()
    }

    /// Whether the bitmaps announce data element `n` (decoded or not).
    pub fn in_bitmap(&self, n: usize) -> bool {
        if !(1..=MAX_FIELD).contains(&n) {
            return false;
        }
        let (w, b) = bit(n);
        self.bitmap[w] & b != 0
    }

    /// Whether data element `n` was decoded and its content is valid.
    #[inline]
    pub fn has(&self, n: usize) -> bool {
        if !(1..=MAX_FIELD).contains(&n) {
            return false;
        }
        let (w, b) = bit(n);
        self.valid[w] & b != 0
    }

    /// Data element `n`, when it was decoded and its content is valid.
    #[inline]
    pub fn field(&self, n: usize) -> Option<Field<'_>> {
        if !self.has(n) {
            return None;
        }
        let slot = self.slots.get(n)?;
        let def = self.spec.field(n)?;
        let start = slot.start as usize;
        let wire = self.frame.get(start..start + slot.wire as usize)?;
        Some(Field {
            number: n as u8,
            def,
            wire,
            units: slot.units as usize,
            frame: &self.frame,
        })
    }

    /// Every valid decoded field, in number order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> + '_ {
        (2..=MAX_FIELD).filter_map(move |n| self.field(n))
    }

    /// The raw bitmap words (primary, secondary, tertiary).
    pub fn bitmaps(&self) -> [u64; 3] {
        self.bitmap
    }
}

/// Masked: the PAN shows BIN and last 4, track data, PIN block and ICC data are wiped.
impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Masked like `Debug`: `0200 {2: 476173******0010, 3: 000000, ...}`.
impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {{", self.mti)?;
        for (i, field) in self.fields().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", field.number(), field.masked())?;
        }
        f.write_str("}")?;
        if let Some(e) = &self.error {
            write!(f, " (decode error: {e})")?;
        }
        Ok(())
    }
}

// ===== Decoder =====

struct Decoder<'a> {
    spec: &'a Spec,
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize, part: Part) -> Result<&[u8], DecodeError> {
        let bytes = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(DecodeError::Truncated(part))?;
        self.pos += n;
        Ok(bytes)
    }

    fn mti(&mut self) -> Result<Mti, DecodeError> {
        let enc = self.spec.mti_encoding();
        let raw = self.take(self.spec.mti_len(), Part::Mti)?;
        let mut d = [0u8; 4];
        match enc {
            MtiEncoding::Ascii => d.copy_from_slice(raw),
            MtiEncoding::Ebcdic => {
                for (o, &b) in d.iter_mut().zip(raw) {
                    *o = chars::from_ebcdic(b);
                }
            }
            MtiEncoding::Bcd => {
                for (i, &b) in raw.iter().enumerate() {
                    d[2 * i] = b'0'.wrapping_add(b >> 4);
                    d[2 * i + 1] = b'0'.wrapping_add(b & 0xf);
                }
            }
        }
        Mti::new(d).ok_or(DecodeError::InvalidMti)
    }

    fn bitmap(&mut self, part: Part) -> Result<u64, DecodeError> {
        match self.spec.bitmap_encoding() {
            BitmapEncoding::Binary => {
                let raw = self.take(8, part)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                Ok(u64::from_be_bytes(b))
            }
            BitmapEncoding::Hex => {
                let raw = self.take(16, part)?;
                raw.iter().try_fold(0u64, |acc, &c| {
                    chars::hex_val(c)
                        .map(|v| acc << 4 | u64::from(v))
                        .ok_or(DecodeError::InvalidBitmap(part))
                })
            }
        }
    }

    /// Walks the bitmaps in field order. Returns `Err` where decoding must stop; content errors
    /// are recorded in `msg.error` and decoding goes on.
    fn fields(&mut self, msg: &mut Message<'_>) -> Result<(), DecodeError> {
        if msg.bitmap[0] & (1 << 63) != 0 {
            msg.bitmap[1] = self.bitmap(Part::SecondaryBitmap)?;
        }
        for word in 0..3 {
            let mut bits = msg.bitmap[word];
            if word == 0 {
                bits &= !(1 << 63); // DE 1 is the secondary bitmap, read above
            }
            while bits != 0 {
                let lz = bits.leading_zeros() as usize;
                bits &= !(1u64 << (63 - lz));
                let n = word * 64 + lz + 1;
                if n == 65 {
                    // ISO 8583: DE 65 announces and carries the tertiary bitmap.
                    msg.bitmap[2] = self.bitmap(Part::TertiaryBitmap)?;
                    continue;
                }
                self.field(n, msg)?;
            }
        }
        Ok(())
    }

    fn field(&mut self, n: usize, msg: &mut Message<'_>) -> Result<(), DecodeError> {
        let field = n as u8;
        let err = |kind| DecodeError::Field { field, kind };
        let def = self.spec.field(n).ok_or(err(FieldErrorKind::Undefined))?;
        let units = if def.is_fixed() {
            def.max as usize
        } else {
            let raw = self
                .buf
                .get(self.pos..self.pos + def.prefix_len())
                .ok_or(err(FieldErrorKind::Truncated {
                    needed: def.prefix_len(),
                    available: self.buf.len() - self.pos,
                }))?;
            let counted = read_prefix(def.prefix, raw).ok_or(err(FieldErrorKind::BadPrefix))?;
            let units = def
                .units_from_prefix(counted)
                .ok_or(err(FieldErrorKind::BadPrefix))?;
            if units > def.max as usize {
                return Err(err(FieldErrorKind::TooLong {
                    len: units,
                    max: def.max as usize,
                }));
            }
            self.pos += raw.len();
            units
        };
        let wire_len = def.wire_len(units);
        let available = self.buf.len() - self.pos;
        let wire =
            self.buf
                .get(self.pos..self.pos + wire_len)
                .ok_or(err(FieldErrorKind::Truncated {
                    needed: wire_len,
                    available,
                }))?;
        let slot = Slot {
            start: self.pos as u32,
            wire: wire_len as u16,
            units: units as u16,
        };
        self.pos += wire_len;
        if let Some(slot_ref) = msg.slots.get_mut(n) {
            *slot_ref = slot;
        }
        match check_content(def, wire, units) {
            Ok(()) => {
                let (w, b) = bit(n);
                msg.valid[w] |= b;
            }
            Err(kind) => {
                msg.error.get_or_insert(err(kind));
            }
        }
        Ok(())
    }
}

/// The number a length prefix carries, or `None` if it is not a number.
fn read_prefix(enc: PrefixEncoding, raw: &[u8]) -> Option<usize> {
    match enc {
        PrefixEncoding::Ascii => raw.iter().try_fold(0usize, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + usize::from(c - b'0'))
        }),
        PrefixEncoding::Ebcdic => raw.iter().try_fold(0usize, |acc, &c| {
            let a = chars::from_ebcdic(c);
            a.is_ascii_digit().then(|| acc * 10 + usize::from(a - b'0'))
        }),
        PrefixEncoding::Bcd => raw.iter().try_fold(0usize, |acc, &b| {
            let (hi, lo) = (b >> 4, b & 0xf);
            (hi <= 9 && lo <= 9).then(|| acc * 100 + usize::from(hi * 10 + lo))
        }),
        PrefixEncoding::Binary => Some(raw.iter().fold(0usize, |acc, &b| acc << 8 | b as usize)),
    }
}

/// Validates a field's wire bytes against its content class.
fn check_content(def: &FieldDef, wire: &[u8], units: usize) -> Result<(), FieldErrorKind> {
    let bad = Err(FieldErrorKind::Content(ClassName(def.class)));
    match def.encoding {
        Encoding::Ascii => {
            if chars::text_ok(def.class, wire) {
                Ok(())
            } else {
                bad
            }
        }
        Encoding::Ebcdic => {
            let mut it = wire.iter().map(|&b| chars::from_ebcdic(b));
            let ok = match def.class {
                ContentClass::XN => {
                    it.next().is_some_and(chars::is_sign)
                        && it.all(|c| chars::byte_ok(ContentClass::N, c))
                }
                class => it.all(|c| c != 0 && chars::byte_ok(class, c)),
            };
            if ok {
                Ok(())
            } else {
                bad
            }
        }
        Encoding::Binary => Ok(()),
        Encoding::Hex => {
            if wire.iter().all(|&b| chars::is_hex(b)) {
                Ok(())
            } else {
                Err(FieldErrorKind::Hex)
            }
        }
        Encoding::Bcd => {
            let (digits, packed) = match def.class {
                // A prefix of 0 still leaves the sign byte on the wire (wire_len(0) is 1): no
                // sign counted means no valid value, not an underflow.
                ContentClass::XN => match (wire.split_first(), units.checked_sub(1)) {
                    (Some((&sign, rest)), Some(digits)) if chars::is_sign(sign) => (digits, rest),
                    _ => return bad,
                },
                _ => (units, wire),
            };
            let odd = digits % 2 == 1;
            for (i, &b) in packed.iter().enumerate() {
                let (hi, lo) = (b >> 4, b & 0xf);
                let first = i == 0;
                let last = i + 1 == packed.len();
                let hi_pad = odd && first && def.pad == Pad::Left;
                let lo_pad = odd && last && def.pad == Pad::Right;
                // jPOS writes F for some pads; pyiso8583 writes 0. Both read.
                if (hi_pad && hi != 0 && hi != 0xf) || (lo_pad && lo != 0 && lo != 0xf) {
                    return Err(FieldErrorKind::Pad);
                }
                if (!hi_pad && chars::bcd_char(def.class, hi).is_none())
                    || (!lo_pad && chars::bcd_char(def.class, lo).is_none())
                {
                    return bad;
                }
            }
            Ok(())
        }
    }
}

// ===== Field =====

/// One decoded data element, borrowed from its message.
#[derive(Clone, Copy)]
pub struct Field<'m> {
    number: u8,
    def: &'m FieldDef,
    wire: &'m [u8],
    units: usize,
    frame: &'m Bytes,
}

impl<'m> Field<'m> {
    pub fn number(&self) -> usize {
        self.number as usize
    }

    pub fn def(&self) -> &'m FieldDef {
        self.def
    }

    /// The value's bytes as they stand on the wire (no length prefix).
    pub fn wire(&self) -> &'m [u8] {
        self.wire
    }

    /// The wire bytes as a `Bytes` sharing the frame's buffer (no copy).
    pub fn wire_bytes(&self) -> Bytes {
        self.frame.slice_ref(self.wire)
    }

    /// Length in value units (characters, digits, bytes for `b`).
    pub fn len(&self) -> usize {
        self.units
    }

    pub fn is_empty(&self) -> bool {
        self.units == 0
    }

    /// The value, borrowed, in a form that says how to read it.
    pub fn value(&self) -> Value<'m> {
        match self.def.encoding {
            // Validated as ASCII on decode, so this cannot fail.
            Encoding::Ascii => Value::Text(std::str::from_utf8(self.wire).unwrap_or_default()),
            Encoding::Ebcdic => Value::Ebcdic(self.wire),
            Encoding::Binary => Value::Binary(self.wire),
            Encoding::Hex => Value::Hex(self.wire),
            Encoding::Bcd => Value::Bcd {
                packed: self.wire,
                units: self.units,
                pad: self.def.pad,
                class: self.def.class,
            },
        }
    }

    /// The value as `&str` when it is ASCII text on the wire (no copy); `None` for BCD, EBCDIC
    /// and binary fields (use [`Field::value`]).
    pub fn as_str(&self) -> Option<&'m str> {
        match self.value() {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A numeric field's value (`n`, up to 19 digits), in any encoding.
    pub fn to_u64(&self) -> Option<u64> {
        if self.def.class != ContentClass::N || self.units > 19 {
            return None;
        }
        match self.def.encoding {
            // Straight from the wire bytes: no UTF-8 check, no per-character closure.
            Encoding::Ascii => self.wire.iter().try_fold(0u64, |acc, &c| {
                let d = c.wrapping_sub(b'0');
                (d < 10).then(|| acc * 10 + u64::from(d))
            }),
            _ => {
                let mut acc = 0u64;
                let mut ok = true;
                self.value().for_each_char(|c| {
                    if c.is_ascii_digit() {
                        acc = acc * 10 + u64::from(c - b'0');
                    } else {
                        ok = false;
                    }
                });
                ok.then_some(acc)
            }
        }
    }

    /// Copies the value's characters into `buf` (binary fields as upper-case hex) and returns
    /// them as `&str`; `None` if `buf` is too short. For BCD and EBCDIC fields on the hot path.
    pub fn text_into<'b>(&self, buf: &'b mut [u8]) -> Option<&'b str> {
        if let Some(text) = self.ascii_text() {
            let dst = buf.get_mut(..text.len())?;
            dst.copy_from_slice(text);
            return std::str::from_utf8(dst).ok();
        }
        let mut i = 0;
        let mut fits = true;
        self.value().for_each_char(|c| match buf.get_mut(i) {
            Some(slot) => {
                *slot = c;
                i += 1;
            }
            None => fits = false,
        });
        if !fits {
            return None;
        }
        std::str::from_utf8(buf.get(..i)?).ok()
    }

    /// The value's characters as bytes, as [`Field::text_into`] gives them: the wire bytes
    /// themselves for ASCII fields (no copy, no UTF-8 check: checked on decode), else
    /// written into `buf`; `None` if `buf` is too short for them.
    pub fn text_bytes<'a>(&'a self, buf: &'a mut [u8]) -> Option<&'a [u8]> {
        if let Some(text) = self.ascii_text() {
            return Some(text);
        }
        self.text_into(buf).map(str::as_bytes)
    }

    /// The wire bytes when they are the text form: ASCII encoding, checked as ASCII of the
    /// field's class on decode (any class but `b`, whose bytes may be anything).
    #[inline]
    fn ascii_text(&self) -> Option<&'m [u8]> {
        (self.def.encoding == Encoding::Ascii && self.def.class != ContentClass::B)
            .then_some(self.wire)
    }

    /// Whether the value reads as `text` (binary fields compare as upper-case hex).
    pub fn eq_text(&self, text: &str) -> bool {
        let mut expected = text.as_bytes().iter();
        let mut same = true;
        self.value().for_each_char(|c| {
            if expected.next() != Some(&c) {
                same = false;
            }
        });
        same && expected.next().is_none()
    }

    /// The value for logs: PAN masked, track data, PIN block and ICC data wiped.
    pub fn masked(&self) -> mask::Masked<'m> {
        mask::Masked::new(self.number as usize, self.value())
    }
}

impl fmt::Display for Field<'_> {
    /// The value as it stands on the wire, unmasked: for output the user asked to reveal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.value(), f)
    }
}

/// Masked, like the message's `Debug`.
impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({}: {})", self.number, self.masked())
    }
}

// ===== Value =====

/// A field value borrowed from the frame.
#[derive(Clone, Copy, Debug)]
pub enum Value<'m> {
    /// ASCII text or digits.
    Text(&'m str),
    /// EBCDIC characters.
    Ebcdic(&'m [u8]),
    /// Packed BCD digits (for `x+n`, an ASCII sign byte first).
    Bcd {
        packed: &'m [u8],
        units: usize,
        pad: Pad,
        class: ContentClass,
    },
    /// Raw bytes; read as upper-case hex.
    Binary(&'m [u8]),
    /// Bytes written as hex ASCII; read as upper-case hex.
    Hex(&'m [u8]),
}

impl Value<'_> {
    /// Calls `f` with each character of the value's text form, without allocating: digits for
    /// BCD (track 2's separator as `=`), ASCII for EBCDIC, upper-case hex for binary.
    pub fn for_each_char(&self, mut f: impl FnMut(u8)) {
        match *self {
            Value::Text(s) => s.bytes().for_each(f),
            Value::Ebcdic(b) => b.iter().for_each(|&c| f(chars::from_ebcdic(c))),
            Value::Binary(b) => b.iter().for_each(|&c| {
                f(chars::HEX_UPPER[(c >> 4) as usize]);
                f(chars::HEX_UPPER[(c & 0xf) as usize]);
            }),
            Value::Hex(b) => b.iter().for_each(|&c| f(c.to_ascii_uppercase())),
            Value::Bcd {
                packed,
                units,
                pad,
                class,
            } => {
                let (packed, digits) = match class {
                    ContentClass::XN => match packed.split_first() {
                        Some((&sign, rest)) => {
                            f(sign);
                            (rest, units.saturating_sub(1))
                        }
                        None => return,
                    },
                    _ => (packed, units),
                };
                let skip = usize::from(digits % 2 == 1 && pad == Pad::Left);
                let nibbles = packed
                    .iter()
                    .flat_map(|&b| [b >> 4, b & 0xf])
                    .skip(skip)
                    .take(digits);
                for n in nibbles {
                    f(chars::bcd_char(class, n).unwrap_or(b'?'));
                }
            }
        }
    }

    /// Number of characters in the text form.
    pub fn char_len(&self) -> usize {
        let mut n = 0;
        self.for_each_char(|_| n += 1);
        n
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Value::Text(s) = self {
            return f.write_str(s);
        }
        let mut result = Ok(());
        self.for_each_char(|c| {
            if result.is_ok() {
                result = fmt::Write::write_char(f, c as char);
            }
        });
        result
    }
}
