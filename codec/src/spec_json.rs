//! The JSON spec format: a custom layout, or a built-in one with some fields changed.
//!
//! ```json
//! {
//!   "name": "acme-host",
//!   "base": "iso87-binary",
//!   "fields": {
//!     "48": {"name": "Order Reference", "class": "ans", "encoding": "ascii",
//!            "length": "LL", "prefix": "ascii", "max": 40},
//!     "62": null
//!   }
//! }
//! ```
//!
//! Without `base`, `mti` (`ascii` | `bcd` | `ebcdic`) and `bitmap` (`binary` | `hex`) are
//! required and only the listed fields exist. `header_len` (bytes before the MTI) defaults to 0.
//! A field maps to a [`FieldDef`] (`prefix` defaults to `ascii`, `pad` to `left`,
//! `prefix_counts` to `value`), or to `null` to remove it from the base. Unknown keys are errors.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::builtin::builtin;
use crate::spec::{BitmapEncoding, FieldDef, MtiEncoding, Spec, SpecError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    mti: Option<MtiEncoding>,
    #[serde(default)]
    bitmap: Option<BitmapEncoding>,
    #[serde(default)]
    header_len: Option<usize>,
    #[serde(default)]
    fields: BTreeMap<String, Option<FieldDef>>,
}

impl Spec {
    /// Reads a spec in the JSON format above.
    pub fn from_json(text: &str) -> Result<Spec, SpecError> {
        let file: SpecFile =
            serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
        let mut spec = match &file.base {
            Some(base) => builtin(base)
                .ok_or_else(|| SpecError::UnknownBase(base.clone()))?
                .clone(),
            None => {
                let mti = file.mti.ok_or_else(|| {
                    SpecError::Json("\"mti\" is required without \"base\"".into())
                })?;
                let bitmap = file.bitmap.ok_or_else(|| {
                    SpecError::Json("\"bitmap\" is required without \"base\"".into())
                })?;
                Spec::new(file.name.clone(), mti, bitmap, 0, [])?
            }
        };
        spec.set_name(file.name);
        spec.set_layout(
            file.mti.unwrap_or(spec.mti_encoding()),
            file.bitmap.unwrap_or(spec.bitmap_encoding()),
            file.header_len.unwrap_or(spec.header_len()),
        );
        for (key, def) in file.fields {
            let n: usize = key
                .parse()
                .map_err(|_| SpecError::Json(format!("field key {key:?} is not a number")))?;
            match def {
                Some(def) => spec.set_field(n, def)?,
                None if (2..=crate::spec::MAX_FIELD).contains(&n) => spec.remove_field(n),
                None => return Err(SpecError::FieldNumber(n)),
            }
        }
        Ok(spec)
    }

    /// Writes the spec in the JSON format (every field listed, no base).
    pub fn to_json(&self) -> String {
        let fields: BTreeMap<String, &FieldDef> =
            self.fields().map(|(n, d)| (n.to_string(), d)).collect();
        let value = serde_json::json!({
            "name": self.name(),
            "mti": self.mti_encoding(),
            "bitmap": self.bitmap_encoding(),
            "header_len": self.header_len(),
            "fields": fields,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ContentClass, LengthType};

    #[test]
    fn builtin_round_trips_through_json() {
        for name in crate::builtin::BUILTIN_NAMES {
            let spec = builtin(name).expect("builtin");
            let back = Spec::from_json(&spec.to_json()).expect("parses");
            assert_eq!(&back, spec, "{name}");
        }
    }

    #[test]
    fn base_with_overrides_and_removals() {
        let spec = Spec::from_json(
            r#"{"name": "acme", "base": "iso87-ascii", "fields": {
                "48": {"name": "Order", "class": "ans", "encoding": "ascii", "length": "LL", "max": 40},
                "62": null}}"#,
        )
        .expect("valid");
        assert_eq!(spec.name(), "acme");
        let f48 = spec.field(48).expect("48");
        assert_eq!(
            (f48.class, f48.length, f48.max),
            (ContentClass::Ans, LengthType::LL, 40)
        );
        assert!(spec.field(62).is_none());
        assert!(spec.field(61).is_some());
    }

    #[test]
    fn errors_are_clear() {
        let e =
            Spec::from_json(r#"{"name": "x", "mti": "ascii", "bitmap": "binary", "colour": 1}"#)
                .expect_err("unknown key");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Spec::from_json(r#"{"name": "x", "base": "nope"}"#).expect_err("bad base");
        assert_eq!(e, SpecError::UnknownBase("nope".into()));
        let e = Spec::from_json(
            r#"{"name": "x", "base": "iso87-binary", "fields": {"4": {"name": "a", "class": "b", "encoding": "ascii", "length": "fixed", "max": 4}}}"#,
        )
        .expect_err("b in ascii");
        assert!(matches!(e, SpecError::Field { field: 4, .. }), "{e}");
        let e = Spec::from_json(
            r#"{"name": "x", "base": "iso87-binary", "fields": {"65": {"name": "a", "class": "n", "encoding": "ascii", "length": "fixed", "max": 4}}}"#,
        )
        .expect_err("65 is a bitmap");
        assert_eq!(e, SpecError::BitmapField(65));
        let e = Spec::from_json(
            r#"{"name": "x", "base": "iso87-binary", "fields": {"2": {"name": "a", "class": "n", "encoding": "ascii", "length": "LL", "max": 120}}}"#,
        )
        .expect_err("LL cannot hold 120");
        assert!(matches!(e, SpecError::Field { field: 2, .. }), "{e}");
    }
}
