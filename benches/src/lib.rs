//! Benchmarks live in `benches/`; this library holds what the scripts need: [`flamegraph`]
//! (`perf script` text to an SVG flame graph, for `benches/profile.sh`) and [`vcpu_probe`]
//! (how steadily the machine's CPUs run, for `benches/capacity.sh`).

pub mod flamegraph;
pub mod vcpu_probe;
