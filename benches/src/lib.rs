//! Benchmarks live in `benches/`; this library holds what the profiling script needs
//! ([`flamegraph`]: `perf script` text to an SVG flame graph, for `benches/profile.sh`).

pub mod flamegraph;
