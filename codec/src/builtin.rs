//! The three built-in layouts of the switch's contract (PROTOCOL.md section 1).
//!
//! All three share ISO 8583:1987's data elements (content class, fixed or variable, maximum
//! length) and differ in how they are written:
//!
//! | name | MTI | bitmaps | n / text | b | prefixes |
//! |---|---|---|---|---|---|
//! | `iso87-binary` | ASCII | 8 raw bytes | ASCII | raw | ASCII digits |
//! | `iso87-ascii` | ASCII | 16 hex chars | ASCII | hex ASCII | ASCII digits |
//! | `iso87-bcd` | BCD | 8 raw bytes | n: BCD, text: ASCII | raw | BCD |
//!
//! The few places where pyiso8583's and jPOS's layouts differ from that pattern (DE 54, 55, 93, 96)
//! follow the `specs` member of the shared vectors file, which `tests/vectors.rs` checks field by
//! field. Data elements 129-192 (behind the tertiary bitmap, DE 65) are not defined by the 1987
//! standard; here they are `ans..999` LLL in every layout.

use std::sync::OnceLock;

use crate::spec::{
    BitmapEncoding, ContentClass, Encoding, FieldDef, LengthType, LengthUnit, MtiEncoding, Pad,
    PrefixEncoding, Spec,
};

use ContentClass::{An, Ans, B, N, XN, Z};
use LengthType::{Fixed, LL, LLL};

/// The names of the built-in layouts, the switch's default first.
pub const BUILTIN_NAMES: [&str; 3] = ["iso87-binary", "iso87-ascii", "iso87-bcd"];

/// ISO 8583:1987 data elements 2..=128 (65, the tertiary bitmap, is not a data field):
/// number, name, class, length rule, maximum length.
const ISO87: &[(usize, &str, ContentClass, LengthType, u16)] = &[
    (2, "Primary Account Number", N, LL, 19),
    (3, "Processing Code", N, Fixed, 6),
    (4, "Amount, Transaction", N, Fixed, 12),
    (5, "Amount, Settlement", N, Fixed, 12),
    (6, "Amount, Cardholder Billing", N, Fixed, 12),
    (7, "Transmission Date and Time", N, Fixed, 10),
    (8, "Amount, Cardholder Billing Fee", N, Fixed, 8),
    (9, "Conversion Rate, Settlement", N, Fixed, 8),
    (10, "Conversion Rate, Cardholder Billing", N, Fixed, 8),
    (11, "System Trace Audit Number", N, Fixed, 6),
    (12, "Time, Local Transaction", N, Fixed, 6),
    (13, "Date, Local Transaction", N, Fixed, 4),
    (14, "Date, Expiration", N, Fixed, 4),
    (15, "Date, Settlement", N, Fixed, 4),
    (16, "Date, Conversion", N, Fixed, 4),
    (17, "Date, Capture", N, Fixed, 4),
    (18, "Merchant Type", N, Fixed, 4),
    (19, "Acquiring Institution Country Code", N, Fixed, 3),
    (20, "PAN Extended, Country Code", N, Fixed, 3),
    (21, "Forwarding Institution Country Code", N, Fixed, 3),
    (22, "Point of Service Entry Mode", N, Fixed, 3),
    (23, "Card Sequence Number", N, Fixed, 3),
    (24, "Network International Identifier", N, Fixed, 3),
    (25, "Point of Service Condition Code", N, Fixed, 2),
    (26, "Point of Service PIN Capture Code", N, Fixed, 2),
    (27, "Authorization ID Response Length", N, Fixed, 1),
    (28, "Amount, Transaction Fee", XN, Fixed, 9),
    (29, "Amount, Settlement Fee", XN, Fixed, 9),
    (30, "Amount, Transaction Processing Fee", XN, Fixed, 9),
    (31, "Amount, Settlement Processing Fee", XN, Fixed, 9),
    (32, "Acquiring Institution ID Code", N, LL, 11),
    (33, "Forwarding Institution ID Code", N, LL, 11),
    (34, "Primary Account Number, Extended", Ans, LL, 28),
    (35, "Track 2 Data", Z, LL, 37),
    (36, "Track 3 Data", Ans, LLL, 104),
    (37, "Retrieval Reference Number", An, Fixed, 12),
    (38, "Authorization ID Response", An, Fixed, 6),
    (39, "Response Code", An, Fixed, 2),
    (40, "Service Restriction Code", An, Fixed, 3),
    (41, "Card Acceptor Terminal ID", Ans, Fixed, 8),
    (42, "Card Acceptor ID Code", Ans, Fixed, 15),
    (43, "Card Acceptor Name/Location", Ans, Fixed, 40),
    (44, "Additional Response Data", Ans, LL, 25),
    (45, "Track 1 Data", Ans, LL, 76),
    (46, "Additional Data, ISO", Ans, LLL, 999),
    (47, "Additional Data, National", Ans, LLL, 999),
    (48, "Additional Data, Private", Ans, LLL, 999),
    (49, "Currency Code, Transaction", An, Fixed, 3),
    (50, "Currency Code, Settlement", An, Fixed, 3),
    (51, "Currency Code, Cardholder Billing", An, Fixed, 3),
    (52, "PIN Data", B, Fixed, 8),
    (53, "Security Related Control Information", N, Fixed, 16),
    (54, "Additional Amounts", Ans, LLL, 240),
    (55, "ICC Data", B, LLL, 255),
    (56, "Reserved ISO", Ans, LLL, 999),
    (57, "Reserved National", Ans, LLL, 999),
    (58, "Reserved National", Ans, LLL, 999),
    (59, "Reserved National", Ans, LLL, 999),
    (60, "Reserved National", Ans, LLL, 999),
    (61, "Reserved Private", Ans, LLL, 999),
    (62, "Reserved Private", Ans, LLL, 999),
    (63, "Reserved Private", Ans, LLL, 999),
    (64, "Message Authentication Code", B, Fixed, 8),
    (66, "Settlement Code", N, Fixed, 1),
    (67, "Extended Payment Code", N, Fixed, 2),
    (68, "Receiving Institution Country Code", N, Fixed, 3),
    (69, "Settlement Institution Country Code", N, Fixed, 3),
    (70, "Network Management Information Code", N, Fixed, 3),
    (71, "Message Number", N, Fixed, 4),
    (72, "Message Number, Last", N, Fixed, 4),
    (73, "Date, Action", N, Fixed, 6),
    (74, "Credits, Number", N, Fixed, 10),
    (75, "Credits, Reversal Number", N, Fixed, 10),
    (76, "Debits, Number", N, Fixed, 10),
    (77, "Debits, Reversal Number", N, Fixed, 10),
    (78, "Transfer, Number", N, Fixed, 10),
    (79, "Transfer, Reversal Number", N, Fixed, 10),
    (80, "Inquiries, Number", N, Fixed, 10),
    (81, "Authorizations, Number", N, Fixed, 10),
    (82, "Credits, Processing Fee Amount", N, Fixed, 12),
    (83, "Credits, Transaction Fee Amount", N, Fixed, 12),
    (84, "Debits, Processing Fee Amount", N, Fixed, 12),
    (85, "Debits, Transaction Fee Amount", N, Fixed, 12),
    (86, "Credits, Amount", N, Fixed, 16),
    (87, "Credits, Reversal Amount", N, Fixed, 16),
    (88, "Debits, Amount", N, Fixed, 16),
    (89, "Debits, Reversal Amount", N, Fixed, 16),
    (90, "Original Data Elements", N, Fixed, 42),
    (91, "File Update Code", An, Fixed, 1),
    (92, "File Security Code", An, Fixed, 2),
    (93, "Response Indicator", An, Fixed, 5),
    (94, "Service Indicator", An, Fixed, 7),
    (95, "Replacement Amounts", An, Fixed, 42),
    (96, "Message Security Code", B, Fixed, 8),
    (97, "Amount, Net Settlement", XN, Fixed, 17),
    (98, "Payee", Ans, Fixed, 25),
    (99, "Settlement Institution ID Code", N, LL, 11),
    (100, "Receiving Institution ID Code", N, LL, 11),
    (101, "File Name", Ans, LL, 17),
    (102, "Account ID 1", Ans, LL, 28),
    (103, "Account ID 2", Ans, LL, 28),
    (104, "Transaction Description", Ans, LLL, 100),
    (105, "Reserved ISO", Ans, LLL, 999),
    (106, "Reserved ISO", Ans, LLL, 999),
    (107, "Reserved ISO", Ans, LLL, 999),
    (108, "Reserved ISO", Ans, LLL, 999),
    (109, "Reserved ISO", Ans, LLL, 999),
    (110, "Reserved ISO", Ans, LLL, 999),
    (111, "Reserved ISO", Ans, LLL, 999),
    (112, "Reserved National", Ans, LLL, 999),
    (113, "Reserved National", Ans, LLL, 999),
    (114, "Reserved National", Ans, LLL, 999),
    (115, "Reserved National", Ans, LLL, 999),
    (116, "Reserved National", Ans, LLL, 999),
    (117, "Reserved National", Ans, LLL, 999),
    (118, "Reserved National", Ans, LLL, 999),
    (119, "Reserved National", Ans, LLL, 999),
    (120, "Reserved Private", Ans, LLL, 999),
    (121, "Reserved Private", Ans, LLL, 999),
    (122, "Reserved Private", Ans, LLL, 999),
    (123, "Reserved Private", Ans, LLL, 999),
    (124, "Reserved Private", Ans, LLL, 999),
    (125, "Reserved Private", Ans, LLL, 999),
    (126, "Reserved Private", Ans, LLL, 999),
    (127, "Reserved Private", Ans, LLL, 999),
    (128, "Message Authentication Code", B, Fixed, 8),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Binary,
    Ascii,
    Bcd,
}

/// A built-in layout by name (`iso87-binary`, `iso87-ascii`, `iso87-bcd`).
pub fn builtin(name: &str) -> Option<&'static Spec> {
    static SPECS: OnceLock<[Spec; 3]> = OnceLock::new();
    let specs = SPECS.get_or_init(|| {
        [
            build(Layout::Binary),
            build(Layout::Ascii),
            build(Layout::Bcd),
        ]
    });
    let i = BUILTIN_NAMES.iter().position(|n| *n == name)?;
    specs.get(i)
}

fn build(layout: Layout) -> Spec {
    let (name, mti, bitmap) = match layout {
        Layout::Binary => ("iso87-binary", MtiEncoding::Ascii, BitmapEncoding::Binary),
        Layout::Ascii => ("iso87-ascii", MtiEncoding::Ascii, BitmapEncoding::Hex),
        Layout::Bcd => ("iso87-bcd", MtiEncoding::Bcd, BitmapEncoding::Binary),
    };
    let iso = ISO87
        .iter()
        .map(|&(n, name, class, length, max)| (n, name, class, length, max));
    let private = (129..=192).map(|n| (n, "Reserved Private (tertiary)", Ans, LLL, 999));
    let defs = iso
        .chain(private)
        .map(|(n, name, class, length, max)| (n, define(layout, n, name, class, length, max)));
    match Spec::new(name, mti, bitmap, 0, defs) {
        Ok(spec) => spec,
        // The tables above are constants; `tests` below proves every layout builds.
        Err(e) => unreachable!("built-in spec {name} is invalid: {e}"),
    }
}

fn define(
    layout: Layout,
    n: usize,
    name: &str,
    class: ContentClass,
    length: LengthType,
    max: u16,
) -> FieldDef {
    let mut def = FieldDef {
        name: name.to_owned(),
        class,
        encoding: Encoding::Ascii,
        length,
        prefix: PrefixEncoding::Ascii,
        max,
        pad: Pad::Left,
        prefix_counts: LengthUnit::Value,
    };
    match layout {
        Layout::Binary => {
            if class == B {
                def.encoding = Encoding::Binary;
            }
        }
        Layout::Ascii => {
            if class == B {
                def.encoding = Encoding::Hex;
                // pyiso8583's default_ascii counts DE 55's hex characters, not its bytes.
                if length != Fixed {
                    def.prefix_counts = LengthUnit::Wire;
                }
            }
        }
        Layout::Bcd => {
            def.prefix = PrefixEncoding::Bcd;
            match class {
                B => def.encoding = Encoding::Binary,
                // jPOS IFB_LLNUM / IFB_NUMERIC: variable digit strings pad right, numbers left.
                N | Z | XN => {
                    def.encoding = Encoding::Bcd;
                    if length != Fixed {
                        def.pad = Pad::Right;
                    }
                }
                _ => {}
            }
            // jPOS ISO87BPackager's lengths where they differ from the 1987 table.
            match n {
                54 => def.max = 120,
                55 => def.max = 999,
                93 => def.max = 6,
                96 => def.max = 16,
                _ => {}
            }
        }
    }
    def
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_builds_with_all_fields() {
        for name in BUILTIN_NAMES {
            let spec = builtin(name).expect("builtin exists");
            assert_eq!(spec.name(), name);
            // 2..=192 less 65 (the tertiary bitmap).
            assert_eq!(spec.fields().count(), 190, "{name}");
            assert!(spec.field(65).is_none());
        }
        assert!(builtin("iso93").is_none());
    }
}
