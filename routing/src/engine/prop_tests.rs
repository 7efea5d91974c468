//! Random sequences of purchases, holds, completions and reversals over a few cards on three
//! shards, with requests submitted in concurrent batches and cross-shard messages delivered
//! in a random order. A model fed with the engine's own answers (in submission order, which
//! is the order the home shard decides completions and reversals in) predicts every
//! completion and reversal answer and the final ledger; the money invariants must hold.

use proptest::prelude::*;

use crate::data::{Account, CardStatus};
use crate::engine::EngineConfig;
use crate::luhn;
use crate::message::{Mti, OriginalData, ProcessingCode, Request, ResponseCode, TerminalId};
use crate::pan::Pan;
use crate::sim::Cluster;
use crate::time::{Now, Yymm};

const NOW: i64 = 1_749_988_800;
const DT: u64 = 615_120_000;
const CARDS: usize = 4;

#[derive(Clone, Copy, Debug)]
enum Op {
    Purchase { card: usize, amount: u64 },
    Hold { card: usize, amount: u64 },
    Complete { target: usize, amount: u64 },
    Reverse { target: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not a hold or purchase, or declined.
    Nothing,
    Approved,
    Completed(i64),
    Reversed,
}

#[derive(Clone, Copy, Debug)]
struct Model {
    /// Card and amount of a hold or purchase; `None` for other ops.
    original: Option<(usize, i64, bool)>, // (card, amount, is_hold)
    state: State,
}

fn card(n: usize) -> Pan {
    let mut d = format!("5{:014}", n + 1).into_bytes();
    d.push(luhn::check_digit(&d).unwrap());
    Pan::from_digits(&d).unwrap()
}

fn initial(n: usize) -> (i64, i64) {
    // (balance, daily limit): tight enough that 51 and 61 happen.
    [
        (10_000, 15_000),
        (10_000, 8_000),
        (5_000, 100_000),
        (20_000, 20_000),
    ][n]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..CARDS, 1u64..4_000).prop_map(|(card, amount)| Op::Purchase { card, amount }),
        (0..CARDS, 1u64..4_000).prop_map(|(card, amount)| Op::Hold { card, amount }),
        (0usize..1_000, 0u64..4_500).prop_map(|(target, amount)| Op::Complete { target, amount }),
        (0usize..1_000).prop_map(|target| Op::Reverse { target }),
    ]
}

fn request(mti: u16, stan: u32, pan: Pan, amount: u64) -> Request {
    let mut r = Request::new(
        Mti::new(mti).unwrap(),
        stan,
        DT,
        TerminalId::new(b"PROPTEST").unwrap(),
    );
    r.processing_code = ProcessingCode::from_digits(b"000000");
    r.pan = Some(pan);
    r.amount = Some(amount);
    r.currency = Some(840);
    r
}

fn run(batches: Vec<Vec<Op>>, seed: u64) -> Result<(), TestCaseError> {
    let accounts: Vec<Account> = (0..CARDS)
        .map(|i| Account {
            pan: card(i),
            expiry: Yymm::from_digits(b"3012").unwrap(),
            status: CardStatus::Active,
            currency: 840,
            balance: initial(i).0,
            daily_limit: initial(i).1,
        })
        .collect();
    let mut c = Cluster::new(
        3,
        &EngineConfig::default(),
        accounts,
        Vec::new(),
        Now::from_unix_secs(NOW),
    )
    .unwrap();
    c.shuffle_deliveries(seed);

    let mut reqs: Vec<Request> = Vec::new();
    let mut ops: Vec<Op> = Vec::new();
    let mut models: Vec<Model> = Vec::new();
    for batch in batches {
        let mut tokens = Vec::new();
        for op in batch {
            let i = ops.len();
            let stan = u32::try_from(i + 1).unwrap();
            // Completions and reversals refer to an earlier op; the first op cannot.
            let op = match op {
                Op::Complete { .. } | Op::Reverse { .. } if i == 0 => {
                    Op::Purchase { card: 0, amount: 1 }
                }
                Op::Complete { target, amount } => Op::Complete {
                    target: target % i,
                    amount,
                },
                Op::Reverse { target } => Op::Reverse { target: target % i },
                other => other,
            };
            let req = match op {
                Op::Purchase { card: n, amount } => request(200, stan, card(n), amount),
                Op::Hold { card: n, amount } => request(100, stan, card(n), amount),
                Op::Complete { target, amount } => referring(220, stan, &reqs[target], amount),
                Op::Reverse { target } => {
                    let amount = reqs[target].amount.unwrap_or(0);
                    referring(400, stan, &reqs[target], amount)
                }
            };
            tokens.push((i, c.submit(req.clone())));
            reqs.push(req);
            ops.push(op);
            models.push(Model {
                original: None,
                state: State::Nothing,
            });
        }
        c.run();
        // Interpret the answers in submission order.
        for (i, token) in tokens {
            let replies = c.take_replies(token);
            prop_assert_eq!(replies.len(), 1);
            let code = replies[0].code;
            match ops[i] {
                Op::Purchase { card, amount } | Op::Hold { card, amount } => {
                    let is_hold = matches!(ops[i], Op::Hold { .. });
                    prop_assert!(
                        matches!(
                            code,
                            ResponseCode::Approved
                                | ResponseCode::InsufficientFunds
                                | ResponseCode::ExceedsLimit
                        ),
                        "op {} {:?} answered {}",
                        i,
                        ops[i],
                        code
                    );
                    models[i].original = Some((card, i64::try_from(amount).unwrap(), is_hold));
                    if code == ResponseCode::Approved {
                        models[i].state = State::Approved;
                    }
                }
                Op::Complete { target, amount } => {
                    let amount = i64::try_from(amount).unwrap();
                    let t = models[target];
                    let expected = match (t.original, t.state) {
                        (Some((_, held, true)), State::Approved | State::Completed(_)) => {
                            if amount == 0 || amount > held {
                                ResponseCode::InvalidAmount
                            } else if t.state == State::Approved {
                                models[target].state = State::Completed(amount);
                                ResponseCode::Approved
                            } else {
                                ResponseCode::Duplicate
                            }
                        }
                        _ => ResponseCode::UnableToLocate,
                    };
                    prop_assert_eq!(code, expected, "op {} {:?}", i, ops[i]);
                }
                Op::Reverse { target } => {
                    let expected = match models[target].original {
                        Some(_) => {
                            if matches!(models[target].state, State::Approved | State::Completed(_))
                            {
                                models[target].state = State::Reversed;
                            }
                            ResponseCode::Approved
                        }
                        None => ResponseCode::UnableToLocate,
                    };
                    prop_assert_eq!(code, expected, "op {} {:?}", i, ops[i]);
                }
            }
        }
    }

    // The ledger the model expects.
    let mut debited = [0i64; CARDS];
    let mut held = [0i64; CARDS];
    for m in &models {
        if let Some((card, amount, is_hold)) = m.original {
            match (m.state, is_hold) {
                (State::Approved, true) => held[card] += amount,
                (State::Approved, false) => debited[card] += amount,
                (State::Completed(c), _) => debited[card] += c,
                _ => {}
            }
        }
    }
    let mut total_balance = 0;
    let mut total_initial = 0;
    for n in 0..CARDS {
        let a = c.account(&card(n)).unwrap();
        let (balance, limit) = initial(n);
        prop_assert!(a.balance >= 0 && a.held >= 0 && a.available >= 0, "{:?}", a);
        prop_assert!(a.held <= a.balance);
        prop_assert_eq!(a.balance, balance - debited[n], "card {} balance", n);
        prop_assert_eq!(a.held, held[n], "card {} holds", n);
        prop_assert_eq!(a.day_total, debited[n] + held[n], "card {} day total", n);
        prop_assert!(a.day_total <= limit);
        total_balance += a.balance;
        total_initial += balance;
    }
    // Money is conserved: what left the balances is exactly the approved net debits.
    prop_assert_eq!(total_balance, total_initial - debited.iter().sum::<i64>());
    Ok(())
}

fn referring(mti: u16, stan: u32, orig: &Request, amount: u64) -> Request {
    let mut r = request(mti, stan, orig.pan.unwrap(), amount);
    r.transmission = DT + 1;
    r.original = Some(OriginalData {
        mti: orig.mti,
        stan: orig.stan,
        transmission: orig.transmission,
    });
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn ledger_invariants_hold_under_concurrency(
        batches in prop::collection::vec(prop::collection::vec(op_strategy(), 1..4), 1..25),
        seed in any::<u64>(),
    ) {
        run(batches, seed)?;
    }
}
