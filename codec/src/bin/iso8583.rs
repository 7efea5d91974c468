//! `iso8583`: decode, encode and describe ISO 8583 messages with the switch's codec
//! (PROTOCOL.md section 4).
//!
//! Exit status: 0 when every message went through, 1 when any failed (each failure prints
//! `{"error": "..."}` on standard output in its place, so output lines stay aligned with the
//! input's non-blank lines), 2 for a usage or setup error (bad flag, unknown spec, unreadable
//! file), reported on standard error.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use codec::{Message, Spec};

// A crate root's modules would sit beside it in src/bin/, where Cargo would take them for
// binaries of their own; they live in src/bin/iso8583/ instead.
#[path = "iso8583/decode.rs"]
mod decode;
#[path = "iso8583/encode.rs"]
mod encode;
#[path = "iso8583/input.rs"]
mod input;

use input::{each_line, parse_hex, Source};

/// ISO 8583 messages as JSON and back, with the switch's codec.
#[derive(Debug, Parser)]
#[command(name = "iso8583", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode hex messages to JSON Lines: {"mti": "0200", "fields": {"2": "...", ...}}.
    Decode(MessageArgs),
    /// Encode JSON Lines ({"mti": ..., "fields": {...}}, one a line) to hex, one a line.
    Encode(EncodeArgs),
    /// Print each message as a readable table: field number, name, length and value.
    Describe(MessageArgs),
    /// List the built-in specs, or print one (or a spec file) in the JSON spec format.
    Specs {
        /// A built-in spec name, or a path to a JSON spec or jPOS packager XML file.
        name: Option<String>,
    },
}

#[derive(Debug, Args)]
struct SpecArg {
    /// Built-in spec (iso87-binary, iso87-ascii, iso87-bcd) or a JSON spec / jPOS XML file.
    #[arg(long, value_name = "NAME", default_value = "iso87-binary")]
    spec: String,
}

#[derive(Debug, Args)]
struct MessageArgs {
    #[command(flatten)]
    spec: SpecArg,
    /// Show card data: the full PANs (2, 34) and track data, PIN block and ICC data (35, 36, 45,
    /// 52, 55).
    #[arg(long)]
    reveal: bool,
    /// One message in hex (whitespace ignored).
    #[arg(long, value_name = "HEX", conflicts_with_all = ["file", "raw"])]
    hex: Option<String>,
    /// Read FILE (or standard input) as one raw binary message rather than hex lines.
    #[arg(long)]
    raw: bool,
    /// Hex messages one a line, or (if not hex text) one raw binary message; `-` or none:
    /// hex lines from standard input.
    #[arg(value_name = "FILE")]
    file: Option<String>,
}

#[derive(Debug, Args)]
struct EncodeArgs {
    #[command(flatten)]
    spec: SpecArg,
    /// JSON objects one a line; `-` or none: standard input.
    #[arg(value_name = "FILE")]
    file: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    // Interactive use: show each answer as its line is typed, not when the buffer fills.
    let flush_each = io::stdin().is_terminal();
    let result = run(cli.command, &mut out, flush_each).and_then(|t| {
        out.flush()?;
        Ok(t)
    });
    match result {
        Ok(tally) if tally.failed == 0 => ExitCode::SUCCESS,
        Ok(tally) => {
            eprintln!(
                "iso8583: {} of {} messages failed",
                tally.failed,
                tally.failed + tally.ok
            );
            ExitCode::from(1)
        }
        // `iso8583 decode < big | head`: the reader left; nothing more to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iso8583: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// How many messages (or lines) went through and how many failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    ok: usize,
    failed: usize,
}

/// `decode` and `describe`: the same messages, printed as JSON Lines or as a table.
fn decode_command(
    a: MessageArgs,
    format: Format,
    out: &mut dyn Write,
    flush_each: bool,
) -> anyhow::Result<Tally> {
    let spec = load_spec(&a.spec.spec)?;
    let source = Source::for_messages(a.hex, a.file.as_deref(), a.raw)?;
    Ok(decode_all(
        &spec, source, a.reveal, format, out, flush_each,
    )?)
}

fn run(command: Command, out: &mut dyn Write, flush_each: bool) -> anyhow::Result<Tally> {
    match command {
        Command::Decode(a) => decode_command(a, Format::Json, out, flush_each),
        Command::Describe(a) => decode_command(a, Format::Table, out, flush_each),
        Command::Encode(a) => {
            let spec = load_spec(&a.spec.spec)?;
            let source = Source::for_lines(a.file.as_deref())?;
            Ok(encode_all(&spec, source, out, flush_each)?)
        }
        Command::Specs { name } => {
            specs(name.as_deref(), out)?;
            Ok(Tally::default())
        }
    }
}

fn load_spec(name: &str) -> anyhow::Result<Spec> {
    codec::load_spec(name).with_context(|| format!("spec {name:?}"))
}

/// How `decode_all` prints a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One JSON object a line (`decode`).
    Json,
    /// A table per message, blank line between (`describe`).
    Table,
}

/// Decodes every message of `source` and prints each (or its error) to `out`.
fn decode_all(
    spec: &Spec,
    source: Source,
    reveal: bool,
    format: Format,
    out: &mut dyn Write,
    flush_each: bool,
) -> io::Result<Tally> {
    let mut tally = Tally::default();
    let mut one = |line: Option<usize>, frame: Result<Vec<u8>, input::HexError>| {
        let text = decode_one(spec, line, frame, reveal, format, tally.ok + tally.failed);
        match text {
            Ok(t) => {
                tally.ok += 1;
                out.write_all(t.as_bytes())?;
            }
            Err(t) => {
                tally.failed += 1;
                out.write_all(t.as_bytes())?;
            }
        }
        if flush_each {
            out.flush()?;
        }
        Ok(())
    };
    match source {
        Source::Hex(h) => one(None, parse_hex(h.as_bytes()))?,
        Source::Raw(bytes) => one(None, Ok(bytes))?,
        Source::Lines(mut r) => each_line(&mut *r, |n, line| one(Some(n), parse_hex(line)))?,
    }
    Ok(tally)
}

/// One message's output: `Ok` when it decoded completely, `Err` (the error's output) otherwise.
/// `index` is how many messages came before (tables are separated by a blank line).
fn decode_one(
    spec: &Spec,
    line: Option<usize>,
    frame: Result<Vec<u8>, input::HexError>,
    reveal: bool,
    format: Format,
    index: usize,
) -> Result<String, String> {
    let label = |e: &dyn std::fmt::Display| match line {
        Some(n) => format!("line {n}: {e}"),
        None => e.to_string(),
    };
    match format {
        Format::Json => {
            let frame = frame.map_err(|e| decode::error_json(&label(&e)) + "\n")?;
            match decode::decode(spec, frame) {
                Ok(msg) => Ok(decode::message_json(&msg, reveal) + "\n"),
                Err(e) => Err(decode::error_json(&label(&e)) + "\n"),
            }
        }
        Format::Table => {
            let sep = if index > 0 { "\n" } else { "" };
            let frame = frame.map_err(|e| format!("{sep}error: {}\n", label(&e)))?;
            match Message::decode_partial(spec, Bytes::from(frame)) {
                Ok(msg) => {
                    let table = format!("{sep}{}", decode::describe(&msg, reveal, line));
                    if msg.error().is_some() {
                        Err(table)
                    } else {
                        Ok(table)
                    }
                }
                Err(e) => Err(format!("{sep}error: {}\n", label(&e))),
            }
        }
    }
}

/// Encodes every JSON line of `source`, printing its hex or `{"error": "line N: ..."}`.
fn encode_all(
    spec: &Spec,
    source: Source,
    out: &mut dyn Write,
    flush_each: bool,
) -> io::Result<Tally> {
    let mut tally = Tally::default();
    let mut one = |n: usize, line: &[u8]| {
        match encode::encode_line(spec, line) {
            Ok(hex) => {
                tally.ok += 1;
                out.write_all(hex.as_bytes())?;
            }
            Err(e) => {
                tally.failed += 1;
                out.write_all(decode::error_json(&format!("line {n}: {e}")).as_bytes())?;
            }
        }
        out.write_all(b"\n")?;
        if flush_each {
            out.flush()?;
        }
        Ok(())
    };
    match source {
        Source::Lines(mut r) => each_line(&mut *r, &mut one)?,
        // `for_lines` only makes line sources; a single item is line 1.
        Source::Hex(h) => one(1, h.as_bytes())?,
        Source::Raw(b) => one(1, &b)?,
    }
    Ok(tally)
}

/// `specs`: the built-in names one a line, or one spec in the JSON spec format.
fn specs(name: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    match name {
        None => {
            for n in codec::BUILTIN_NAMES {
                writeln!(out, "{n}")?;
            }
        }
        Some(name) => writeln!(out, "{}", load_spec(name)?.to_json())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0800 echo test in iso87-binary: 7, 11, 70.
    const ECHO: &str =
        "303830308220000000000000040000000000000031313235313033303030303030303031333031";

    fn decode_lines(input: &str, format: Format) -> (String, Tally) {
        let spec = codec::builtin("iso87-binary").expect("builtin");
        let source = Source::Lines(Box::new(io::Cursor::new(input.as_bytes().to_vec())));
        let mut out = Vec::new();
        let tally = decode_all(spec, source, false, format, &mut out, false).expect("no io error");
        (String::from_utf8(out).expect("utf-8"), tally)
    }

    #[test]
    fn a_bad_line_does_not_stop_the_others() {
        let input = format!("{ECHO}\n\n  zz{ECHO}  \n{ECHO}\n3038\n");
        let (out, tally) = decode_lines(&input, Format::Json);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(tally, Tally { ok: 2, failed: 2 });
        assert_eq!(lines.len(), 4, "{out}");
        let ok = r#"{"mti": "0800", "fields": {"7": "1125103000", "11": "000001", "70": "301"}}"#;
        assert_eq!(lines[0], ok);
        assert_eq!(
            lines[1],
            r#"{"error": "line 3: character 1 is not a hexadecimal digit"}"#
        );
        assert_eq!(lines[2], ok);
        assert_eq!(
            lines[3],
            r#"{"error": "line 5: frame ends inside the MTI"}"#
        );
    }

    #[test]
    fn tables_are_separated_and_errors_counted() {
        let (out, tally) = decode_lines(&format!("{ECHO}\n00\n{ECHO}\n"), Format::Table);
        assert_eq!(tally, Tally { ok: 2, failed: 1 });
        assert!(
            out.starts_with("MTI 0800  (line 1, iso87-binary, 39 bytes)\n"),
            "{out}"
        );
        assert!(out.contains("\n\nerror: line 2: "), "{out}");
        assert!(out.contains("\n\nMTI 0800  (line 3, "), "{out}");
        assert!(out.contains("Network Management Information Code"), "{out}");
    }

    #[test]
    fn encode_keeps_lines_aligned() {
        let spec = codec::builtin("iso87-binary").expect("builtin");
        let ok = r#"{"mti": "0800", "fields": {"7": "1125103000", "11": "000001", "70": "301"}}"#;
        let input = format!("{ok}\n{{\"mti\": \"0800\"}}\n\n{ok}\n");
        let source = Source::Lines(Box::new(io::Cursor::new(input.into_bytes())));
        let mut out = Vec::new();
        let tally = encode_all(spec, source, &mut out, false).expect("no io error");
        assert_eq!(tally, Tally { ok: 2, failed: 1 });
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            format!("{ECHO}\n{{\"error\": \"line 2: \\\"fields\\\" is missing\"}}\n{ECHO}\n")
        );
    }

    #[test]
    fn specs_lists_and_prints() {
        let mut out = Vec::new();
        specs(None, &mut out).expect("lists");
        assert_eq!(out, b"iso87-binary\niso87-ascii\niso87-bcd\n");
        let mut out = Vec::new();
        specs(Some("iso87-bcd"), &mut out).expect("prints");
        let spec = Spec::from_json(std::str::from_utf8(&out).expect("utf-8")).expect("parses");
        assert_eq!(&spec, codec::builtin("iso87-bcd").expect("builtin"));
        let e = specs(Some("no-such-spec"), &mut Vec::new()).expect_err("unknown");
        assert!(format!("{e:#}").contains("not a built-in spec"), "{e:#}");
    }

    #[test]
    fn a_spec_with_a_header_round_trips_it() {
        let spec = Spec::from_json(r#"{"name": "h", "base": "iso87-binary", "header_len": 2}"#)
            .expect("spec");
        let line = r#"{"header": "ABCD", "mti": "0800", "fields": {"11": "000001", "70": "301"}}"#;
        let hex = encode::encode_line(&spec, line.as_bytes()).expect("encodes");
        assert!(hex.starts_with("ABCD30383030"), "{hex}");
        let msg = decode::decode(&spec, parse_hex(hex.as_bytes()).expect("hex")).expect("decodes");
        assert_eq!(decode::message_json(&msg, false), line);
        // Without the header the builder refuses, naming the reason.
        let e = encode::encode_line(&spec, br#"{"mti": "0800", "fields": {"11": "000001"}}"#)
            .expect_err("header missing");
        assert_eq!(e.to_string(), "header must be 2 bytes, got 0");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
