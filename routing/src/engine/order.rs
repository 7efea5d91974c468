//! O, the owner of an order: reservations and releases. A reservation marks the order paid
//! at once, so of two concurrent payments the second to reach O answers 94 whatever A later
//! decides about the first; a declined first payment releases it again. A payment that A
//! already knows it will decline for funds or limit only has the order checked, so that it
//! never holds the order against a payment that can be approved.

use super::{AuthCtx, Msg, OrderKey, Output, Shard};
use crate::data::OrderStatus;
use crate::message::{IdemKey, ResponseCode, TxnId};

impl Shard {
    /// A `Reserve`: the order checks, then the order marked paid by this payment.
    pub(super) fn on_reserve(&mut self, ctx: Box<AuthCtx>, out: &mut Vec<Output>) {
        let result = self.check_order(&ctx, true);
        let a = self.pan_shard(&ctx.pan);
        self.send(a, Msg::Reserved { ctx, result }, out);
    }

    /// A `CheckOrder`: the order checks only.
    pub(super) fn on_check_order(&mut self, ctx: Box<AuthCtx>, out: &mut Vec<Output>) {
        let result = self.check_order(&ctx, false);
        let a = self.pan_shard(&ctx.pan);
        self.send(a, Msg::OrderChecked { ctx, result }, out);
    }

    /// Order checks in PROTOCOL.md order: missing or cancelled 25, amount or currency
    /// different 13, already paid (or reserved) 94; a payable order is marked paid by this
    /// payment when `reserve`.
    fn check_order(&mut self, ctx: &AuthCtx, reserve: bool) -> Result<(), ResponseCode> {
        let order = ctx.order.as_ref().and_then(|k| self.orders.get_mut(k));
        match order {
            None => Err(ResponseCode::UnableToLocate),
            Some(o) if o.status == OrderStatus::Cancelled => Err(ResponseCode::UnableToLocate),
            Some(o) if o.amount != ctx.amount || Some(o.currency) != ctx.currency => {
                Err(ResponseCode::InvalidAmount)
            }
            Some(o) if o.status == OrderStatus::Paid => Err(ResponseCode::Duplicate),
            Some(o) => {
                if reserve {
                    o.status = OrderStatus::Paid;
                    o.paid_by = Some(ctx.txn);
                }
                Ok(())
            }
        }
    }

    /// Reopens the order if payment `by` holds it (a declined reservation, or a reversal).
    pub(super) fn on_release(
        &mut self,
        order: &OrderKey,
        by: TxnId,
        ack: Option<(usize, IdemKey)>,
        out: &mut Vec<Output>,
    ) {
        if let Some(o) = self.orders.get_mut(order) {
            if o.status == OrderStatus::Paid && o.paid_by == Some(by) {
                o.status = OrderStatus::Open;
                o.paid_by = None;
            }
        }
        if let Some((home, key)) = ack {
            self.send(home, Msg::Applied { key }, out);
        }
    }
}
