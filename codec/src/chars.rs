//! Character-level helpers: content-class tables, EBCDIC (code page 037), BCD nibbles, hex.

use crate::spec::ContentClass;

const N: u8 = 1;
const A: u8 = 2;
const AN: u8 = 4;
const ANS: u8 = 8;
const Z: u8 = 16;
const HEX: u8 = 32;
const SIGN: u8 = 64;

/// For every byte, the classes it belongs to (bits above).
static CLASS_OF: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        t[b] = ANS;
        b += 1;
    }
    // Space pads fixed alphabetic fields (ISO 8583: left-justified, space-filled).
    t[b' ' as usize] |= A | AN;
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] |= N | AN | Z | HEX;
        b += 1;
    }
    let mut b = b'A';
    while b <= b'Z' {
        t[b as usize] |= A | AN;
        t[(b + 32) as usize] |= A | AN;
        b += 1;
    }
    let mut b = b'A';
    while b <= b'F' {
        t[b as usize] |= HEX;
        t[(b + 32) as usize] |= HEX;
        b += 1;
    }
    t[b'=' as usize] |= Z;
    t[b'D' as usize] |= Z | SIGN;
    t[b'C' as usize] |= SIGN;
    t
};

fn mask(class: ContentClass) -> u8 {
    match class {
        ContentClass::N => N,
        ContentClass::A => A,
        ContentClass::An => AN,
        ContentClass::Ans => ANS,
        ContentClass::Z => Z,
        // x+n is checked by `text_ok` (sign then digits); b has no character rule.
        ContentClass::XN => N,
        ContentClass::B => 0xff,
    }
}

/// Whether ASCII `text` is valid content of `class`.
#[inline(always)]
pub(crate) fn text_ok(class: ContentClass, text: &[u8]) -> bool {
    match class {
        ContentClass::B => true,
        ContentClass::N => words_ok(text, digits8, N),
        ContentClass::Ans => words_ok(text, printable8, ANS),
        ContentClass::XN => match text.split_first() {
            Some((sign, digits)) => {
                CLASS_OF[*sign as usize] & SIGN != 0 && words_ok(digits, digits8, N)
            }
            None => false,
        },
        _ => {
            let m = mask(class);
            text.iter().fold(m, |acc, &b| acc & CLASS_OF[b as usize]) != 0
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Eight bytes at a time; a tail shorter than eight is checked as the text's last eight bytes
/// (overlapping the previous word), so only texts under eight bytes go through the table.
#[inline(always)]
fn words_ok(text: &[u8], word_ok: fn(u64) -> bool, class_bit: u8) -> bool {
    if text.len() < 8 {
        return text
            .iter()
            .fold(class_bit, |acc, &b| acc & CLASS_OF[b as usize])
            != 0;
    }
    let mut words = text.chunks_exact(8);
    let mut ok = true;
    for w in &mut words {
        ok &= word_ok(load8(w));
    }
    if !words.remainder().is_empty() {
        ok &= word_ok(load8(&text[text.len() - 8..]));
    }
    ok
}

#[inline(always)]
fn load8(w: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(w);
    u64::from_le_bytes(b)
}

/// Eight ASCII digits: every high nibble 3, and no low nibble above 9 (adding 6 keeps it 3).
#[inline(always)]
fn digits8(x: u64) -> bool {
    x & (0xF0 * LO) == 0x30 * LO && (x + 6 * LO) & (0xF0 * LO) == 0x30 * LO
}

/// Eight bytes in 0x20..=0x7E: high bit clear, +0x60 sets it (>= 0x20), +1 keeps it clear (< 0x7F).
#[inline(always)]
fn printable8(x: u64) -> bool {
    x & HI == 0 && (x + 0x60 * LO) & HI == HI && (x + LO) & HI == 0
}

/// Whether one ASCII byte is valid content of `class` (x+n: digits only; the sign is checked apart).
#[inline]
pub(crate) fn byte_ok(class: ContentClass, b: u8) -> bool {
    class == ContentClass::B || CLASS_OF[b as usize] & mask(class) != 0
}

#[inline]
pub(crate) fn is_hex(b: u8) -> bool {
    CLASS_OF[b as usize] & HEX != 0
}

#[inline]
pub(crate) fn is_sign(b: u8) -> bool {
    CLASS_OF[b as usize] & SIGN != 0
}

/// Value of one hexadecimal digit (upper or lower case).
#[inline]
pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

pub(crate) const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// EBCDIC code page 037 for the printable ASCII range; 0 where ASCII has no printable match.
static EBCDIC_TO_ASCII: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut a = 0;
    while a < 128 {
        let e = ASCII_TO_EBCDIC[a];
        if e != 0 {
            t[e as usize] = a as u8;
        }
        a += 1;
    }
    t
};

/// ASCII 0x20..=0x7E to EBCDIC 037; 0 for the rest (never valid content).
static ASCII_TO_EBCDIC: [u8; 128] = {
    let mut t = [0u8; 128];
    let printable: [u8; 95] = [
        0x40, 0x5A, 0x7F, 0x7B, 0x5B, 0x6C, 0x50, 0x7D, 0x4D, 0x5D, 0x5C, 0x4E, 0x6B, 0x60, 0x4B,
        0x61, // space ! " # $ % & ' ( ) * + , - . /
        0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, // 0-9
        0x7A, 0x5E, 0x4C, 0x7E, 0x6E, 0x6F, 0x7C, // : ; < = > ? @
        0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, // A-I
        0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, // J-R
        0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, // S-Z
        0xBA, 0xE0, 0xBB, 0xB0, 0x6D, 0x79, // [ \ ] ^ _ `
        0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, // a-i
        0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, // j-r
        0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, // s-z
        0xC0, 0x4F, 0xD0, 0xA1, // { | } ~
    ];
    let mut i = 0;
    while i < 95 {
        t[0x20 + i] = printable[i];
        i += 1;
    }
    t
};

/// EBCDIC byte to printable ASCII, or 0.
#[inline]
pub(crate) fn from_ebcdic(b: u8) -> u8 {
    EBCDIC_TO_ASCII[b as usize]
}

/// Printable ASCII byte to EBCDIC, or 0.
#[inline]
pub(crate) fn to_ebcdic(b: u8) -> u8 {
    ASCII_TO_EBCDIC.get(b as usize).copied().unwrap_or(0)
}

/// The character a BCD nibble stands for in `class` (track 2's separator is nibble D), or None.
#[inline]
pub(crate) fn bcd_char(class: ContentClass, nibble: u8) -> Option<u8> {
    match nibble {
        0..=9 => Some(b'0' + nibble),
        0xD if class == ContentClass::Z => Some(b'='),
        _ => None,
    }
}

/// The BCD nibble for an ASCII character of `class`, or None.
#[inline]
pub(crate) fn bcd_nibble(class: ContentClass, c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'=' | b'D' | b'd' if class == ContentClass::Z => Some(0xD),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebcdic_round_trips_every_printable_ascii() {
        for a in 0x20u8..=0x7e {
            let e = to_ebcdic(a);
            assert_ne!(e, 0, "{a:#x}");
            assert_eq!(from_ebcdic(e), a);
        }
        assert_eq!(to_ebcdic(b'0'), 0xF0);
        assert_eq!(to_ebcdic(b'A'), 0xC1);
        assert_eq!(from_ebcdic(0x00), 0);
    }

    #[test]
    fn word_checks_agree_with_the_table() {
        for class in [
            ContentClass::N,
            ContentClass::Ans,
            ContentClass::An,
            ContentClass::XN,
        ] {
            for b in 0u8..=255 {
                for pos in 0..10 {
                    let mut t = *b"0123456789";
                    if class == ContentClass::XN {
                        t[0] = b'C';
                    }
                    t[pos] = b;
                    let want = if class == ContentClass::XN {
                        if pos == 0 {
                            b == b'C' || b == b'D'
                        } else {
                            b.is_ascii_digit()
                        }
                    } else {
                        CLASS_OF[b as usize] & mask(class) != 0
                    };
                    assert_eq!(text_ok(class, &t), want, "{class:?} {b:#x} at {pos}");
                }
            }
        }
    }

    #[test]
    fn classes() {
        assert!(text_ok(ContentClass::N, b"0123456789"));
        assert!(!text_ok(ContentClass::N, b"12a"));
        assert!(text_ok(ContentClass::An, b"AB12 "));
        assert!(!text_ok(ContentClass::An, b"AB-12"));
        assert!(text_ok(ContentClass::Ans, b"AB-12 #"));
        assert!(!text_ok(ContentClass::Ans, b"\x01"));
        assert!(text_ok(ContentClass::Z, b"123=456D7"));
        assert!(!text_ok(ContentClass::Z, b"123^"));
        assert!(text_ok(ContentClass::XN, b"C00001234"));
        assert!(!text_ok(ContentClass::XN, b"X00001234"));
        assert!(!text_ok(ContentClass::XN, b""));
        assert!(text_ok(ContentClass::A, b"AbC "));
        assert!(!text_ok(ContentClass::A, b"A1"));
    }
}
