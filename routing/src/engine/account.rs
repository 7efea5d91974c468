//! A, the owner of an account: card checks, funds, daily limit, and the application of
//! completions and reversals that K decided.

use super::{AccountState, AccountView, AuthCtx, AuthKind, Effect, Msg, Output, Shard};
use crate::bins::BinAction;
use crate::data::CardStatus;
use crate::message::{AdditionalAmounts, IdemKey, Response, ResponseCode};
use crate::pan::Pan;
use crate::time::Now;

impl AccountState {
    fn total_on(&self, day: i64) -> i64 {
        if self.day == day {
            self.day_total
        } else {
            0
        }
    }

    /// Counts an approved debit towards day `day`. Only the latest day is tracked: a debit
    /// dated before it (a message that crossed midnight) no longer matters for any limit.
    fn count(&mut self, day: i64, amount: i64) {
        if day == self.day {
            self.day_total = self.day_total.saturating_add(amount);
        } else if day > self.day {
            self.day = day;
            self.day_total = amount;
        }
    }

    /// Gives back what a reversal or completion undoes, if its day is still the tracked one.
    fn give_back(&mut self, day: i64, amount: i64) {
        if day == self.day {
            self.day_total = self.day_total.saturating_sub(amount).max(0);
        }
    }

    /// Why this card cannot pay `amount` at `now`: funds (51), then the daily limit (61).
    fn shortfall(&self, amount: i64, now: Now) -> Option<ResponseCode> {
        if amount > self.balance - self.held {
            Some(ResponseCode::InsufficientFunds)
        } else if self.total_on(now.utc_day()).saturating_add(amount) > self.daily_limit {
            Some(ResponseCode::ExceedsLimit)
        } else {
            None
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::ReleaseHold { amount, day } => {
                self.held = self.held.saturating_sub(amount).max(0);
                self.give_back(day, amount);
            }
            Effect::Credit { amount, day } => {
                self.balance = self.balance.saturating_add(amount);
                self.give_back(day, amount);
            }
            Effect::Complete {
                held,
                hold_day,
                amount,
                day,
            } => {
                // amount <= held <= self.held <= balance, so neither goes negative.
                self.balance = self.balance.saturating_sub(amount).max(0);
                self.held = self.held.saturating_sub(held).max(0);
                self.give_back(hold_day, held);
                self.count(day, amount);
            }
        }
    }

    pub(super) fn view(&self, today: i64) -> AccountView {
        AccountView {
            status: self.status,
            expiry: self.expiry,
            currency: self.currency,
            balance: self.balance,
            held: self.held,
            available: self.balance - self.held,
            daily_limit: self.daily_limit,
            day_total: self.total_on(today),
        }
    }
}

impl Shard {
    /// Card checks in PROTOCOL.md order: unknown card 14, BIN table, lost 41, stolen 43,
    /// blocked 05, expired 54 (or DE 14 differing from the card's expiry), currency 57.
    fn card_checks(&self, now: Now, ctx: &AuthCtx) -> Result<&AccountState, ResponseCode> {
        let acct = self
            .accounts
            .get(&ctx.pan)
            .ok_or(ResponseCode::InvalidCardNumber)?;
        if let BinAction::Decline(code) = self.config.bins.action(&ctx.pan) {
            return Err(code);
        }
        match acct.status {
            CardStatus::Lost => return Err(ResponseCode::LostCard),
            CardStatus::Stolen => return Err(ResponseCode::StolenCard),
            CardStatus::Blocked => return Err(ResponseCode::DoNotHonour),
            CardStatus::Active => {}
        }
        if acct.expiry.is_expired_at(now) || ctx.expiry.is_some_and(|e| e != acct.expiry) {
            return Err(ResponseCode::ExpiredCard);
        }
        if ctx.currency != Some(acct.currency) {
            return Err(ResponseCode::NotPermitted);
        }
        Ok(acct)
    }

    /// K asks for a decision on a hold, purchase or balance inquiry.
    pub(super) fn on_authorize(&mut self, now: Now, ctx: Box<AuthCtx>, out: &mut Vec<Output>) {
        let acct = match self.card_checks(now, &ctx) {
            Ok(acct) => acct,
            Err(code) => return self.decide(now, &ctx, code, out),
        };
        if ctx.kind == AuthKind::Inquiry {
            // Balance inquiries stop before the amount checks and are not stored: A answers.
            let field = AdditionalAmounts::available(
                ctx.account_type,
                acct.currency,
                acct.balance - acct.held,
            );
            let response = Response {
                mti: ctx.key.mti.response(),
                code: ResponseCode::Approved,
                approval_code: None,
                additional_amounts: Some(field),
            };
            return self.reply(ctx.token, response, out);
        }
        if ctx.amount <= 0 {
            return self.decide(now, &ctx, ResponseCode::InvalidAmount, out);
        }
        if let Some(order) = &ctx.order {
            let o = order.shard(self.shard_count);
            // A payment this card cannot make does not reserve the order: another payment of
            // it may be on its way, and must not get 94 for an order that stays open.
            let msg = match acct.shortfall(ctx.amount, now) {
                Some(_) => Msg::CheckOrder(ctx),
                None => Msg::Reserve(ctx),
            };
            return self.send(o, msg, out);
        }
        self.settle(now, ctx, out);
    }

    /// O's answer to a `CheckOrder`: its 25, 13 or 94, else the funds or limit decline.
    /// Funds may have come in meanwhile (a reversal's credit): then the order is reserved
    /// after all, and the payment goes on as any other.
    pub(super) fn on_order_checked(
        &mut self,
        now: Now,
        mut ctx: Box<AuthCtx>,
        result: Result<(), ResponseCode>,
        out: &mut Vec<Output>,
    ) {
        let code = match result {
            Err(code) => code,
            Ok(()) => match self
                .accounts
                .get(&ctx.pan)
                .and_then(|a| a.shortfall(ctx.amount, now))
            {
                Some(code) => code,
                None => {
                    let o = ctx
                        .order
                        .as_ref()
                        .map_or(self.id, |k| k.shard(self.shard_count));
                    return self.send(o, Msg::Reserve(ctx), out);
                }
            },
        };
        // Nothing was reserved: nothing to release.
        ctx.order = None;
        self.decide(now, &ctx, code, out);
    }

    /// O's answer to a reservation.
    pub(super) fn on_reserved(
        &mut self,
        now: Now,
        mut ctx: Box<AuthCtx>,
        result: Result<(), ResponseCode>,
        out: &mut Vec<Output>,
    ) {
        match result {
            Ok(()) => self.settle(now, ctx, out),
            Err(code) => {
                // Not reserved: nothing to release.
                ctx.order = None;
                self.decide(now, &ctx, code, out);
            }
        }
    }

    /// Funds (51) and daily limit (61), then the debit or hold. A declined payment that had
    /// reserved its order releases it.
    fn settle(&mut self, now: Now, mut ctx: Box<AuthCtx>, out: &mut Vec<Output>) {
        let code = match self.accounts.get_mut(&ctx.pan) {
            None => ResponseCode::InvalidCardNumber,
            Some(acct) => match acct.shortfall(ctx.amount, now) {
                Some(code) => code,
                None => {
                    match ctx.kind {
                        AuthKind::Purchase => acct.balance -= ctx.amount,
                        AuthKind::Hold => acct.held += ctx.amount,
                        AuthKind::Inquiry => {}
                    }
                    acct.count(now.utc_day(), ctx.amount);
                    ResponseCode::Approved
                }
            },
        };
        if !code.is_approved() {
            if let Some(order) = ctx.order.take() {
                let o = order.shard(self.shard_count);
                self.send(
                    o,
                    Msg::Release {
                        order: Box::new(order),
                        by: ctx.txn,
                        ack: None,
                    },
                    out,
                );
            }
        }
        self.decide(now, &ctx, code, out);
    }

    /// Sends the decision home (K), or answers a balance inquiry directly.
    fn decide(&mut self, now: Now, ctx: &AuthCtx, code: ResponseCode, out: &mut Vec<Output>) {
        if ctx.kind == AuthKind::Inquiry {
            let response = Response::plain(ctx.key.mti.response(), code);
            return self.reply(ctx.token, response, out);
        }
        // Numbered here, with the decision, so that K's answer follows from this message
        // alone and may leave before K's own commit (`Output::Reply::durable`).
        let approval = code.is_approved().then(|| self.next_approval_code());
        let msg = Msg::Decided {
            key: ctx.key,
            txn: ctx.txn,
            code,
            day: now.utc_day(),
            approval,
        };
        self.send(ctx.home, msg, out);
    }

    /// Applies a completion or reversal K decided, and acknowledges it.
    pub(super) fn on_apply(
        &mut self,
        home: usize,
        key: IdemKey,
        pan: Pan,
        effect: Effect,
        out: &mut Vec<Output>,
    ) {
        if let Some(acct) = self.accounts.get_mut(&pan) {
            acct.apply(effect);
        }
        self.send(home, Msg::Applied { key }, out);
    }
}
