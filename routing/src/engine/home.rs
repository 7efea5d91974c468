//! K, the home of a transaction identity: idempotency, late-original markers, the records of
//! holds and purchases, and the decisions on completions and reversals.
//!
//! Every request starts here, and every stored answer is written here before it leaves, so
//! "answered once, replayed after" needs no coordination with other shards.

use super::{
    minor_units, AuthCtx, AuthKind, Effect, Fingerprint, IdemEntry, Msg, OrderKey, Output, PayKind,
    PendingReply, PendingTxn, Shard, TxnRecord, TxnSlot, TxnState,
};
use crate::kind::{NetworkAction, TxnKind};
use crate::message::{ApprovalCode, IdemKey, MerchantId, Request, Response, ResponseCode, TxnId};
use crate::pan::Pan;
use crate::time::Now;

/// How a request whose key is known is answered.
enum Known {
    Duplicate,
    Replay(Response),
    Parked,
}

impl Shard {
    /// A request at its home shard. The order of checks is PROTOCOL.md section 2's: (format
    /// by the switch) -> idempotency -> 12 -> late original 05 -> card checks at A -> order
    /// checks at O -> funds and limit at A.
    pub(super) fn on_request(&mut self, now: Now, token: u64, req: Request, out: &mut Vec<Output>) {
        let kind = req.kind();
        if let TxnKind::NetworkManagement(action) = kind {
            let code = match action {
                NetworkAction::Unsupported => ResponseCode::InvalidTransaction,
                NetworkAction::SignOn | NetworkAction::SignOff | NetworkAction::Echo => {
                    ResponseCode::Approved
                }
            };
            self.reply(token, Response::plain(req.mti.response(), code), out);
            return;
        }
        let key = req.key();
        let fp = Fingerprint::of(&req);
        if self.answer_known_key(now, token, &key, &fp, out) {
            return;
        }
        match kind {
            TxnKind::BalanceInquiry => self.start_inquiry(token, &req, key, out),
            TxnKind::AuthorizationHold => {
                self.start_payment(now, token, req, key, fp, PayKind::Hold, out);
            }
            TxnKind::Purchase => {
                self.start_payment(now, token, req, key, fp, PayKind::Purchase, out)
            }
            TxnKind::Completion => self.start_completion(now, token, req, key, fp, out),
            TxnKind::Reversal => self.start_reversal(now, token, req, key, fp, out),
            // Network management was answered above.
            TxnKind::Unsupported | TxnKind::NetworkManagement(_) => {
                self.answer(now, token, key, fp, ResponseCode::InvalidTransaction, out);
            }
        }
    }

    /// Idempotency: a known key replays its answer, parks behind a pending one, or answers 94
    /// when 2, 3, 4 or 49 differ (changing nothing). Returns whether the request was handled.
    fn answer_known_key(
        &mut self,
        now: Now,
        token: u64,
        key: &IdemKey,
        fp: &Fingerprint,
        out: &mut Vec<Output>,
    ) -> bool {
        let t = now.unix_secs();
        let known = match self.idem.get_mut(key) {
            None => return false,
            Some(IdemEntry::Done { expires, .. }) if *expires <= t => {
                // Expired: forgotten, and this request is a new one.
                self.idem.remove(key);
                return false;
            }
            Some(e) if e.fingerprint() != fp => Known::Duplicate,
            Some(IdemEntry::Done { response, .. }) => Known::Replay(response.clone()),
            Some(IdemEntry::Pending(p)) => {
                p.waiters.push(token);
                Known::Parked
            }
        };
        match known {
            Known::Duplicate => {
                self.stats.content_mismatches += 1;
                let response = Response::plain(key.mti.response(), ResponseCode::Duplicate);
                self.reply(token, response, out);
            }
            Known::Replay(response) => {
                self.stats.replays += 1;
                self.reply(token, response, out);
            }
            Known::Parked => self.stats.parked += 1,
        }
        true
    }

    /// Stores `code` under `key` and answers it.
    fn answer(
        &mut self,
        now: Now,
        token: u64,
        key: IdemKey,
        fp: Fingerprint,
        code: ResponseCode,
        out: &mut Vec<Output>,
    ) {
        let response = Response::plain(key.mti.response(), code);
        let expires = self.window_end(now);
        self.idem.insert(
            key,
            IdemEntry::Done {
                fp,
                response: response.clone(),
                expires,
            },
        );
        self.reply(token, response, out);
    }

    /// Turns the pending entry of `key` into its answer and answers every waiter, the answers
    /// marked `durable` ([`Output::Reply::durable`]) when they follow from durable inputs alone.
    fn finish(
        &mut self,
        now: Now,
        key: IdemKey,
        response: Response,
        durable: bool,
        out: &mut Vec<Output>,
    ) {
        let expires = self.window_end(now);
        // Replaced in place: one look-up, no removal and re-insertion.
        let Some(entry) = self.idem.get_mut(&key) else {
            return;
        };
        let IdemEntry::Pending(p) = entry else {
            // Already answered: nothing is waiting (cannot happen by protocol).
            return;
        };
        let fp = p.fp;
        let waiters = std::mem::take(&mut p.waiters);
        *entry = IdemEntry::Done {
            fp,
            response: response.clone(),
            expires,
        };
        for token in waiters {
            self.reply_as(token, response.clone(), durable, out);
        }
    }

    /// Balance inquiry: not stored, answered by A directly.
    fn start_inquiry(&mut self, token: u64, req: &Request, key: IdemKey, out: &mut Vec<Output>) {
        let Some(pan) = req.pan.filter(Pan::is_card_number) else {
            let response = Response::plain(key.mti.response(), ResponseCode::InvalidCardNumber);
            self.reply(token, response, out);
            return;
        };
        let ctx = AuthCtx {
            home: self.id,
            token,
            key,
            txn: req.own_txn(),
            kind: AuthKind::Inquiry,
            pan,
            amount: 0,
            currency: req.currency,
            expiry: req.expiry,
            account_type: req.processing_code.map_or(*b"00", |p| p.from_account()),
            order: None,
        };
        let a = self.pan_shard(&pan);
        self.send(a, Msg::Authorize(Box::new(ctx)), out);
    }

    /// Hold (0100) or purchase (0200): late-original and Luhn checks here, the rest at A (and
    /// O), the decision back here in `on_decided`.
    #[allow(clippy::too_many_arguments)]
    fn start_payment(
        &mut self,
        now: Now,
        token: u64,
        req: Request,
        key: IdemKey,
        fp: Fingerprint,
        kind: PayKind,
        out: &mut Vec<Output>,
    ) {
        let txn = req.own_txn();
        self.forget_if_expired(&txn, now);
        let joins = match self.txns.get_mut(&txn) {
            Some(slot) if slot.awaits_late(kind) => {
                // PROTOCOL.md 2, Reversals: its reversal came first; the late original is
                // declined, and a later reversal of it answers 00 with no change.
                slot.decline_late(kind, declined_record(now, kind, &req));
                return self.answer(now, token, key, fp, ResponseCode::DoNotHonour, out);
            }
            Some(slot) if slot.has(kind) => {
                // An original of this kind with this identity has its key, whose entry the
                // window let go while the record lives on (an open hold): not a new one.
                return self.answer(now, token, key, fp, ResponseCode::Duplicate, out);
            }
            Some(slot) if slot.order().is_some() && req.order_ref.is_some() => {
                // The other of 0100/0200 under this identity pays an order too: one identity
                // holds one order (a store row names one), so this one is refused, and
                // recorded as declined: its reversals find it (00), not the other.
                self.record_declined(now, txn, kind, &req);
                return self.answer(now, token, key, fp, ResponseCode::Duplicate, out);
            }
            // The other of 0100/0200 (another key): this one joins it.
            Some(_) => true,
            None => false,
        };
        let Some(pan) = req.pan.filter(Pan::is_card_number) else {
            self.record_declined(now, txn, kind, &req);
            return self.answer(now, token, key, fp, ResponseCode::InvalidCardNumber, out);
        };
        let amount = minor_units(req.amount);
        let order = req.order_ref.as_ref().map(|order_id| OrderKey {
            merchant: req.merchant.unwrap_or(MerchantId::EMPTY),
            order_id: order_id.clone(),
        });
        let pending = PendingReply {
            fp,
            waiters: smallvec::smallvec![token],
            awaiting: 1,
            response: None,
        };
        self.idem.insert(key, IdemEntry::Pending(Box::new(pending)));
        let record = PendingTxn {
            key,
            kind,
            pan,
            amount,
            currency: req.currency,
            order: order.clone(),
            queued: Vec::new(),
        };
        let pending = TxnSlot::Pending(Box::new(record));
        if joins {
            self.add_original(txn, pending);
        } else {
            self.txns.insert(txn, pending);
        }
        let ctx = AuthCtx {
            home: self.id,
            token,
            key,
            txn,
            kind: match kind {
                PayKind::Hold => AuthKind::Hold,
                PayKind::Purchase => AuthKind::Purchase,
            },
            pan,
            amount,
            currency: req.currency,
            expiry: req.expiry,
            account_type: req.processing_code.map_or(*b"00", |p| p.from_account()),
            order,
        };
        let a = self.pan_shard(&pan);
        self.send(a, Msg::Authorize(Box::new(ctx)), out);
    }

    /// Drops the slot of `txn` if the window no longer protects it, so that expiry does not
    /// depend on when `purge_expired` last ran.
    fn forget_if_expired(&mut self, txn: &TxnId, now: Now) {
        let (t, window) = (now.unix_secs(), self.window_secs());
        let Some(slot) = self.txns.get_mut(txn) else {
            return;
        };
        slot.drop_expired_half(t, window);
        if slot.expired(t, window) {
            self.txns.remove(txn);
        }
    }

    fn record_declined(&mut self, now: Now, txn: TxnId, kind: PayKind, req: &Request) {
        self.add_original(txn, TxnSlot::Record(declined_record(now, kind, req)));
    }

    /// Records an original (`Pending` or `Record`) under `txn`, beside the other of 0100/0200
    /// if that is there.
    fn add_original(&mut self, txn: TxnId, original: TxnSlot) {
        match self.txns.get_mut(&txn) {
            Some(other) => other.join(original),
            None => {
                self.txns.insert(txn, original);
            }
        }
    }

    /// A's decision on a hold or purchase: record it, answer every waiter, then run the
    /// completions and reversals that arrived while it was in flight.
    ///
    /// The answer is the decision's code and, when approved, the approval code A gave: a
    /// function of the message alone. When A is another shard (`committed`), A committed the
    /// message before sending it, so the answer may leave before this shard commits it
    /// (`Output::Reply::durable`): after a crash the message is delivered again and gives the
    /// same answer, and the request's own pending entry was committed before A was asked.
    /// That takes one disk flush off the path of a payment whose card lives on another shard.
    /// When A is this shard, request and decision are in the batch being applied: the answer
    /// waits for its commit. A decision from an older journal carries no approval code:
    /// numbered here, its answer waits for the commit too.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_decided(
        &mut self,
        now: Now,
        key: IdemKey,
        txn: TxnId,
        code: ResponseCode,
        day: i64,
        approval: Option<ApprovalCode>,
        committed: bool,
        out: &mut Vec<Output>,
    ) {
        let approved = code.is_approved();
        let mut queued = Vec::new();
        // Replaced in place: one look-up, no removal and re-insertion.
        let slot = match self.txns.get_mut(&txn) {
            Some(TxnSlot::Both(halves)) => halves
                .iter_mut()
                .find(|h| matches!(h, TxnSlot::Pending(p) if p.key == key)),
            slot => slot,
        };
        if let Some(slot) = slot {
            if matches!(slot, TxnSlot::Pending(p) if p.key == key) {
                let placeholder = TxnSlot::Marker { expires: 0 };
                if let TxnSlot::Pending(p) = std::mem::replace(slot, placeholder) {
                    let PendingTxn {
                        kind,
                        pan,
                        amount,
                        currency,
                        order,
                        queued: q,
                        ..
                    } = *p;
                    queued = q;
                    *slot = TxnSlot::Record(TxnRecord {
                        kind,
                        pan: Some(pan),
                        currency,
                        amount,
                        state: if approved {
                            TxnState::Approved { day }
                        } else {
                            TxnState::Declined
                        },
                        order: if approved { order.map(Box::new) } else { None },
                        since: now.unix_secs(),
                    });
                }
            }
        }
        let (approval_code, durable) = match approval {
            Some(a) => (Some(a), committed),
            None if approved => (Some(self.next_approval_code()), false),
            None => (None, committed),
        };
        let response = Response {
            mti: key.mti.response(),
            code,
            approval_code,
            additional_amounts: None,
        };
        self.finish(now, key, response, durable, out);
        for (token, req) in queued {
            self.on_request(now, token, req, out);
        }
    }

    /// Completion advice (0220): decided here against the hold's record, applied at A.
    fn start_completion(
        &mut self,
        now: Now,
        token: u64,
        req: Request,
        key: IdemKey,
        fp: Fingerprint,
        out: &mut Vec<Output>,
    ) {
        let txn = req.target_txn();
        self.forget_if_expired(&txn, now);
        // A completion completes a hold: the 0100 under this identity.
        let hold = self
            .txns
            .get_mut(&txn)
            .and_then(|s| s.half_mut(PayKind::Hold));
        let decision = match hold {
            Some(TxnSlot::Pending(p)) => {
                p.queued.push((token, req));
                return;
            }
            Some(TxnSlot::Record(rec)) => decide_completion(rec, &req, now),
            // A purchase, a marker, or nothing: no hold.
            _ => Err(ResponseCode::UnableToLocate),
        };
        match decision {
            Err(code) => self.answer(now, token, key, fp, code, out),
            Ok((pan, effect)) => {
                let response = Response::plain(key.mti.response(), ResponseCode::Approved);
                self.apply_then_answer(token, key, fp, response, pan, effect, None, txn, out);
            }
        }
    }

    /// Reversal (0400/0420): decided here against the original's record (exactly once),
    /// applied at A, the order reopened at O.
    fn start_reversal(
        &mut self,
        now: Now,
        token: u64,
        req: Request,
        key: IdemKey,
        fp: Fingerprint,
        out: &mut Vec<Output>,
    ) {
        let txn = req.target_txn();
        self.forget_if_expired(&txn, now);
        let (original, paired) = match self.txns.get_mut(&txn) {
            Some(TxnSlot::Both(halves)) => {
                let half = reversed_kind(halves, &req).half();
                (Some(&mut halves[half]), true)
            }
            slot => (slot, false),
        };
        let decision = match original {
            Some(TxnSlot::Pending(p)) => {
                p.queued.push((token, req));
                return;
            }
            Some(TxnSlot::Record(rec)) => decide_reversal(rec, &req, now),
            // A half is never a pair.
            Some(TxnSlot::Both(_)) => Err(ResponseCode::UnableToLocate),
            // A half that is a marker still waits for its late original.
            Some(TxnSlot::Marker { .. }) if paired => Err(ResponseCode::UnableToLocate),
            None | Some(TxnSlot::Marker { .. }) => {
                // Unknown original: remember it for the window so that the original, arriving
                // late, is declined 05 rather than approved.
                let expires = self.window_end(now);
                self.txns.insert(txn, TxnSlot::Marker { expires });
                Err(ResponseCode::UnableToLocate)
            }
        };
        match decision {
            Err(code) => self.answer(now, token, key, fp, code, out),
            Ok(None) => self.answer(now, token, key, fp, ResponseCode::Approved, out),
            Ok(Some((pan, effect, order))) => {
                let response = Response::plain(key.mti.response(), ResponseCode::Approved);
                self.apply_then_answer(token, key, fp, response, pan, effect, order, txn, out);
            }
        }
    }

    /// Sends a decided effect to A (and the order release to O) and answers when they
    /// acknowledge, so a reply never precedes the change it reports.
    #[allow(clippy::too_many_arguments)]
    fn apply_then_answer(
        &mut self,
        token: u64,
        key: IdemKey,
        fp: Fingerprint,
        response: Response,
        pan: Pan,
        effect: Effect,
        order: Option<OrderKey>,
        txn: TxnId,
        out: &mut Vec<Output>,
    ) {
        let awaiting = 1 + u8::from(order.is_some());
        let pending = PendingReply {
            fp,
            waiters: smallvec::smallvec![token],
            awaiting,
            response: Some(response),
        };
        self.idem.insert(key, IdemEntry::Pending(Box::new(pending)));
        let a = self.pan_shard(&pan);
        self.send(
            a,
            Msg::Apply {
                home: self.id,
                key,
                pan,
                effect,
            },
            out,
        );
        if let Some(order) = order {
            let o = order.shard(self.shard_count);
            let msg = Msg::Release {
                order: Box::new(order),
                by: txn,
                ack: Some((self.id, key)),
            };
            self.send(o, msg, out);
        }
    }

    /// An acknowledgement of an `Apply` or `Release`.
    pub(super) fn on_applied(&mut self, now: Now, key: IdemKey, out: &mut Vec<Output>) {
        let ready = match self.idem.get_mut(&key) {
            Some(IdemEntry::Pending(p)) => {
                p.awaiting = p.awaiting.saturating_sub(1);
                if p.awaiting == 0 {
                    p.response.take()
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(response) = ready {
            self.finish(now, key, response, false, out);
        }
    }
}

/// The record of an original declined at its home shard (05 or 14).
fn declined_record(now: Now, kind: PayKind, req: &Request) -> TxnRecord {
    TxnRecord {
        kind,
        pan: req.pan,
        currency: req.currency,
        amount: minor_units(req.amount),
        state: TxnState::Declined,
        order: None,
        since: now.unix_secs(),
    }
}

/// Which of two halves under one identity a reversal undoes: the one DE 90's original MTI
/// names (0100 or a 0220 completing it: the hold; 0200: the purchase); without DE 90 (or
/// with another MTI there), the original whose PAN is the reversal's, the purchase if both
/// are, never a marker if there is an original.
fn reversed_kind(halves: &[TxnSlot; 2], req: &Request) -> PayKind {
    let named = req.original.map(|o| o.mti.base().value());
    match named {
        Some(100 | 220) => PayKind::Hold,
        Some(200) => PayKind::Purchase,
        _ => {
            let pan_of = |h: &TxnSlot| match h {
                TxnSlot::Pending(p) => Some(p.pan),
                TxnSlot::Record(r) => r.pan,
                _ => None,
            };
            let hold = pan_of(&halves[0]);
            let purchase = pan_of(&halves[1]);
            let hold_is_it = hold.is_some() && (hold == req.pan || purchase.is_none());
            if hold_is_it && !(purchase.is_some() && purchase == req.pan) {
                PayKind::Hold
            } else {
                PayKind::Purchase
            }
        }
    }
}

/// PROTOCOL.md 2, 0220 and Details: the hold must exist, be approved and not reversed (else
/// 25), carry the same PAN (25); the amount must be positive and at most the hold (13); a
/// hold completes once (94). The currency must be the hold's (57, an addition of ours: a
/// completion in another currency would debit the wrong amount). Card status, expiry and
/// funds are not checked again. On approval the record becomes `Completed`.
fn decide_completion(
    rec: &mut TxnRecord,
    req: &Request,
    now: Now,
) -> Result<(Pan, Effect), ResponseCode> {
    if rec.kind != PayKind::Hold {
        return Err(ResponseCode::UnableToLocate);
    }
    let hold_day = match rec.state {
        TxnState::Declined | TxnState::Reversed => return Err(ResponseCode::UnableToLocate),
        TxnState::Approved { day } => Some(day),
        TxnState::Completed { .. } => None,
    };
    let Some(pan) = rec.pan.filter(|p| req.pan == Some(*p)) else {
        return Err(ResponseCode::UnableToLocate);
    };
    if req.currency != rec.currency {
        return Err(ResponseCode::NotPermitted);
    }
    let amount = minor_units(req.amount);
    if amount <= 0 || amount > rec.amount {
        return Err(ResponseCode::InvalidAmount);
    }
    let Some(hold_day) = hold_day else {
        return Err(ResponseCode::Duplicate);
    };
    let day = now.utc_day();
    rec.state = TxnState::Completed { amount, day };
    rec.since = now.unix_secs();
    Ok((
        pan,
        Effect::Complete {
            held: rec.amount,
            hold_day,
            amount,
            day,
        },
    ))
}

/// PROTOCOL.md 2, Reversals: the PAN must be the original's (25); a declined or already
/// reversed original answers 00 with no change (`Ok(None)`); an approved one is undone once:
/// an open hold released, a purchase credited, a completed hold credited its completed
/// amount. DE 4 is not compared (whole reversals only).
fn decide_reversal(
    rec: &mut TxnRecord,
    req: &Request,
    now: Now,
) -> Result<Option<(Pan, Effect, Option<OrderKey>)>, ResponseCode> {
    let Some(pan) = rec.pan.filter(|p| req.pan == Some(*p)) else {
        return Err(ResponseCode::UnableToLocate);
    };
    let effect = match (rec.state, rec.kind) {
        (TxnState::Declined | TxnState::Reversed, _) => return Ok(None),
        (TxnState::Approved { day }, PayKind::Hold) => Effect::ReleaseHold {
            amount: rec.amount,
            day,
        },
        (TxnState::Approved { day }, PayKind::Purchase) => Effect::Credit {
            amount: rec.amount,
            day,
        },
        (TxnState::Completed { amount, day }, _) => Effect::Credit { amount, day },
    };
    rec.state = TxnState::Reversed;
    rec.since = now.unix_secs();
    Ok(Some((pan, effect, rec.order.take().map(|o| *o))))
}
