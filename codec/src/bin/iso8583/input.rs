//! Where messages come from: a `--hex` argument, a file (hex lines or one raw binary message) or
//! standard input (hex lines), and the hex reading they share. Nothing here ever quotes the input
//! in an error: a line may be card data.

use std::fmt;
use std::io::{self, BufRead};

/// The messages (or JSON lines, for `encode`) a command works on.
pub enum Source {
    /// One message given as hex on the command line.
    Hex(String),
    /// One raw binary message (a file that is not hex text, or `--raw`).
    Raw(Vec<u8>),
    /// One item a line; blank lines are skipped.
    Lines(Box<dyn BufRead>),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the content: it may be card data.
        match self {
            Source::Hex(h) => write!(f, "Hex({} chars)", h.len()),
            Source::Raw(b) => write!(f, "Raw({} bytes)", b.len()),
            Source::Lines(_) => f.write_str("Lines"),
        }
    }
}

impl Source {
    /// The source for `decode` and `describe`: `--hex`, else FILE (`-` is standard input), else
    /// standard input. A file whose content is hex text (hex digits and whitespace only) holds hex
    /// messages one a line; any other file is one raw binary message. `raw` forces the latter
    /// (an `iso87-ascii` message made only of digits would otherwise read as hex).
    pub fn for_messages(hex: Option<String>, file: Option<&str>, raw: bool) -> io::Result<Source> {
        if let Some(hex) = hex {
            return Ok(Source::Hex(hex));
        }
        let content = match file {
            Some(path) if path != "-" => std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read {path:?}: {e}")))?,
            _ if raw => {
                let mut all = Vec::new();
                io::Read::read_to_end(&mut io::stdin().lock(), &mut all)?;
                all
            }
            _ => return Ok(Source::Lines(Box::new(io::stdin().lock()))),
        };
        if raw || !is_hex_text(&content) {
            Ok(Source::Raw(content))
        } else {
            Ok(Source::Lines(Box::new(io::Cursor::new(content))))
        }
    }

    /// The source for `encode`: FILE (`-` is standard input), else standard input, one JSON
    /// object a line.
    pub fn for_lines(file: Option<&str>) -> io::Result<Source> {
        match file {
            Some(path) if path != "-" => {
                let content = std::fs::read(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot read {path:?}: {e}")))?;
                Ok(Source::Lines(Box::new(io::Cursor::new(content))))
            }
            _ => Ok(Source::Lines(Box::new(io::stdin().lock()))),
        }
    }
}

/// Whether a file's content is hex text: at least one hex digit, and nothing but hex digits and
/// ASCII whitespace.
pub fn is_hex_text(content: &[u8]) -> bool {
    content.iter().any(u8::is_ascii_hexdigit)
        && content
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace())
}

/// Calls `f` with each non-blank line (surrounding whitespace trimmed) and its 1-based number.
/// Stops at the first error `f` returns (an output error).
pub fn each_line(
    reader: &mut dyn BufRead,
    mut f: impl FnMut(usize, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        number += 1;
        let line = buf.trim_ascii();
        if !line.is_empty() {
            f(number, line)?;
        }
    }
}

/// Why a hex message could not be read. Positions only, never the characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HexError {
    /// The character at this 1-based position is not a hex digit.
    NotHex(usize),
    /// An odd number of hex digits.
    OddLength,
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexError::NotHex(pos) => write!(f, "character {pos} is not a hexadecimal digit"),
            HexError::OddLength => f.write_str("odd number of hexadecimal digits"),
        }
    }
}

impl std::error::Error for HexError {}

/// Reads hex digits (either case) into bytes; ASCII whitespace anywhere is ignored, so
/// `30 32 30 30` reads like `30323030`.
pub fn parse_hex(text: &[u8]) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    for (i, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(HexError::NotHex(i + 1)),
        };
        match high.take() {
            Some(h) => out.push(h << 4 | v),
            None => high = Some(v),
        }
    }
    if high.is_some() {
        return Err(HexError::OddLength);
    }
    Ok(out)
}

/// Upper-case hex of `bytes`, appended to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_both_cases_and_skips_whitespace() {
        assert_eq!(parse_hex(b"0aFf"), Ok(vec![0x0a, 0xff]));
        assert_eq!(parse_hex(b" 30 32\t30 30 "), Ok(b"0200".to_vec()));
        assert_eq!(parse_hex(b""), Ok(vec![]));
    }

    #[test]
    fn hex_errors_give_positions_not_content() {
        assert_eq!(parse_hex(b"12z4"), Err(HexError::NotHex(3)));
        assert_eq!(parse_hex(b"123"), Err(HexError::OddLength));
        let shown = HexError::NotHex(3).to_string();
        assert!(!shown.contains('z'), "{shown}");
    }

    #[test]
    fn hex_text_detection() {
        assert!(is_hex_text(b"0200AB\n0800cd\r\n\n"));
        assert!(!is_hex_text(b"\n \n"));
        assert!(!is_hex_text(b"0200\x72\x3c\x44\x81"));
        assert!(!is_hex_text(b"0200 TERM0001"));
    }

    #[test]
    fn lines_are_trimmed_numbered_and_blank_ones_skipped() {
        let mut input = io::Cursor::new(b"  ab \n\n\r\ncd\r\nef".to_vec());
        let mut seen = Vec::new();
        each_line(&mut input, |n, line| {
            seen.push((n, line.to_vec()));
            Ok(())
        })
        .expect("no io error");
        assert_eq!(
            seen,
            vec![
                (1, b"ab".to_vec()),
                (4, b"cd".to_vec()),
                (5, b"ef".to_vec())
            ]
        );
    }

    #[test]
    fn push_hex_is_upper_case() {
        let mut s = String::from(">");
        push_hex(&mut s, &[0x00, 0x9f, 0xab]);
        assert_eq!(s, ">009FAB");
    }
}
