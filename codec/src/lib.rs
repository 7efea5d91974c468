//! ISO 8583 wire format for the switch: field definitions ("specs"), zero-copy decoding,
//! allocation-free encoding, masking for logs, and (feature `framing`) the TCP length headers.
//!
//! What it does not do: sockets, clocks, routing or any decision about a message. It depends on
//! `bytes` and `thiserror` (plus serde for spec files); tokio only behind the `framing` feature.
//!
//! ```
//! use bytes::BytesMut;
//! use codec::{builtin, Message, MessageBuilder, Mti};
//!
//! let spec = builtin("iso87-binary").unwrap();
//! let mut out = BytesMut::new();
//! let mut b = MessageBuilder::new(spec, Mti::parse("0800").unwrap());
//! b.set(7, "1125103000").unwrap().set(11, "000001").unwrap().set_u64(70, 301).unwrap();
//! b.encode_into(&mut out).unwrap();
//!
//! let msg = Message::decode(spec, out.freeze()).unwrap();
//! assert_eq!(msg.mti().as_str(), "0800");
//! assert_eq!(msg.field(70).unwrap().as_str(), Some("301"));
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod builtin;
mod chars;
mod encode;
pub mod error;
#[cfg(feature = "framing")]
pub mod framing;
pub mod jpos;
pub mod mask;
mod message;
pub mod spec;
mod spec_json;

pub use builtin::{builtin, BUILTIN_NAMES};
pub use encode::{MessageBuilder, MessageWriter};
pub use error::{DecodeError, EncodeError, FieldErrorKind};
pub use message::{Field, Message, Mti, Value};
pub use spec::{FieldDef, Spec, SpecError};

/// A spec by built-in name, or loaded from a file: `.json` in the JSON spec format, `.xml` as a
/// jPOS GenericPackager.
pub fn load_spec(name_or_path: &str) -> Result<Spec, SpecError> {
    if let Some(spec) = builtin(name_or_path) {
        return Ok(spec.clone());
    }
    let text = std::fs::read_to_string(name_or_path).map_err(|e| {
        SpecError::Json(format!(
            "{name_or_path:?} is not a built-in spec ({}) and cannot be read: {e}",
            BUILTIN_NAMES.join(", ")
        ))
    })?;
    if name_or_path.ends_with(".xml") || text.trim_start().starts_with('<') {
        jpos::from_generic_packager(&text)
    } else {
        Spec::from_json(&text)
    }
}
