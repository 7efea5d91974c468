//! The rules of PROTOCOL.md section 2, over TCP against a real switch on loopback, one test per
//! rule or response code. (Every rule is also unit-tested in `routing`; these prove the wire:
//! field extraction, format errors, echoes, response MTIs.)
//!
//! Each test runs twice: `embedded::` on the default store, and `postgres::` on the scale-out
//! store (a fresh database per test; skipped with a message when no PostgreSQL answers, see
//! `tests::pg`), so that every rule holds on both, including the store's reads of holds,
//! reversal targets and the orders they reopen.

use tests::pg::TestDatabase;
use tests::{luhn_pan, Client, Req, TestSwitch};

/// Which store a test runs on.
enum Store {
    Embedded,
    Postgres(String),
}

/// Generates `embedded::NAME` and `postgres::NAME` for each `async fn NAME(store: Store)`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Store::Embedded).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let test = concat!("switch_rules::postgres::", stringify!($name));
                    if let Some(url) = tests::pg::pg_test_url(test) {
                        super::$name(super::Store::Postgres(url)).await
                    }
                }
            )*
        }
    };
}

on_both_stores!(
    approved_purchase_echoes_fields_and_carries_approval_code,
    replay_returns_the_original_answer_and_applies_once,
    card_status_expiry_currency_and_amount_codes,
    daily_limit_counts_approved_debits_up_to_equality,
    format_errors_answer_30_with_stan_echoed,
    network_management_and_unsupported_mti,
    reversal_undoes_once_and_late_original_is_declined,
    holds_complete_once_within_the_held_amount,
    orders_are_paid_once_and_reopened_by_reversal,
    balance_inquiry_in_a_zero_exponent_currency,
    a_hold_and_a_purchase_may_share_41_11_7,
);

struct Cards {
    active: String,
    blocked: String,
    lost: String,
    stolen: String,
    expired: String,
    yen: String,
    poor: String,
}

fn cards() -> Cards {
    Cards {
        active: luhn_pan("411111000000001"),
        blocked: luhn_pan("411111000000002"),
        lost: luhn_pan("411111000000003"),
        stolen: luhn_pan("411111000000004"),
        expired: luhn_pan("411111000000005"),
        yen: luhn_pan("511111000000006"),
        poor: luhn_pan("511111000000007"),
    }
}

const MERCHANT: &str = "MERCHANT0000001";

async fn switch(store: &Store) -> (TestSwitch, Cards, Option<TestDatabase>) {
    let c = cards();
    let accounts = format!(
        "pan,expiry,status,currency,balance,daily_limit\n\
         {},3012,active,840,1000.00,500.00\n\
         {},3012,blocked,840,1000.00,500.00\n\
         {},3012,lost,840,1000.00,500.00\n\
         {},3012,stolen,840,1000.00,500.00\n\
         {},2001,active,840,1000.00,500.00\n\
         {},3012,active,392,100000,50000\n\
         {},3012,active,840,5.00,500.00\n",
        c.active, c.blocked, c.lost, c.stolen, c.expired, c.yen, c.poor
    );
    let orders = format!(
        "order_id,merchant_id,amount,currency,status\n\
         ORD-1,{MERCHANT},25.00,840,open\n\
         ORD-2,{MERCHANT},30.00,840,open\n\
         ORD-PAID,{MERCHANT},10.00,840,paid\n\
         ORD-CANC,{MERCHANT},10.00,840,cancelled\n"
    );
    match store {
        Store::Embedded => (TestSwitch::start(&accounts, &orders).await, c, None),
        Store::Postgres(url) => {
            let (sw, db) = tests::pg::start_switch(url, &accounts, &orders).await;
            (sw, c, Some(db))
        }
    }
}

fn purchase(pan: &str, amount: u64, stan: u32) -> Req {
    Req::financial(pan, "000000", amount, stan)
}

async fn balance(client: &mut Client, pan: &str, stan: u32) -> String {
    let r = client
        .call(
            "0100",
            &Req::financial(pan, "310000", 0, stan).without(4).list(),
        )
        .await;
    assert_eq!(r.code(), "00", "balance inquiry");
    r.get(54).expect("DE 54").to_owned()
}

async fn approved_purchase_echoes_fields_and_carries_approval_code(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let req = purchase(&c.active, 1250, 1)
        .set(37, "511514000101")
        .set(42, MERCHANT);
    let r = client.call("0200", &req.list()).await;
    assert_eq!(r.mti, "0210");
    assert_eq!(r.code(), "00");
    for n in [2, 3, 4, 7, 11, 37, 41, 42, 49] {
        assert_eq!(
            r.get(n),
            req.fields.get(&n).map(String::as_str),
            "DE {n} echoed"
        );
    }
    let approval = r.get(38).expect("DE 38 on approval");
    assert_eq!(approval.len(), 6);
    assert_eq!(
        balance(&mut client, &c.active, 2).await,
        "0002840C000000098750"
    );
}

async fn replay_returns_the_original_answer_and_applies_once(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let req = purchase(&c.active, 10_000, 7);
    let first = client.call("0200", &req.list()).await;
    let again = client.call("0200", &req.list()).await;
    let repeat = client.call("0201", &req.list()).await;
    assert_eq!(first.code(), "00");
    assert_eq!((again.code(), again.get(38)), (first.code(), first.get(38)));
    assert_eq!(repeat.mti, "0210");
    assert_eq!(
        (repeat.code(), repeat.get(38)),
        (first.code(), first.get(38))
    );
    assert_eq!(
        balance(&mut client, &c.active, 8).await,
        "0002840C000000090000"
    );
    // Same key, other amount: 94 and nothing changes.
    let changed = client.call("0200", &purchase(&c.active, 1, 7).list()).await;
    assert_eq!(changed.code(), "94");
    assert_eq!(
        balance(&mut client, &c.active, 9).await,
        "0002840C000000090000"
    );
}

async fn card_status_expiry_currency_and_amount_codes(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let cases = [
        (purchase(&luhn_pan("499999000000009"), 100, 1), "14"),
        (purchase("4111110000000019", 100, 2), "14"), // Luhn fails
        (purchase(&c.lost, 100, 3), "41"),
        (purchase(&c.stolen, 100, 4), "43"),
        (purchase(&c.blocked, 100, 5), "05"),
        (purchase(&c.expired, 100, 6), "54"),
        (purchase(&c.active, 100, 7).set(14, "2501"), "54"), // DE 14 differs from the card's
        (purchase(&c.active, 100, 8).set(49, "978"), "57"),
        (purchase(&c.active, 0, 9), "13"),
        (purchase(&c.poor, 501, 10), "51"),
        (purchase(&c.active, 50_001, 11), "61"),
        (purchase(&c.active, 100, 12).set(3, "200000"), "12"), // refund: unsupported
    ];
    for (req, want) in cases {
        let r = client.call("0200", &req.list()).await;
        assert_eq!(r.code(), want, "{:?}", req.fields.get(&11));
        assert!(r.get(38).is_none(), "no approval code on a decline");
    }
    let ok = client
        .call("0200", &purchase(&c.active, 100, 13).set(14, "3012").list())
        .await;
    assert_eq!(ok.code(), "00", "DE 14 equal to the card's expiry");
    let yen = client
        .call("0200", &purchase(&c.yen, 500, 14).set(49, "392").list())
        .await;
    assert_eq!(yen.code(), "00");
}

async fn daily_limit_counts_approved_debits_up_to_equality(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    assert_eq!(
        client
            .call("0200", &purchase(&c.active, 30_000, 1).list())
            .await
            .code(),
        "00"
    );
    assert_eq!(
        client
            .call("0200", &purchase(&c.active, 20_000, 2).list())
            .await
            .code(),
        "00"
    );
    assert_eq!(
        client
            .call("0200", &purchase(&c.active, 1, 3).list())
            .await
            .code(),
        "61"
    );
}

async fn format_errors_answer_30_with_stan_echoed(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let r = client
        .call("0200", &purchase(&c.active, 100, 42).without(41).list())
        .await;
    assert_eq!(
        (r.mti.as_str(), r.code(), r.get(11)),
        ("0210", "30", Some("000042"))
    );
    // Letters in DE 4 (length known): decoding goes on, 11 is echoed.
    let mut body = bytes::BytesMut::new();
    let spec = codec::builtin("iso87-binary").expect("spec");
    let mut b = codec::MessageBuilder::new(spec, codec::Mti::parse("0200").expect("mti"));
    // The builder refuses letters in an n field: write valid digits, then patch them.
    let req = purchase(&c.active, 9900, 43);
    let list = req.list();
    for (n, v) in &list {
        b.set(*n, v).expect("set");
    }
    b.encode_into(&mut body).expect("encode");
    let pos = body
        .windows(12)
        .position(|w| w == b"000000009900")
        .expect("DE 4");
    body[pos + 8..pos + 10].copy_from_slice(b"AB");
    client.send_raw(&body).await;
    let r = client.recv().await;
    assert_eq!((r.code(), r.get(11)), ("30", Some("000043")));
    assert!(r.get(4).is_none(), "malformed DE 4 is not echoed");
    // A corrected retransmission is processed: 30s are not remembered.
    let r = client
        .call("0200", &purchase(&c.active, 100, 42).list())
        .await;
    assert_eq!(r.code(), "00");
}

async fn network_management_and_unsupported_mti(store: Store) {
    let (sw, _, _db) = switch(&store).await;
    let mut client = sw.client().await;
    for (code, want) in [("001", "00"), ("002", "00"), ("301", "00"), ("999", "12")] {
        let fields = vec![
            (7, "1126104500".to_owned()),
            (11, "000777".to_owned()),
            (70, code.to_owned()),
        ];
        let r = client.call("0800", &fields).await;
        assert_eq!(r.mti, "0810");
        assert_eq!(
            (r.code(), r.get(70), r.get(11)),
            (want, Some(code), Some("000777"))
        );
    }
    // Letters in DE 7 (length known): 30, still a network management answer (11, 41 and 70
    // echoed), the malformed 7 left out.
    let mut body = bytes::BytesMut::new();
    let spec = codec::builtin("iso87-binary").expect("spec");
    let mut b = codec::MessageBuilder::new(spec, codec::Mti::parse("0800").expect("mti"));
    b.set(7, "1126104500")
        .expect("7")
        .set(11, "000778")
        .expect("11");
    b.set(41, "TERM0001")
        .expect("41")
        .set(70, "301")
        .expect("70");
    b.encode_into(&mut body).expect("encode");
    let pos = body
        .windows(10)
        .position(|w| w == b"1126104500")
        .expect("DE 7");
    body[pos + 2] = b'Z';
    client.send_raw(&body).await;
    let r = client.recv().await;
    assert_eq!(r.mti, "0810");
    assert_eq!(
        (r.code(), r.get(11), r.get(41), r.get(70)),
        ("30", Some("000778"), Some("TERM0001"), Some("301"))
    );
    assert!(r.get(7).is_none(), "malformed DE 7 is not echoed");
    let r = client
        .call(
            "0300",
            &[(7, "1126104500".to_owned()), (11, "000001".to_owned())],
        )
        .await;
    assert_eq!((r.mti.as_str(), r.code()), ("0310", "12"));
}

async fn reversal_undoes_once_and_late_original_is_declined(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let original = purchase(&c.active, 5000, 100);
    assert_eq!(client.call("0200", &original.list()).await.code(), "00");
    let reversal = purchase(&c.active, 5000, 101).set(90, &original.field90("0200"));
    let r = client.call("0400", &reversal.list()).await;
    assert_eq!((r.mti.as_str(), r.code()), ("0410", "00"));
    assert_eq!(
        balance(&mut client, &c.active, 102).await,
        "0002840C000000100000"
    );
    // A second reversal (new key) changes nothing and answers 00.
    let second = purchase(&c.active, 5000, 103).set(90, &original.field90("0200"));
    assert_eq!(client.call("0420", &second.list()).await.code(), "00");
    assert_eq!(
        balance(&mut client, &c.active, 104).await,
        "0002840C000000100000"
    );
    // Reversal of an unknown original: 25, and the original arriving late is declined 05.
    let late = purchase(&c.active, 700, 200);
    let early = purchase(&c.active, 700, 201).set(90, &late.field90("0200"));
    assert_eq!(client.call("0400", &early.list()).await.code(), "25");
    assert_eq!(client.call("0200", &late.list()).await.code(), "05");
    // The PAN must be the original's.
    let other = purchase(&c.active, 100, 300);
    assert_eq!(client.call("0200", &other.list()).await.code(), "00");
    let wrong_pan = purchase(&c.poor, 100, 301).set(90, &other.field90("0200"));
    assert_eq!(client.call("0400", &wrong_pan.list()).await.code(), "25");
}

async fn a_hold_and_a_purchase_may_share_41_11_7(store: Store) {
    // The key is (MTI, 41, 11, 7): a 0100 and a 0200 with the same 41, 11 and 7 are two
    // requests, each decided, answered, replayed and reversed on its own.
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let hold = purchase(&c.active, 20_000, 7);
    let sale = purchase(&c.active, 5_000, 7);
    let h = client.call("0100", &hold.list()).await;
    let p = client.call("0200", &sale.list()).await;
    assert_eq!((h.code(), p.code()), ("00", "00"));
    assert_eq!(
        balance(&mut client, &c.active, 8).await,
        "0002840C000000075000"
    );
    // A balance inquiry with the hold's key (0100, 41, 11, 7) is that key with other
    // content: 94, on either store.
    let inquiry = Req::financial(&c.active, "310000", 0, 7).without(4);
    assert_eq!(client.call("0100", &inquiry.list()).await.code(), "94");
    // Retransmissions replay each its own answer.
    assert_eq!(client.call("0100", &hold.list()).await.get(38), h.get(38));
    assert_eq!(client.call("0200", &sale.list()).await.get(38), p.get(38));
    // DE 90 names which one a reversal undoes.
    let reversal = purchase(&c.active, 5_000, 9).set(90, &sale.field90("0200"));
    assert_eq!(client.call("0400", &reversal.list()).await.code(), "00");
    assert_eq!(
        balance(&mut client, &c.active, 10).await,
        "0002840C000000080000"
    );
    let complete = purchase(&c.active, 15_000, 11).set(90, &hold.field90("0100"));
    assert_eq!(client.call("0220", &complete.list()).await.code(), "00");
    assert_eq!(
        balance(&mut client, &c.active, 12).await,
        "0002840C000000085000"
    );
}

async fn holds_complete_once_within_the_held_amount(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let hold = purchase(&c.active, 10_000, 1);
    let r = client.call("0100", &hold.list()).await;
    assert_eq!((r.mti.as_str(), r.code()), ("0110", "00"));
    assert!(r.get(38).is_some(), "approved hold carries DE 38");
    // Available balance excludes the hold.
    assert_eq!(
        balance(&mut client, &c.active, 2).await,
        "0002840C000000090000"
    );
    let too_much = purchase(&c.active, 10_001, 3).set(90, &hold.field90("0100"));
    assert_eq!(client.call("0220", &too_much.list()).await.code(), "13");
    let complete = purchase(&c.active, 8_000, 4).set(90, &hold.field90("0100"));
    let r = client.call("0220", &complete.list()).await;
    assert_eq!((r.mti.as_str(), r.code()), ("0230", "00"));
    assert_eq!(
        balance(&mut client, &c.active, 5).await,
        "0002840C000000092000"
    );
    let again = purchase(&c.active, 8_000, 6).set(90, &hold.field90("0100"));
    assert_eq!(client.call("0220", &again.list()).await.code(), "94");
    let unknown = purchase(&c.active, 1, 7).set(90, &purchase(&c.active, 1, 999).field90("0100"));
    assert_eq!(client.call("0220", &unknown.list()).await.code(), "25");
}

async fn orders_are_paid_once_and_reopened_by_reversal(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let pay = |amount, stan, order: &str| {
        purchase(&c.active, amount, stan)
            .set(42, MERCHANT)
            .set(48, order)
    };
    assert_eq!(
        client
            .call("0200", &pay(2500, 1, "NOPE").list())
            .await
            .code(),
        "25"
    );
    assert_eq!(
        client
            .call("0200", &pay(1000, 2, "ORD-CANC").list())
            .await
            .code(),
        "25"
    );
    assert_eq!(
        client
            .call("0200", &pay(2499, 3, "ORD-1").list())
            .await
            .code(),
        "13"
    );
    assert_eq!(
        client
            .call("0200", &pay(1000, 4, "ORD-PAID").list())
            .await
            .code(),
        "94"
    );
    let paid = pay(2500, 5, "ORD-1");
    assert_eq!(client.call("0200", &paid.list()).await.code(), "00");
    assert_eq!(
        client
            .call("0200", &pay(2500, 6, "ORD-1").list())
            .await
            .code(),
        "94"
    );
    let reversal = purchase(&c.active, 2500, 7).set(90, &paid.field90("0200"));
    assert_eq!(client.call("0400", &reversal.list()).await.code(), "00");
    assert_eq!(
        client
            .call("0200", &pay(2500, 8, "ORD-1").list())
            .await
            .code(),
        "00"
    );
}

async fn balance_inquiry_in_a_zero_exponent_currency(store: Store) {
    let (sw, c, _db) = switch(&store).await;
    let mut client = sw.client().await;
    let r = client
        .call(
            "0100",
            &Req::financial(&c.yen, "311000", 0, 1)
                .set(49, "392")
                .without(4)
                .list(),
        )
        .await;
    assert_eq!(r.code(), "00");
    assert_eq!(r.get(54), Some("1002392C000000100000"));
    assert!(r.get(38).is_none(), "a balance inquiry is not a hold");
}
