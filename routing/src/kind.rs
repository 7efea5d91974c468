//! What a request asks for, from its MTI (ISO 8583:1987, version digit 0) and processing code
//! (DE 3) or network management code (DE 70).
//!
//! Repeats (origin digit 1, e.g. `0201`) are classified as their base message. Everything the
//! switch does not serve is [`TxnKind::Unsupported`] and answers 12.

use crate::message::{Mti, ProcessingCode};

/// Network management actions (DE 70 of 0800).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkAction {
    /// 001 sign-on.
    SignOn,
    /// 002 sign-off.
    SignOff,
    /// 301 echo test.
    Echo,
    /// Any other code, or none: answered 12.
    Unsupported,
}

/// The kinds of request the engine distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnKind {
    /// 0800: answered 00 (or 12 for an unknown DE 70) on the spot, never stored.
    NetworkManagement(NetworkAction),
    /// 0100 with transaction type 00: reserves funds.
    AuthorizationHold,
    /// 0100 with transaction type 31: answered with DE 54, changes nothing, never stored.
    BalanceInquiry,
    /// 0200 with transaction type 00: debits now.
    Purchase,
    /// 0220 with transaction type 00: completes an earlier hold.
    Completion,
    /// 0400 or 0420 with transaction type 00: undoes an earlier hold, purchase or completion.
    Reversal,
    /// Anything else: answered 12.
    Unsupported,
}

impl TxnKind {
    /// Whether answers to this kind are remembered under the idempotency key. Balance
    /// inquiries and network management change nothing and are answered afresh each time
    /// (PROTOCOL.md section 2, Details).
    pub const fn is_stored(self) -> bool {
        !matches!(self, Self::NetworkManagement(_) | Self::BalanceInquiry)
    }
}

/// Classifies a request. `processing_code` matters for 01xx/02xx/04xx; `network_code` (DE
/// 70) for 08xx.
pub fn classify(
    mti: Mti,
    processing_code: Option<ProcessingCode>,
    network_code: Option<u16>,
) -> TxnKind {
    let tt = processing_code.map(ProcessingCode::transaction_type);
    let goods = tt == Some(*b"00");
    match mti.base().value() {
        100 if goods => TxnKind::AuthorizationHold,
        100 if tt == Some(*b"31") => TxnKind::BalanceInquiry,
        200 if goods => TxnKind::Purchase,
        220 if goods => TxnKind::Completion,
        400 | 420 if goods => TxnKind::Reversal,
        800 => TxnKind::NetworkManagement(match network_code {
            Some(1) => NetworkAction::SignOn,
            Some(2) => NetworkAction::SignOff,
            Some(301) => NetworkAction::Echo,
            _ => NetworkAction::Unsupported,
        }),
        _ => TxnKind::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(mti: u16, pc: &str) -> TxnKind {
        classify(
            Mti::new(mti).unwrap(),
            ProcessingCode::from_digits(pc.as_bytes()),
            None,
        )
    }

    #[test]
    fn classification() {
        assert_eq!(k(100, "000000"), TxnKind::AuthorizationHold);
        assert_eq!(k(101, "001000"), TxnKind::AuthorizationHold);
        assert_eq!(k(100, "311000"), TxnKind::BalanceInquiry);
        assert_eq!(k(200, "000000"), TxnKind::Purchase);
        assert_eq!(k(201, "000000"), TxnKind::Purchase);
        assert_eq!(k(220, "000000"), TxnKind::Completion);
        assert_eq!(k(221, "000000"), TxnKind::Completion);
        assert_eq!(k(400, "000000"), TxnKind::Reversal);
        assert_eq!(k(401, "000000"), TxnKind::Reversal);
        assert_eq!(k(420, "000000"), TxnKind::Reversal);
        assert_eq!(k(421, "000000"), TxnKind::Reversal);
        assert_eq!(k(200, "310000"), TxnKind::Unsupported);
        assert_eq!(k(200, "200000"), TxnKind::Unsupported);
        assert_eq!(k(100, "010000"), TxnKind::Unsupported);
        assert_eq!(k(300, "000000"), TxnKind::Unsupported);
        assert_eq!(k(1200, "000000"), TxnKind::Unsupported);
        assert_eq!(k(210, "000000"), TxnKind::Unsupported);
        assert_eq!(
            classify(Mti::new(200).unwrap(), None, None),
            TxnKind::Unsupported
        );
    }

    #[test]
    fn network_management() {
        let m = Mti::new(800).unwrap();
        assert_eq!(
            classify(m, None, Some(1)),
            TxnKind::NetworkManagement(NetworkAction::SignOn)
        );
        assert_eq!(
            classify(m, None, Some(2)),
            TxnKind::NetworkManagement(NetworkAction::SignOff)
        );
        assert_eq!(
            classify(m, None, Some(301)),
            TxnKind::NetworkManagement(NetworkAction::Echo)
        );
        assert_eq!(
            classify(m, None, Some(99)),
            TxnKind::NetworkManagement(NetworkAction::Unsupported)
        );
        assert_eq!(
            classify(Mti::new(801).unwrap(), None, Some(301)),
            TxnKind::NetworkManagement(NetworkAction::Echo)
        );
        assert!(!TxnKind::BalanceInquiry.is_stored());
        assert!(TxnKind::Unsupported.is_stored());
    }
}
