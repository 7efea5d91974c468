//! TCP length framing (being written).
