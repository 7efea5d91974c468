//! `vcpu_probe`: one spinning thread per CPU for a few seconds, then one line on how steadily
//! they ran (module `benches::vcpu_probe`). `benches/capacity.sh` runs it before and after
//! its runs.

use std::process::ExitCode;
use std::time::Duration;

use benches::vcpu_probe::{spin, Steadiness, PERIOD};
use clap::Parser;

/// Measures how steadily this machine's CPUs run.
#[derive(Parser)]
#[command(name = "vcpu_probe")]
struct Args {
    /// How long to spin, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// The window work is counted in, in microseconds.
    #[arg(long, default_value_t = 100)]
    window_us: u64,
    /// Spinning threads; default: one per CPU.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.seconds > 0.0 && args.seconds <= 600.0)
        || args.window_us == 0
        || args.window_us as f64 > args.seconds * 1e6
    {
        eprintln!(
            "vcpu_probe: --seconds must be in (0, 600] and --window-us above 0 and at most --seconds"
        );
        return ExitCode::from(2);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let duration = Duration::from_secs_f64(args.seconds);
    let window = Duration::from_micros(args.window_us);
    let spinners: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || spin(duration, window)))
        .collect();
    let per_thread: Vec<Steadiness> = spinners
        .into_iter()
        .filter_map(|t| t.join().ok())
        .filter_map(|counts| Steadiness::of(&counts, window))
        .collect();
    let Some(all) = Steadiness::combine(&per_thread) else {
        eprintln!("vcpu_probe: no window was measured");
        return ExitCode::FAILURE;
    };
    // key=value, as loadgen's summary line, for the scripts.
    println!(
        "vcpu_probe: threads={threads} seconds={:.1} window_us={} below_half_pct={:.2} \
         below_fifth_pct={:.2} p1_speed_pct={:.0} longest_slow_ms={:.1} \
         disturbed_periods_pct={:.1} period_ms={}",
        args.seconds,
        args.window_us,
        all.below_half_pct,
        all.below_fifth_pct,
        all.p1_speed_pct,
        all.longest_slow.as_secs_f64() * 1e3,
        all.disturbed_periods_pct,
        PERIOD.as_millis(),
    );
    ExitCode::SUCCESS
}
