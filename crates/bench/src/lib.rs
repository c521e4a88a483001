//! The parts of `make bench` (benches/bench.rs, which runs against the local control plane)
//! that need no cluster: the configuration it reads from `BENCH_*` variables, the statistics
//! of its samples, the parsing of the API server's and the operator's metrics, and report.md.

pub mod config;
pub mod metrics;
pub mod report;
pub mod stats;
