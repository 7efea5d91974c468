//! Typed decode and encode errors. They name the field and the reason and never carry the bytes
//! (field content may be card data).

use std::fmt;

use crate::spec::ContentClass;

/// What is wrong with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldErrorKind {
    #[error("not defined by the spec")]
    Undefined,
    #[error("length prefix is not a valid number")]
    BadPrefix,
    #[error("length {len} exceeds the maximum {max}")]
    TooLong { len: usize, max: usize },
    #[error("length {len} differs from the fixed length {expected}")]
    WrongLength { len: usize, expected: usize },
    #[error("value needs {needed} bytes but {available} remain")]
    Truncated { needed: usize, available: usize },
    #[error("content is not valid {0}")]
    Content(ClassName),
    #[error("BCD pad nibble is not zero")]
    Pad,
    #[error("binary value is not an even number of hexadecimal digits")]
    Hex,
    #[error("raw bytes given for a field that is not binary")]
    NotBinary,
    #[error("value is from another spec")]
    SpecMismatch,
}

/// A content class as ISO 8583 writes it, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassName(pub ContentClass);

impl fmt::Display for ClassName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            ContentClass::N => "n (digits)",
            ContentClass::A => "a (letters)",
            ContentClass::An => "an (letters and digits)",
            ContentClass::Ans => "ans (printable characters)",
            ContentClass::B => "b (binary)",
            ContentClass::Z => "z (track data)",
            ContentClass::XN => "x+n (C or D then digits)",
        })
    }
}

/// Which part of the message before the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Header,
    Mti,
    PrimaryBitmap,
    SecondaryBitmap,
    TertiaryBitmap,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "message header",
            Part::Mti => "MTI",
            Part::PrimaryBitmap => "primary bitmap",
            Part::SecondaryBitmap => "secondary bitmap",
            Part::TertiaryBitmap => "tertiary bitmap (DE 65)",
        })
    }
}

/// Why a frame could not be decoded (completely).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame ends inside the {0}")]
    Truncated(Part),
    #[error("MTI is not four decimal digits")]
    InvalidMti,
    #[error("{0} is not valid hexadecimal")]
    InvalidBitmap(Part),
    #[error("field {field}: {kind}")]
    Field { field: u8, kind: FieldErrorKind },
    #[error("{0} bytes follow the last field")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// The data element the error is about, if any.
    pub fn field(&self) -> Option<usize> {
        match self {
            DecodeError::Field { field, .. } => Some(*field as usize),
            _ => None,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("MTI must be four decimal digits")]
    InvalidMti,
    #[error("field number {0} is outside 2..=192 or a bitmap")]
    FieldNumber(usize),
    #[error("header must be {expected} bytes, got {len}")]
    Header { len: usize, expected: usize },
    #[error("field {field}: {kind}")]
    Field { field: u8, kind: FieldErrorKind },
}
