//! The `iso8583` command as a user runs it: the real binary, real pipes, the golden vectors
//! (../tests/data/pyiso8583-vectors.json) in all three layouts.
#![cfg(feature = "cli")]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use codec::mask::mask_pan;
use serde_json::Value as Json;

const VECTORS: &str = include_str!("../../tests/data/pyiso8583-vectors.json");
const BIN: &str = env!("CARGO_BIN_EXE_iso8583");
/// No run of the tool may take longer than this; a hang fails the test instead of stalling CI.
const TIMEOUT: Duration = Duration::from_secs(60);

/// pyiso8583's spec names for our layouts.
const LAYOUTS: [(&str, &str); 3] = [
    ("default", "iso87-binary"),
    ("default_ascii", "iso87-ascii"),
    ("bcd87", "iso87-bcd"),
];

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `iso8583 args...` with `stdin`, bounded by [`TIMEOUT`].
fn run(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iso8583 starts");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // The tool may exit before reading everything (a setup error): ignore write errors.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("iso8583 {args:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    writer.join().expect("writer");
    let stdout = String::from_utf8(out_reader.join().expect("stdout reader")).expect("utf-8");
    let stderr = String::from_utf8(err_reader.join().expect("stderr reader")).expect("utf-8");
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

fn vectors() -> Vec<Json> {
    let all: Json = serde_json::from_str(VECTORS).expect("vectors file is JSON");
    all["vectors"].as_array().expect("vectors").clone()
}

fn hex_of(v: &Json, py: &str) -> String {
    v["encoded"][py]["hex"].as_str().expect("hex").to_owned()
}

/// Every vector of one layout, hex one a line.
fn hex_lines(py: &str) -> String {
    vectors().iter().map(|v| hex_of(v, py) + "\n").collect()
}

/// The vector's fields (MTI left out), as decode prints them with --reveal.
fn expected_fields(v: &Json) -> serde_json::Map<String, Json> {
    let mut fields = v["fields"].as_object().expect("fields").clone();
    fields.remove("t");
    fields
}

fn pan(v: &Json) -> Option<&str> {
    v["fields"]["2"].as_str()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A file in the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("iso8583-cli-test-{}-{name}", std::process::id()));
        std::fs::write(&path, content).expect("temp file written");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Data element numbers of a JSON line's "fields", in the order they are written.
fn key_order(line: &str) -> Vec<usize> {
    let fields = &line[line.find("\"fields\": {").expect("fields")..];
    fields
        .match_indices("\": ")
        .filter_map(|(i, _)| {
            let start = fields[..i].rfind('"')? + 1;
            fields[start..i].parse().ok()
        })
        .collect()
}

#[test]
fn decode_reveal_gives_every_vectors_fields_in_every_layout() {
    let vs = vectors();
    for (py, ours) in LAYOUTS {
        let r = run(
            &["decode", "--spec", ours, "--reveal"],
            hex_lines(py).as_bytes(),
        );
        assert_eq!(r.code, 0, "{ours}: {}", r.stderr);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines.len(), vs.len(), "{ours}");
        for (v, line) in vs.iter().zip(&lines) {
            let name = v["name"].as_str().expect("name");
            let got: Json = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(got["mti"], v["mti"], "{name} {ours}");
            assert_eq!(
                got["fields"].as_object().expect("fields"),
                &expected_fields(v),
                "{name} {ours}"
            );
            let order = key_order(line);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(order, sorted, "{name} {ours}: keys in numeric order");
            assert_eq!(order.len(), expected_fields(v).len(), "{name} {ours}");
        }
        // Track 2 is written with `=` in every layout, BCD included.
        assert!(r.stdout.contains("4761739001010010=2812"), "{ours}");
    }
}

#[test]
fn decode_masks_card_data_by_default() {
    let vs = vectors();
    for (py, ours) in LAYOUTS {
        let r = run(&["decode", "--spec", ours], hex_lines(py).as_bytes());
        assert_eq!(r.code, 0, "{ours}: {}", r.stderr);
        // One line per vector: the masking checks below must not pass on missing output.
        assert_eq!(r.stdout.lines().count(), vs.len(), "{ours}: {}", r.stdout);
        for (v, line) in vs.iter().zip(r.stdout.lines()) {
            let name = v["name"].as_str().expect("name");
            let got: Json = serde_json::from_str(line).expect("a JSON line");
            let expected = expected_fields(v);
            for (k, value) in &expected {
                let value = value.as_str().expect("str");
                let shown = got["fields"][k].as_str().expect("present");
                match k.as_str() {
                    "2" | "34" => assert_eq!(shown, mask_pan(value), "{name} {ours}"),
                    "35" | "36" | "45" | "52" | "55" => {
                        assert_eq!(shown, "*".repeat(value.len()), "{name} {ours} {k}")
                    }
                    _ => assert_eq!(shown, value, "{name} {ours} {k}"),
                }
            }
        }
        for v in &vs {
            if let Some(pan) = pan(v) {
                assert!(!r.stdout.contains(pan), "{ours}: a full PAN was printed");
            }
        }
        assert!(!r.stdout.contains("1A2B3C4D5E6F7081"), "{ours}: PIN block");
    }
}

#[test]
fn encode_of_decode_output_reproduces_every_vector() {
    for (py, ours) in LAYOUTS {
        let input = hex_lines(py);
        let decoded = run(&["decode", "--spec", ours, "--reveal"], input.as_bytes());
        assert_eq!(decoded.code, 0, "{ours}: {}", decoded.stderr);
        let encoded = run(&["encode", "--spec", ours], decoded.stdout.as_bytes());
        assert_eq!(encoded.code, 0, "{ours}: {}", encoded.stderr);
        assert_eq!(encoded.stdout, input, "{ours}");
    }
}

#[test]
fn a_bad_line_in_the_middle_fails_alone() {
    let vs = vectors();
    let first = hex_of(&vs[0], "default");
    let last = hex_of(&vs[1], "default");
    // The first vector with letters in field 4 (amount): after MTI, bitmap, LL PAN, field 3.
    let pan_len = pan(&vs[0]).expect("PAN").len();
    let mut bad = unhex(&first);
    let at = 4 + 8 + 2 + pan_len + 6;
    bad[at..at + 2].copy_from_slice(b"AB");
    let bad: String = bad.iter().map(|b| format!("{b:02X}")).collect();
    let input = format!("{first}\n  {bad}  \n\nnot hex at all\n{last}\n");
    let r = run(&["decode"], input.as_bytes());
    assert_eq!(r.code, 1, "any failure: non-zero exit");
    assert!(r.stderr.contains("2 of 4 messages failed"), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    let parsed: Vec<Json> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(parsed[0]["mti"], vs[0]["mti"]);
    assert_eq!(parsed[3]["mti"], vs[1]["mti"]);
    assert_eq!(
        parsed[1],
        serde_json::json!({"error": "line 2: field 4: content is not valid n (digits)"})
    );
    let e = parsed[2]["error"].as_str().expect("error");
    assert!(e.starts_with("line 4: character 1 "), "{e}");
    assert_eq!(parsed[1].as_object().expect("object").len(), 1);
    assert!(!r.stdout.contains(&bad) && !r.stdout.contains(&bad[..40]));
    assert!(!r.stdout.contains(pan(&vs[0]).expect("PAN")));
}

#[test]
fn hex_flag_decodes_one_message() {
    let v = &vectors()[0];
    let hex = hex_of(v, "default_ascii");
    let r = run(&["decode", "--spec", "iso87-ascii", "--hex", &hex], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 1);
    let got: Json = serde_json::from_str(r.stdout.trim_end()).expect("JSON");
    assert_eq!(got["fields"]["41"], "TERM0001");
    assert_eq!(got["fields"]["2"], "476173******0010");

    let r = run(&["decode", "--hex", "30323030zz"], b"");
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout,
        "{\"error\": \"character 9 is not a hexadecimal digit\"}\n"
    );
}

#[test]
fn file_argument_hex_lines_or_raw_binary() {
    let vs = vectors();
    let hex = TempFile::new("bcd.hex", hex_lines("bcd87").as_bytes());
    let r = run(&["decode", "--spec", "iso87-bcd", hex.path()], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), vs.len());

    // A file that is not hex text is one raw message.
    let raw_bytes = unhex(&hex_of(&vs[0], "default"));
    let raw = TempFile::new("one.bin", &raw_bytes);
    let r = run(&["decode", "--reveal", raw.path()], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: Json = serde_json::from_str(r.stdout.trim_end()).expect("JSON");
    assert_eq!(got["fields"].as_object(), Some(&expected_fields(&vs[0])));

    // --raw: raw bytes that happen to be text (an iso87-ascii message), from a file or stdin.
    let ascii_bytes = unhex(&hex_of(&vs[0], "default_ascii"));
    let ascii = TempFile::new("one.ascii", &ascii_bytes);
    for r in [
        run(
            &["decode", "--spec", "iso87-ascii", "--raw", ascii.path()],
            b"",
        ),
        run(&["decode", "--spec", "iso87-ascii", "--raw"], &ascii_bytes),
    ] {
        assert_eq!(r.code, 0, "{}", r.stderr);
        let got: Json = serde_json::from_str(r.stdout.trim_end()).expect("JSON");
        assert_eq!(got["mti"], vs[0]["mti"]);
    }

    let r = run(&["decode", "/nonexistent/iso8583-messages.hex"], b"");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot read"), "{}", r.stderr);
}

#[test]
fn unknown_spec_is_a_clear_error() {
    for cmd in ["decode", "encode", "describe"] {
        let r = run(&[cmd, "--spec", "iso93-nope"], b"");
        assert_eq!(r.code, 2, "{cmd}");
        assert!(r.stdout.is_empty(), "{cmd}");
        assert!(
            r.stderr.contains("\"iso93-nope\" is not a built-in spec")
                && r.stderr.contains("iso87-binary"),
            "{cmd}: {}",
            r.stderr
        );
    }
    let r = run(&["specs", "iso93-nope"], b"");
    assert_eq!(r.code, 2);
}

#[test]
fn describe_names_fields_and_masks() {
    let vs = vectors();
    for (py, ours) in LAYOUTS {
        let r = run(&["describe", "--spec", ours], hex_lines(py).as_bytes());
        assert_eq!(r.code, 0, "{ours}: {}", r.stderr);
        assert_eq!(r.stdout.matches("MTI ").count(), vs.len(), "{ours}");
        assert!(r.stdout.contains("Primary Account Number"), "{ours}");
        assert!(r.stdout.contains("System Trace Audit Number"), "{ours}");
        assert!(r.stdout.contains("476173******0010"), "{ours}");
        for v in &vs {
            if let Some(pan) = pan(v) {
                assert!(!r.stdout.contains(pan), "{ours}: a full PAN was printed");
            }
        }
        let row = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("35 "))
            .expect("a track 2 row");
        assert!(
            row.contains("Track 2 Data") && row.ends_with("*****"),
            "{row}"
        );
    }
    let r = run(
        &["describe", "--reveal", "--hex", &hex_of(&vs[0], "default")],
        b"",
    );
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("4761739001010010=28122011143844400000"));
}

#[test]
fn encode_reports_bad_lines_in_place() {
    let ok = r#"{"mti": "0800", "fields": {"7": "1125103000", "11": "000001", "70": "301"}}"#;
    let input = format!(
        "{ok}\n{{\"mti\": \"0200\", \"fields\": {{\"2\": 4761739001010010}}}}\n\
         {{\"mti\": \"0200\", \"fields\": {{\"65\": \"00\"}}}}\n{ok}\n"
    );
    let r = run(&["encode"], input.as_bytes());
    assert_eq!(r.code, 1);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert_eq!(lines[0], lines[3]);
    assert!(lines[0].starts_with("30383030"), "{}", lines[0]);
    assert!(lines[1].contains("line 2: field 2: value must be a JSON string"));
    assert!(lines[2].contains("line 3: field number 65"), "{}", lines[2]);
    assert!(!r.stdout.contains("4761739001010010"));
}

#[test]
fn specs_lists_builtins_and_prints_one_that_parses_back() {
    let r = run(&["specs"], b"");
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, "iso87-binary\niso87-ascii\niso87-bcd\n");
    let r = run(&["specs", "iso87-bcd"], b"");
    assert_eq!(r.code, 0);
    let spec = codec::Spec::from_json(&r.stdout).expect("parses back");
    assert_eq!(&spec, codec::builtin("iso87-bcd").expect("builtin"));

    // The printed spec works as a --spec file.
    let file = TempFile::new("bcd-spec.json", r.stdout.as_bytes());
    let v = &vectors()[0];
    let r = run(
        &[
            "decode",
            "--reveal",
            "--spec",
            file.path(),
            "--hex",
            &hex_of(v, "bcd87"),
        ],
        b"",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: Json = serde_json::from_str(r.stdout.trim_end()).expect("JSON");
    assert_eq!(got["fields"].as_object(), Some(&expected_fields(v)));
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["decode", "--help"],
        &["encode", "--help"],
        &["describe", "--help"],
        &["specs", "--help"],
    ] {
        let r = run(args, b"");
        assert_eq!(r.code, 0, "{args:?}");
        assert!(
            r.stdout.contains("Usage: iso8583"),
            "{args:?}: {}",
            r.stdout
        );
    }
    let r = run(&["decode", "--hex", "00", "file.hex"], b"");
    assert_eq!(r.code, 2, "--hex and FILE conflict");
}
