//! `vcpu_probe` as `benches/capacity.sh` runs it: one line of key=value figures, a refusal of
//! a meaningless duration.

use std::collections::HashMap;
use std::process::Command;

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vcpu_probe"))
        .args(args)
        .output()
        .expect("vcpu_probe runs")
}

#[test]
fn the_probe_prints_its_figures_as_key_values() {
    let out = probe(&["--seconds", "0.3", "--threads", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let fields: HashMap<&str, f64> = line
        .trim()
        .strip_prefix("vcpu_probe: ")
        .expect("the line names the tool")
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k, v.parse().unwrap_or_else(|_| panic!("{kv} is a number")))
        })
        .collect();
    assert_eq!(fields["threads"], 2.0);
    assert_eq!(fields["window_us"], 100.0);
    for share in ["below_half_pct", "below_fifth_pct", "disturbed_periods_pct"] {
        assert!((0.0..=100.0).contains(&fields[share]), "{share} in {line}");
    }
    assert!(
        fields["below_fifth_pct"] <= fields["below_half_pct"],
        "{line}"
    );
    assert!((0.0..=100.0).contains(&fields["p1_speed_pct"]), "{line}");
    assert!((0.0..=300.0).contains(&fields["longest_slow_ms"]), "{line}");
}

#[test]
fn a_meaningless_duration_is_refused() {
    let out = probe(&["--seconds", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seconds"));
}
