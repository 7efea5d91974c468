//! How steadily this machine's CPUs run, for `benches/capacity.sh` (binary `vcpu_probe`).
//!
//! A virtual machine's vCPUs are threads of its host. When the host gives a vCPU's core to
//! someone else, the guest does not always see it (no steal time is reported on this
//! project's Firecracker guest), yet everything on that vCPU runs slower, and an open-loop
//! latency percentile measured then says more about the host than about the server. One
//! spinning thread per CPU counts how many fixed units of work it completes in every short
//! window of a fixed timeline ([`spin`]); a window well below the thread's median speed is
//! time the vCPU did not get, whether it ran slower or not at all ([`Steadiness`]). Run it with nothing else busy: a guest task that preempts the probe
//! counts as a slow window too.

use std::time::{Duration, Instant};

/// A window slower than `median / SLOW` counts as slow.
const SLOW: u32 = 2;
/// A window slower than `median / VERY_SLOW` counts as very slow.
const VERY_SLOW: u32 = 5;
/// Episodes are counted over periods of this many windows' worth of time.
pub const PERIOD: Duration = Duration::from_millis(100);
/// A period is disturbed when at least this share of its windows (percent) are slow.
const DISTURBED_PCT: usize = 10;

/// Spins for `duration` on the calling thread; returns, for each consecutive `window` of that
/// time, how many units of fixed work completed in it. The windows are fixed on the clock
/// from the start: time the thread did not run (the host or the guest ran something else)
/// leaves its windows with no units, however long it lasted.
pub fn spin(duration: Duration, window: Duration) -> Vec<u32> {
    let window_ns = window.as_nanos().max(1);
    let windows = (duration.as_nanos() / window_ns).max(1);
    let mut counts = vec![0u32; usize::try_from(windows).unwrap_or(usize::MAX)];
    let mut x: u64 = 1;
    let start = Instant::now();
    loop {
        // A dependent chain: the CPU cannot overlap it, so a unit takes the same time
        // whenever the vCPU runs at all.
        for _ in 0..64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        let at = usize::try_from(start.elapsed().as_nanos() / window_ns).unwrap_or(usize::MAX);
        match counts.get_mut(at) {
            Some(units) => *units += 1,
            None => break,
        }
    }
    std::hint::black_box(x);
    counts
}

/// What one thread's windows say about its vCPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Steadiness {
    pub windows: usize,
    /// The median window's units: the vCPU's full speed.
    pub median: u32,
    /// Windows below half the median, per cent of all.
    pub below_half_pct: f64,
    /// Windows below a fifth of the median, per cent of all.
    pub below_fifth_pct: f64,
    /// The slowest 1% of windows ran at most this share of full speed (per cent).
    pub p1_speed_pct: f64,
    /// The longest run of consecutive windows below half speed.
    pub longest_slow: Duration,
    /// [`PERIOD`]s in which at least a tenth of the windows were below half speed, per cent
    /// of all periods.
    pub disturbed_periods_pct: f64,
}

impl Steadiness {
    /// Reads `counts` (from [`spin`] with `window`). `None` without any window.
    pub fn of(counts: &[u32], window: Duration) -> Option<Steadiness> {
        if counts.is_empty() {
            return None;
        }
        let mut sorted = counts.to_vec();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let slow = |c: u32| c.saturating_mul(SLOW) < median;
        let very_slow = |c: u32| c.saturating_mul(VERY_SLOW) < median;
        let pct = |n: usize, of: usize| 100.0 * n as f64 / of as f64;

        let mut longest = 0usize;
        let mut run = 0usize;
        for &c in counts {
            run = if slow(c) { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        let per_period = ((PERIOD.as_nanos() / window.as_nanos().max(1)) as usize).max(1);
        let periods = counts.chunks(per_period);
        let total_periods = periods.len();
        let disturbed = periods
            .filter(|p| p.iter().filter(|&&c| slow(c)).count() * 100 >= p.len() * DISTURBED_PCT)
            .count();
        let p1 = sorted[sorted.len() / 100];
        Some(Steadiness {
            windows: counts.len(),
            median,
            below_half_pct: pct(counts.iter().filter(|&&c| slow(c)).count(), counts.len()),
            below_fifth_pct: pct(
                counts.iter().filter(|&&c| very_slow(c)).count(),
                counts.len(),
            ),
            p1_speed_pct: if median == 0 {
                0.0
            } else {
                100.0 * f64::from(p1) / f64::from(median)
            },
            longest_slow: window * longest as u32,
            disturbed_periods_pct: pct(disturbed, total_periods),
        })
    }

    /// Several threads' figures as one: shares averaged over all windows, the slowest 1%
    /// and the longest stretch the worst thread's.
    pub fn combine(all: &[Steadiness]) -> Option<Steadiness> {
        let windows: usize = all.iter().map(|s| s.windows).sum();
        if windows == 0 {
            return None;
        }
        let weighted = |f: fn(&Steadiness) -> f64| {
            all.iter().map(|s| f(s) * s.windows as f64).sum::<f64>() / windows as f64
        };
        Some(Steadiness {
            windows,
            median: all.iter().map(|s| s.median).min().unwrap_or(0),
            below_half_pct: weighted(|s| s.below_half_pct),
            below_fifth_pct: weighted(|s| s.below_fifth_pct),
            p1_speed_pct: all
                .iter()
                .map(|s| s.p1_speed_pct)
                .fold(f64::INFINITY, f64::min),
            longest_slow: all.iter().map(|s| s.longest_slow).max().unwrap_or_default(),
            disturbed_periods_pct: weighted(|s| s.disturbed_periods_pct),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_micros(100);

    #[test]
    fn a_steady_cpu_has_no_slow_windows() {
        let counts = vec![700; 5_000];
        let s = Steadiness::of(&counts, W).unwrap();
        assert_eq!(s.median, 700);
        assert_eq!(s.below_half_pct, 0.0);
        assert_eq!(s.below_fifth_pct, 0.0);
        assert_eq!(s.p1_speed_pct, 100.0);
        assert_eq!(s.longest_slow, Duration::ZERO);
        assert_eq!(s.disturbed_periods_pct, 0.0);
    }

    #[test]
    fn a_stolen_stretch_is_measured() {
        // 10,000 windows (1 s): full speed, but 300 consecutive windows (30 ms) at a tenth,
        // all in the first 100-ms period, and 50 scattered ones at 60% (slower, not slow).
        let mut counts = vec![700u32; 10_000];
        for c in &mut counts[450..750] {
            *c = 70;
        }
        for i in 0..50 {
            counts[2_000 + i * 100] = 420;
        }
        let s = Steadiness::of(&counts, W).unwrap();
        assert_eq!(s.median, 700);
        assert_eq!(s.below_half_pct, 3.0);
        assert_eq!(s.below_fifth_pct, 3.0);
        // The slowest 1% (100 windows) all ran at a tenth.
        assert_eq!(s.p1_speed_pct, 10.0);
        assert_eq!(s.longest_slow, Duration::from_millis(30));
        // One period of ten.
        assert_eq!(s.disturbed_periods_pct, 10.0);
    }

    #[test]
    fn threads_combine_by_their_windows() {
        let steady = Steadiness::of(&[700; 1_000], W).unwrap();
        let mut counts = vec![700u32; 1_000];
        for c in &mut counts[..100] {
            *c = 100;
        }
        let shaky = Steadiness::of(&counts, W).unwrap();
        let both = Steadiness::combine(&[steady, shaky]).unwrap();
        assert_eq!(both.windows, 2_000);
        assert_eq!(both.below_half_pct, 5.0);
        assert_eq!(both.longest_slow, Duration::from_millis(10));
        assert!((both.p1_speed_pct - 100.0 * 100.0 / 700.0).abs() < 1e-9);
        // The shaky thread's only period is disturbed (a tenth of its windows slow).
        assert_eq!(both.disturbed_periods_pct, 50.0);
        assert_eq!(Steadiness::combine(&[]), None);
        assert_eq!(Steadiness::of(&[], W), None);
    }

    #[test]
    fn spinning_counts_work_on_a_fixed_timeline() {
        // However little CPU the thread gets, the timeline has its 50 windows.
        let counts = spin(Duration::from_millis(50), Duration::from_millis(1));
        assert_eq!(counts.len(), 50);
        assert!(counts.iter().any(|&c| c > 0), "some work was counted");
    }
}
