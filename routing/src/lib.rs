//! Authorization decisions for the ISO 8583 switch: plain data in, decisions out.
//!
//! This crate contains no networking code, no threads, no clock and no locks. The `switch`
//! crate decodes messages (answering format errors, 30, itself), builds a typed
//! [`Request`], hands it to a [`Shard`] together with the current time ([`Now`]), and sends
//! back the [`Response`] that comes out; time is always an argument, so every rule of
//! PROTOCOL.md section 2 is testable without a socket (see the `sim` module, behind the
//! `sim` feature).
//!
//! # Shards: K, A and O
//!
//! State is partitioned over N shards by a stable hash ([`placement`]); each shard thread
//! owns one [`Shard`], the single writer of its partition of three kinds of state:
//!
//! - **K, transactions** ([`placement::shard_for_transaction`] of DE 41, 11, 7): idempotency
//!   records, hold and purchase records, late-original markers. A request is always
//!   delivered first to its K, [`Request::home_shard`]: for 0100/0200/08xx its own
//!   (41, 11, 7); for 0220 and 0400/0420 (and repeats) the original's (41 + DE 90's STAN and
//!   date-time, or its own 41 + 11 + 7 without DE 90). So an original, its reversal and its
//!   completion meet on one shard, and the marker a reversal leaves for an unknown original
//!   sits where the original will arrive. Idempotency keys (MTI without repeat digit, 41,
//!   11, 7) are stored on that K too.
//! - **A, accounts** ([`placement::shard_for_pan`]): balance, open holds, the day's debits.
//! - **O, orders** ([`placement::shard_for_order`] of DE 42, DE 48): open, paid (with the
//!   payment holding it) or cancelled.
//!
//! # Cross-shard protocol
//!
//! Steps on other shards are messages ([`PeerMsg`]) the caller carries between shard
//! threads ([`Output::ToShard`] -> [`Shard::handle_peer`]); a message a shard addresses to
//! itself is handled inside the same call by the same code, so K == A == O (and N = 1)
//! runs the identical protocol.
//!
//! - **Hold / purchase**: K checks idempotency, 12, the late-original marker (05) and Luhn
//!   (14), marks the key and the identity pending, and sends `Authorize` to A. A checks the
//!   card (14, BIN table, 41/43/05, 54, 57) and the amount (13). Without DE 48 it goes on to
//!   funds (51) and the daily limit (61); with DE 48 it first sends `Reserve` to O, which
//!   checks the order (25, 13, 94) and, if payable, marks it paid by this payment at once;
//!   A then checks funds and limit, and on a decline sends `Release` to O. A payment A can
//!   already see it will decline for funds or limit sends `CheckOrder` instead: O answers
//!   its checks (`OrderChecked`) and reserves nothing, so the order's 25, 13 or 94 still
//!   come first and the payment never holds the order against another that can pay; if
//!   funds came in meanwhile, A sends `Reserve` after all. A applies the debit or hold and
//!   sends `Decided` to K, which records the transaction, stores the answer under the key
//!   (with a new approval code if approved) and emits the replies.
//! - **Balance inquiry**: K (idempotency only, nothing stored) -> A, which answers directly
//!   with DE 54.
//! - **Completion / reversal**: decided entirely on K against the original's record, which
//!   changes state there at once (exactly-once lives on one shard); K sends `Apply` to A
//!   (and for a reversal of an order payment, `Release` to O) and answers only when they
//!   acknowledge, so a reply never precedes the change it reports.
//! - **Pending keys**: while a decision is in flight, a retransmission with the same content
//!   is parked and answered with the same response when it lands (with other content: 94 at
//!   once, nothing changed); completions and reversals of an original still in flight wait
//!   on its record and run when it is decided.
//! - Two payments of one order: O serializes them; the first reservation wins and the other
//!   answers 94, whichever A decides first. A payment its card cannot make reserves nothing,
//!   so it cannot make a payable one answer 94 and leave the order open (only its funds
//!   changing between A's look and O's answer can still do that).
//!
//! Replies can come from any shard (balance inquiries from A); `token` tells the switch
//! which connection and request.
//!
//! # Durability hooks
//!
//! A shard's state is a pure function of its starting state and its ordered inputs. The
//! switch can therefore make every decision durable by journaling inputs, not effects:
//!
//! - [`Input`] is one input of a shard: `Request { now, token, request }`, `Peer { now,
//!   msg }` (the message carries its sender, [`PeerMsg::from`], and its number among the
//!   messages from that sender to this shard, [`PeerMsg::seq`]), or `Purge { now }`.
//!   [`Input::encode`] / [`Input::decode`] give its compact, versioned binary form
//!   ([`wire`]); decoding refuses anything malformed with a [`WireError`] naming what and
//!   where, never the bytes, and never panics.
//! - [`Shard::apply`] is the single entry point for live traffic and replay alike
//!   ([`Shard::handle_request`], [`Shard::handle_peer`], [`Shard::purge_expired`] behind it).
//! - [`Shard::snapshot`] writes the complete state (accounts, orders, idempotency entries
//!   with parked retransmissions, transaction records with queued completions and
//!   reversals, late-original markers, the approval counter, the peer sequence numbers and
//!   the statistics counters), entries sorted by key, so equal states give identical bytes;
//!   [`Shard::restore`] reads it back, checking shard, placement, order and completeness.
//!
//! Determinism: no output, and no snapshot byte, depends on a hash map's iteration order,
//! the wall clock or randomness. Time is an input (`now` in every [`Input`], the purge
//! included); tokens are inputs; retransmissions parked behind a decision are answered in
//! arrival order, completions and reversals queued behind an original run in arrival order;
//! a purge removes a set that depends only on `now`; snapshots sort their keys;
//! [`Shard::accounts`] lists accounts in PAN order. Messages to other shards are numbered
//! per destination by the sender, from its state, so a replay numbers them the same way.
//!
//! What the switch must do with them:
//!
//! - Journal each input (encoded) before releasing any output it produced: replies, and
//!   messages to other shards. One exception: a reply marked [`Output::Reply`]`{ durable:
//!   true }` (the answer to a hold or purchase decided on another shard, which committed the
//!   decision before sending it, approval code included) may be released before its input is
//!   journaled; after a crash the message is delivered again and gives the same answer.
//!   Replies and messages produced by a replay are discarded, except messages a receiver
//!   never applied: after replaying every shard, deliver again
//!   each replayed `ToShard` message whose [`PeerMsg::seq`] is above the receiver's
//!   [`Shard::received_seq`] of its sender, in sequence order. A receiver ignores a
//!   message it has already taken (counted in `ShardStats::duplicate_peer_messages`), so
//!   re-delivering too much is harmless; a gap in the numbers is counted in
//!   `peer_sequence_gaps` and means a message was lost.
//! - A snapshot of shard S replaces S's journal before it only once every other shard R
//!   has durably journaled what S had sent it by then (R's `received_seq(S)` at least S's
//!   [`Shard::sent_seq`]`(R)` at the snapshot): a replay regenerates only the messages of
//!   the journal it replays.
//! - Tokens in a replayed state (requests in flight at the crash, parked retransmissions)
//!   belong to connections of the previous process: after a restart, tokens must not
//!   repeat earlier ones, and replies to unknown tokens are dropped.
//! - Replay under the settings the journal was written with ([`EngineConfig`]: a BIN table
//!   changed in between would re-decide differently). To change them at a restart, replay
//!   first, then [`Shard::snapshot`] and [`Shard::restore`] with the new settings.
//! - Journal files and snapshots hold PANs in clear (as BCD digits; never track data,
//!   CVV, PIN block or ICC data, which the engine never sees): protect them (mode 0600).
//!
//! # Limitations (v1)
//!
//! - A retransmission whose DE 90 differs from the first transmission's is routed to another
//!   K and is not recognised as a retransmission there.
//! - 0100 and 0200 sharing one (41, 11, 7) are two originals (their keys differ by MTI),
//!   kept side by side under the identity. A completion completes the 0100. A reversal of
//!   the pair undoes the one DE 90's original MTI names (0100, or a 0220 completing it:
//!   the 0100; 0200: the 0200); without DE 90, or with another MTI there, the one with the
//!   reversal's PAN, the 0200 if both have it. A lone original is the one a reversal finds
//!   whatever MTI DE 90 names (PROTOCOL.md finds it by 41, STAN and date-time). A reversal
//!   that came first cannot say which of the two it waited for: both late originals are
//!   declined 05. The two may not both pay orders (the second answers 94 and is recorded
//!   declined): an identity holds one order.
//! - Open holds never expire (a hold's record is kept until it is completed or reversed);
//!   decided records, answered keys and markers are kept for the idempotency window
//!   (default 24 h, [`EngineConfig::idempotency_window_secs`]), then may be purged
//!   ([`Shard::purge_expired`]); a reversal arriving later answers 25.
//! - Completions count towards the daily limit but are not declined by it (the hold they
//!   replace was already checked), and must be in the hold's currency (57).
//! - The daily total tracks the latest UTC day only: a reversal the day after gives nothing
//!   back to the new day.
//! - The journal itself (files, checksums, fsync, group commit) is the switch's: this crate
//!   gives it the values to write and the replay entry point (above, "Durability hooks").
//! - Partial reversals (DE 95) are not supported.
//! - Balance inquiries ignore late-original markers: they cannot be reversed, and change
//!   nothing.
//! - Idempotency, 12 for unsupported requests and 94 for changed content apply to every
//!   stored kind (all but 08xx and balance inquiries): a 12 is remembered like any answer.

// Denied, not forbidden: the one exception is a prefetch hint (engine/split_map.rs).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bins;
pub mod currency;
pub mod data;
pub mod demo;
pub mod engine;
pub mod kind;
pub mod luhn;
pub mod message;
pub mod pan;
pub mod placement;
mod rng;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod time;
pub mod wire;

pub use bins::{BinAction, BinTable};
pub use data::{Account, CardStatus, Order, OrderStatus};
pub use engine::{
    build_shards, split_idem_key, AccountRow, AccountView, BatchKeys, EngineConfig, EntryRow,
    Input, OrderRef, OrderRow, OrderView, Output, PeerMsg, Shard, TxnView,
};
pub use kind::TxnKind;
pub use message::{
    AdditionalAmounts, ApprovalCode, IdemKey, MerchantId, Mti, OriginalData, ProcessingCode,
    Request, Response, ResponseCode, TerminalId, TxnId,
};
pub use pan::Pan;
pub use time::{Now, Yymm};
pub use wire::WireError;
