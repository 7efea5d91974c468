//! Field definitions and message layouts ("specs").
//!
//! A [`Spec`] says how the MTI and bitmaps are written and, for every data element 2..=192, how
//! its value is encoded: its content class (ISO 8583:1987 `n`, `a`, `an`, `ans`, `b`, `z`,
//! `x+n`), the bytes that carry it, and its length rule (fixed, or an LL/LLL/LLLL prefix).
//! Specs are data: the three built-in layouts live in [`mod@crate::builtin`], custom ones are read
//! from JSON ([`Spec::from_json`]) or imported from a jPOS GenericPackager XML file
//! ([`crate::jpos`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Highest data element number: primary (1-64), secondary (65-128) and tertiary (129-192) bitmaps.
pub const MAX_FIELD: usize = 192;

/// Longest value a field may declare (units of [`FieldDef::max`]); LLLL's limit.
pub const MAX_FIELD_LEN: u16 = 9999;

/// ISO 8583:1987 content classes, validated on decode and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentClass {
    /// Digits `0-9`.
    N,
    /// Letters, and the space that pads fixed fields.
    A,
    /// Letters and digits, and the space that pads fixed fields.
    An,
    /// Letters, digits, space and printable specials (ASCII 0x20-0x7E).
    Ans,
    /// Binary data: any bytes. Lengths count bytes.
    B,
    /// Track 2/3 data: digits and the field separator `=` (written `D` in BCD; `D` also accepted
    /// as text).
    Z,
    /// A sign `C` (credit) or `D` (debit) followed by digits (signed amounts, DE 28-31, 97).
    /// Lengths count the sign.
    #[serde(rename = "x+n")]
    XN,
}

/// How the characters (or bytes) of a value are carried on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One ASCII byte per character.
    Ascii,
    /// One EBCDIC (code page 037) byte per character.
    Ebcdic,
    /// Two digits per byte; odd lengths padded with a zero nibble as [`FieldDef::pad`] says.
    /// For `x+n` the sign is one ASCII byte before the BCD digits (jPOS `IFB_AMOUNT`).
    Bcd,
    /// Raw bytes (class `b` only).
    Binary,
    /// Raw bytes written as upper-case hexadecimal ASCII, two characters a byte (class `b` only).
    Hex,
}

/// Fixed length or the number of digits of the length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LengthType {
    #[serde(rename = "fixed")]
    Fixed,
    #[serde(rename = "LL")]
    LL,
    #[serde(rename = "LLL")]
    LLL,
    #[serde(rename = "LLLL")]
    LLLL,
}

/// How a length prefix is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixEncoding {
    /// Decimal digits in ASCII: 2, 3 or 4 bytes for LL, LLL, LLLL.
    #[default]
    Ascii,
    /// Decimal digits in EBCDIC: 2, 3 or 4 bytes.
    Ebcdic,
    /// Packed BCD: 1 byte for LL, 2 bytes for LLL and LLLL.
    Bcd,
    /// Unsigned big-endian binary: 1 byte for LL, 2 bytes for LLL and LLLL.
    Binary,
}

/// Which side of an odd-length BCD value gets the pad nibble.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pad {
    /// `0123` for `123`: numbers keep their value (fixed numeric fields).
    #[default]
    Left,
    /// `1230` for `123`: digit strings keep their prefix (PAN, track 2).
    Right,
}

/// What a length prefix counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthUnit {
    /// Units of the value: characters, digits, or bytes for class `b`.
    #[default]
    Value,
    /// Bytes on the wire. Differs from `value` only for [`Encoding::Hex`] (two characters a byte)
    /// and BCD (two digits a byte). pyiso8583's `default_ascii` DE 55 counts this way.
    Wire,
}

/// The definition of one data element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Human-readable name (ISO 8583:1987's where it has one).
    pub name: String,
    pub class: ContentClass,
    pub encoding: Encoding,
    pub length: LengthType,
    /// The length prefix's encoding; ignored for fixed fields.
    #[serde(default)]
    pub prefix: PrefixEncoding,
    /// Exact length (fixed) or maximum length (variable), in value units: characters or digits,
    /// bytes for class `b`, sign included for `x+n`.
    pub max: u16,
    #[serde(default)]
    pub pad: Pad,
    #[serde(default)]
    pub prefix_counts: LengthUnit,
}

/// How the MTI is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtiEncoding {
    /// 4 ASCII digits.
    Ascii,
    /// 2 bytes of packed BCD.
    Bcd,
    /// 4 EBCDIC digits.
    Ebcdic,
}

/// How the bitmaps are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitmapEncoding {
    /// 8 raw bytes each.
    Binary,
    /// 16 hexadecimal ASCII characters each.
    Hex,
}

/// A complete message layout.
#[derive(Clone, PartialEq, Eq)]
pub struct Spec {
    name: String,
    mti: MtiEncoding,
    bitmap: BitmapEncoding,
    header_len: usize,
    /// Indexed by data element number; 0, 1 (secondary bitmap) and 65 (tertiary bitmap) are
    /// never data fields.
    fields: Vec<Option<FieldDef>>,
}

/// A spec that cannot be used, with the field and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    #[error("field {field}: {reason}")]
    Field { field: usize, reason: &'static str },
    #[error("field number {0} is outside 2..=192")]
    FieldNumber(usize),
    #[error("field {0} is a bitmap (1 secondary, 65 tertiary) and cannot be defined as data")]
    BitmapField(usize),
    #[error("unknown base spec {0:?}")]
    UnknownBase(String),
    #[error("spec JSON: {0}")]
    Json(String),
    #[error("jPOS packager XML: {0}")]
    Xml(String),
}

// ===== impl FieldDef =====

impl FieldDef {
    /// Number of digits the length prefix can hold (0 for fixed fields).
    pub fn prefix_digits(&self) -> usize {
        match self.length {
            LengthType::Fixed => 0,
            LengthType::LL => 2,
            LengthType::LLL => 3,
            LengthType::LLLL => 4,
        }
    }

    /// Bytes taken by the length prefix on the wire.
    pub fn prefix_len(&self) -> usize {
        let digits = self.prefix_digits();
        match (digits, self.prefix) {
            (0, _) => 0,
            (d, PrefixEncoding::Ascii | PrefixEncoding::Ebcdic) => d,
            (2, PrefixEncoding::Bcd | PrefixEncoding::Binary) => 1,
            (_, PrefixEncoding::Bcd | PrefixEncoding::Binary) => 2,
        }
    }

    pub fn is_fixed(&self) -> bool {
        self.length == LengthType::Fixed
    }

    /// Bytes on the wire for a value of `units` value units (prefix not included).
    pub fn wire_len(&self, units: usize) -> usize {
        match (self.encoding, self.class) {
            (Encoding::Bcd, ContentClass::XN) => 1 + units.saturating_sub(1).div_ceil(2),
            (Encoding::Bcd, _) => units.div_ceil(2),
            (Encoding::Hex, _) => units * 2,
            (Encoding::Ascii | Encoding::Ebcdic | Encoding::Binary, _) => units,
        }
    }

    /// The number a length prefix carries for a value of `units` value units.
    pub(crate) fn prefix_value(&self, units: usize) -> usize {
        match self.prefix_counts {
            LengthUnit::Value => units,
            LengthUnit::Wire => self.wire_len(units),
        }
    }

    /// Value units for a prefix that says `n`; `None` when `n` cannot describe a whole value
    /// (an odd count of hex characters, say).
    pub(crate) fn units_from_prefix(&self, n: usize) -> Option<usize> {
        match (self.prefix_counts, self.encoding, self.class) {
            (LengthUnit::Value, _, _) => Some(n),
            (LengthUnit::Wire, Encoding::Hex, _) => n.is_multiple_of(2).then_some(n / 2),
            // BCD counted in bytes: every digit the bytes can hold (no pad nibble expressible).
            (LengthUnit::Wire, Encoding::Bcd, ContentClass::XN) => {
                (n >= 1).then(|| 1 + (n - 1) * 2)
            }
            (LengthUnit::Wire, Encoding::Bcd, _) => Some(n * 2),
            (LengthUnit::Wire, _, _) => Some(n),
        }
    }

    fn validate(&self, field: usize) -> Result<(), SpecError> {
        let err = |reason| Err(SpecError::Field { field, reason });
        if self.max == 0 || self.max > MAX_FIELD_LEN {
            return err("max length must be 1..=9999");
        }
        match (self.class, self.encoding) {
            (ContentClass::B, Encoding::Binary | Encoding::Hex) => {}
            (ContentClass::B, _) => return err("class b needs encoding binary or hex"),
            (_, Encoding::Binary | Encoding::Hex) => {
                return err("encodings binary and hex are for class b only")
            }
            (ContentClass::N | ContentClass::Z | ContentClass::XN, Encoding::Bcd) => {}
            (_, Encoding::Bcd) => return err("bcd encoding is for classes n, z and x+n only"),
            _ => {}
        }
        if self.class == ContentClass::XN && self.max < 2 {
            return err("x+n needs a sign and at least one digit");
        }
        if !self.is_fixed() {
            let capacity = match self.length {
                LengthType::LL => 99,
                LengthType::LLL => 999,
                _ => 9999,
            };
            let capacity = match self.prefix {
                // One binary byte holds up to 255; two hold more than LLLL needs.
                PrefixEncoding::Binary if self.length == LengthType::LL => 255,
                PrefixEncoding::Binary => 9999,
                _ => capacity,
            };
            if self.prefix_value(self.max as usize) > capacity {
                return err("max length does not fit the length prefix");
            }
        }
        Ok(())
    }
}

// ===== impl Spec =====

impl Spec {
    /// Builds a spec from per-field definitions, checking every definition.
    pub fn new(
        name: impl Into<String>,
        mti: MtiEncoding,
        bitmap: BitmapEncoding,
        header_len: usize,
        defs: impl IntoIterator<Item = (usize, FieldDef)>,
    ) -> Result<Spec, SpecError> {
        let mut fields = vec![None; MAX_FIELD + 1];
        for (n, def) in defs {
            if !(2..=MAX_FIELD).contains(&n) {
                return Err(SpecError::FieldNumber(n));
            }
            if n == 65 {
                return Err(SpecError::BitmapField(n));
            }
            def.validate(n)?;
            fields[n] = Some(def);
        }
        Ok(Spec {
            name: name.into(),
            mti,
            bitmap,
            header_len,
            fields,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mti_encoding(&self) -> MtiEncoding {
        self.mti
    }

    pub fn bitmap_encoding(&self) -> BitmapEncoding {
        self.bitmap
    }

    /// Bytes of the fixed message header kept before the MTI (0 in the built-in layouts).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The definition of data element `n`, if the spec has one.
    #[inline]
    pub fn field(&self, n: usize) -> Option<&FieldDef> {
        self.fields.get(n).and_then(Option::as_ref)
    }

    /// Every defined data element, in number order.
    pub fn fields(&self) -> impl Iterator<Item = (usize, &FieldDef)> {
        self.fields
            .iter()
            .enumerate()
            .filter_map(|(n, d)| d.as_ref().map(|d| (n, d)))
    }

    /// Bytes of one bitmap on the wire.
    pub fn bitmap_len(&self) -> usize {
        match self.bitmap {
            BitmapEncoding::Binary => 8,
            BitmapEncoding::Hex => 16,
        }
    }

    /// Bytes of the MTI on the wire.
    pub fn mti_len(&self) -> usize {
        match self.mti {
            MtiEncoding::Bcd => 2,
            MtiEncoding::Ascii | MtiEncoding::Ebcdic => 4,
        }
    }

    /// Replaces (or adds) one field's definition.
    pub fn set_field(&mut self, n: usize, def: FieldDef) -> Result<(), SpecError> {
        if !(2..=MAX_FIELD).contains(&n) {
            return Err(SpecError::FieldNumber(n));
        }
        if n == 65 {
            return Err(SpecError::BitmapField(n));
        }
        def.validate(n)?;
        self.fields[n] = Some(def);
        Ok(())
    }

    /// Removes a field's definition: a message carrying it then fails to decode.
    pub fn remove_field(&mut self, n: usize) {
        if let Some(slot) = self.fields.get_mut(n) {
            *slot = None;
        }
    }

    pub(crate) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    pub(crate) fn set_layout(&mut self, mti: MtiEncoding, bitmap: BitmapEncoding, header: usize) {
        self.mti = mti;
        self.bitmap = bitmap;
        self.header_len = header;
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.name)
            .field("mti", &self.mti)
            .field("bitmap", &self.bitmap)
            .field("header_len", &self.header_len)
            .field("fields", &self.fields().count())
            .finish()
    }
}
