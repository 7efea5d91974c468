//! `--mix`: which operations loadgen starts, by relative weight.
//!
//! Syntax: `name=weight` pairs separated by commas, e.g.
//! `purchase=70,auth_completion=10,reversal=5,balance=5,order=5,echo=5` (the default). Weights
//! are non-negative integers relative to their sum (they need not add up to 100); a name left
//! out has weight 0; a name given twice is an error. Names:
//!
//! | name | requests |
//! |---|---|
//! | `purchase` | one 0200 (DE 3 `000000`) |
//! | `auth_completion` (or `auth`) | a 0100 hold, then, once approved, its 0220 completion (DE 90) |
//! | `reversal` | a 0200, then, once approved, its 0400 reversal (DE 90) |
//! | `balance` | a 0100 balance inquiry (DE 3 `310000`, no DE 4) |
//! | `order` | a 0200 paying an open order (DE 42, 48), then its 0400 reversal, which reopens it |
//! | `echo` | a 0800 echo test (DE 70 `301`) |
//! | `decline` | a deliberate decline: a 0200 with an unknown card (14) or an amount above the balance (51), alternately |
//!
//! An operation's second request (completion, reversal) is sent in the first free slot after
//! the first one's answer, ahead of new operations, so the request mix on the wire is by
//! requests, not operations: `auth_completion=10` sends about 10 holds and 10 completions for
//! every 70 purchases of `purchase=70`.

use std::fmt;
use std::str::FromStr;

/// An operation loadgen can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Purchase,
    AuthCompletion,
    Reversal,
    Balance,
    Order,
    Echo,
    Decline,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Purchase,
        Op::AuthCompletion,
        Op::Reversal,
        Op::Balance,
        Op::Order,
        Op::Echo,
        Op::Decline,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Purchase => "purchase",
            Op::AuthCompletion => "auth_completion",
            Op::Reversal => "reversal",
            Op::Balance => "balance",
            Op::Order => "order",
            Op::Echo => "echo",
            Op::Decline => "decline",
        }
    }

    fn from_name(s: &str) -> Option<Op> {
        if s == "auth" {
            return Some(Op::AuthCompletion);
        }
        Op::ALL.into_iter().find(|op| op.name() == s)
    }
}

/// Weights of each operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 7],
    total: u64,
}

/// Largest weight: seven of them (and any folded together) stay far from overflowing.
const MAX_WEIGHT: u32 = 1_000_000;

/// The default mix.
pub const DEFAULT_MIX: &str = "purchase=70,auth_completion=10,reversal=5,balance=5,order=5,echo=5";

impl Default for Mix {
    fn default() -> Self {
        // The constant parses; the fallback is never taken.
        DEFAULT_MIX.parse().unwrap_or(Mix {
            weights: [1, 0, 0, 0, 0, 0, 0],
            total: 1,
        })
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 7];
        let mut seen = [false; 7];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let op = Op::from_name(name.trim()).ok_or_else(|| {
                format!(
                    "unknown operation {:?} (expected one of {})",
                    name.trim(),
                    Op::ALL.map(Op::name).join(", ")
                )
            })?;
            let w: u32 = weight
                .trim()
                .parse()
                .ok()
                .filter(|&w| w <= MAX_WEIGHT)
                .ok_or_else(|| format!("{part:?}: weight must be an integer 0..={MAX_WEIGHT}"))?;
            let i = op as usize;
            if seen[i] {
                return Err(format!("{} given twice", op.name()));
            }
            seen[i] = true;
            weights[i] = w;
        }
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return Err("the mix is empty: give at least one weight above 0".into());
        }
        Ok(Mix { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for op in Op::ALL {
            let w = self.weight(op);
            if w > 0 {
                if !first {
                    f.write_str(",")?;
                }
                write!(f, "{}={w}", op.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

impl Mix {
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op as usize]
    }

    /// Moves the weight of `from` onto `to` (an operation the data cannot support).
    pub fn fold_into(&mut self, from: Op, to: Op) {
        let w = std::mem::take(&mut self.weights[from as usize]);
        self.weights[to as usize] += w;
    }

    /// Whether only operations that need no card are in the mix.
    pub fn needs_cards(&self) -> bool {
        Op::ALL
            .into_iter()
            .any(|op| op != Op::Echo && self.weight(op) > 0)
    }

    /// The operation for a uniform random number.
    pub fn pick(&self, random: u64) -> Op {
        let mut r = random % self.total;
        for op in Op::ALL {
            let w = u64::from(self.weight(op));
            if r < w {
                return op;
            }
            r -= w;
        }
        Op::Purchase
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: Mix = DEFAULT_MIX.parse().unwrap();
        assert_eq!(m.to_string(), DEFAULT_MIX);
        assert_eq!(m, Mix::default());
        let m: Mix = "purchase=3, auth=1,decline=1".parse().unwrap();
        assert_eq!(m.weight(Op::AuthCompletion), 1);
        assert_eq!(m.to_string(), "purchase=3,auth_completion=1,decline=1");
    }

    #[test]
    fn rejects_bad_mixes() {
        assert!("purchase".parse::<Mix>().is_err());
        assert!("purchase=x".parse::<Mix>().is_err());
        assert!("purchase=-1".parse::<Mix>().is_err());
        assert!("refund=1".parse::<Mix>().is_err());
        assert!("purchase=1,purchase=2".parse::<Mix>().is_err());
        assert!("purchase=0".parse::<Mix>().is_err());
        assert!("".parse::<Mix>().is_err());
        // Weights that could overflow once folded together.
        assert!("purchase=4294967295".parse::<Mix>().is_err());
        assert!("purchase=1000001".parse::<Mix>().is_err());
        assert!("purchase=1000000,order=1000000".parse::<Mix>().is_ok());
    }

    #[test]
    fn picks_by_weight() {
        let m: Mix = "purchase=3,echo=1".parse().unwrap();
        let picks: Vec<Op> = (0..4).map(|r| m.pick(r)).collect();
        assert_eq!(picks, [Op::Purchase, Op::Purchase, Op::Purchase, Op::Echo]);
        assert!(!"echo=1".parse::<Mix>().unwrap().needs_cards());
        let mut m: Mix = "order=2,purchase=1".parse().unwrap();
        m.fold_into(Op::Order, Op::Purchase);
        assert_eq!(m.to_string(), "purchase=3");
    }
}
