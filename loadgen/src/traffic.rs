//! The requests loadgen sends, how they are encoded, and how an answer is checked.
//!
//! Every request carries DE 7, 11 and 41, its key: 41 is the connection's terminal id, 11 a
//! STAN counter of the connection, 7 a transmission time that moves on by at least a second
//! each time the STAN wraps, so no two requests of a run share a key. An answer is matched by
//! that key, then must have the request's MTI + 10 (the same MTI from an echo server in
//! `--mode echo`) and echo every field of [`Req::echoed`] unchanged; from a switch it must
//! carry DE 39 with a code this kind of request may get ([`Kind::codes`]: 96, 30 and 12 never),
//! and DE 38 (approval code) on approved 0110 holds and 0210 purchases, DE 54 on approved
//! balance inquiries.

use bytes::BytesMut;
use codec::framing::{FrameError, LengthFramer};
#[cfg(test)]
use codec::MessageBuilder;
use codec::{Message, MessageWriter, Mti, Spec};

use crate::data::Data;

/// What one request is, which decides its MTI, its fields and what may follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 0200, DE 3 000000.
    Purchase,
    /// 0100 hold, completed by a 0220 once approved.
    Hold,
    /// 0220 completing a hold.
    Completion,
    /// 0200 reversed by a 0400 once approved.
    ReversiblePurchase,
    /// 0400 reversing a purchase.
    Reversal,
    /// 0100, DE 3 310000.
    Balance,
    /// 0200 with DE 42 and 48.
    OrderPayment,
    /// 0400 reversing an order payment (reopens the order).
    OrderReversal,
    /// 0800, DE 70 301.
    Echo,
    /// 0200 with a PAN in no row of accounts.csv (expect 14).
    UnknownCard,
    /// 0200 for more than the card's balance (expect 51).
    OverBalance,
}

impl Kind {
    pub const COUNT: usize = 11;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Purchase,
        Kind::Hold,
        Kind::Completion,
        Kind::ReversiblePurchase,
        Kind::Reversal,
        Kind::Balance,
        Kind::OrderPayment,
        Kind::OrderReversal,
        Kind::Echo,
        Kind::UnknownCard,
        Kind::OverBalance,
    ];

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Purchase => "0200_purchase",
            Kind::Hold => "0100_hold",
            Kind::Completion => "0220_completion",
            Kind::ReversiblePurchase => "0200_purchase_to_reverse",
            Kind::Reversal => "0400_reversal",
            Kind::Balance => "0100_balance_inquiry",
            Kind::OrderPayment => "0200_order_payment",
            Kind::OrderReversal => "0400_order_reversal",
            Kind::Echo => "0800_echo",
            Kind::UnknownCard => "0200_decline_unknown_card",
            Kind::OverBalance => "0200_decline_over_balance",
        }
    }

    /// The request MTI as a number (0200 -> 200).
    pub fn mti(self) -> u16 {
        match self {
            Kind::Hold | Kind::Balance => 100,
            Kind::Completion => 220,
            Kind::Reversal | Kind::OrderReversal => 400,
            Kind::Echo => 800,
            _ => 200,
        }
    }

    /// The DE 39 codes a switch that serves every card of the data set may answer this kind
    /// of request (PROTOCOL.md section 2), and how a report names them. Cards are picked from
    /// the usable ones (active, not expired) and sent in their own currency with a non-zero
    /// amount, so the card checks (05, 14, 41, 43, 54, 57) and 13 never apply to them (54
    /// does to a card whose expiry month ended during the run: `Wire::check_matched` allows it); keys
    /// are new, so 94 applies only to an order already paid (in an earlier run). A completion
    /// or reversal follows an approved original: 00, or 25 when the original is not where it
    /// went (its connection moved to another replica with a state of its own). 96 (internal
    /// failure), 30 (format) and 12 (unsupported) are never right.
    pub fn codes(self) -> (&'static [[u8; 2]], &'static str) {
        match self {
            Kind::Purchase | Kind::Hold | Kind::ReversiblePurchase => {
                (&[C00, C51, C61], "00, 51 or 61")
            }
            Kind::OrderPayment => (&[C00, C13, C25, C51, C61, C94], "00, 13, 25, 51, 61 or 94"),
            Kind::Completion | Kind::Reversal | Kind::OrderReversal => (&[C00, C25], "00 or 25"),
            Kind::Balance | Kind::Echo => (&[C00], "00"),
            // The first check that can decline it.
            Kind::UnknownCard => (&[C14], "14"),
            // Funds (51) come before the daily limit.
            Kind::OverBalance => (&[C51], "51"),
        }
    }

    fn processing_code(self) -> &'static str {
        match self {
            Kind::Balance => "310000",
            _ => "000000",
        }
    }
}

// DE 39 codes, for the tables of `Kind::codes`.
const C00: [u8; 2] = *b"00";
const C13: [u8; 2] = *b"13";
const C14: [u8; 2] = *b"14";
const C25: [u8; 2] = *b"25";
const C51: [u8; 2] = *b"51";
const C54: [u8; 2] = *b"54";
const C61: [u8; 2] = *b"61";
const C94: [u8; 2] = *b"94";

/// The card a request uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanRef {
    None,
    /// Index into `Data::cards`.
    Card(u32),
    /// Index into `Data::unknown_pans`.
    Unknown(u32),
}

/// No order.
pub const NO_ORDER: u32 = u32::MAX;

/// The original a completion or reversal refers to (DE 90).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Original {
    pub mti: u16,
    pub stan: u32,
    pub f7: u64,
}

/// One request: everything needed to encode it and to check its answer.
#[derive(Clone, Copy, Debug)]
pub struct Req {
    pub kind: Kind,
    pub pan: PanRef,
    /// DE 4 in minor units (not sent on balance inquiries and echoes).
    pub amount: u64,
    /// DE 49.
    pub currency: u16,
    pub stan: u32,
    /// DE 7 as a number.
    pub f7: u64,
    /// Index into `Data::orders`, or [`NO_ORDER`].
    pub order: u32,
    pub original: Option<Original>,
}

/// The key of a request within one connection (its DE 41 is the connection's).
pub fn key(f7: u64, stan: u32) -> u64 {
    f7.wrapping_mul(1_000_000).wrapping_add(u64::from(stan))
}

impl Req {
    fn sends_amount(&self) -> bool {
        !matches!(self.kind, Kind::Balance | Kind::Echo)
    }

    fn network(&self) -> bool {
        self.kind == Kind::Echo
    }

    /// The PAN as text (`""` for an echo).
    pub fn pan<'d>(&self, data: &'d Data) -> &'d str {
        match self.pan {
            PanRef::None => "",
            PanRef::Card(i) => data.cards.get(i as usize).map_or("", |c| c.pan()),
            PanRef::Unknown(i) => data.unknown_pans.get(i as usize).map_or("", String::as_str),
        }
    }
}

/// What is needed to encode and check: the layout, the framing and the data set.
#[derive(Debug)]
pub struct Wire<'a> {
    pub spec: &'static Spec,
    pub framer: &'a LengthFramer,
    pub data: &'a Data,
    pub terminal: &'a str,
}

impl Wire<'_> {
    /// Whether the request's card has expired since the data was loaded (a run across the
    /// end of its expiry month): 54 is then right. Read only for a 54, so the clock is too.
    fn expired_since_loaded(&self, req: &Req) -> bool {
        match req.pan {
            PanRef::Card(i) => self
                .data
                .cards
                .get(i as usize)
                .is_some_and(|c| c.expired_at(crate::clock::unix_now())),
            _ => false,
        }
    }
}

fn mti(v: u16) -> Option<Mti> {
    Mti::new([
        b'0' + (v / 1000 % 10) as u8,
        b'0' + (v / 100 % 10) as u8,
        b'0' + (v / 10 % 10) as u8,
        b'0' + (v % 10) as u8,
    ])
}

impl Wire<'_> {
    /// Appends the framed request to `out`.
    pub fn encode(&self, req: &Req, out: &mut BytesMut) -> Result<(), FrameError> {
        let data = self.data;
        // DE 90: original MTI n4, STAN n6, date-time n10, acquirer and forwarding ids n11 each.
        let mut f90 = [b'0'; 42];
        if let Some(o) = req.original {
            write_digits(&mut f90[0..4], u64::from(o.mti));
            write_digits(&mut f90[4..10], u64::from(o.stan));
            write_digits(&mut f90[10..20], o.f7);
        }
        let f90 = std::str::from_utf8(&f90).unwrap_or("");
        // DE 49 is `n 3` in some layouts and `an 3` in others (pyiso8583): send text.
        let f49 = three_digits(req.currency);
        let Some(mti) = mti(req.kind.mti()) else {
            return Err(FrameError::Io(std::io::Error::other("not an MTI")));
        };
        self.framer.encode_with(out, |dst| {
            // Fields in ascending order, straight into the buffer (no table of values).
            let mut w = MessageWriter::new(self.spec, mti, dst)?;
            if req.network() {
                w.set_u64(7, req.f7)?.set_u64(11, u64::from(req.stan))?;
                w.set(41, self.terminal)?.set_u64(70, 301)?;
                return w.finish();
            }
            w.set(2, req.pan(data))?;
            w.set(3, req.kind.processing_code())?;
            if req.sends_amount() {
                w.set_u64(4, req.amount)?;
            }
            w.set_u64(7, req.f7)?.set_u64(11, u64::from(req.stan))?;
            if let (PanRef::Card(i), None) = (req.pan, req.original) {
                if let Some(card) = data.cards.get(i as usize) {
                    w.set(14, card.expiry())?;
                }
            }
            w.set(41, self.terminal)?;
            let order = data.orders.get(req.order as usize);
            if let Some(order) = order {
                w.set(42, &order.merchant_padded)?;
                if req.kind == Kind::OrderPayment {
                    w.set(48, &order.order_id)?;
                }
            }
            w.set(49, f49)?;
            if req.original.is_some() {
                w.set(90, f90)?;
            }
            w.finish()
        })
    }

    /// The key of the request `msg` answers on this connection ([`key`] of its 7 and 11),
    /// `None` when its 41 is another terminal's or its 7 or 11 cannot be one.
    pub fn answer_key(&self, msg: &Message<'_>) -> Option<u64> {
        let num = |n: usize| msg.field(n).and_then(|f| f.to_u64());
        // DE 7 is n 10 and DE 11 n 6: within those, `key` gives each pair its own value.
        let (f7, stan) = (num(7)?, num(11)?);
        let ours = msg.field(41).is_some_and(|f| same(&f, self.terminal));
        (ours && f7 <= 9_999_999_999 && stan <= 999_999).then(|| key(f7, stan as u32))
    }

    /// Checks an answer to `req`: its key as [`Wire::answer_key`], then as
    /// [`Wire::check_matched`].
    #[cfg(test)]
    pub fn check(
        &self,
        req: &Req,
        msg: &Message<'_>,
        echo_mode: bool,
    ) -> Result<Option<[u8; 2]>, Mismatch> {
        if self.answer_key(msg) != Some(key(req.f7, req.stan)) {
            return Err(Mismatch::Key);
        }
        self.check_matched(req, msg, echo_mode)
    }

    /// Checks an answer already matched to `req` by its key (7 and 11 read as `req`'s, 41 as
    /// the connection's terminal): everything else. `Ok` gives DE 39 (`None` from an echo
    /// server).
    pub fn check_matched(
        &self,
        req: &Req,
        msg: &Message<'_>,
        echo_mode: bool,
    ) -> Result<Option<[u8; 2]>, Mismatch> {
        let expected = if echo_mode {
            req.kind.mti()
        } else {
            req.kind.mti() + 10
        };
        if msg.mti().as_u16() != expected {
            return Err(Mismatch::Mti);
        }
        let same_text = |n: usize, text: &str| msg.field(n).is_some_and(|f| same(&f, text));
        let same_num = |n: usize, v: u64| msg.field(n).and_then(|f| f.to_u64()) == Some(v);
        let field = |n: u8| Mismatch::Field(n);
        if req.network() {
            if !same_num(70, 301) {
                return Err(field(70));
            }
        } else {
            if !same_text(2, req.pan(self.data)) {
                return Err(field(2));
            }
            if !same_text(3, req.kind.processing_code()) {
                return Err(field(3));
            }
            if req.sends_amount() && !same_num(4, req.amount) {
                return Err(field(4));
            }
            if !same_text(49, three_digits(req.currency)) {
                return Err(field(49));
            }
            if let Some(order) = self.data.orders.get(req.order as usize) {
                if !same_text(42, &order.merchant_padded) {
                    return Err(field(42));
                }
            }
        }
        if echo_mode {
            return Ok(None);
        }
        let mut buf = [0u8; 2];
        let code = msg
            .field(39)
            .and_then(|f| f.text_into(&mut buf).map(|s| s.len() == 2))
            .filter(|&two| two)
            .map(|_| buf)
            .ok_or(Mismatch::MissingField(39))?;
        let (allowed, expected) = req.kind.codes();
        let expired = code == C54 && self.expired_since_loaded(req);
        if !(allowed.contains(&code) || expired) {
            return Err(Mismatch::Code { code, expected });
        }
        if &code == b"00" {
            match req.kind {
                Kind::Balance if !msg.has(54) => return Err(Mismatch::MissingField(54)),
                Kind::Hold | Kind::Purchase | Kind::ReversiblePurchase | Kind::OrderPayment
                    if !msg.has(38) =>
                {
                    return Err(Mismatch::MissingField(38))
                }
                _ => {}
            }
        }
        Ok(Some(code))
    }
}

/// Why a matched answer is wrong. Names the field, never its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Not the request's MTI + 10 (or, in echo mode, not the request's MTI).
    Mti,
    /// Its 41 + 11 + 7 are not the request's (only [`Wire::check`] tells: on a connection
    /// such an answer matches no request).
    #[cfg(test)]
    Key,
    /// An echoed field is missing or differs.
    Field(u8),
    /// A field the answer must carry is missing (39; 38 on approvals; 54 on inquiries).
    MissingField(u8),
    /// DE 39 is not one this kind of request may get ([`Kind::codes`]): `expected` names
    /// those it may.
    Code {
        code: [u8; 2],
        expected: &'static str,
    },
}

impl Mismatch {
    /// The answer's DE 39, when the mismatch is about it.
    pub fn code(&self) -> Option<[u8; 2]> {
        match self {
            Mismatch::Code { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Mti => f.write_str("wrong response MTI"),
            #[cfg(test)]
            Mismatch::Key => f.write_str("41 + 11 + 7 are another request's"),
            Mismatch::Field(n) => write!(f, "echoed field {n} missing or different"),
            Mismatch::MissingField(n) => write!(f, "field {n} missing"),
            Mismatch::Code { code, expected } => {
                // Two wire bytes: shown only when they read as a code.
                let shown = std::str::from_utf8(code)
                    .ok()
                    .filter(|c| c.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .unwrap_or("??");
                write!(f, "DE 39 {shown}, where only {expected} may answer")
            }
        }
    }
}

/// Whether a field reads as `text`; ASCII fields compare their wire bytes directly.
fn same(f: &codec::Field<'_>, text: &str) -> bool {
    if f.def().encoding == codec::spec::Encoding::Ascii {
        f.wire() == text.as_bytes()
    } else {
        f.eq_text(text)
    }
}

/// "000" to "999", each number's three digits at three times its value.
const THREE_DIGITS: &str = {
    const BYTES: [u8; 3000] = {
        let mut b = [0u8; 3000];
        let mut i = 0;
        while i < 1000 {
            b[3 * i] = b'0' + (i / 100) as u8;
            b[3 * i + 1] = b'0' + (i / 10 % 10) as u8;
            b[3 * i + 2] = b'0' + (i % 10) as u8;
            i += 1;
        }
        b
    };
    match std::str::from_utf8(&BYTES) {
        Ok(s) => s,
        Err(_) => panic!("digits are ASCII"),
    }
};

/// The last three digits of `v` as text (DE 49), without formatting or checking per call.
fn three_digits(v: u16) -> &'static str {
    let at = 3 * usize::from(v % 1000);
    THREE_DIGITS.get(at..at + 3).unwrap_or("000")
}

fn write_digits(dst: &mut [u8], mut v: u64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Data;
    use tokio_util::codec::Decoder;

    fn data() -> Data {
        let accounts = "pan,expiry,status,currency,balance,daily_limit\n\
            4532015112830366,3012,active,840,1000.00,500.00\n";
        let orders = "order_id,merchant_id,amount,currency,status\nORD1,SHOP1,10.00,840,open\n";
        Data::parse(accounts, orders, 1_764_153_900).unwrap()
    }

    fn req(kind: Kind) -> Req {
        Req {
            kind,
            pan: PanRef::Card(0),
            amount: 1234,
            currency: 840,
            stan: 42,
            f7: 1_126_104_500,
            order: NO_ORDER,
            original: None,
        }
    }

    /// Encodes `req`, answers it the way a switch would (echo the fields, 39, 38), with
    /// `tweak` applied to the answer, and checks it.
    fn round_trip(
        r: &Req,
        tweak: impl FnOnce(&mut MessageBuilder<'_, '_>),
    ) -> Result<Option<[u8; 2]>, Mismatch> {
        round_trip_with(&data(), r, tweak)
    }

    /// As `round_trip`, on the data set `data`.
    fn round_trip_with(
        data: &Data,
        r: &Req,
        tweak: impl FnOnce(&mut MessageBuilder<'_, '_>),
    ) -> Result<Option<[u8; 2]>, Mismatch> {
        let spec = codec::builtin("iso87-binary").unwrap();
        let framer = LengthFramer::default();
        let wire = Wire {
            spec,
            framer: &framer,
            data,
            terminal: "LG000001",
        };
        let mut out = BytesMut::new();
        wire.encode(r, &mut out).unwrap();
        let frame = framer.clone().decode(&mut out).unwrap().unwrap();
        let request = Message::decode(spec, frame).unwrap();
        let mut b = MessageBuilder::new(spec, request.mti().response().unwrap());
        for n in [2, 3, 4, 7, 11, 41, 42, 49, 70] {
            b.copy_from(&request, n).unwrap();
        }
        b.set(39, "00").unwrap().set(38, "A00001").unwrap();
        tweak(&mut b);
        let mut body = BytesMut::new();
        b.encode_into(&mut body).unwrap();
        let answer = Message::decode(spec, body.freeze()).unwrap();
        wire.check(r, &answer, false)
    }

    #[test]
    fn a_faithful_answer_passes() {
        assert_eq!(round_trip(&req(Kind::Purchase), |_| {}), Ok(Some(*b"00")));
        assert_eq!(
            round_trip(&req(Kind::Echo), |b| {
                b.clear(38);
            }),
            Ok(Some(*b"00"))
        );
        let mut r = req(Kind::Reversal);
        r.original = Some(Original {
            mti: 200,
            stan: 41,
            f7: 1_126_104_500,
        });
        assert_eq!(round_trip(&r, |_| {}), Ok(Some(*b"00")));
        let mut r = req(Kind::OrderPayment);
        r.order = 0;
        assert_eq!(round_trip(&r, |_| {}), Ok(Some(*b"00")));
    }

    #[test]
    fn a_changed_field_fails() {
        let r = req(Kind::Purchase);
        assert_eq!(
            round_trip(&r, |b| {
                b.set_u64(4, 1235).unwrap();
            }),
            Err(Mismatch::Field(4))
        );
        assert_eq!(
            round_trip(&r, |b| {
                b.set(41, "LG000002").unwrap();
            }),
            Err(Mismatch::Key)
        );
        assert_eq!(
            round_trip(&r, |b| {
                b.clear(2);
            }),
            Err(Mismatch::Field(2))
        );
        assert_eq!(
            round_trip(&r, |b| {
                b.set_mti(Mti::parse("0230").unwrap());
            }),
            Err(Mismatch::Mti)
        );
        assert_eq!(
            round_trip(&r, |b| {
                b.clear(39);
            }),
            Err(Mismatch::MissingField(39))
        );
        assert_eq!(
            round_trip(&r, |b| {
                b.clear(38);
            }),
            Err(Mismatch::MissingField(38))
        );
        // A decline needs no approval code.
        assert_eq!(
            round_trip(&r, |b| {
                b.clear(38).set(39, "51").unwrap();
            }),
            Ok(Some(*b"51"))
        );
        assert_eq!(
            round_trip(&req(Kind::Balance), |_| {}),
            Err(Mismatch::MissingField(54))
        );
    }

    #[test]
    fn a_deliberate_decline_must_be_declined() {
        let mut unknown = req(Kind::UnknownCard);
        unknown.pan = PanRef::Unknown(0);
        let mut over = req(Kind::OverBalance);
        over.amount = 999_999_999_999;
        let code = |c: &'static str| {
            move |b: &mut MessageBuilder<'_, '_>| {
                b.clear(38).set(39, c).unwrap();
            }
        };
        assert_eq!(round_trip(&unknown, code("14")), Ok(Some(*b"14")));
        assert_eq!(round_trip(&over, code("51")), Ok(Some(*b"51")));
        for (r, expected, wrong) in [
            (&unknown, "14", ["00", "96", "51"]),
            (&over, "51", ["00", "96", "05"]),
        ] {
            for c in wrong {
                let got = round_trip(r, code(c));
                assert_eq!(
                    got,
                    Err(Mismatch::Code {
                        code: c.as_bytes().try_into().unwrap(),
                        expected
                    }),
                    "{c}"
                );
            }
        }
    }

    #[test]
    fn a_54_is_right_for_a_card_whose_month_ended_during_the_run() {
        // Loaded in November 2025, when its 2511 expiry was still good; checked now.
        let accounts = "pan,expiry,status,currency,balance,daily_limit\n\
            5555555555554444,2511,active,978,5.00,5.00\n";
        let expiring = Data::parse(accounts, "", 1_764_153_900).unwrap();
        let mut r = req(Kind::Purchase);
        r.currency = 978;
        let expired = |b: &mut MessageBuilder<'_, '_>| {
            b.clear(38).set(39, "54").unwrap();
        };
        assert_eq!(round_trip_with(&expiring, &r, expired), Ok(Some(*b"54")));
        // A card still valid (3012) must not get it.
        assert_eq!(
            round_trip(&req(Kind::Purchase), expired).map_err(|m| m.code()),
            Err(Some(*b"54"))
        );
    }

    #[test]
    fn each_kind_gets_only_the_codes_it_may() {
        let code = |c: &'static str| {
            move |b: &mut MessageBuilder<'_, '_>| {
                b.set(39, c).unwrap();
            }
        };
        let original = Some(Original {
            mti: 200,
            stan: 7,
            f7: 1_126_104_400,
        });
        let mut reversal = req(Kind::Reversal);
        reversal.original = original;
        let cases: [(Req, &[&str], &[&str]); 3] = [
            (
                req(Kind::Purchase),
                &["00", "51", "61"],
                &["96", "30", "12", "14", "05", "54", "57", "13", "94", "25"],
            ),
            (reversal, &["00", "25"], &["96", "94", "13", "51"]),
            (req(Kind::Echo), &["00"], &["96", "12"]),
        ];
        for (r, right, wrong) in cases {
            for c in right {
                assert_eq!(
                    round_trip(&r, code(c)).map(|c| c.is_some()),
                    Ok(true),
                    "{c}"
                );
            }
            for c in wrong {
                let got = round_trip(&r, code(c));
                assert_eq!(
                    got.map_err(|m| m.code()),
                    Err(Some(c.as_bytes().try_into().unwrap())),
                    "{c}"
                );
            }
        }
        // The report names the code only when it reads as one, never other wire bytes.
        let odd = Mismatch::Code {
            code: [0xff, b'1'],
            expected: "00",
        };
        assert_eq!(odd.to_string(), "DE 39 ??, where only 00 may answer");
    }

    #[test]
    fn keys_and_digits() {
        assert_ne!(key(1_126_104_500, 1), key(1_126_104_501, 1));
        assert_eq!(key(1_126_104_500, 999_999) + 1, key(1_126_104_501, 0));
        let mut d = [0u8; 6];
        write_digits(&mut d, 42);
        assert_eq!(&d, b"000042");
        for v in 0..=u16::MAX {
            let mut d = [0u8; 3];
            write_digits(&mut d, u64::from(v));
            assert_eq!(three_digits(v).as_bytes(), &d, "{v}");
        }
    }
}
