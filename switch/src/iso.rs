//! Between the wire and the engine: turns a decoded message into a typed `routing::Request`
//! (or an answer the switch gives without a shard: format errors, network management,
//! unsupported MTIs), and writes responses that echo the request's fields.

use bytes::BytesMut;
use codec::{EncodeError, Message, MessageWriter, Mti};
use routing::{MerchantId, OriginalData, Pan, ProcessingCode, Request, TerminalId, Yymm};

use crate::metrics::SkipReason;

/// What to do with one decoded frame.
#[derive(Debug)]
pub enum Action {
    /// Send to the authorization shards.
    Route(Request),
    /// Answer now, without a shard.
    Answer {
        response_mti: Mti,
        code: &'static str,
        network: bool,
    },
    /// No answer can be addressed: count, log, drop.
    Skip(SkipReason),
}

/// A request's MTI (repeat digit cleared) as a number: 0201 -> 200.
fn base(mti: Mti) -> u16 {
    mti.without_repeat().as_u16()
}

/// Classifies a decoded (possibly partially decoded) message.
pub fn classify(msg: &Message<'_>) -> Action {
    let Some(response_mti) = msg.mti().response() else {
        return Action::Skip(SkipReason::NotARequest);
    };
    let base = base(msg.mti());
    let format_error = Action::Answer {
        response_mti,
        code: "30",
        // An 0800's 30 is still a network management answer: 7, 11, 41 and 70 echoed.
        network: base == 800,
    };
    if msg.error().is_some() {
        // Answer 30 only when the reply can be matched: DE 11 was read.
        return if msg.has(11) {
            format_error
        } else {
            Action::Skip(SkipReason::NoStan)
        };
    }
    match base {
        800 => network_management(msg, response_mti),
        100 | 200 | 220 | 400 | 420 => match financial(msg) {
            Some(req) => Action::Route(req),
            None if msg.has(11) => format_error,
            None => Action::Skip(SkipReason::NoStan),
        },
        _ => Action::Answer {
            response_mti,
            code: "12",
            network: false,
        },
    }
}

fn network_management(msg: &Message<'_>, response_mti: Mti) -> Action {
    let mandatory = [7, 11, 70].iter().all(|&n| msg.has(n));
    let code = if !mandatory {
        "30"
    } else {
        match msg.field(70).and_then(|f| f.to_u64()) {
            // 001 sign-on, 002 sign-off, 301 echo test.
            Some(1 | 2 | 301) => "00",
            _ => "12",
        }
    };
    if code == "30" && !msg.has(11) {
        return Action::Skip(SkipReason::NoStan);
    }
    Action::Answer {
        response_mti,
        code,
        network: true,
    }
}

/// Builds the engine's request, or `None` for a format error (a mandatory field missing or
/// malformed, or malformed content in an optional field the switch uses).
fn financial(msg: &Message<'_>) -> Option<Request> {
    // `text_bytes` reads ASCII fields in place; `buf` is for the other encodings.
    let mut buf = [0u8; 42];
    let mti = routing::Mti::new(msg.mti().as_u16())?;
    let base_mti = base(msg.mti());
    let stan = u32::try_from(msg.field(11)?.to_u64()?).ok()?;
    let transmission = msg.field(7)?.to_u64()?;
    let terminal = TerminalId::new(msg.field(41)?.text_bytes(&mut buf)?).ok()?;
    let mut req = Request::new(mti, stan, transmission, terminal);

    let code = msg.field(3)?;
    let code = ProcessingCode::from_digits(code.text_bytes(&mut buf)?)?;
    req.processing_code = Some(code);
    req.pan = Some(Pan::from_digits(msg.field(2)?.text_bytes(&mut buf)?).ok()?);
    req.currency = Some(
        u16::try_from(routing::message::parse_numeric(
            msg.field(49)?.text_bytes(&mut buf)?,
        )?)
        .ok()?,
    );
    // A balance inquiry needs no amount; every other request does.
    let inquiry = base_mti == 100 && code.transaction_type() == *b"31";
    match msg.field(4) {
        Some(f) => req.amount = Some(f.to_u64()?),
        None if inquiry => {}
        None => return None,
    }
    if let Some(f) = msg.field(14) {
        req.expiry = Some(Yymm::from_digits(f.text_bytes(&mut buf)?)?);
    }
    if let Some(f) = msg.field(42) {
        req.merchant = Some(MerchantId::new(f.text_bytes(&mut buf)?).ok()?);
    }
    // DE 48 is the merchant's order reference on 0100/0200 only (PROTOCOL.md 2, Orders); on
    // other messages it is read (malformed content is a 30) but not kept, so free text an
    // acquirer sends there never reaches the journal. The only per-request heap value.
    if let Some(f) = msg
        .field(48)
        .filter(|_| matches!(base_mti, 100 | 200) && !inquiry)
    {
        req.order_ref = Some(f.to_string());
    }
    if let Some(f) = msg.field(90) {
        req.original = Some(OriginalData::from_field90(f.text_bytes(&mut buf)?)?);
    }
    // A field the bitmap announced but that could not be read is a format error too.
    for n in [2, 3, 4, 7, 11, 14, 41, 42, 48, 49, 90] {
        if msg.in_bitmap(n) && !msg.has(n) {
            return None;
        }
    }
    Some(req)
}

/// The parts of an answer the switch adds to the echoed fields.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub response_mti: Mti,
    pub code: &'a str,
    pub approval_code: Option<&'a str>,
    pub additional_amounts: Option<&'a str>,
    pub network: bool,
}

/// Writes the response to `request` (body only; the caller frames it), fields in ascending
/// order straight into `dst`: the echoed ones copied byte for byte, then 38, 39 and 54 where
/// they belong.
pub fn write_response(
    request: &Message<'_>,
    answer: Answer<'_>,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut w = MessageWriter::new(request.spec(), answer.response_mti, dst)?;
    let order: &[usize] = if answer.network {
        &NETWORK_RESPONSE_ORDER
    } else {
        &RESPONSE_ORDER
    };
    for &n in order {
        match n {
            38 => {
                if let Some(code) = answer.approval_code {
                    w.set(38, code)?;
                }
            }
            39 => {
                w.set(39, answer.code)?;
            }
            54 => {
                if let Some(amounts) = answer.additional_amounts {
                    w.set(54, amounts)?;
                }
            }
            _ => {
                w.copy_from(request, n)?;
            }
        }
    }
    w.finish()
}

/// A response's fields in order: those it echoes when the request had them (2, 3, 4, 7, 11,
/// 12, 13, 37, 41, 42, 49; PROTOCOL.md section 2; the PAN as received, masking is for logs, not
/// the wire) and those the switch adds (38, 39, 54).
const RESPONSE_ORDER: [usize; 14] = [2, 3, 4, 7, 11, 12, 13, 37, 38, 39, 41, 42, 49, 54];

/// A network management response: 7, 11, 41, 70 echoed, 39 added.
const NETWORK_RESPONSE_ORDER: [usize; 5] = [7, 11, 39, 41, 70];
