//! Open loop (`--rate`): when each request is due, and a thread that wakes connections when
//! they have requests due.
//!
//! Requests are slots on one global timeline: slot `g` is due `g / rate` seconds after the
//! start. Slots are dealt to the connections in blocks of `block` consecutive slots (block `b`
//! goes to connection `b % connections`), `block` being about what falls due in one pacer tick
//! (1 below 10,000 requests/s, at most 64): a connection then writes the slots due together in one
//! syscall instead of one each, which at high rates halves the CPU both sides spend on small
//! writes and reads, and changes no due time. A connection sends every slot that is due
//! whenever it runs, and each request's latency is measured from its slot's time, not from
//! when it was actually written: a switch (or a loadgen) that falls behind shows as latency,
//! never as a quietly lower rate (no coordinated omission; the approach of wrk2 and
//! HdrHistogram).
//!
//! tokio's timers tick in milliseconds, which would add up to a millisecond of lateness to
//! requests due between ticks. The pacer is a plain thread sleeping to the next slot (at
//! least [`MIN_TICK`]) and waking the connections with a slot due; a wake-up that comes late
//! still counts from the slot's time.
//!
//! Each tick costs about four context switches (the pacer wakes, wakes the runtime, both
//! sleep again), and on this project's VM a context switch costs microseconds of CPU that the
//! server under test then lacks: at 150,000/s a 50 us tick cost loadgen 5.4 us of CPU per
//! request against 3.7 us with 200 us (benches/RESULTS.md, "Threads and pacing"). The tick bounds
//! how late a request may be sent when slots are closer together than it (at most 200 us, and
//! counted in its latency); slots further apart are each woken for on time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The pacer sleeps at least this long between wake-ups.
pub const MIN_TICK: Duration = Duration::from_micros(200);

/// The pacer sleeps at most this long at a time: a stop (the run's end, a Ctrl-C) waits no
/// longer for it, whatever the rate.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// The open-loop timeline.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub t0: Instant,
    /// Requests per second.
    pub rate: f64,
    /// Slots in the whole run (warm-up included).
    pub total: u64,
    pub connections: u64,
    /// Consecutive slots dealt to one connection.
    pub block: u64,
}

impl Schedule {
    /// The timeline from `t0` to `end` at `rate` over `connections`.
    pub fn new(t0: Instant, end: Instant, rate: f64, connections: usize) -> Schedule {
        let span = end.saturating_duration_since(t0).as_secs_f64();
        Schedule {
            t0,
            rate,
            total: (span * rate).ceil() as u64,
            connections: connections.max(1) as u64,
            block: ((rate * MIN_TICK.as_secs_f64()).floor() as u64).clamp(1, 64),
        }
    }

    /// Slots of the whole timeline due at `now`.
    fn due_total(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.t0).as_secs_f64();
        ((elapsed * self.rate).floor() as u64 + 1).min(self.total)
    }

    /// How many of the first `total` global slots belong to connection `c`.
    fn share(&self, total: u64, c: u64) -> u64 {
        let round = self.block * self.connections;
        let rest = (total % round)
            .saturating_sub(c * self.block)
            .min(self.block);
        total / round * self.block + rest
    }

    /// How many of connection `c`'s slots are due at `now`.
    pub fn due(&self, c: usize, now: Instant) -> u64 {
        self.share(self.due_total(now), c as u64)
    }

    /// All of connection `c`'s slots.
    pub fn slots(&self, c: usize) -> u64 {
        self.share(self.total, c as u64)
    }

    /// When connection `c`'s `k`-th slot is due.
    pub fn intended(&self, c: usize, k: u64) -> Instant {
        let g = ((k / self.block) * self.connections + c as u64) * self.block + k % self.block;
        self.t0 + Duration::from_secs_f64(g as f64 / self.rate)
    }
}

/// Runs the pacer until the timeline is over or `stop` is set.
pub fn spawn(
    schedule: Schedule,
    wake: Vec<Arc<Notify>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("loadgen-pacer".into())
        .spawn(move || {
            let mut last = vec![0u64; wake.len()];
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                let due_total = schedule.due_total(now);
                for (c, (w, seen)) in wake.iter().zip(last.iter_mut()).enumerate() {
                    let due = schedule.share(due_total, c as u64);
                    if due > *seen {
                        *seen = due;
                        w.notify_one();
                    }
                }
                if due_total >= schedule.total {
                    return;
                }
                let next = schedule.t0 + Duration::from_secs_f64(due_total as f64 / schedule.rate);
                // At most MAX_SLEEP at a time, so that a stop is seen soon at low rates too.
                let sleep = next.saturating_duration_since(Instant::now()).max(MIN_TICK);
                std::thread::sleep(sleep.min(MAX_SLEEP));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spread_over_connections() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, t0 + Duration::from_secs(2), 1000.0, 3);
        assert_eq!(s.total, 2000);
        assert_eq!(s.slots(0) + s.slots(1) + s.slots(2), 2000);
        assert_eq!(s.slots(0), 667);
        assert_eq!(s.slots(2), 666);
        // At t0 only slot 0 is due; at 1.5 ms slots 0 and 1.
        assert_eq!(s.due(0, t0), 1);
        assert_eq!(s.due(1, t0), 0);
        assert_eq!(s.due(1, t0 + Duration::from_micros(1500)), 1);
        assert_eq!(s.due(2, t0 + Duration::from_micros(1500)), 0);
        // Connection 1's second slot is global slot 4: 4 ms in.
        assert_eq!(s.intended(1, 1) - t0, Duration::from_millis(4));
        // Never more than the timeline holds.
        assert_eq!(s.due(0, t0 + Duration::from_secs(60)), 667);
    }

    #[test]
    fn high_rates_deal_slots_in_blocks() {
        let t0 = Instant::now();
        // 100,000/s: 20 slots fall due per 200 us tick, dealt 20 at a time.
        let s = Schedule::new(t0, t0 + Duration::from_millis(10), 100_000.0, 4);
        assert_eq!(s.block, 20);
        assert_eq!(s.total, 1000);
        assert_eq!((0..4).map(|c| s.slots(c)).sum::<u64>(), 1000);
        // Connection 1 has global slots 20-39, then 100-119, ...
        let due: Vec<Duration> = [0, 1, 19, 20, 21]
            .iter()
            .map(|&k| s.intended(1, k) - t0)
            .collect();
        let us = |n: u64| Duration::from_micros(n * 10);
        assert_eq!(due, [us(20), us(21), us(39), us(100), us(101)]);
        // At 395 us, slots 0-39 are due: all twenty of connection 1's first block.
        assert_eq!(s.due(1, t0 + Duration::from_micros(395)), 20);
        assert_eq!(s.due(2, t0 + Duration::from_micros(395)), 0);
        // Every slot of the timeline is some connection's, exactly once.
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|c| (0..s.slots(c)).map(move |k| s.intended(c, k) - t0))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1000);
    }
}
