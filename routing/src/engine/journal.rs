//! What a switch journals: every input of a shard as one value ([`Input`]), its encoding, and
//! the single entry point ([`Shard::apply`]) that live traffic and a replay both go through.
//!
//! The encoding of the cross-shard messages lives here because they are private to the
//! engine; the primitives are in [`crate::wire`].

use super::{AuthCtx, AuthKind, Effect, IdemKey, Msg, OrderKey, Output, PeerMsg, Shard};
use crate::message::{ApprovalCode, MerchantId, Request, Response, ResponseCode, TxnId};
use crate::pan::Pan;
use crate::time::{Now, Yymm};
use crate::wire::{
    decode_top, put_i64, put_opt, put_u8, put_usize, put_varint, Flags, Reader, Wire, WireError,
    WIRE_VERSION,
};

/// One input of a shard, as a switch journals it before releasing what it produced.
///
/// A shard's state is a function of its inputs in order: [`Shard::apply`] of the same
/// sequence on the same starting state (a fresh load, or a [`Shard::restore`]d snapshot)
/// gives the same state and the same outputs in the same order, in any process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A request from a connection ([`Shard::handle_request`]).
    Request {
        /// The switch's clock when it handed the request over.
        now: Now,
        /// The caller's tag, returned in the reply.
        token: u64,
        /// The request.
        request: Box<Request>,
    },
    /// A message from another shard ([`Shard::handle_peer`]). Its sender and sequence
    /// number travel in it ([`PeerMsg::from`], [`PeerMsg::seq`]) and are journaled with it.
    Peer {
        /// The switch's clock when it handed the message over.
        now: Now,
        /// The message.
        msg: PeerMsg,
    },
    /// A periodic purge ([`Shard::purge_expired`]).
    Purge {
        /// The switch's clock at the purge.
        now: Now,
    },
}

// Tags of `Input`.
const INPUT_REQUEST: u8 = 0;
const INPUT_PEER: u8 = 1;
const INPUT_PURGE: u8 = 2;

impl Input {
    /// The clock the input carries.
    pub fn now(&self) -> Now {
        match self {
            Self::Request { now, .. } | Self::Peer { now, .. } | Self::Purge { now } => *now,
        }
    }

    /// Appends the encoding (version byte, tag, fields) to `out`. A request's PAN is written
    /// in clear ([`crate::wire`]): the journal file must be protected (mode 0600).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, WIRE_VERSION);
        self.put(out);
    }

    /// Decodes what [`Input::encode`] wrote, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_top(bytes, "input")
    }
}

impl Wire for Input {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Request {
                now,
                token,
                request,
            } => {
                put_u8(out, INPUT_REQUEST);
                now.put(out);
                put_varint(out, *token);
                request.put(out);
            }
            Self::Peer { now, msg } => {
                put_u8(out, INPUT_PEER);
                now.put(out);
                msg.put(out);
            }
            Self::Purge { now } => {
                put_u8(out, INPUT_PURGE);
                now.put(out);
            }
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        Ok(match r.u8("input")? {
            INPUT_REQUEST => Self::Request {
                now: Now::get(r)?,
                token: r.varint("token")?,
                request: Box::new(Request::get(r)?),
            },
            INPUT_PEER => Self::Peer {
                now: Now::get(r)?,
                msg: PeerMsg::get(r)?,
            },
            INPUT_PURGE => Self::Purge { now: Now::get(r)? },
            _ => {
                return Err(WireError::UnknownTag {
                    what: "input",
                    offset,
                })
            }
        })
    }
}

impl Shard {
    /// Hands the shard one input: [`Shard::handle_request`], [`Shard::handle_peer`] or
    /// [`Shard::purge_expired`]. Live traffic and a journal replay go through here, so they
    /// cannot drift apart.
    pub fn apply(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Request {
                now,
                token,
                request,
            } => self.handle_request(now, token, *request, out),
            Input::Peer { now, msg } => self.handle_peer(now, msg, out),
            Input::Purge { now } => {
                self.purge_expired(now);
            }
        }
    }

    /// [`Shard::warm_request`] or [`Shard::warm_peer`] for a journaled input: a replay warms
    /// a run of inputs before applying them, as the shard thread does with a batch.
    pub fn warm_input(&self, input: &Input) {
        match input {
            Input::Request { request, .. } => self.warm_request(request),
            Input::Peer { msg, .. } => self.warm_peer(msg),
            Input::Purge { .. } => {}
        }
    }
}

// ===== PeerMsg =====

impl PeerMsg {
    /// Appends the encoding (version byte, sender, sequence number, message) to `out`. The
    /// PAN a message carries is written in clear.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, WIRE_VERSION);
        self.put(out);
    }

    /// Decodes what [`PeerMsg::encode`] wrote, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_top(bytes, "peer message")
    }
}

impl Wire for PeerMsg {
    fn put(&self, out: &mut Vec<u8>) {
        put_usize(out, self.from);
        put_varint(out, self.seq);
        self.msg.put(out);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            from: r.usize("sending shard")?,
            seq: r.varint("sequence number")?,
            msg: Msg::get(r)?,
        })
    }
}

// Tags of `Msg`.
const MSG_FORWARD: u8 = 0;
const MSG_AUTHORIZE: u8 = 1;
const MSG_RESERVE: u8 = 2;
const MSG_RESERVED: u8 = 3;
const MSG_DECIDED: u8 = 4;
const MSG_APPLY: u8 = 5;
const MSG_RELEASE: u8 = 6;
const MSG_APPLIED: u8 = 7;
/// [`MSG_DECIDED`] followed by the approval code the card's shard gave (newer journals).
const MSG_DECIDED_APPROVED: u8 = 8;
/// [`Msg::CheckOrder`] and [`Msg::OrderChecked`] (newer journals).
const MSG_CHECK_ORDER: u8 = 9;
const MSG_ORDER_CHECKED: u8 = 10;

/// A `Reserved` or `OrderChecked`: its tag, the payment, then the order checks' outcome.
fn put_order_outcome(out: &mut Vec<u8>, tag: u8, ctx: &AuthCtx, result: &Result<(), ResponseCode>) {
    put_u8(out, tag);
    ctx.put(out);
    match result {
        Ok(()) => put_u8(out, 0),
        Err(code) => {
            put_u8(out, 1);
            code.put(out);
        }
    }
}

impl Wire for Msg {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Forward { token, req } => {
                put_u8(out, MSG_FORWARD);
                put_varint(out, *token);
                req.put(out);
            }
            Self::Authorize(ctx) => {
                put_u8(out, MSG_AUTHORIZE);
                ctx.put(out);
            }
            Self::Reserve(ctx) => {
                put_u8(out, MSG_RESERVE);
                ctx.put(out);
            }
            Self::CheckOrder(ctx) => {
                put_u8(out, MSG_CHECK_ORDER);
                ctx.put(out);
            }
            Self::Reserved { ctx, result } => put_order_outcome(out, MSG_RESERVED, ctx, result),
            Self::OrderChecked { ctx, result } => {
                put_order_outcome(out, MSG_ORDER_CHECKED, ctx, result)
            }
            Self::Decided {
                key,
                txn,
                code,
                day,
                approval,
            } => {
                put_u8(
                    out,
                    if approval.is_some() {
                        MSG_DECIDED_APPROVED
                    } else {
                        MSG_DECIDED
                    },
                );
                key.put(out);
                txn.put(out);
                code.put(out);
                put_i64(out, *day);
                if let Some(a) = approval {
                    a.put(out);
                }
            }
            Self::Apply {
                home,
                key,
                pan,
                effect,
            } => {
                put_u8(out, MSG_APPLY);
                put_usize(out, *home);
                key.put(out);
                pan.put(out);
                effect.put(out);
            }
            Self::Release { order, by, ack } => {
                put_u8(out, MSG_RELEASE);
                order.put(out);
                by.put(out);
                match ack {
                    None => put_u8(out, 0),
                    Some((home, key)) => {
                        put_u8(out, 1);
                        put_usize(out, *home);
                        key.put(out);
                    }
                }
            }
            Self::Applied { key } => {
                put_u8(out, MSG_APPLIED);
                key.put(out);
            }
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        Ok(match r.u8("peer message")? {
            MSG_FORWARD => Self::Forward {
                token: r.varint("token")?,
                req: Box::new(Request::get(r)?),
            },
            MSG_AUTHORIZE => Self::Authorize(Box::new(AuthCtx::get(r)?)),
            MSG_RESERVE => Self::Reserve(Box::new(AuthCtx::get(r)?)),
            MSG_CHECK_ORDER => Self::CheckOrder(Box::new(AuthCtx::get(r)?)),
            tag @ (MSG_RESERVED | MSG_ORDER_CHECKED) => {
                let ctx = Box::new(AuthCtx::get(r)?);
                let at = r.offset();
                let result = match r.u8("reservation result")? {
                    0 => Ok(()),
                    1 => Err(ResponseCode::get(r)?),
                    _ => {
                        return Err(WireError::UnknownTag {
                            what: "reservation result",
                            offset: at,
                        })
                    }
                };
                if tag == MSG_RESERVED {
                    Self::Reserved { ctx, result }
                } else {
                    Self::OrderChecked { ctx, result }
                }
            }
            tag @ (MSG_DECIDED | MSG_DECIDED_APPROVED) => Self::Decided {
                key: IdemKey::get(r)?,
                txn: TxnId::get(r)?,
                code: ResponseCode::get(r)?,
                day: r.i64("day")?,
                approval: if tag == MSG_DECIDED_APPROVED {
                    Some(ApprovalCode::get(r)?)
                } else {
                    None
                },
            },
            MSG_APPLY => Self::Apply {
                home: r.usize("home shard")?,
                key: IdemKey::get(r)?,
                pan: Pan::get(r)?,
                effect: Effect::get(r)?,
            },
            MSG_RELEASE => {
                let order = Box::new(OrderKey::get(r)?);
                let by = TxnId::get(r)?;
                let at = r.offset();
                let ack = match r.u8("release acknowledgement")? {
                    0 => None,
                    1 => Some((r.usize("home shard")?, IdemKey::get(r)?)),
                    _ => {
                        return Err(WireError::UnknownTag {
                            what: "release acknowledgement",
                            offset: at,
                        })
                    }
                };
                Self::Release { order, by, ack }
            }
            MSG_APPLIED => Self::Applied {
                key: IdemKey::get(r)?,
            },
            _ => {
                return Err(WireError::UnknownTag {
                    what: "peer message",
                    offset,
                })
            }
        })
    }
}

impl Wire for OrderKey {
    fn put(&self, out: &mut Vec<u8>) {
        self.merchant.put(out);
        self.order_id.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            merchant: MerchantId::get(r)?,
            order_id: r.string("order id")?,
        })
    }
}

impl Wire for AuthKind {
    fn put(&self, out: &mut Vec<u8>) {
        put_u8(
            out,
            match self {
                Self::Inquiry => 0,
                Self::Hold => 1,
                Self::Purchase => 2,
            },
        );
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        match r.u8("authorization kind")? {
            0 => Ok(Self::Inquiry),
            1 => Ok(Self::Hold),
            2 => Ok(Self::Purchase),
            _ => Err(WireError::UnknownTag {
                what: "authorization kind",
                offset,
            }),
        }
    }
}

impl Wire for AuthCtx {
    fn put(&self, out: &mut Vec<u8>) {
        put_usize(out, self.home);
        put_varint(out, self.token);
        self.key.put(out);
        self.txn.put(out);
        self.kind.put(out);
        self.pan.put(out);
        put_i64(out, self.amount);
        out.extend_from_slice(&self.account_type);
        Flags::of(&[
            self.currency.is_some(),
            self.expiry.is_some(),
            self.order.is_some(),
        ])
        .put(out);
        put_opt(out, &self.currency);
        put_opt(out, &self.expiry);
        put_opt(out, &self.order);
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let home = r.usize("home shard")?;
        let token = r.varint("token")?;
        let key = IdemKey::get(r)?;
        let txn = TxnId::get(r)?;
        let kind = AuthKind::get(r)?;
        let pan = Pan::get(r)?;
        let amount = r.i64("amount")?;
        let at = r.offset();
        let account_type = r.array::<2>("account type")?;
        if !account_type.iter().all(u8::is_ascii_digit) {
            return Err(WireError::Invalid {
                what: "account type",
                offset: at,
            });
        }
        let f = Flags::get(r, 3, "authorization flags")?;
        Ok(Self {
            home,
            token,
            key,
            txn,
            kind,
            pan,
            amount,
            account_type,
            currency: f.take(0, r)?,
            expiry: f.take::<Yymm>(1, r)?,
            order: f.take(2, r)?,
        })
    }
}

impl Wire for Effect {
    fn put(&self, out: &mut Vec<u8>) {
        match *self {
            Self::ReleaseHold { amount, day } => {
                put_u8(out, 0);
                put_i64(out, amount);
                put_i64(out, day);
            }
            Self::Credit { amount, day } => {
                put_u8(out, 1);
                put_i64(out, amount);
                put_i64(out, day);
            }
            Self::Complete {
                held,
                hold_day,
                amount,
                day,
            } => {
                put_u8(out, 2);
                put_i64(out, held);
                put_i64(out, hold_day);
                put_i64(out, amount);
                put_i64(out, day);
            }
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        Ok(match r.u8("effect")? {
            0 => Self::ReleaseHold {
                amount: r.i64("amount")?,
                day: r.i64("day")?,
            },
            1 => Self::Credit {
                amount: r.i64("amount")?,
                day: r.i64("day")?,
            },
            2 => Self::Complete {
                held: r.i64("held amount")?,
                hold_day: r.i64("hold day")?,
                amount: r.i64("amount")?,
                day: r.i64("day")?,
            },
            _ => {
                return Err(WireError::UnknownTag {
                    what: "effect",
                    offset,
                })
            }
        })
    }
}

// ===== Output =====

impl Output {
    /// Appends the encoding (version byte, tag, fields) to `out`. The switch does not need
    /// it to journal (outputs are recomputed by a replay); it serves tests comparing runs and
    /// tools that record what a shard produced.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, WIRE_VERSION);
        self.put(out);
    }

    /// Decodes what [`Output::encode`] wrote, all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode_top(bytes, "output")
    }
}

impl Wire for Output {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Reply {
                token,
                response,
                durable,
            } => {
                put_u8(out, if *durable { 2 } else { 0 });
                put_varint(out, *token);
                response.put(out);
            }
            Self::ToShard { shard, msg } => {
                put_u8(out, 1);
                put_usize(out, *shard);
                msg.put(out);
            }
        }
    }

    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        Ok(match r.u8("output")? {
            tag @ (0 | 2) => Self::Reply {
                token: r.varint("token")?,
                response: Response::get(r)?,
                durable: tag == 2,
            },
            1 => Self::ToShard {
                shard: r.usize("destination shard")?,
                msg: PeerMsg::get(r)?,
            },
            _ => {
                return Err(WireError::UnknownTag {
                    what: "output",
                    offset,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests;
