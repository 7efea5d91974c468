//! Import of jPOS GenericPackager XML files into a [`Spec`].
//!
//! A GenericPackager file is an `<isopackager>` root holding one
//! `<isofield id=".." length=".." name=".." class="org.jpos.iso.IFB_LLNUM" pad="true"/>` per data
//! element. `<?xml?>` declarations, `<!DOCTYPE>` lines (with or without an internal subset) and
//! comments are skipped; the DTD is never fetched. Field 0 is the MTI, field 1 the bitmap, and
//! every other field maps onto a [`FieldDef`] by its class, as this table says. The table was
//! checked against the jPOS sources (`org.jpos.iso.IF*`: which interpreter and prefixer each
//! class uses); every length prefix counts value units (characters, digits, or bytes for `b`), so
//! [`FieldDef::prefix_counts`] is always [`LengthUnit::Value`].
//!
//! | jPOS class | class | encoding | length | prefix | `pad` |
//! |---|---|---|---|---|---|
//! | `IF_CHAR` | ans | ascii | fixed | | |
//! | `IFA_NUMERIC` | n | ascii | fixed | | |
//! | `IFA_AMOUNT` | x+n | ascii | fixed | | |
//! | `IFA_LLNUM`, `IFA_LLLNUM` | n | ascii | LL, LLL | ascii | |
//! | `IFA_LLCHAR`, `IFA_LLLCHAR`, `IFA_LLLLCHAR` | ans | ascii | LL, LLL, LLLL | ascii | |
//! | `IFA_BINARY` | b | hex | fixed | | |
//! | `IFA_LLABINARY` | b | hex | LL | ascii (counts bytes) | |
//! | `IFA_LLBINARY`, `IFA_LLLBINARY` | b | binary | LL, LLL | ascii (counts bytes) | |
//! | `IFB_NUMERIC` | n | bcd | fixed | | yes |
//! | `IFB_LLNUM`, `IFB_LLLNUM` | n | bcd | LL, LLL | bcd (counts digits) | yes |
//! | `IFB_LLHNUM` | n | bcd | LL | binary, 1 byte (counts digits) | yes |
//! | `IFB_AMOUNT` | x+n | bcd (ASCII sign, then BCD) | fixed | | yes |
//! | `IFB_LLCHAR`, `IFB_LLLCHAR` | ans | ascii | LL, LLL | bcd | |
//! | `IFB_LLHCHAR` | ans | ascii | LL | binary, 1 byte | |
//! | `IFB_BINARY` | b | binary | fixed | | |
//! | `IFB_LLBINARY`, `IFB_LLLBINARY` | b | binary | LL, LLL | bcd (counts bytes) | |
//! | `IFB_LLHBINARY` | b | binary | LL | binary, 1 byte (counts bytes) | |
//! | `IFE_CHAR` | ans | ebcdic | fixed | | |
//! | `IFE_NUMERIC` | n | ebcdic | fixed | | |
//! | `IFE_LLNUM` | n | ebcdic | LL | ebcdic | |
//! | `IFE_LLCHAR`, `IFE_LLLCHAR` | ans | ebcdic | LL, LLL | ebcdic | |
//!
//! Field 0 (the MTI, `length="4"`): `IFA_NUMERIC` or `IF_CHAR` -> [`MtiEncoding::Ascii`],
//! `IFB_NUMERIC` -> [`MtiEncoding::Bcd`], `IFE_NUMERIC` or `IFE_CHAR` -> [`MtiEncoding::Ebcdic`].
//! Field 1 (the bitmap, `length` in bytes: 8 or 16): `IFA_BITMAP` -> [`BitmapEncoding::Hex`],
//! `IFB_BITMAP` -> [`BitmapEncoding::Binary`].
//!
//! Points where jPOS's behaviour is not obvious from the class names, and the mapping's choices:
//! - `pad` (BCD classes only; jPOS ignores it elsewhere, and so does the import): `true` is
//!   jPOS's `BCDInterpreter.LEFT_PADDED` ([`Pad::Left`], `0123` for `123`), `false` *or absent* is
//!   `RIGHT_PADDED` ([`Pad::Right`], `1230`): GenericPackager calls `setPad(false)` when the
//!   attribute is missing, so an odd-length `IFB_NUMERIC` without `pad="true"` pads on the right.
//! - `IFA_BINARY`'s `length` counts bytes (each written as two hex characters). `IFA_LLBINARY` and
//!   `IFA_LLLBINARY` are *not* hex: jPOS packs them with `LiteralBinaryInterpreter`, raw bytes after
//!   an ASCII prefix counting bytes. The hex variable-length class is `IFA_LLABINARY`.
//! - Content: jPOS checks no content; codec does. `*CHAR` classes become `ans` (printable ASCII),
//!   `*NUM` classes `n`, except at DE 35 and 36 (track 2 and 3 data; ISO 8583:1987 makes DE 35
//!   `z`) where they become `z`: track data has a `=` (BCD `D`) separator, which jPOS's numeric
//!   packagers carry.
//!   A field carrying other bytes (raw ICC data in an `IFB_LLLCHAR` DE 55, as jPOS's
//!   ISO87BPackager declares it) needs the `*BINARY` class with the same wire format instead.
//! - EBCDIC: codec uses code page 037; jPOS's EBCDIC tables agree with it on digits, letters and
//!   space, which is what numeric and most text fields carry.
//! - DE 65: codec reads the tertiary bitmap in place of DE 65 (jPOS's `thirdBitmapField="65"`).
//!   A bitmap class there is accepted and must match field 1's; a data class there (jPOS's
//!   ISO87 packagers declare `IFA_BINARY`/`IFB_BINARY` length 1, a field never sent) is skipped,
//!   because a [`Spec`] cannot define DE 65 as data.
//! - Fields above 192 are ignored. A bitmap longer than 16 bytes (jPOS's contiguous tertiary
//!   bitmap), `IFE_BITMAP` (EBCDIC hex digits), `<isofieldpackager>` subfield packagers, classes
//!   outside `org.jpos.iso` (a bare `IFB_LLNUM` is taken as jPOS's), and every class not in the
//!   table are errors naming the field and class, never silently approximated. So is a field id
//!   defined twice (jPOS would keep the last one).
//!
//! `<isopackager>` attributes: `headerLength` becomes [`Spec::header_len`]; `emitBitmap="true"`,
//! `bitmapField="1"`, `firstField="2"` and `thirdBitmapField="65"` (the only layouts codec can
//! read) are accepted, other values are errors; `maxValidField` is accepted and ignored.
//! `<isofield>` attributes: `id`, `length`, `class` (required), `name`, `pad`, `trim="false"`;
//! any other (`token`, `params`, `trim="true"`) is an error.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::spec::{
    BitmapEncoding, ContentClass, Encoding, FieldDef, LengthType, LengthUnit, MtiEncoding, Pad,
    PrefixEncoding, Spec, SpecError, MAX_FIELD,
};

/// The spec name when the caller gives none.
pub const DEFAULT_NAME: &str = "jpos-generic";

/// Reads a jPOS GenericPackager XML file into a spec named [`DEFAULT_NAME`].
pub fn from_generic_packager(xml: &str) -> Result<Spec, SpecError> {
    from_generic_packager_named(xml, None)
}

/// Reads a jPOS GenericPackager XML file into a spec named `name` (default [`DEFAULT_NAME`]).
pub fn from_generic_packager_named(xml: &str, name: Option<&str>) -> Result<Spec, SpecError> {
    let doc = parse(xml)?;
    build(doc, name.unwrap_or(DEFAULT_NAME))
}

fn xml_err(msg: impl Into<String>) -> SpecError {
    SpecError::Xml(msg.into())
}

// ===== class table =====

/// How one jPOS data-field class is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DataClass {
    class: ContentClass,
    encoding: Encoding,
    length: LengthType,
    prefix: PrefixEncoding,
    /// Whether the `pad` attribute picks the BCD pad side (jPOS classes overriding `setPad`).
    bcd_pad: bool,
}

/// What a jPOS class is, as far as the import is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data(DataClass),
    Bitmap(BitmapEncoding),
}

/// The supported data and bitmap classes (see the module table).
fn kind_of(simple_name: &str) -> Option<Kind> {
    use ContentClass::{Ans, B, N, XN};
    use Encoding as E;
    use LengthType::{Fixed, LL, LLL, LLLL};
    use PrefixEncoding as P;

    let d = |class, encoding, length, prefix, bcd_pad| {
        Some(Kind::Data(DataClass {
            class,
            encoding,
            length,
            prefix,
            bcd_pad,
        }))
    };
    // Fixed fields have no prefix; `Ascii` there is the FieldDef default and unused.
    match simple_name {
        "IF_CHAR" => d(Ans, E::Ascii, Fixed, P::Ascii, false),
        "IFA_NUMERIC" => d(N, E::Ascii, Fixed, P::Ascii, false),
        "IFA_AMOUNT" => d(XN, E::Ascii, Fixed, P::Ascii, false),
        "IFA_LLNUM" => d(N, E::Ascii, LL, P::Ascii, false),
        "IFA_LLLNUM" => d(N, E::Ascii, LLL, P::Ascii, false),
        "IFA_LLCHAR" => d(Ans, E::Ascii, LL, P::Ascii, false),
        "IFA_LLLCHAR" => d(Ans, E::Ascii, LLL, P::Ascii, false),
        "IFA_LLLLCHAR" => d(Ans, E::Ascii, LLLL, P::Ascii, false),
        "IFA_BINARY" => d(B, E::Hex, Fixed, P::Ascii, false),
        "IFA_LLABINARY" => d(B, E::Hex, LL, P::Ascii, false),
        "IFA_LLBINARY" => d(B, E::Binary, LL, P::Ascii, false),
        "IFA_LLLBINARY" => d(B, E::Binary, LLL, P::Ascii, false),
        "IFB_NUMERIC" => d(N, E::Bcd, Fixed, P::Ascii, true),
        "IFB_LLNUM" => d(N, E::Bcd, LL, P::Bcd, true),
        "IFB_LLLNUM" => d(N, E::Bcd, LLL, P::Bcd, true),
        "IFB_LLHNUM" => d(N, E::Bcd, LL, P::Binary, true),
        "IFB_AMOUNT" => d(XN, E::Bcd, Fixed, P::Ascii, true),
        "IFB_LLCHAR" => d(Ans, E::Ascii, LL, P::Bcd, false),
        "IFB_LLLCHAR" => d(Ans, E::Ascii, LLL, P::Bcd, false),
        "IFB_LLHCHAR" => d(Ans, E::Ascii, LL, P::Binary, false),
        "IFB_BINARY" => d(B, E::Binary, Fixed, P::Ascii, false),
        "IFB_LLBINARY" => d(B, E::Binary, LL, P::Bcd, false),
        "IFB_LLLBINARY" => d(B, E::Binary, LLL, P::Bcd, false),
        "IFB_LLHBINARY" => d(B, E::Binary, LL, P::Binary, false),
        "IFE_CHAR" => d(Ans, E::Ebcdic, Fixed, P::Ascii, false),
        "IFE_NUMERIC" => d(N, E::Ebcdic, Fixed, P::Ascii, false),
        "IFE_LLNUM" => d(N, E::Ebcdic, LL, P::Ebcdic, false),
        "IFE_LLCHAR" => d(Ans, E::Ebcdic, LL, P::Ebcdic, false),
        "IFE_LLLCHAR" => d(Ans, E::Ebcdic, LLL, P::Ebcdic, false),
        "IFA_BITMAP" => Some(Kind::Bitmap(BitmapEncoding::Hex)),
        "IFB_BITMAP" => Some(Kind::Bitmap(BitmapEncoding::Binary)),
        _ => None,
    }
}

/// Why a class is refused, for the classes users are most likely to try.
fn unsupported_reason(simple_name: &str) -> &'static str {
    match simple_name {
        "IFE_BITMAP" => "EBCDIC hex bitmaps are not a codec bitmap encoding (binary or ASCII hex)",
        n if n.starts_with("IFB_LLLH") => {
            "LLL classes with a 2-byte binary length prefix are not mapped"
        }
        _ => "class not in the supported table (see codec::jpos)",
    }
}

// ===== parsing =====

/// One `<isofield>` as written.
#[derive(Debug)]
struct RawField {
    /// The class attribute as written (for messages).
    class: String,
    /// The class without its `org.jpos.iso.` package, if it is in that package.
    simple: Option<String>,
    length: u32,
    name: Option<String>,
    pad: bool,
}

#[derive(Debug, Default)]
struct Document {
    header_len: usize,
    fields: BTreeMap<usize, RawField>,
}

#[derive(PartialEq, Eq)]
enum State {
    BeforeRoot,
    InRoot,
    /// Inside `<isofield>..</isofield>`, which must stay empty.
    InField(usize),
    AfterRoot,
}

fn parse(xml: &str) -> Result<Document, SpecError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut doc = Document::default();
    let mut state = State::BeforeRoot;
    loop {
        let event = reader.read_event().map_err(|e| {
            xml_err(format!(
                "malformed XML at byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Text(t) => {
                if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(xml_err(format!(
                        "unexpected text at byte {}",
                        reader.buffer_position()
                    )));
                }
            }
            Event::CData(_) => {
                return Err(xml_err(format!(
                    "unexpected CDATA at byte {}",
                    reader.buffer_position()
                )))
            }
            Event::Start(e) => state = open(&e, false, state, &mut doc)?,
            Event::Empty(e) => state = open(&e, true, state, &mut doc)?,
            Event::End(e) => {
                state = match (state, e.name().as_ref()) {
                    (State::InField(_), b"isofield") => State::InRoot,
                    (State::InRoot, b"isopackager") => State::AfterRoot,
                    // quick-xml checks that end tags match their start tags.
                    _ => return Err(xml_err("unexpected end tag")),
                }
            }
        }
    }
    match state {
        State::AfterRoot => Ok(doc),
        State::BeforeRoot => Err(xml_err("no <isopackager> element")),
        _ => Err(xml_err("document ends before </isopackager>")),
    }
}

/// Handles a start (or empty, `closed`) tag; returns the state after it.
fn open(
    e: &BytesStart<'_>,
    closed: bool,
    state: State,
    doc: &mut Document,
) -> Result<State, SpecError> {
    let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let attrs = attributes(e, &tag)?;
    match (state, tag.as_str()) {
        (State::BeforeRoot, "isopackager") => {
            root_attributes(&attrs, doc)?;
            Ok(if closed {
                State::AfterRoot
            } else {
                State::InRoot
            })
        }
        (State::BeforeRoot, _) => Err(xml_err(format!(
            "the root element must be <isopackager>, not <{tag}>"
        ))),
        (State::InRoot, "isofield") => {
            let id = field(&attrs, doc)?;
            Ok(if closed {
                State::InRoot
            } else {
                State::InField(id)
            })
        }
        (State::InRoot, "isofieldpackager") => {
            let id = attr(&attrs, "id").unwrap_or("?");
            let class = attr(&attrs, "class").unwrap_or("?");
            Err(xml_err(format!(
                "field {id}: class {class} with <isofieldpackager> subfields is not supported \
                 (codec has no subfield packagers)"
            )))
        }
        (State::InRoot, _) => Err(xml_err(format!(
            "unexpected <{tag}> in <isopackager> (only <isofield> is supported)"
        ))),
        (State::InField(id), _) => Err(xml_err(format!(
            "field {id}: unexpected <{tag}> inside <isofield> (subfields are not supported)"
        ))),
        (State::AfterRoot, _) => Err(xml_err(format!("unexpected <{tag}> after </isopackager>"))),
    }
}

type Attrs = Vec<(String, String)>;

fn attributes(e: &BytesStart<'_>, tag: &str) -> Result<Attrs, SpecError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| xml_err(format!("<{tag}>: malformed attribute: {err}")))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|err| xml_err(format!("<{tag}> attribute {key}: {err}")))?
            .into_owned();
        out.push((key, value));
    }
    Ok(out)
}

fn attr<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim())
}

fn root_attributes(attrs: &Attrs, doc: &mut Document) -> Result<(), SpecError> {
    for (key, value) in attrs {
        let value = value.trim();
        let ok = match key.as_str() {
            "headerLength" => {
                doc.header_len = value
                    .parse()
                    .map_err(|_| xml_err(format!("headerLength {value:?} is not a byte count")))?;
                true
            }
            "maxValidField" => value.parse::<usize>().is_ok(),
            "emitBitmap" => value.eq_ignore_ascii_case("true"),
            "bitmapField" => value == "1",
            "firstField" => value == "2",
            "thirdBitmapField" => value == "65",
            _ => return Err(xml_err(format!("<isopackager>: unknown attribute {key:?}"))),
        };
        if !ok {
            return Err(xml_err(format!(
                "<isopackager> {key}={value:?} is not supported (codec reads an MTI, the bitmap \
                 in field 1, fields from 2, and the tertiary bitmap in DE 65)"
            )));
        }
    }
    Ok(())
}

/// Records one `<isofield>`; returns its id.
fn field(attrs: &Attrs, doc: &mut Document) -> Result<usize, SpecError> {
    let id_text = attr(attrs, "id").ok_or_else(|| xml_err("<isofield> without an id"))?;
    let id: usize = id_text
        .parse()
        .map_err(|_| xml_err(format!("<isofield> id {id_text:?} is not a field number")))?;
    let class = attr(attrs, "class")
        .ok_or_else(|| xml_err(format!("field {id}: no class attribute")))?
        .to_owned();
    for (key, value) in attrs {
        match key.as_str() {
            "id" | "class" | "name" | "length" | "pad" => {}
            "trim" if value.trim().eq_ignore_ascii_case("false") => {}
            _ => {
                return Err(xml_err(format!(
                    "field {id} ({class}): attribute {key}={value:?} is not supported"
                )))
            }
        }
    }
    if id > MAX_FIELD {
        return Ok(id); // beyond the tertiary bitmap: ignored
    }
    let length_text = attr(attrs, "length")
        .ok_or_else(|| xml_err(format!("field {id} ({class}): no length attribute")))?;
    let length: u32 = length_text.parse().map_err(|_| {
        xml_err(format!(
            "field {id} ({class}): length {length_text:?} is not a number"
        ))
    })?;
    let pad = match attr(attrs, "pad") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(xml_err(format!(
                "field {id} ({class}): pad {v:?} is neither true nor false"
            )))
        }
    };
    let simple = class
        .strip_prefix("org.jpos.iso.")
        .or_else(|| (!class.contains('.')).then_some(class.as_str()))
        .map(str::to_owned);
    let raw = RawField {
        class,
        simple,
        length,
        name: attr(attrs, "name").map(str::to_owned),
        pad,
    };
    if doc.fields.insert(id, raw).is_some() {
        return Err(xml_err(format!("field {id} is defined twice")));
    }
    Ok(id)
}

// ===== building =====

fn unsupported(id: usize, f: &RawField) -> SpecError {
    let reason = match &f.simple {
        Some(s) => unsupported_reason(s),
        None => "only org.jpos.iso classes are supported",
    };
    xml_err(format!(
        "field {id}: class {} is not supported: {reason}",
        f.class
    ))
}

fn kind(id: usize, f: &RawField) -> Result<Kind, SpecError> {
    f.simple
        .as_deref()
        .and_then(kind_of)
        .ok_or_else(|| unsupported(id, f))
}

fn build(doc: Document, name: &str) -> Result<Spec, SpecError> {
    let fields = doc.fields;

    let mti_field = fields
        .get(&0)
        .ok_or_else(|| xml_err("field 0 (the MTI) is not defined"))?;
    let mti = match mti_field.simple.as_deref() {
        Some("IFA_NUMERIC" | "IF_CHAR") => MtiEncoding::Ascii,
        Some("IFB_NUMERIC") => MtiEncoding::Bcd,
        Some("IFE_NUMERIC" | "IFE_CHAR") => MtiEncoding::Ebcdic,
        _ => {
            return Err(xml_err(format!(
                "field 0: class {} is not supported for the MTI (IFA_NUMERIC, IF_CHAR, \
                 IFB_NUMERIC, IFE_NUMERIC or IFE_CHAR)",
                mti_field.class
            )))
        }
    };
    if mti_field.length != 4 {
        return Err(xml_err(format!(
            "field 0 ({}): the MTI has 4 digits, not {}",
            mti_field.class, mti_field.length
        )));
    }

    let bitmap_field = fields
        .get(&1)
        .ok_or_else(|| xml_err("field 1 (the bitmap) is not defined"))?;
    let bitmap = match kind(1, bitmap_field)? {
        Kind::Bitmap(enc) => enc,
        Kind::Data(_) => {
            return Err(xml_err(format!(
                "field 1: class {} is not a bitmap class (IFA_BITMAP or IFB_BITMAP)",
                bitmap_field.class
            )))
        }
    };
    if !matches!(bitmap_field.length, 8 | 16) {
        return Err(xml_err(format!(
            "field 1 ({}): bitmap length {} is not supported: 8 or 16 bytes (primary and \
             secondary); codec reads the tertiary bitmap from DE 65, not contiguously",
            bitmap_field.class, bitmap_field.length
        )));
    }

    let mut defs = Vec::new();
    for (&id, f) in fields.range(2..=MAX_FIELD) {
        match kind(id, f)? {
            Kind::Bitmap(enc) if id == 65 => {
                if enc != bitmap {
                    return Err(xml_err(format!(
                        "field 65 ({}): the tertiary bitmap must be written like field 1 ({})",
                        f.class, bitmap_field.class
                    )));
                }
            }
            Kind::Bitmap(_) => {
                return Err(xml_err(format!(
                    "field {id}: bitmap class {} is only allowed at fields 1 and 65",
                    f.class
                )))
            }
            // DE 65 is the tertiary bitmap in codec; see the module doc.
            Kind::Data(_) if id == 65 => {}
            Kind::Data(dc) => defs.push((id, define(id, f, dc)?)),
        }
    }

    Spec::new(name, mti, bitmap, doc.header_len, defs).map_err(|e| match e {
        SpecError::Field { field, reason } => {
            let (class, length) = fields
                .get(&field)
                .map_or(("?", 0), |f| (f.class.as_str(), f.length));
            xml_err(format!(
                "field {field} ({class}, length {length}): {reason}"
            ))
        }
        other => other,
    })
}

fn define(id: usize, f: &RawField, dc: DataClass) -> Result<FieldDef, SpecError> {
    let max = u16::try_from(f.length).map_err(|_| {
        xml_err(format!(
            "field {id} ({}): length {} is out of range",
            f.class, f.length
        ))
    })?;
    let class = match dc.class {
        // Track 2 and 3 data: jPOS's numeric packagers carry the `=` separator.
        ContentClass::N if id == 35 || id == 36 => ContentClass::Z,
        c => c,
    };
    let pad = match (dc.bcd_pad, f.pad) {
        (true, true) => Pad::Left,
        (true, false) => Pad::Right,
        (false, _) => Pad::Left,
    };
    Ok(FieldDef {
        name: f.name.clone().unwrap_or_else(|| format!("Field {id}")),
        class,
        encoding: dc.encoding,
        length: dc.length,
        prefix: dc.prefix,
        max,
        pad,
        prefix_counts: LengthUnit::Value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContentClass::{Ans, B, N, XN, Z};
    use Encoding as E;
    use LengthType::{Fixed, LL, LLL, LLLL};
    use PrefixEncoding as P;

    /// A packager with an ASCII MTI, a binary bitmap and `extra` fields.
    fn packager(extra: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE isopackager SYSTEM "genericpackager.dtd">
<isopackager>
  <isofield id="0" length="4" name="MTI" class="org.jpos.iso.IFA_NUMERIC"/>
  <isofield id="1" length="16" name="BITMAP" class="org.jpos.iso.IFB_BITMAP"/>
  {extra}
</isopackager>"#
        )
    }

    fn import(extra: &str) -> Result<Spec, SpecError> {
        from_generic_packager(&packager(extra))
    }

    fn err_text(extra: &str) -> String {
        match import(extra) {
            Err(SpecError::Xml(m)) => m,
            other => panic!("expected an XML error, got {other:?}"),
        }
    }

    /// (jPOS class, length, pad attribute, content class, encoding, length type, prefix, pad)
    type Row = (
        &'static str,
        u16,
        Option<bool>,
        ContentClass,
        Encoding,
        LengthType,
        PrefixEncoding,
        Pad,
    );

    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        ("IF_CHAR",       8,    None,        Ans, E::Ascii,  Fixed, P::Ascii,  Pad::Left),
        ("IFA_NUMERIC",   6,    None,        N,   E::Ascii,  Fixed, P::Ascii,  Pad::Left),
        ("IFA_AMOUNT",    9,    None,        XN,  E::Ascii,  Fixed, P::Ascii,  Pad::Left),
        ("IFA_LLNUM",     19,   None,        N,   E::Ascii,  LL,    P::Ascii,  Pad::Left),
        ("IFA_LLLNUM",    104,  None,        N,   E::Ascii,  LLL,   P::Ascii,  Pad::Left),
        ("IFA_LLCHAR",    25,   None,        Ans, E::Ascii,  LL,    P::Ascii,  Pad::Left),
        ("IFA_LLLCHAR",   999,  None,        Ans, E::Ascii,  LLL,   P::Ascii,  Pad::Left),
        ("IFA_LLLLCHAR",  9999, None,        Ans, E::Ascii,  LLLL,  P::Ascii,  Pad::Left),
        ("IFA_BINARY",    8,    None,        B,   E::Hex,    Fixed, P::Ascii,  Pad::Left),
        ("IFA_LLABINARY", 99,   None,        B,   E::Hex,    LL,    P::Ascii,  Pad::Left),
        ("IFA_LLBINARY",  99,   None,        B,   E::Binary, LL,    P::Ascii,  Pad::Left),
        ("IFA_LLLBINARY", 255,  None,        B,   E::Binary, LLL,   P::Ascii,  Pad::Left),
        ("IFB_NUMERIC",   3,    Some(true),  N,   E::Bcd,    Fixed, P::Ascii,  Pad::Left),
        ("IFB_NUMERIC",   3,    Some(false), N,   E::Bcd,    Fixed, P::Ascii,  Pad::Right),
        ("IFB_NUMERIC",   3,    None,        N,   E::Bcd,    Fixed, P::Ascii,  Pad::Right),
        ("IFB_LLNUM",     19,   Some(false), N,   E::Bcd,    LL,    P::Bcd,    Pad::Right),
        ("IFB_LLNUM",     19,   Some(true),  N,   E::Bcd,    LL,    P::Bcd,    Pad::Left),
        ("IFB_LLLNUM",    999,  None,        N,   E::Bcd,    LLL,   P::Bcd,    Pad::Right),
        ("IFB_LLHNUM",    255,  Some(true),  N,   E::Bcd,    LL,    P::Binary, Pad::Left),
        ("IFB_AMOUNT",    9,    Some(true),  XN,  E::Bcd,    Fixed, P::Ascii,  Pad::Left),
        ("IFB_AMOUNT",    17,   Some(false), XN,  E::Bcd,    Fixed, P::Ascii,  Pad::Right),
        ("IFB_LLCHAR",    99,   None,        Ans, E::Ascii,  LL,    P::Bcd,    Pad::Left),
        ("IFB_LLLCHAR",   999,  None,        Ans, E::Ascii,  LLL,   P::Bcd,    Pad::Left),
        ("IFB_LLHCHAR",   255,  None,        Ans, E::Ascii,  LL,    P::Binary, Pad::Left),
        ("IFB_BINARY",    8,    None,        B,   E::Binary, Fixed, P::Ascii,  Pad::Left),
        ("IFB_LLBINARY",  99,   None,        B,   E::Binary, LL,    P::Bcd,    Pad::Left),
        ("IFB_LLLBINARY", 999,  None,        B,   E::Binary, LLL,   P::Bcd,    Pad::Left),
        ("IFB_LLHBINARY", 255,  None,        B,   E::Binary, LL,    P::Binary, Pad::Left),
        ("IFE_CHAR",      40,   None,        Ans, E::Ebcdic, Fixed, P::Ascii,  Pad::Left),
        ("IFE_NUMERIC",   12,   None,        N,   E::Ebcdic, Fixed, P::Ascii,  Pad::Left),
        ("IFE_LLNUM",     19,   None,        N,   E::Ebcdic, LL,    P::Ebcdic, Pad::Left),
        ("IFE_LLCHAR",    99,   None,        Ans, E::Ebcdic, LL,    P::Ebcdic, Pad::Left),
        ("IFE_LLLCHAR",   999,  None,        Ans, E::Ebcdic, LLL,   P::Ebcdic, Pad::Left),
    ];

    #[test]
    fn every_supported_data_class_maps_as_documented() {
        for &(jpos, len, pad, class, encoding, length, prefix, want_pad) in TABLE {
            let pad_attr = pad.map_or(String::new(), |p| format!(r#" pad="{p}""#));
            let xml = format!(
                r#"<isofield id="48" length="{len}" name="X" class="org.jpos.iso.{jpos}"{pad_attr}/>"#
            );
            let spec = import(&xml).unwrap_or_else(|e| panic!("{jpos}: {e}"));
            let want = FieldDef {
                name: "X".into(),
                class,
                encoding,
                length,
                prefix,
                max: len,
                pad: want_pad,
                prefix_counts: LengthUnit::Value,
            };
            assert_eq!(spec.field(48), Some(&want), "{jpos} pad={pad:?}");
        }
    }

    #[test]
    fn the_table_covers_every_documented_class() {
        // Every class of the module table has a row above, and every row is in the table.
        let documented = [
            "IF_CHAR",
            "IFA_NUMERIC",
            "IFA_AMOUNT",
            "IFA_LLNUM",
            "IFA_LLLNUM",
            "IFA_LLCHAR",
            "IFA_LLLCHAR",
            "IFA_LLLLCHAR",
            "IFA_BINARY",
            "IFA_LLABINARY",
            "IFA_LLBINARY",
            "IFA_LLLBINARY",
            "IFB_NUMERIC",
            "IFB_LLNUM",
            "IFB_LLLNUM",
            "IFB_LLHNUM",
            "IFB_AMOUNT",
            "IFB_LLCHAR",
            "IFB_LLLCHAR",
            "IFB_LLHCHAR",
            "IFB_BINARY",
            "IFB_LLBINARY",
            "IFB_LLLBINARY",
            "IFB_LLHBINARY",
            "IFE_CHAR",
            "IFE_NUMERIC",
            "IFE_LLNUM",
            "IFE_LLCHAR",
            "IFE_LLLCHAR",
        ];
        for class in documented {
            assert!(
                matches!(kind_of(class), Some(Kind::Data(_))),
                "{class} not mapped"
            );
            assert!(TABLE.iter().any(|r| r.0 == class), "{class} not tested");
        }
        assert!(TABLE.iter().all(|r| documented.contains(&r.0)));
    }

    #[test]
    fn numeric_track_data_is_z() {
        let spec = import(
            r#"<isofield id="35" length="37" class="org.jpos.iso.IFB_LLNUM"/>
               <isofield id="36" length="104" class="org.jpos.iso.IFA_LLLNUM"/>
               <isofield id="2" length="19" class="org.jpos.iso.IFB_LLNUM"/>"#,
        )
        .expect("imports");
        assert_eq!(spec.field(35).map(|d| d.class), Some(Z));
        assert_eq!(spec.field(36).map(|d| d.class), Some(Z));
        assert_eq!(spec.field(2).map(|d| d.class), Some(N));
        assert_eq!(spec.field(2).map(|d| d.name.as_str()), Some("Field 2"));
    }

    #[test]
    fn mti_classes() {
        let cases = [
            ("IFA_NUMERIC", MtiEncoding::Ascii),
            ("IF_CHAR", MtiEncoding::Ascii),
            ("IFB_NUMERIC", MtiEncoding::Bcd),
            ("IFE_NUMERIC", MtiEncoding::Ebcdic),
            ("IFE_CHAR", MtiEncoding::Ebcdic),
        ];
        for (class, want) in cases {
            let xml = format!(
                r#"<isopackager>
                     <isofield id="0" length="4" class="org.jpos.iso.{class}"/>
                     <isofield id="1" length="16" class="org.jpos.iso.IFA_BITMAP"/>
                   </isopackager>"#
            );
            let spec = from_generic_packager(&xml).unwrap_or_else(|e| panic!("{class}: {e}"));
            assert_eq!(spec.mti_encoding(), want, "{class}");
            assert_eq!(spec.bitmap_encoding(), BitmapEncoding::Hex);
            assert_eq!(spec.fields().count(), 0);
        }
        let bad = r#"<isopackager>
                       <isofield id="0" length="4" class="org.jpos.iso.IFB_LLNUM"/>
                       <isofield id="1" length="16" class="org.jpos.iso.IFB_BITMAP"/>
                     </isopackager>"#;
        let e = from_generic_packager(bad).expect_err("not an MTI class");
        assert!(e.to_string().contains("field 0"), "{e}");
        assert!(e.to_string().contains("IFB_LLNUM"), "{e}");
        let short = r#"<isopackager>
                         <isofield id="0" length="2" class="org.jpos.iso.IFB_NUMERIC"/>
                         <isofield id="1" length="16" class="org.jpos.iso.IFB_BITMAP"/>
                       </isopackager>"#;
        assert!(from_generic_packager(short).is_err());
    }

    #[test]
    fn bitmap_classes_and_lengths() {
        let with_bitmap = |class: &str, len: u32| {
            from_generic_packager(&format!(
                r#"<isopackager>
                     <isofield id="0" length="4" class="org.jpos.iso.IFA_NUMERIC"/>
                     <isofield id="1" length="{len}" class="org.jpos.iso.{class}"/>
                   </isopackager>"#
            ))
        };
        let spec = with_bitmap("IFB_BITMAP", 16).expect("binary");
        assert_eq!(spec.bitmap_encoding(), BitmapEncoding::Binary);
        let spec = with_bitmap("IFA_BITMAP", 8).expect("hex");
        assert_eq!(spec.bitmap_encoding(), BitmapEncoding::Hex);
        for (class, len, needle) in [
            ("IFE_BITMAP", 16, "EBCDIC"),
            ("IFB_BITMAP", 24, "tertiary"),
            ("IFA_LLNUM", 16, "not a bitmap class"),
        ] {
            let e = with_bitmap(class, len).expect_err(class).to_string();
            assert!(e.contains("field 1"), "{e}");
            assert!(e.contains(class), "{e}");
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn field_65_is_skipped_or_the_tertiary_bitmap() {
        // ISO87BPackager declares DE 65 as one byte of data: skipped.
        let spec = import(r#"<isofield id="65" length="1" class="org.jpos.iso.IFB_BINARY"/>"#)
            .expect("imports");
        assert!(spec.field(65).is_none());
        // A bitmap class like field 1's: the tertiary bitmap, fields above 128 kept.
        let spec = import(
            r#"<isofield id="65" length="8" class="org.jpos.iso.IFB_BITMAP"/>
               <isofield id="130" length="10" class="org.jpos.iso.IF_CHAR"/>"#,
        )
        .expect("imports");
        assert!(spec.field(65).is_none());
        assert!(spec.field(130).is_some());
        // Another bitmap encoding than field 1's cannot be read.
        let e = err_text(r#"<isofield id="65" length="16" class="org.jpos.iso.IFA_BITMAP"/>"#);
        assert!(e.contains("field 65") && e.contains("IFA_BITMAP"), "{e}");
        // A bitmap class anywhere else is an error.
        let e = err_text(r#"<isofield id="66" length="8" class="org.jpos.iso.IFB_BITMAP"/>"#);
        assert!(e.contains("field 66"), "{e}");
    }

    #[test]
    fn fields_above_192_are_ignored() {
        let spec = import(
            r#"<isofield id="192" length="10" class="org.jpos.iso.IF_CHAR"/>
               <isofield id="193" length="10" class="org.jpos.iso.IF_CHAR"/>
               <isofield id="250" length="0" class="com.acme.Whatever"/>"#,
        )
        .expect("imports");
        assert_eq!(spec.fields().map(|(n, _)| n).collect::<Vec<_>>(), [192]);
    }

    #[test]
    fn unsupported_classes_name_field_and_class() {
        for (xml, field, class) in [
            (
                r#"<isofield id="48" length="999" class="org.jpos.iso.IFB_LLLHNUM"/>"#,
                "field 48",
                "org.jpos.iso.IFB_LLLHNUM",
            ),
            (
                r#"<isofield id="62" length="99" class="com.acme.IF_SECRET"/>"#,
                "field 62",
                "com.acme.IF_SECRET",
            ),
            (
                r#"<isofield id="3" length="6" class="org.jpos.iso.IFEB_LLNUM"/>"#,
                "field 3",
                "IFEB_LLNUM",
            ),
            (
                r#"<isofieldpackager id="127" length="999" name="PRIVATE"
                     class="org.jpos.iso.IFA_LLLBINARY"
                     packager="org.jpos.iso.packager.GenericSubFieldPackager">
                     <isofield id="0" length="4" class="org.jpos.iso.IF_CHAR"/>
                   </isofieldpackager>"#,
                "field 127",
                "IFA_LLLBINARY",
            ),
        ] {
            let e = err_text(xml);
            assert!(e.contains(field), "{e}");
            assert!(e.contains(class), "{e}");
        }
    }

    #[test]
    fn lengths_beyond_the_prefix_name_field_and_class() {
        let e = err_text(r#"<isofield id="44" length="120" class="org.jpos.iso.IFA_LLCHAR"/>"#);
        assert!(e.contains("field 44") && e.contains("IFA_LLCHAR"), "{e}");
        let e = err_text(r#"<isofield id="44" length="0" class="org.jpos.iso.IF_CHAR"/>"#);
        assert!(e.contains("field 44") && e.contains("IF_CHAR"), "{e}");
        let e = err_text(r#"<isofield id="44" length="70000" class="org.jpos.iso.IF_CHAR"/>"#);
        assert!(e.contains("field 44"), "{e}");
    }

    #[test]
    fn malformed_xml_is_an_error() {
        for xml in [
            "",
            "not xml at all",
            "<isopackager>",
            "<isopackager><isofield id=\"0\" length=\"4\" class=\"org.jpos.iso.IF_CHAR\"></isopackager>",
            "<isopackager></isofield></isopackager>",
            "<isopackager><isofield id=\"0\" id=\"1\"/></isopackager>",
            "<isopackager><isofield id=\"0 length=\"4\"/></isopackager>",
            "<packager/>",
            "<isopackager/><isopackager/>",
            "<isopackager>text</isopackager>",
        ] {
            match from_generic_packager(xml) {
                Err(SpecError::Xml(_)) => {}
                other => panic!("{xml:?}: expected an XML error, got {other:?}"),
            }
        }
    }

    #[test]
    fn attribute_errors() {
        for (extra, needle) in [
            (
                r#"<isofield length="4" class="org.jpos.iso.IF_CHAR"/>"#,
                "without an id",
            ),
            (
                r#"<isofield id="x" length="4" class="org.jpos.iso.IF_CHAR"/>"#,
                "\"x\"",
            ),
            (
                r#"<isofield id="4" class="org.jpos.iso.IF_CHAR"/>"#,
                "no length",
            ),
            (r#"<isofield id="4" length="4"/>"#, "no class"),
            (
                r#"<isofield id="4" length="4" class="org.jpos.iso.IFB_NUMERIC" pad="yes"/>"#,
                "pad",
            ),
            (
                r#"<isofield id="4" length="4" class="org.jpos.iso.IF_CHAR" token="X"/>"#,
                "token",
            ),
            (
                r#"<isofield id="4" length="4" class="org.jpos.iso.IF_CHAR" trim="true"/>"#,
                "trim",
            ),
            (
                r#"<isofield id="4" length="4" class="org.jpos.iso.IF_CHAR"/>
                   <isofield id="4" length="4" class="org.jpos.iso.IF_CHAR"/>"#,
                "twice",
            ),
        ] {
            let e = err_text(extra);
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn missing_mti_or_bitmap() {
        let no_bitmap = r#"<isopackager>
            <isofield id="0" length="4" class="org.jpos.iso.IFA_NUMERIC"/></isopackager>"#;
        assert!(from_generic_packager(no_bitmap)
            .expect_err("no bitmap")
            .to_string()
            .contains("field 1"));
        let no_mti = r#"<isopackager>
            <isofield id="1" length="16" class="org.jpos.iso.IFA_BITMAP"/></isopackager>"#;
        assert!(from_generic_packager(no_mti)
            .expect_err("no MTI")
            .to_string()
            .contains("field 0"));
    }

    #[test]
    fn doctype_comments_and_header_are_tolerated() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE isopackager PUBLIC "-//jPOS/jPOS Generic Packager DTD 1.0//EN"
  "http://jpos.org/dtd/generic-packager-1.0.dtd" [
  <!ELEMENT isopackager (isofield+)>
  <!ATTLIST isofield id CDATA #REQUIRED>
]>
<!-- an acquirer's layout -->
<isopackager headerLength="5" maxValidField="128" emitBitmap="true" bitmapField="1">
  <isofield id="0" length="4" name="MTI" class="org.jpos.iso.IFB_NUMERIC" pad="true"/>
  <isofield id="1" length="16" name="BITMAP" class="org.jpos.iso.IFB_BITMAP"></isofield>
  <!-- PAN -->
  <isofield id="2" length="19" name="PAN &amp; more" class="org.jpos.iso.IFB_LLNUM"/>
</isopackager>
"#;
        let spec = from_generic_packager_named(xml, Some("acme")).expect("imports");
        assert_eq!(spec.name(), "acme");
        assert_eq!(spec.header_len(), 5);
        assert_eq!(spec.mti_encoding(), MtiEncoding::Bcd);
        assert_eq!(spec.field(2).map(|d| d.name.as_str()), Some("PAN & more"));
        assert_eq!(
            from_generic_packager(xml).expect("imports").name(),
            DEFAULT_NAME
        );
    }

    #[test]
    fn unsupported_root_attributes() {
        for attr in [
            r#"emitBitmap="false""#,
            r#"bitmapField="2""#,
            r#"firstField="1""#,
            r#"thirdBitmapField="126""#,
            r#"headerLength="x""#,
            r#"colour="blue""#,
        ] {
            let xml = format!(
                r#"<isopackager {attr}>
                     <isofield id="0" length="4" class="org.jpos.iso.IFA_NUMERIC"/>
                     <isofield id="1" length="16" class="org.jpos.iso.IFA_BITMAP"/>
                   </isopackager>"#
            );
            assert!(
                matches!(from_generic_packager(&xml), Err(SpecError::Xml(_))),
                "{attr}"
            );
        }
    }
}
