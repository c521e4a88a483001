//! Cold starts by list mode: with a scale run's pods and groups in place, the operator is
//! started again and again, paged and streaming lists in turn, and timed until its caches are
//! filled (`/readyz`); its peak RSS is read at that moment (reconciles have just begun).

use std::time::{Duration, Instant};

use podium_bench::stats::stats;
use podium_testkit::operator::podium_bin;
use podium_testkit::support::{Operator, free_port, wait_http};
use serde_json::{Value, json};

use super::{ms_since, op_pid};
use crate::host::rss_peak_mib;

const MODES: [&str; 2] = ["paged", "streaming"];

/// Whether the operator under test has `--list-mode` (a `PODIUM_BIN` of an older build has not).
fn has_list_mode() -> bool {
    std::process::Command::new(podium_bin())
        .args(["run", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--list-mode"))
}

/// `rounds` cold starts in each mode, the order swapped every round so that a drifting
/// machine favours neither; `{mode: {sync_ms, rss_mib, samples}}`. Null, with a line saying
/// why, for an operator without `--list-mode`.
pub async fn cold_starts(prefix: &str, rounds: usize, timeout: Duration) -> Value {
    if !has_list_mode() {
        println!("  cold starts by list mode: skipped, the operator has no --list-mode");
        return Value::Null;
    }
    let mut sync: [Vec<f64>; 2] = Default::default();
    let mut rss: [Vec<f64>; 2] = Default::default();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for m in order {
            let port = free_port();
            let start = Instant::now();
            let mut op = Operator::start_cluster_wide(
                &format!("{prefix}-cold-{}-{round}", MODES[m]),
                &[
                    "--list-mode",
                    MODES[m],
                    "--http-addr",
                    &format!("127.0.0.1:{port}"),
                ],
            );
            let pid = op_pid(&op);
            wait_http(port, "/readyz", 200, timeout).await;
            sync[m].push(ms_since(start).round());
            rss[m].push(rss_peak_mib(pid));
            assert!(op.alive(), "the operator ({} lists) exited", MODES[m]);
            op.kill().await;
            println!(
                "  cold start, {} lists: caches filled in {:.0} ms, peak RSS {:.1} MiB",
                MODES[m],
                sync[m].last().unwrap(),
                rss[m].last().unwrap()
            );
        }
    }
    let mut out = serde_json::Map::new();
    for (m, mode) in MODES.iter().enumerate() {
        out.insert(
            (*mode).into(),
            json!({"sync_ms": stats(&sync[m]), "rss_mib": stats(&rss[m]),
                   "samples": {"sync_ms": sync[m], "rss_mib": rss[m]}}),
        );
    }
    Value::Object(out)
}
