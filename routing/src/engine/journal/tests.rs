//! Round trips of every input, message and output variant over generated values, and
//! decoding of corrupted or arbitrary bytes (an error, never a panic; and whatever decodes
//! re-encodes to exactly the same bytes, so the format has one encoding per value).

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::super::{AuthCtx, AuthKind, Effect, Msg, OrderKey};
use super::Input;
use crate::engine::{EngineConfig, Output, PeerMsg, Shard};
use crate::message::{
    AdditionalAmounts, ApprovalCode, IdemKey, MerchantId, Mti, OriginalData, ProcessingCode,
    Request, Response, ResponseCode, TerminalId, TxnId,
};
use crate::pan::Pan;
use crate::time::{Now, Yymm};
use crate::wire::{WireError, WIRE_VERSION};

// ===== generators =====

fn pan() -> impl Strategy<Value = Pan> {
    prop::collection::vec(b'0'..=b'9', 0..=19).prop_map(|d| Pan::from_trusted_digits(&d))
}

fn terminal() -> impl Strategy<Value = TerminalId> {
    prop::collection::vec(any::<u8>(), 0..=8).prop_map(|b| TerminalId::new(&b).unwrap())
}

fn merchant() -> impl Strategy<Value = MerchantId> {
    prop::collection::vec(any::<u8>(), 0..=15).prop_map(|b| MerchantId::new(&b).unwrap())
}

fn mti() -> impl Strategy<Value = Mti> {
    (0u16..=9999).prop_map(|v| Mti::new(v).unwrap())
}

fn now() -> impl Strategy<Value = Now> {
    prop_oneof![
        any::<i64>(),
        1_700_000_000i64..1_900_000_000,
        Just(i64::MIN),
        Just(0)
    ]
    .prop_map(Now::from_unix_secs)
}

fn processing_code() -> impl Strategy<Value = ProcessingCode> {
    "[0-9]{6}".prop_map(|s| ProcessingCode::from_digits(s.as_bytes()).unwrap())
}

fn yymm() -> impl Strategy<Value = Yymm> {
    (0u8..=99, 1u8..=12).prop_map(|(y, m)| Yymm::new(y, m).unwrap())
}

fn original() -> impl Strategy<Value = OriginalData> {
    (mti(), any::<u32>(), any::<u64>()).prop_map(|(mti, stan, transmission)| OriginalData {
        mti,
        stan,
        transmission,
    })
}

fn request() -> BoxedStrategy<Request> {
    (
        (mti(), any::<u32>(), any::<u64>(), terminal()),
        (
            prop::option::of(processing_code()),
            prop::option::of(pan()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u16>()),
            prop::option::of(yymm()),
        ),
        (
            prop::option::of(merchant()),
            prop::option::of(any::<String>()),
            prop::option::of(original()),
            prop::option::of(any::<u16>()),
        ),
    )
        .prop_map(
            |(
                (mti, stan, transmission, terminal),
                (processing_code, pan, amount, currency, expiry),
                (merchant, order_ref, original, network_code),
            )| Request {
                mti,
                processing_code,
                pan,
                amount,
                currency,
                stan,
                transmission,
                terminal,
                expiry,
                merchant,
                order_ref,
                original,
                network_code,
            },
        )
        .boxed()
}

fn code() -> impl Strategy<Value = ResponseCode> {
    prop::sample::select(ResponseCode::ALL.to_vec())
}

fn response() -> BoxedStrategy<Response> {
    (
        mti(),
        code(),
        prop::option::of(any::<u64>().prop_map(ApprovalCode::from_number)),
        prop::option::of(
            ("[0-9]{2}", any::<u16>(), any::<i64>()).prop_map(|(t, c, a)| {
                let t: [u8; 2] = t.as_bytes().try_into().unwrap();
                AdditionalAmounts::available(t, c, a)
            }),
        ),
    )
        .prop_map(|(mti, code, approval_code, additional_amounts)| Response {
            mti,
            code,
            approval_code,
            additional_amounts,
        })
        .boxed()
}

fn txn() -> BoxedStrategy<TxnId> {
    (terminal(), any::<u32>(), any::<u64>())
        .prop_map(|(terminal, stan, transmission)| TxnId {
            terminal,
            stan,
            transmission,
        })
        .boxed()
}

fn key() -> BoxedStrategy<IdemKey> {
    (mti(), terminal(), any::<u32>(), any::<u64>())
        .prop_map(|(mti, terminal, stan, transmission)| IdemKey {
            mti,
            terminal,
            stan,
            transmission,
        })
        .boxed()
}

fn order_key() -> BoxedStrategy<OrderKey> {
    (merchant(), any::<String>())
        .prop_map(|(merchant, order_id)| OrderKey { merchant, order_id })
        .boxed()
}

fn auth_ctx() -> BoxedStrategy<AuthCtx> {
    (
        (any::<usize>(), any::<u64>(), key(), txn()),
        (
            prop::sample::select(vec![AuthKind::Inquiry, AuthKind::Hold, AuthKind::Purchase]),
            pan(),
            any::<i64>(),
            prop::option::of(any::<u16>()),
            prop::option::of(yymm()),
            "[0-9]{2}",
            prop::option::of(order_key()),
        ),
    )
        .prop_map(
            |((home, token, key, txn), (kind, pan, amount, currency, expiry, at, order))| AuthCtx {
                home,
                token,
                key,
                txn,
                kind,
                pan,
                amount,
                currency,
                expiry,
                account_type: at.as_bytes().try_into().unwrap(),
                order,
            },
        )
        .boxed()
}

fn effect() -> BoxedStrategy<Effect> {
    prop_oneof![
        (any::<i64>(), any::<i64>()).prop_map(|(amount, day)| Effect::ReleaseHold { amount, day }),
        (any::<i64>(), any::<i64>()).prop_map(|(amount, day)| Effect::Credit { amount, day }),
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
            |(held, hold_day, amount, day)| Effect::Complete {
                held,
                hold_day,
                amount,
                day
            }
        ),
    ]
    .boxed()
}

fn msg() -> BoxedStrategy<Msg> {
    prop_oneof![
        (any::<u64>(), request()).prop_map(|(token, r)| Msg::Forward {
            token,
            req: Box::new(r)
        }),
        auth_ctx().prop_map(|c| Msg::Authorize(Box::new(c))),
        auth_ctx().prop_map(|c| Msg::Reserve(Box::new(c))),
        (auth_ctx(), prop::option::of(code())).prop_map(|(c, e)| Msg::Reserved {
            ctx: Box::new(c),
            result: e.map_or(Ok(()), Err),
        }),
        auth_ctx().prop_map(|c| Msg::CheckOrder(Box::new(c))),
        (auth_ctx(), prop::option::of(code())).prop_map(|(c, e)| Msg::OrderChecked {
            ctx: Box::new(c),
            result: e.map_or(Ok(()), Err),
        }),
        (
            key(),
            txn(),
            code(),
            any::<i64>(),
            prop::option::of(any::<u64>().prop_map(ApprovalCode::from_number))
        )
            .prop_map(|(key, txn, code, day, approval)| Msg::Decided {
                key,
                txn,
                code,
                day,
                approval
            }),
        (any::<usize>(), key(), pan(), effect()).prop_map(|(home, key, pan, effect)| {
            Msg::Apply {
                home,
                key,
                pan,
                effect,
            }
        }),
        (
            order_key(),
            txn(),
            prop::option::of((any::<usize>(), key()))
        )
            .prop_map(|(o, by, ack)| Msg::Release {
                order: Box::new(o),
                by,
                ack
            }),
        key().prop_map(|key| Msg::Applied { key }),
    ]
    .boxed()
}

fn peer_msg() -> BoxedStrategy<PeerMsg> {
    (any::<usize>(), any::<u64>(), msg())
        .prop_map(|(from, seq, msg)| PeerMsg { from, seq, msg })
        .boxed()
}

fn input() -> BoxedStrategy<Input> {
    prop_oneof![
        (now(), any::<u64>(), request()).prop_map(|(now, token, r)| Input::Request {
            now,
            token,
            request: Box::new(r)
        }),
        (now(), peer_msg()).prop_map(|(now, msg)| Input::Peer { now, msg }),
        now().prop_map(|now| Input::Purge { now }),
    ]
    .boxed()
}

fn output() -> BoxedStrategy<Output> {
    prop_oneof![
        (any::<u64>(), response(), any::<bool>()).prop_map(|(token, response, durable)| {
            Output::Reply {
                token,
                response,
                durable,
            }
        }),
        (any::<usize>(), peer_msg()).prop_map(|(shard, msg)| Output::ToShard { shard, msg }),
    ]
    .boxed()
}

// ===== properties =====

/// `decode(encode(v)) == v`; every strict prefix is refused; a trailing byte is refused.
fn round_trip<T: PartialEq + std::fmt::Debug>(
    v: &T,
    encode: impl Fn(&T, &mut Vec<u8>),
    decode: impl Fn(&[u8]) -> Result<T, WireError>,
) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    encode(v, &mut bytes);
    prop_assert_eq!(bytes[0], WIRE_VERSION);
    prop_assert_eq!(&decode(&bytes)?, v);
    for cut in 0..bytes.len() {
        prop_assert!(decode(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
    }
    bytes.push(0);
    prop_assert!(
        matches!(decode(&bytes), Err(WireError::Trailing { count: 1, .. })),
        "{:?}",
        decode(&bytes)
    );
    Ok(())
}

/// Whatever decodes re-encodes to the very same bytes; anything else is an error.
fn canonical<T>(
    bytes: &[u8],
    encode: impl Fn(&T, &mut Vec<u8>),
    decode: impl Fn(&[u8]) -> Result<T, WireError>,
) -> Result<(), TestCaseError> {
    if let Ok(v) = decode(bytes) {
        let mut again = Vec::new();
        encode(&v, &mut again);
        prop_assert_eq!(again.as_slice(), bytes);
    }
    Ok(())
}

fn all_decoders(bytes: &[u8]) -> Result<(), TestCaseError> {
    canonical(bytes, Input::encode, Input::decode)?;
    canonical(bytes, PeerMsg::encode, PeerMsg::decode)?;
    canonical(bytes, Output::encode, Output::decode)?;
    canonical(bytes, Request::encode, Request::decode)?;
    canonical(bytes, Response::encode, Response::decode)?;
    Ok(())
}

/// A valid encoding with one byte changed, removed or inserted at `at`.
fn mutate(mut bytes: Vec<u8>, how: u8, at: usize, value: u8) -> Vec<u8> {
    let i = at % (bytes.len() + 1);
    match how % 3 {
        0 if i < bytes.len() => bytes[i] ^= value.max(1),
        1 if i < bytes.len() => {
            bytes.remove(i);
        }
        _ => bytes.insert(i, value),
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn inputs_round_trip(v in input()) {
        round_trip(&v, Input::encode, Input::decode)?;
    }

    #[test]
    fn peer_messages_round_trip(v in peer_msg()) {
        round_trip(&v, PeerMsg::encode, PeerMsg::decode)?;
    }

    #[test]
    fn outputs_round_trip(v in output()) {
        round_trip(&v, Output::encode, Output::decode)?;
    }

    #[test]
    fn requests_and_responses_round_trip(r in request(), s in response()) {
        round_trip(&r, Request::encode, Request::decode)?;
        round_trip(&s, Response::encode, Response::decode)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..160),
        versioned in any::<bool>(),
    ) {
        // Mostly past the version byte, so the decoders' bodies see the garbage.
        let mut bytes = Vec::new();
        if versioned {
            bytes.push(WIRE_VERSION);
        }
        bytes.extend_from_slice(&body);
        all_decoders(&bytes)?;
        let _ = Shard::restore(0, 3, EngineConfig::default(), &bytes);
    }

    #[test]
    fn corrupted_encodings_never_panic(
        v in input(),
        o in output(),
        how in any::<u8>(),
        at in any::<usize>(),
        value in any::<u8>(),
    ) {
        for bytes in [
            { let mut b = Vec::new(); v.encode(&mut b); b },
            { let mut b = Vec::new(); o.encode(&mut b); b },
        ] {
            all_decoders(&mutate(bytes, how, at, value))?;
        }
    }
}

#[test]
fn every_msg_variant_is_generated_and_named() {
    // The generator above must cover every variant: the names are what `kind` reports.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let m = peer_msg().new_tree(&mut runner).unwrap().current();
        seen.insert(m.kind());
    }
    let all = [
        "forward",
        "authorize",
        "reserve",
        "reserved",
        "check_order",
        "order_checked",
        "decided",
        "apply",
        "release",
        "applied",
    ];
    assert_eq!(seen, all.into_iter().collect());
}

#[test]
fn errors_name_the_problem() {
    assert!(Input::decode(&[])
        .unwrap_err()
        .to_string()
        .contains("version"));
    assert!(matches!(
        Input::decode(&[9, 2, 0]),
        Err(WireError::Version {
            found: 9,
            supported: WIRE_VERSION
        })
    ));
    assert!(matches!(
        Input::decode(&[WIRE_VERSION, 7, 0]),
        Err(WireError::UnknownTag {
            what: "input",
            offset: 1
        })
    ));
    assert!(matches!(
        Shard::restore(0, 1, EngineConfig::default(), b"nope"),
        Err(WireError::Magic)
    ));
    // A snapshot of shard 0 of 1 restored as shard 1 of 2.
    let mut snap = Vec::new();
    Shard::new(0, 1, EngineConfig::default()).snapshot(&mut snap);
    assert!(matches!(
        Shard::restore(1, 2, EngineConfig::default(), &snap),
        Err(WireError::WrongShard {
            found_id: 0,
            found_count: 1,
            id: 1,
            count: 2
        })
    ));
    assert!(Shard::restore(0, 1, EngineConfig::default(), &snap).is_ok());
}

#[test]
fn a_purge_input_is_small() {
    let mut b = Vec::new();
    Input::Purge {
        now: Now::from_unix_secs(1_749_988_800),
    }
    .encode(&mut b);
    assert!(b.len() <= 8, "{b:?}");
}
