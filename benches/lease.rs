//! client-go's Lease-based election, the baseline: three `lease-baseline` candidates (built by
//! `make bench`), the leader killed (SIGKILL) or stopped (SIGTERM, releasing the Lease), the
//! successor timed by its own `LEADING` line; and what an idle window costs.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use podium_bench::config::LeaseTimings;
use podium_testkit::support::{TestNs, kubeconfig_path, repo_root};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::idle::{IdleWindow, idle_window};
use crate::namespaces::wait_ns_gone;

pub struct Candidate {
    child: tokio::process::Child,
}

/// One client-go Lease run: kill -9 and release trials, and what an idle window cost.
pub struct LeaseRun {
    pub kill_ms: Vec<f64>,
    pub release_ms: Vec<f64>,
    pub idle: Option<IdleWindow>,
    /// LEADING or STOPPED lines printed during the idle window: each is a leader change
    /// (or a lost renewal) with nothing provoking it.
    pub idle_leader_changes: usize,
}

/// client-go Lease election: three candidates; optionally an idle window first (writes, and
/// spurious leader changes), then kill -9 or SIGTERM the leader and time the successor.
pub async fn lease_baseline(
    timings: LeaseTimings,
    kills: usize,
    releases: usize,
    idle_s: u64,
) -> LeaseRun {
    let ns = TestNs::new("bench-lease").await;
    let bin = repo_root().join("target/bench/lease-baseline");
    // (LEADING or STOPPED, candidate, unix nanos)
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, String, i128)>();
    let spawn = |id: String| {
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "--kubeconfig",
                kubeconfig_path().to_str().unwrap(),
                "--namespace",
                &ns.name,
                "--id",
                &id,
            ])
            .args(timings.args())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start lease-baseline (make bench builds it)");
        let out = child.stdout.take().unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let parts: Vec<&str> = l.split_whitespace().collect();
                if let [what @ ("LEADING" | "STOPPED"), id, nanos] = parts[..] {
                    let _ = tx.send((
                        what == "LEADING",
                        id.to_string(),
                        nanos.parse().unwrap_or(0),
                    ));
                }
            }
        });
        Candidate { child }
    };
    let recv_leading = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>| loop {
        let (leading, id, at): (bool, String, i128) =
            tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("a Lease candidate leads within 60 s")
                .unwrap();
        if leading {
            return (id, at);
        }
    };
    let mut cands: HashMap<String, Candidate> = HashMap::new();
    for i in 0..3 {
        cands.insert(format!("c{i}"), spawn(format!("c{i}")));
    }
    let (mut leader, _) = recv_leading(&mut rx).await;
    let mut idle = None;
    let mut idle_leader_changes = 0;
    if idle_s > 0 {
        // Let the followers come up and try once, then count what sitting still costs.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while rx.try_recv().is_ok() {}
        let window = idle_window(&ns, &["leases"], Duration::from_secs(idle_s)).await;
        while let Ok((leading, id, _)) = rx.try_recv() {
            println!(
                "  lease idle: {id} {} with nothing provoking it",
                if leading {
                    "started leading"
                } else {
                    "stopped"
                }
            );
            idle_leader_changes += 1;
            if leading {
                leader = id;
            }
        }
        println!(
            "  lease idle {} s: {} lease writes, {} Lease changes in the namespace, {idle_leader_changes} leader changes",
            idle_s, window.writes, window.ns_changes
        );
        idle = Some(window);
    }
    let now_nanos = || jiff::Timestamp::now().as_nanosecond();
    let (mut kill_ms, mut release_ms) = (vec![], vec![]);
    for i in 0..kills + releases {
        let by_kill = i < kills;
        let mut c = cands.remove(&leader).unwrap();
        let start = now_nanos();
        if by_kill {
            let _ = c.child.start_kill();
        } else if let Some(pid) = c.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let (next, at) = loop {
            let (id, at) = recv_leading(&mut rx).await;
            if id != leader {
                break (id, at);
            }
        };
        let ms = (at - start) as f64 / 1e6;
        println!(
            "  lease {}: {leader} -> {next} after {ms:.0} ms",
            if by_kill { "kill -9" } else { "release" }
        );
        if by_kill {
            kill_ms.push(ms)
        } else {
            release_ms.push(ms)
        }
        let _ = c.child.wait().await;
        cands.insert(leader.clone(), spawn(leader.clone()));
        leader = next;
    }
    drop(cands);
    let name = ns.name.clone();
    drop(ns);
    wait_ns_gone(&name).await;
    LeaseRun {
        kill_ms,
        release_ms,
        idle,
        idle_leader_changes,
    }
}
