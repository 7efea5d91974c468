//! Import of jPOS GenericPackager XML (being written).
use crate::spec::{Spec, SpecError};

/// Reads a jPOS GenericPackager XML file into a spec.
pub fn from_generic_packager(_xml: &str) -> Result<Spec, SpecError> {
    Err(SpecError::Xml("not implemented yet".into()))
}
